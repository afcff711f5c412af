"""Training batches made on the training device from uint8 images kept there.

On a GPU the host used to index, flip and convert every batch to float32 and copy 4x
the bytes; with the paper's batch of 26 the GPU then waited for it each step. Here
the prepared uint8 images go to the device once per run (:class:`DeviceImages`) and
each batch is an index, a flip and a conversion there. The order and the flips are
drawn on the host from the same random streams as
:class:`~edge_iapp.train.data.ChromosomeDataset` with :func:`~edge_iapp.train.data.batches`,
so both give the same batches (a test checks it on the CPU) and ``--resume`` stays
reproducible.
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
        flip_rng: draws each batch's flips (as ``ChromosomeDataset``'s own generator).
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
    blocking = images.device == "cpu"  # host tensors to a GPU: pinned, copied async
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        flip = (
            flip_rng.random(idx.size) < hflip if hflip > 0 else np.zeros(idx.size, dtype=bool)
        )
        where = torch.from_numpy(idx).to(images.device, non_blocking=not blocking)
        g = images.global_images.index_select(0, where)
        o = images.object_images.index_select(0, where)
        labels = images.labels.index_select(0, where)
        if blocking and not str(device).startswith("cpu"):
            g, o, labels = (t.pin_memory().to(device, non_blocking=True) for t in (g, o, labels))
        if flip.any():
            mirror = torch.from_numpy(flip).to(device, non_blocking=True)[:, None, None]
            g = torch.where(mirror, g.flip(-1), g)
            o = torch.where(mirror, o.flip(-1), o)
        yield {
            "global": g.unsqueeze(1).float().div_(255.0),
            "object": o.unsqueeze(1).float().div_(255.0),
            "object_u8": o,
            "label": labels,
            "index": torch.from_numpy(idx),
        }
