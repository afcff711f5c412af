"""Training batches made on the training device from uint8 images kept there.

On a GPU the host used to index, flip and convert every batch to float32 and copy 4x
the bytes; with the paper's batch of 26 the GPU then waited for it each step. Here
the prepared uint8 images go to the device once per run (:class:`DeviceImages`) and
each batch is an index, a flip and a conversion there. The order and the flips are
drawn on the host from the same random streams as
:class:`~edge_iapp.train.data.ChromosomeDataset` with :func:`~edge_iapp.train.data.batches`,
so both give the same batches (a test checks it on the CPU) and ``--resume`` stays
reproducible. Both are drawn for the whole epoch and copied to the device once (pinned,
asynchronous); each step slices them there, so no step waits on a host-to-device copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .data import PreparedImages

HOST_FALLBACK_SHARE = 0.25
"""Keep the images on the host when they would take more than this share of the GPU."""


@dataclass
class DeviceImages:
    """The uint8 images and labels of one subset, as torch tensors on one device.

    Attributes:
        global_images, object_images: ``(N, S, S)`` uint8.
        labels: ``(N,)`` int64.
        device: where they live (``"cpu"`` when they did not fit the GPU).
    """

    global_images: Any
    object_images: Any
    labels: Any
    device: str

    @classmethod
    def put(cls, data: PreparedImages, device: str) -> DeviceImages:
        """Copy ``data`` to ``device``; on a GPU too small for it, keep it in pinned host memory."""
        import torch

        g = torch.from_numpy(np.ascontiguousarray(data.global_images))
        o = torch.from_numpy(np.ascontiguousarray(data.object_images))
        labels = torch.from_numpy(np.asarray(data.labels, dtype=np.int64))
        where = str(device)
        if where.startswith("cuda"):
            total = torch.cuda.get_device_properties(torch.device(where)).total_memory
            if g.nbytes + o.nbytes > HOST_FALLBACK_SHARE * total:
                return cls(g.pin_memory(), o.pin_memory(), labels.pin_memory(), "cpu")
        return cls(g.to(where), o.to(where), labels.to(where), where)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def device_batches(
    images: DeviceImages,
    batch_size: int,
    rng: np.random.Generator,
    flip_rng: np.random.Generator,
    hflip: float,
    device: str,
) -> Iterator[dict]:
    """One shuffled epoch of training batches, made on ``device``.

    Args:
        images: the subset (see :class:`DeviceImages`).
        batch_size: images per batch (the last one may be smaller).
        rng: draws the order (``rng.permutation``, as :func:`~edge_iapp.train.data.batches`).
        flip_rng: draws the flips, the epoch's at once (the numbers ``ChromosomeDataset``'s
            own generator draws batch by batch).
        hflip: flip probability; global and object image of a sample flip together.
        device: the training device.

    Yields:
        ``{"global", "object"}`` ``(B, 1, S, S)`` float32 in [0, 1], ``"object_u8"``
        ``(B, S, S)`` uint8 (what the part zoom reads), ``"label"`` ``(B,)`` int64,
        all on ``device``, and ``"index"`` ``(B,)`` int64 on the host.
    """
    import torch

    n = len(images)
    order = rng.permutation(n)
    # The whole epoch's flips at once: for numpy's Generator one random(n) gives the same
    # doubles, and leaves the same state, as random() calls of sizes summing to n (a test
    # checks it), so these are the per-batch draws of ChromosomeDataset.
    flips = flip_rng.random(n) < hflip if hflip > 0 else np.zeros(n, dtype=bool)
    host_images = images.device == "cpu"  # host tensors to a GPU: pinned, copied async
    to_gpu = not str(device).startswith("cpu")
    # One copy per epoch (pinned, async) and slices on the device per batch: a copy from
    # pageable memory would wait for the GPU every step.
    order_t = torch.from_numpy(order)
    where_all = order_t if host_images else _to_device(order_t, images.device)
    mirror_all = _to_device(torch.from_numpy(flips), device) if flips.any() else None
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        where = where_all[start:stop]
        g = images.global_images.index_select(0, where)
        o = images.object_images.index_select(0, where)
        labels = images.labels.index_select(0, where)
        if host_images and to_gpu:
            g, o, labels = (_to_device(t, device) for t in (g, o, labels))
        if mirror_all is not None and flips[start:stop].any():
            mirror = mirror_all[start:stop, None, None]
            g = torch.where(mirror, g.flip(-1), g)
            o = torch.where(mirror, o.flip(-1), o)
        yield {
            "global": g.unsqueeze(1).float().div_(255.0),
            "object": o.unsqueeze(1).float().div_(255.0),
            "object_u8": o,
            "label": labels,
            "index": order_t[start:stop],
        }


def _to_device(t: Any, device: Any) -> Any:
    """A host tensor on ``device``; to a GPU from pinned memory, without waiting for it."""
    if str(device).startswith("cuda"):
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
