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


def cell_key(sample) -> str | None:
    """The cell of a sample as one string (``group/cell``), None when it has none."""
    cell = getattr(sample, "cell", None)
    return None if cell is None else f"{getattr(sample, 'group', '')}/{cell}"


def _chunks(samples: Sequence, cfg: PreprocessConfig) -> list[list[int]]:
    """Sample indices per preprocessing call: ``CHUNK`` at a time; whole cells in cell mode."""
    n = len(samples)
    if cfg.size_mode != "cell":
        return [list(range(i, min(i + CHUNK, n))) for i in range(0, n, CHUNK)]
    units: dict[object, list[int]] = {}
    for i, s in enumerate(samples):
        key = cell_key(s)
        units.setdefault(key if key is not None else ("no cell", i), []).append(i)
    chunks: list[list[int]] = []
    for unit in units.values():
        if chunks and len(chunks[-1]) < CHUNK:
            chunks[-1].extend(unit)
        else:
            chunks.append(list(unit))
    return chunks


def median_chromosome_length(
    samples: Sequence, cfg: PreprocessConfig, progress: Callable[[int], None] | None = None
) -> float:
    """Median ``chromosome_length`` (source px) over readable samples; 0.0 when none.

    Used as ``PreprocessConfig.reference_length`` of a cell-size run (the fall-back
    for crops without a usable cell). Unreadable files are left out.
    """
    from ..data.imread import ImageReadError, read_image
    from ..preprocess import chromosome_length

    lengths = []
    for k, s in enumerate(samples):
        try:
            image = read_image(s.path)
        except ImageReadError:
            continue
        length = chromosome_length(image.pixels, image.polarity.background, cfg)
        if length > 0:
            lengths.append(length)
        if progress and (k + 1) % CHUNK == 0:
            progress(CHUNK)
    if progress and len(samples) % CHUNK:
        progress(len(samples) % CHUNK)
    return float(np.median(lengths)) if lengths else 0.0


def prepare(
    samples: Sequence,
    cfg: PreprocessConfig,
    progress: Callable[[int], None] | None = None,
    cache_dir: str | Path | None = None,
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

    Returns:
        The :class:`PreparedImages`.
    """
    from ..data.imread import ImageReadError, read_image

    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"prepared_{_cache_key(samples, cfg)}.npz"
        if cache_file.is_file():
            loaded = _load_cache(cache_file)
            if progress:
                progress(len(samples))
            return loaded
    out = _empty(cfg.input_size)
    globals_, objects, labels, fallback, shrunk = [], [], [], [], []
    order: list[int] = []  # sample index of every kept image, in processing order
    for indices in _chunks(samples, cfg):
        chunk = [samples[i] for i in indices]
        crops, backgrounds, kept = [], [], []
        for i, s in zip(indices, chunk, strict=True):
            try:
                image = read_image(s.path)
            except ImageReadError as exc:
                out.skipped.append((str(s.path), exc.reason))
                continue
            crops.append(image.pixels)
            backgrounds.append(image.polarity.background)
            kept.append(s)
            order.append(i)
        if kept:
            size = rescale_to_reference(crops, backgrounds, [cell_key(s) for s in kept], cfg)
            g = global_canvas(size.crops, backgrounds, cfg)
            o = object_zoom(g.images, cfg)
            globals_.append(g.images)
            objects.append(o.images)
            fallback.append(o.fallback)
            shrunk.append(g.shrunk)
            labels.extend(s.label for s in kept)
            out.paths.extend(str(s.path) for s in kept)
            out.groups.extend(str(s.group) for s in kept)
        if progress:
            progress(len(chunk))
    if globals_:
        out.global_images = np.concatenate(globals_)
        out.object_images = np.concatenate(objects)
        out.object_fallback = np.concatenate(fallback)
        out.shrunk = np.concatenate(shrunk)
        out.labels = np.asarray(labels, np.int64)
        if cfg.size_mode == "cell":  # chunks were whole cells: back to the samples' order
            back = np.argsort(np.asarray(order), kind="stable")
            for name in ("global_images", "object_images", "object_fallback", "shrunk", "labels"):
                setattr(out, name, getattr(out, name)[back])
            out.paths = [out.paths[k] for k in back]
            out.groups = [out.groups[k] for k in back]
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


def _load_cache(path: Path) -> PreparedImages:
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


def balanced_subset(samples: Sequence, max_per_class: int, seed: int = 0) -> list:
    """At most ``max_per_class`` samples of each class, drawn at random (reproducibly).

    Picks whole groups' worth at random order but keeps the split's groups intact (it
    only drops samples, never moves them between subsets).
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(samples))
    counts: dict[int, int] = {}
    chosen = []
    for k in order:
        s = samples[int(k)]
        if counts.get(s.label, 0) < max_per_class:
            counts[s.label] = counts.get(s.label, 0) + 1
            chosen.append(s)
    return sorted(chosen, key=lambda s: str(s.path))


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
