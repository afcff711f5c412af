"""Training data with augmentations: keep the raw crops, preprocess every batch anew.

Augmentations that change the crop (scale, bend, rotation, blur, ...) must run before
the global canvas, so this path keeps the polarity-normalised crops in memory and runs
:func:`~edge_iapp.train.augment.augment_crop` and then the reference preprocessing
(``rescale_to_reference`` -> ``global_canvas`` -> ``object_zoom``, from
:mod:`edge_iapp.preprocess`) per batch. Without augmentation it gives the same arrays as
:func:`edge_iapp.train.data.prepare` and :class:`~edge_iapp.train.data.ChromosomeDataset`.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import numpy as np

from ..preprocess import PreprocessConfig, rescale_to_reference
from .augment import AugmentConfig, augment_crop, draw_scale
from .data import RawImages, canvases


def preprocess_crops(
    crops: Sequence[np.ndarray],
    backgrounds: Sequence[int],
    cells: Sequence[str | None] | None,
    cfg: PreprocessConfig,
):
    """The reference preprocessing of (possibly augmented) crops.

    Size reference (``rescale_to_reference``; a no-op in absolute mode) -> global canvas
    -> object zoom. In cell mode pass whole cells: the reference is the median length of
    the crops given with the same cell ID.

    Returns:
        ``(GlobalBatch, ObjectBatch)``.
    """
    sized = rescale_to_reference(list(crops), list(backgrounds), cells, cfg).crops
    return canvases(sized, backgrounds, cfg)


class OnlineDataset:
    """Like :class:`~edge_iapp.train.data.ChromosomeDataset`, augmenting the crops anew.

    ``__getitems__`` returns one batch::

        {"global": (B, 1, S, S) float32, "object": (B, 1, S, S) float32,
         "label": (B,) int64, "index": (B,) int64}

    Randomness: the flips come from the stream of ``ChromosomeDataset`` (same ``seed``,
    same draws); crop ``k`` is augmented with its own generator seeded by ``(seed, k)``,
    so its augmentation does not depend on the batch order. With ``scale_per_cell`` one
    scale factor (and its coin) is drawn per cell from ``seed`` (crops without a cell
    draw their own).

    Absolute size mode augments and preprocesses per batch. Cell mode needs each cell's
    median length on the *augmented* crops, so it augments every crop once here and
    sizes whole cells with ``rescale_to_reference``; batches then only make canvases.
    """

    def __init__(
        self,
        raw: RawImages,
        preprocess: PreprocessConfig,
        augment: AugmentConfig,
        hflip: float = 0.0,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip must be a probability in [0, 1], got {hflip}")
        self.raw = raw
        self.preprocess = preprocess
        self.augment = augment
        self.hflip = hflip
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)
        self.cell_scale: dict[str, float] | None = None
        if augment.on("scale") and augment.scale_per_cell:
            cell_rng = np.random.default_rng([self.seed, 1])
            self.cell_scale = {}
            for cell in sorted({c for c in raw.cells if c is not None}):
                fire = cell_rng.random() < augment.p
                factor = draw_scale(cell_rng, augment)
                self.cell_scale[cell] = factor if fire else 1.0
        self.sized: list[np.ndarray] | None = None
        if preprocess.size_mode != "absolute":
            crops = [self.augmented(k) for k in range(len(raw))]
            self.sized = rescale_to_reference(
                crops, list(raw.backgrounds), raw.cells, preprocess
            ).crops

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: int) -> dict:
        batch = self.__getitems__([index])
        return {k: v[0] for k, v in batch.items()}

    def augmented(self, k: int) -> np.ndarray:
        """Crop ``k`` after the augmentations (the raw crop when none is enabled)."""
        crop = self.raw.crops[k]
        if not self.augment.enabled:
            return crop
        cell = self.raw.cells[k]
        # one factor per cell; a crop without a cell draws its own
        scale = None if self.cell_scale is None or cell is None else self.cell_scale[cell]
        rng = np.random.default_rng([self.seed, 2, k])
        return augment_crop(crop, int(self.raw.backgrounds[k]), rng, self.augment, scale=scale)

    def draw_flips(self, size: int) -> np.ndarray:
        """``(size,)`` bool flips of the next batch (the draws of ``ChromosomeDataset``)."""
        if self.hflip > 0:
            return self.rng.random(size) < self.hflip
        return np.zeros(size, bool)

    def images(
        self, indices: Sequence[int], flips: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(global, object)`` uint8 ``(B, S, S)`` arrays of one batch, flips included.

        ``flips`` (from :meth:`draw_flips`) are drawn here when None. With ``flips``
        given the call does not touch shared state, so threads may run it.
        """
        idx = [int(k) for k in np.asarray(indices, dtype=np.int64)]
        flip = self.draw_flips(len(idx)) if flips is None else np.asarray(flips, bool)
        backgrounds = [int(self.raw.backgrounds[k]) for k in idx]
        if self.sized is not None:
            g, o = canvases([self.sized[k] for k in idx], backgrounds, self.preprocess)
        else:
            crops = [self.augmented(k) for k in idx]
            cells = [self.raw.cells[k] for k in idx]
            g, o = preprocess_crops(crops, backgrounds, cells, self.preprocess)
        gi = np.where(flip[:, None, None], g.images[:, :, ::-1], g.images)
        oi = np.where(flip[:, None, None], o.images[:, :, ::-1], o.images)
        return gi, oi

    def batch(self, indices: Sequence[int], flips: np.ndarray | None = None) -> dict:
        """One batch dict (see the class docstring); ``flips`` as in :meth:`images`."""
        import torch

        idx = np.asarray(indices, dtype=np.int64)
        g, o = self.images(idx, flips)
        return {
            "global": torch.from_numpy(np.ascontiguousarray(g)).unsqueeze(1).float().div_(255.0),
            "object": torch.from_numpy(np.ascontiguousarray(o)).unsqueeze(1).float().div_(255.0),
            "label": torch.from_numpy(self.raw.labels[idx]),
            "index": torch.from_numpy(idx),
        }

    def __getitems__(self, indices: Sequence[int]) -> dict:
        return self.batch(indices)


def default_workers() -> int:
    """Background threads for :func:`online_batches`: half the cores, 1 to 4."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def online_batches(
    dataset: OnlineDataset,
    batch_size: int,
    rng: np.random.Generator,
    workers: int | None = None,
):
    """Yield the shuffled batches of one epoch, made ahead by ``workers`` threads.

    The same batches, in the same order, as ``batches(dataset, batch_size, shuffle=True,
    rng=rng)``: the order and the flips are drawn here, in batch order; the
    augmentations depend only on ``(seed, index)``. OpenCV and most NumPy work release
    the GIL, so the threads overlap each other and the training step (torch releases
    it too). ``workers=0`` makes each batch when it is asked for.
    """
    n = len(dataset)
    order = rng.permutation(n)
    jobs = [order[start : start + batch_size] for start in range(0, n, batch_size)]
    flips = [dataset.draw_flips(len(idx)) for idx in jobs]
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        for idx, flip in zip(jobs, flips, strict=True):
            yield dataset.batch(idx, flip)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="augment") as pool:
        todo = iter(zip(jobs, flips, strict=True))
        pending: deque = deque()
        for idx, flip in islice(todo, 2 * workers):
            pending.append(pool.submit(dataset.batch, idx, flip))
        while pending:
            done = pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(dataset.batch, *nxt))
            yield done.result()
