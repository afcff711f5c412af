"""Training data: read and preprocess each image once, keep the uint8 arrays in memory.

The reference preprocessing (global canvas, object zoom) runs once per image; the
epochs then only index uint8 arrays, which is what makes CPU training affordable.
The part image depends on the current object branch, so it is drawn per batch
(:func:`edge_iapp.model.part_zoom.part_inputs`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..classes import CLASS_NAMES
from ..data.dataset import cell_key
from ..preprocess import PreprocessConfig, global_canvas, object_zoom, rescale_to_reference

CHUNK = 256
"""Images preprocessed per call of the (batched) reference functions."""


@dataclass
class PreparedImages:
    """Preprocessed images of one subset (train, val or test).

    Attributes:
        global_images: ``(N, S, S)`` uint8 global-scale images.
        object_images: ``(N, S, S)`` uint8 object-scale images.
        labels: ``(N,)`` int64 class indices 0..23.
        paths: N source files.
        groups: N group (case / karyotype) ids.
        object_fallback: ``(N,)`` bool, empty object mask (object image = global image).
        shrunk: ``(N,)`` bool, the crop was larger than the canvas.
        skipped: ``(path, reason)`` for files that could not be read.
    """

    global_images: np.ndarray
    object_images: np.ndarray
    labels: np.ndarray
    paths: list[str]
    groups: list[str]
    object_fallback: np.ndarray
    shrunk: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: Sequence[int] | np.ndarray) -> PreparedImages:
        """The images at ``index`` (in that order); ``skipped`` is not carried over."""
        idx = np.asarray(index, dtype=np.int64)
        return PreparedImages(
            global_images=self.global_images[idx],
            object_images=self.object_images[idx],
            labels=self.labels[idx],
            paths=[self.paths[i] for i in idx],
            groups=[self.groups[i] for i in idx],
            object_fallback=self.object_fallback[idx],
            shrunk=self.shrunk[idx],
        )

    def balanced(self, max_per_class: int, seed: int = 0) -> PreparedImages:
        """At most ``max_per_class`` images of each class, drawn at random (reproducibly)."""
        return self.take(balanced_indices(self.labels, max_per_class, seed))


def _empty(size: int) -> PreparedImages:
    return PreparedImages(
        global_images=np.zeros((0, size, size), np.uint8),
        object_images=np.zeros((0, size, size), np.uint8),
        labels=np.zeros(0, np.int64),
        paths=[],
        groups=[],
        object_fallback=np.zeros(0, bool),
        shrunk=np.zeros(0, bool),
    )


SIZE_FIELDS = ("size_mode", "cell_length", "reference_length", "min_cell_chromosomes")
"""Config fields of the cell-relative size; they change nothing in absolute mode."""


def _cache_key(samples: Sequence, cfg: PreprocessConfig) -> str:
    data = cfg.to_dict()
    if cfg.size_mode == "absolute":  # caches made before these fields existed stay valid
        data = {k: v for k, v in data.items() if k not in SIZE_FIELDS}
    h = hashlib.sha256(json.dumps(data, sort_keys=True).encode())
    for s in samples:
        h.update(f"{s.path}\t{s.label}\t{s.group}\n".encode())
    return h.hexdigest()[:24]


@dataclass
class RawImages:
    """Polarity-normalised crops of one subset, as read (no preprocessing).

    Attributes:
        crops: N ``(h_i, w_i)`` uint8 crops, dark on light.
        backgrounds: ``(N,)`` int32 border medians (``Polarity.background``).
        labels: ``(N,)`` int64 class indices 0..23.
        paths: N source files.
        groups: N group (case / karyotype) ids.
        cells: N cell (metaphase) ids as ``prepare`` keys them (``data.cell_key``:
            ``group/cell``), None for a crop without a cell.
        skipped: ``(path, reason)`` for files that could not be read.
    """

    crops: list[np.ndarray]
    backgrounds: np.ndarray
    labels: np.ndarray
    paths: list[str]
    groups: list[str]
    cells: list[str | None]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.crops)


def load_raw(samples: Sequence, progress: Callable[[int], None] | None = None) -> RawImages:
    """Read ``samples`` (``edge_iapp.data.dataset.Sample``); unreadable files are skipped.

    Args:
        samples: labelled image files.
        progress: called with the number of files done after each chunk.

    Returns:
        The :class:`RawImages` (skipped files listed in ``skipped``, as in ``prepare``).
    """
    from ..data.imread import ImageReadError, read_image

    crops, backgrounds, labels, paths, groups, cells = [], [], [], [], [], []
    skipped: list[tuple[str, str]] = []
    for k, s in enumerate(samples):
        try:
            image = read_image(s.path)
        except ImageReadError as exc:
            skipped.append((str(s.path), exc.reason))
        else:
            crops.append(image.pixels)
            backgrounds.append(image.polarity.background)
            labels.append(s.label)
            paths.append(str(s.path))
            groups.append(str(s.group))
            cells.append(cell_key(s))
        if progress and ((k + 1) % CHUNK == 0 or k + 1 == len(samples)):
            progress((k % CHUNK) + 1)
    return RawImages(
        crops=crops,
        backgrounds=np.asarray(backgrounds, np.int32),
        labels=np.asarray(labels, np.int64),
        paths=paths,
        groups=groups,
        cells=cells,
        skipped=skipped,
    )


def canvases(crops: Sequence[np.ndarray], backgrounds: Sequence[int], cfg: PreprocessConfig):
    """Global canvas and object zoom of crops already sized: ``(GlobalBatch, ObjectBatch)``."""
    g = global_canvas(list(crops), [int(b) for b in backgrounds], cfg)
    return g, object_zoom(g.images, cfg)


def prepare_raw(
    raw: RawImages, cfg: PreprocessConfig, progress: Callable[[int], None] | None = None
) -> PreparedImages:
    """:class:`PreparedImages` from already read crops (no second reading of the files).

    The size reference sees all crops at once (whole cells); the canvases are made in
    chunks of :data:`~edge_iapp.train.data.CHUNK`.
    """
    sized = rescale_to_reference(raw.crops, list(raw.backgrounds), raw.cells, cfg).crops
    parts = []
    for start in range(0, len(raw), CHUNK):
        parts.append(
            canvases(sized[start : start + CHUNK], raw.backgrounds[start : start + CHUNK], cfg)
        )
        if progress:
            progress(len(parts[-1][0].images))
    s = cfg.input_size

    def cat(arrays: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
        return np.concatenate(arrays) if arrays else empty

    return PreparedImages(
        global_images=cat([g.images for g, _ in parts], np.zeros((0, s, s), np.uint8)),
        object_images=cat([o.images for _, o in parts], np.zeros((0, s, s), np.uint8)),
        labels=raw.labels.copy(),
        paths=list(raw.paths),
        groups=list(raw.groups),
        object_fallback=cat([o.fallback for _, o in parts], np.zeros(0, bool)),
        shrunk=cat([g.shrunk for g, _ in parts], np.zeros(0, bool)),
        skipped=list(raw.skipped),
    )


def median_chromosome_length(raw: RawImages, cfg: PreprocessConfig) -> float:
    """Median ``chromosome_length`` (source px) over already read crops; 0.0 when none.

    Used as ``PreprocessConfig.reference_length`` of a cell-size run (the fall-back
    for crops without a usable cell).
    """
    from ..preprocess import chromosome_length

    lengths = [
        length
        for crop, background in zip(raw.crops, raw.backgrounds, strict=True)
        if (length := chromosome_length(crop, int(background), cfg)) > 0
    ]
    return float(np.median(lengths)) if lengths else 0.0


def prepare(
    samples: Sequence,
    cfg: PreprocessConfig,
    progress: Callable[[int], None] | None = None,
    cache_dir: str | Path | None = None,
    raw: RawImages | None = None,
) -> PreparedImages:
    """Read and preprocess ``samples`` (``edge_iapp.data.dataset.Sample``) once.

    Unreadable files are skipped and listed in ``skipped`` (a batch never stops at
    the first bad file). In ``cfg.size_mode == "cell"`` each crop is first rescaled by
    its cell's median chromosome length (``rescale_to_reference``, cells from
    ``Sample.cell``); the outputs keep the order of ``samples``.

    Args:
        samples: labelled image files.
        cfg: preprocessing parameters (canvas, input size, thresholds).
        progress: called with the number of images done after each chunk.
        cache_dir: optional folder for an ``.npz`` of the result, keyed by the sample
            list and ``cfg`` (so a baseline and an IAPP run on the same split share it).
        raw: the same samples already read (:func:`load_raw`), to avoid reading twice.

    Returns:
        The :class:`PreparedImages`.
    """
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"prepared_{_cache_key(samples, cfg)}.npz"
        loaded = _load_cache(cache_file) if cache_file.is_file() else None
        if loaded is not None:
            if progress:
                progress(len(samples))
            return loaded
    if raw is None:
        raw = load_raw(samples)
    out = prepare_raw(raw, cfg, progress)
    if progress and raw.skipped:
        progress(len(raw.skipped))
    if cache_file is not None:
        _save_cache(cache_file, out)
    return out


def _save_cache(path: Path, data: PreparedImages) -> None:
    from ..ioutil import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                global_images=data.global_images,
                object_images=data.object_images,
                labels=data.labels,
                object_fallback=data.object_fallback,
                shrunk=data.shrunk,
                paths=np.asarray(data.paths, dtype=str),
                groups=np.asarray(data.groups, dtype=str),
                skipped=np.asarray([f"{p}\t{r}" for p, r in data.skipped], dtype=str),
            )

    atomic_write(path, write)


def _load_cache(path: Path) -> PreparedImages | None:
    """The cached images, or None when the file is damaged (cut short, not an ``.npz``):
    the caller prepares the images again and rewrites it."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            skipped = [tuple(line.split("\t", 1)) for line in z["skipped"].tolist()]
            return PreparedImages(
                global_images=z["global_images"],
                object_images=z["object_images"],
                labels=z["labels"],
                paths=z["paths"].tolist(),
                groups=z["groups"].tolist(),
                object_fallback=z["object_fallback"],
                shrunk=z["shrunk"],
                skipped=skipped,  # type: ignore[arg-type]
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def balanced_indices(labels: Sequence[int], max_per_class: int, seed: int = 0) -> list[int]:
    """Indices of at most ``max_per_class`` items of each label, drawn at random
    (reproducibly), in increasing order."""
    counts: dict[int, int] = {}
    keep = []
    for i in np.random.default_rng(seed).permutation(len(labels)):
        c = int(labels[int(i)])
        if counts.get(c, 0) < max_per_class:
            counts[c] = counts.get(c, 0) + 1
            keep.append(int(i))
    return sorted(keep)


def balanced_subset(
    samples: Sequence,
    max_per_class: int,
    seed: int = 0,
    preprocess: PreprocessConfig | None = None,
) -> list:
    """At most ``max_per_class`` samples of each class, drawn at random (reproducibly).

    Picks whole groups' worth at random order but keeps the split's groups intact (it
    only drops samples, never moves them between subsets).

    In the cell-relative size mode (``preprocess.size_mode == "cell"``: a crop is scaled
    by its cell's median length) whole cells are taken instead, as many as
    ``max_per_class`` times the number of classes allows (:func:`pick_whole_cells`; the
    same number of images, classes in their natural shares): a pick of single crops
    would leave most cells with too few crops to measure, and those crops would
    silently get the fall-back scale.
    """
    if preprocess is not None and preprocess.size_mode == "cell":
        n_classes = len({int(s.label) for s in samples})
        chosen = pick_whole_cells(samples, max_per_class * n_classes, seed)
    else:
        chosen = [
            samples[i] for i in balanced_indices([s.label for s in samples], max_per_class, seed)
        ]
    return sorted(chosen, key=lambda s: str(s.path))


def pick_whole_cells(samples: Sequence, max_images: int, seed: int = 0) -> list:
    """Whole cells, in a seeded random order, while they add up to at most ``max_images``.

    For subsets that are preprocessed on their own in the cell-relative size mode: a
    crop is scaled by its cell's median length, so a cell must come whole (a class-
    balanced pick of single crops leaves most cells with too few crops to measure, and
    they silently get the fall-back scale). Classes keep their natural shares (two of
    each autosome per cell, one Y per male cell). At least one cell is taken.
    """
    by_cell: dict[str, list] = {}
    for s in samples:
        by_cell.setdefault(str(cell_key(s)), []).append(s)
    keys = sorted(by_cell)
    chosen: list = []
    for i in np.random.default_rng(seed).permutation(len(keys)):
        cell = by_cell[keys[int(i)]]
        if chosen and len(chosen) + len(cell) > max_images:
            break
        chosen.extend(cell)
    return chosen


def class_presence(labels: Sequence[int]) -> tuple[list[str], list[str]]:
    """``(present, missing)`` class names for a list of label indices."""
    seen = set(int(x) for x in labels)
    present = [c for i, c in enumerate(CLASS_NAMES) if i in seen]
    missing = [c for i, c in enumerate(CLASS_NAMES) if i not in seen]
    return present, missing


class ChromosomeDataset:
    """A torch ``Dataset`` over :class:`PreparedImages` with consistent horizontal flips.

    ``__getitems__`` (used by ``DataLoader`` for whole batches) returns one batch::

        {"global": (B, 1, S, S) float32, "object": (B, 1, S, S) float32,
         "label": (B,) int64, "index": (B,) int64}

    The flip, when drawn (probability ``hflip``), mirrors the global and the object
    image of a sample together: mirroring the crop before the (symmetric) canvas and
    zoom gives the same arrays, so the pair stays consistent, and the part image is
    then drawn from the mirrored object image.
    """

    def __init__(self, data: PreparedImages, hflip: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip must be a probability in [0, 1], got {hflip}")
        self.data = data
        self.hflip = hflip
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        batch = self.__getitems__([index])
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, indices: Sequence[int]) -> dict:
        import torch

        idx = np.asarray(indices, dtype=np.int64)
        g = self.data.global_images[idx]
        o = self.data.object_images[idx]
        if self.hflip > 0:
            flip = self.rng.random(idx.size) < self.hflip
            g = np.where(flip[:, None, None], g[:, :, ::-1], g)
            o = np.where(flip[:, None, None], o[:, :, ::-1], o)
        return {
            "global": torch.from_numpy(np.ascontiguousarray(g)).unsqueeze(1).float().div_(255.0),
            "object": torch.from_numpy(np.ascontiguousarray(o)).unsqueeze(1).float().div_(255.0),
            "label": torch.from_numpy(self.data.labels[idx]),
            "index": torch.from_numpy(idx),
        }


def batches(
    dataset: ChromosomeDataset,
    batch_size: int,
    shuffle: bool,
    rng: np.random.Generator | None = None,
    drop_last: bool = False,
):
    """Yield batches (dicts as in :class:`ChromosomeDataset`) without worker processes.

    The arrays are in memory, so a plain loop is as fast as a ``DataLoader`` and keeps
    the random stream reproducible across ``--resume``.
    """
    n = len(dataset)
    order = (rng or np.random.default_rng()).permutation(n) if shuffle else np.arange(n)
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield dataset.__getitems__(order[start : start + batch_size])
