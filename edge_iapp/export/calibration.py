"""The chromosome calibration set: which training images calibrate INT8, and their inputs.

Selection rule (deterministic for a given seed, independent of file-system order and of
where the data folder lies: the keys are file names and group IDs, never full paths):

1. Only the split's ``train`` part (never val/test: calibrating on them leaks).
2. Stratified by class: ``size // C`` images per class, the remainder to classes in a
   seeded order; a class with too few images gives its share to the others.
3. Spread over groups (cases/cells): inside a class, groups are visited round-robin
   in a seeded order (its own per class, so that small quotas still land on different
   groups), one image per group per round, images in a seeded order.

Every branch calibrates on its own inputs as the runtime makes them: global images,
object zooms, and part zooms drawn with the FP32 object branch's part maps.
No torch here.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..classes import CLASS_NAMES
from ..ioutil import sha256_file  # noqa: F401 - re-exported

MANIFEST_FORMAT = "edge-iapp-calibration"
MANIFEST_VERSION = 1
RULE = (
    "train split only; stratified by class (size // classes each, remainder in seeded "
    "order, shortfalls redistributed); inside a class, groups round-robin in seeded order, "
    "images in seeded order; order key = sha256(f'{seed}:{key}')"
)


class CalibrationError(ValueError):
    """The calibration data cannot give a sound calibration set (the message says why)."""


@dataclass(frozen=True)
class CalibrationImage:
    """One chosen image: path relative to the data root, class name, group, file sha256."""

    path: str
    class_name: str
    group: str
    sha256: str


def _key(seed: int, text: str) -> str:
    return hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()


def select_samples(
    samples: Sequence,
    size: int,
    seed: int = 0,
    classes: Sequence[str] = CLASS_NAMES,
    require_all_classes: bool = True,
) -> list:
    """Pick ``size`` samples by the rule in the module docstring.

    Args:
        samples: objects with ``.path``, ``.class_name`` and ``.group`` (``data.Sample``).
        size: how many to pick.
        seed: ordering seed.
        classes: the classes the model predicts.
        require_all_classes: a class without samples is an error (else it is skipped).

    Returns:
        The chosen samples, class by class in ``classes`` order.

    Raises:
        CalibrationError: no samples, fewer than ``size``, ``size`` smaller than the number
            of classes, or a class missing.
    """
    if not samples:
        raise CalibrationError("the calibration data has no images in the training split")
    by_class: dict[str, list] = {c: [] for c in classes}
    for s in samples:
        if s.class_name in by_class:
            by_class[s.class_name].append(s)
    missing = [c for c, v in by_class.items() if not v]
    if missing and require_all_classes:
        raise CalibrationError(
            f"the calibration data lacks class(es) {', '.join(missing)} in its training split; "
            "every class must be represented"
        )
    present = [c for c in classes if by_class[c]]
    if size < len(present):
        raise CalibrationError(
            f"calibration size {size} is smaller than the {len(present)} classes; "
            "use at least one per class"
        )
    total = sum(len(by_class[c]) for c in present)
    if total < size:
        raise CalibrationError(
            f"asked for {size} calibration images but the training split has only {total}: "
            f"ask for {total} or fewer (--calib-size)"
        )
    quota = _quotas({c: len(by_class[c]) for c in present}, size, seed)
    chosen: list = []
    for c in present:
        chosen.extend(_spread_over_groups(by_class[c], seed, c)[: quota[c]])
    return chosen


def _quotas(available: dict[str, int], size: int, seed: int) -> dict[str, int]:
    order = sorted(available, key=lambda c: _key(seed, f"class:{c}"))
    quota = {c: 0 for c in available}
    left = size
    while left > 0:
        open_classes = [c for c in order if quota[c] < available[c]]
        share = max(1, left // len(open_classes))
        for c in open_classes:
            if left == 0:
                break
            take = min(share, available[c] - quota[c], left)
            quota[c] += take
            left -= take
    return quota


def _spread_over_groups(items: Sequence, seed: int, class_name: str) -> list:
    groups: dict[str, list] = {}
    for s in items:
        groups.setdefault(str(s.group), []).append(s)
    queues = [
        # name, then group: a full path would make the choice depend on the data's location
        sorted(v, key=lambda s: _key(seed, f"file:{Path(s.path).name}:{s.group}"))
        for _, v in sorted(groups.items(), key=lambda kv: _key(seed, f"group:{class_name}:{kv[0]}"))
    ]
    out = []
    for rnd in range(max(len(q) for q in queues)):
        out.extend(q[rnd] for q in queues if rnd < len(q))
    return out


def build_manifest(
    chosen: Sequence,
    data_root: str | Path,
    size: int,
    seed: int,
    split_path: str | Path | None,
    part: str = "train",
) -> dict:
    """The calibration manifest: image list relative to the data root with sha256, and the rule.

    Paths are taken as the scan found them (absolute, links not followed): a data folder
    of symbolic links (a DVC cache, files linked from an archive) lists its own names,
    which :func:`read_manifest` finds again under the root.
    """
    root = Path(os.path.abspath(data_root))
    images = []
    for s in chosen:
        p = Path(os.path.abspath(s.path))
        try:
            rel = p.relative_to(root).as_posix()
        except ValueError:
            try:  # the root given through a link, the files by their real path
                rel = p.resolve().relative_to(root.resolve()).as_posix()
            except ValueError as exc:
                raise CalibrationError(f"{p} is not inside the data root {root}") from exc
        images.append(CalibrationImage(rel, s.class_name, str(s.group), sha256_file(p)).__dict__)
    per_class: dict[str, int] = {}
    for im in images:
        per_class[im["class_name"]] = per_class.get(im["class_name"], 0) + 1
    split_info = None
    if split_path is not None:
        split_info = {
            "file": Path(split_path).name,
            "sha256": sha256_file(split_path),
            "part": part,
        }
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "data_root": root.name,
        "split": split_info,
        "rule": RULE,
        "size": len(images),
        "requested_size": int(size),
        "seed": int(seed),
        "classes": len(per_class),
        "groups": len({im["group"] for im in images}),
        "per_class": per_class,
        "images": images,
    }


def write_manifest(manifest: dict, path: str | Path) -> Path:
    from ..ioutil import atomic_write_text

    return atomic_write_text(path, json.dumps(manifest, indent=1) + "\n")


def read_manifest(
    path: str | Path, data_root: str | Path, verify: bool = True
) -> list[tuple[Path, str]]:
    """Load a manifest and resolve its images under ``data_root``.

    Returns:
        ``[(absolute path, class name), ...]`` in manifest order.

    Raises:
        CalibrationError: not a calibration manifest, a listed file missing, or its
            sha256 differs (the data changed since the manifest was written).
    """
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"cannot read calibration manifest {path}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise CalibrationError(f"{path} is not an edge-iapp calibration manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise CalibrationError(
            f"{path}: manifest version {manifest.get('version')} is not {MANIFEST_VERSION}"
        )
    images = manifest.get("images")
    if not isinstance(images, list) or not all(
        isinstance(im, dict) and {"path", "class_name", "sha256"} <= im.keys() for im in images
    ):
        raise CalibrationError(
            f"{path}: 'images' must be a list of {{path, class_name, sha256}} entries; "
            "write a new manifest (pass a --calib-manifest path that does not exist yet)"
        )
    root = Path(data_root)
    out = []
    for im in images:
        p = root / im["path"]
        if not p.is_file():
            raise CalibrationError(
                f"calibration image {im['path']} listed in {path.name} is missing under {root}"
            )
        if verify and sha256_file(p) != im["sha256"]:
            raise CalibrationError(
                f"calibration image {im['path']} differs from {path.name} (sha256 mismatch)"
            )
        out.append((p, im["class_name"]))
    return out


def choose_from_folder(
    data_root: str | Path,
    split_path: str | Path,
    size: int,
    seed: int = 0,
    part: str = "train",
    require_all_classes: bool = True,
) -> dict:
    """Scan ``data_root``, keep the split's ``part``, select, and return the manifest."""
    from ..data import apply_split, load_split, scan_for_split
    from ..data.dataset import no_images_reason

    root = Path(data_root)
    if not root.is_dir():
        raise CalibrationError(f"calibration data folder {root} does not exist")
    split = load_split(split_path)
    scan = scan_for_split(root, split)
    if not scan.samples:
        raise CalibrationError(no_images_reason(scan))
    parts = apply_split(scan.samples, split, allow_missing=True)
    check_part_present(parts, split, part, scan.samples, root, split_path)
    chosen = select_samples(parts[part], size, seed, require_all_classes=require_all_classes)
    return build_manifest(chosen, root, size, seed, split_path, part)


def check_part_present(parts, split, part, samples, root, split_path) -> None:
    """Refuse a calibration folder none of whose images is in the split's ``part``.

    Raises:
        CalibrationError: saying which groups are missing.
    """
    from ..data.split import absent_groups

    if not parts[part]:
        raise CalibrationError(
            f"no image under {root} is in the {part} part of {split_path}: "
            f"{absent_groups(split, part, samples)}; calibrate on the training lab's folder "
            "with its training split"
        )


def branch_inputs(
    images: Sequence,
    cfg,
    run_object: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    batch_size: int = 32,
    keep: Sequence[bool] | None = None,
) -> dict[str, np.ndarray]:
    """Each branch's inputs for a list of images, as the runtime makes them.

    Args:
        images: ``ChromosomeImage`` objects (with their ``cell`` in cell size mode).
        cfg: :class:`~edge_iapp.preprocess.PreprocessConfig`.
        run_object: the FP32 object branch, ``(N, 1, S, S) -> (logits, part_maps)``.
        batch_size: images per object-branch call.
        keep: which images to return (default all); the others are the rest of their
            cells, read for the cell-relative size only
            (:func:`~edge_iapp.backends.base.whole_cell_front`).

    Returns:
        ``{"global", "object", "part"}`` -> ``(M, 1, S, S)`` float32 in [0, 1], M kept images.
    """
    from ..backends.base import whole_cell_front
    from ..preprocess import network_input, part_zoom

    front = whole_cell_front(images, [True] * len(images) if keep is None else keep, cfg)
    out: dict[str, list[np.ndarray]] = {"global": [], "object": [], "part": []}
    for i in range(0, len(front.object_images), batch_size):
        objects = front.object_images[i : i + batch_size]
        obj_x = network_input(objects)
        _, maps = run_object(obj_x)
        out["global"].append(network_input(front.global_images[i : i + batch_size]))
        out["object"].append(obj_x)
        out["part"].append(network_input(part_zoom(objects, maps, cfg).images))
    return {k: np.concatenate(v) for k, v in out.items()}


def with_cells(
    paths: Sequence[Path], part: Sequence, cfg
) -> tuple[list[Path], list[str | None], list[bool]]:
    """The files to read for ``paths`` (images of the split part ``part``), with cells.

    In cell size mode each image's size comes from its whole cell, so the other images
    of its cell in ``part`` are added (``keep`` False); in absolute mode only ``paths``.

    Returns:
        ``(files, cells, keep)``: ``paths`` first, in order, then the rest of their cells.
    """
    from ..data import cell_key

    by_path = {Path(s.path).resolve(): s for s in part}  # resolved once: parts are large
    chosen = [p.resolve() for p in paths]
    cells = [cell_key(by_path[p]) if p in by_path else None for p in chosen]
    files, keep = list(paths), [True] * len(paths)
    if cfg.size_mode == "cell":
        wanted, taken = set(cells) - {None}, set(chosen)
        rest = [(p, cell_key(s)) for p, s in by_path.items() if p not in taken]
        rest = [(p, c) for p, c in rest if c in wanted]
        files += [p for p, _ in rest]
        cells += [c for _, c in rest]
        keep += [False] * len(rest)
    return files, cells, keep
