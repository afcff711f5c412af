"""``export_bundle``: a training run -> a verified model bundle (what ``edge-iapp export`` runs).

Steps: load the run -> export the three FP32 graphs -> choose the calibration set
(training split only) and make every branch's inputs -> FP16 and INT8 graphs ->
parity against PyTorch on held-out images (the split's ``val`` part) -> manifest.
The bundle is built in a temporary sibling folder and moved into place at the end,
so a failed export never leaves a half bundle. Imports torch, onnx, onnxruntime.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..ioutil import process_umask
from .bundle import (
    BRANCHES,
    CALIBRATION_FILE,
    DEFAULT_REVIEW,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PRECISIONS,
    branch_file_name,
    load_bundle,
    sha256_file,
)
from .onnx_export import (
    DEFAULT_OPSET,
    ExportError,
    export_branch,
    graph_io,
    resolve_simplifier,
)


def export_bundle(
    run_dir: str | Path,
    out: str | Path,
    precisions: Sequence[str] = ("fp32",),
    *,
    calib_data: str | Path | None = None,
    calib_split: str | Path | None = None,
    calib_size: int = 256,
    calib_method: str = "max",
    calib_seed: int = 0,
    calib_manifest: str | Path | None = None,
    parity_size: int = 64,
    opset: int = DEFAULT_OPSET,
    exporter: str = "legacy",
    simplifier: str = "auto",
    review: dict | None = None,
    checkpoint: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
):
    """Export a run to a bundle folder.

    Args:
        run_dir: training run folder (``config.json``, ``last.pt``).
        out: bundle folder to create.
        precisions: any of ``"fp32"``, ``"fp16"``, ``"int8"`` (fp32 is always included:
            it is the parity and calibration reference).
        calib_data: labelled image folder for calibration and parity (needed for int8).
        calib_split: split file; default ``RUN/split.json``. Calibration uses its
            ``train`` part only, parity its ``val`` part.
        calib_size: calibration images.
        calib_method: ``"max"``, ``"entropy"`` or ``"percentile"``.
        calib_seed: seed of the selection order.
        calib_manifest: reuse this manifest when it exists (hashes checked), else
            write the new selection there (e.g. ``calibration/gband612.json``).
        parity_size: held-out images for parity.
        opset, exporter: see :func:`~edge_iapp.export.onnx_export.export_branch`.
        simplifier: ``"auto"`` (onnxsim, else onnxscript's optimizer, said in the log),
            ``"onnxsim"`` or ``"onnxscript"``; the manifest records which one ran.
        review: review-flag thresholds for the manifest (default
            :data:`~edge_iapp.export.bundle.DEFAULT_REVIEW`).
        checkpoint: default ``RUN/last.pt``.
        force: replace an existing bundle folder.
        log: progress messages.

    Returns:
        The loaded, verified :class:`~edge_iapp.export.bundle.Bundle`.

    Raises:
        ExportError, CalibrationError, QuantizationError: with a message that says why.
    """
    from .calibration import CalibrationError

    precisions = _normalise_precisions(precisions)
    out = Path(out)
    if out.exists():
        _check_replaceable(out, force)
    if "int8" in precisions and calib_data is None:
        raise CalibrationError(
            "INT8 needs calibration images: pass --calib-data (and --calib-split)"
        )
    if "int8" in precisions:
        from .quantize import check_method_available

        check_method_available(calib_method)
    # the calibration folder, split and manifest are checked before any graph is exported
    calib_plan = _check_calibration_inputs(
        calib_data, calib_split, calib_manifest, run_dir, calib_size, calib_seed
    )
    simplifier = resolve_simplifier(simplifier)
    if simplifier != "onnxsim":
        log(f"simplifying with {simplifier} (onnxsim is not installed or not chosen)")
    model, cfg, ckpt = _load_run(run_dir, checkpoint)
    s = cfg.preprocess.input_size
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    # mkdtemp makes it 0700; a bundle is read by other users (a service, install.sh's user)
    os.chmod(tmp, 0o777 & ~process_umask())
    try:
        manifest = _build(model, cfg, ckpt, Path(run_dir), tmp, precisions, s, locals(), log)
        from ..ioutil import atomic_write_text

        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        load_bundle(tmp)  # verify before moving into place
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"bundle written to {out}")
    return load_bundle(out)


def _check_replaceable(out: Path, force: bool) -> None:
    """Refuse to replace ``out`` unless it is an earlier bundle (or an empty folder) and
    ``force`` is set: ``--force`` must never delete a training run, a data folder or
    any other folder that was given as ``--out`` by mistake."""
    if out.is_dir() and not any(out.iterdir()):
        kind = None  # an empty folder: nothing to lose
    elif out.is_dir() and (out / MANIFEST).is_file():
        try:
            found = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            found = {"format": FORMAT}  # a damaged bundle may be replaced
        kind = None if isinstance(found, dict) and found.get("format") == FORMAT else "folder"
    else:
        kind = "folder" if out.is_dir() else "file"
    if kind is not None:
        raise ExportError(
            f"{out} already exists and is a {kind} that is not a model bundle (no edge-iapp "
            f"{MANIFEST}); --force replaces only an earlier bundle: choose a new --out folder"
        )
    if not force:
        raise ExportError(f"{out} already exists; pass --force to replace it")


def _normalise_precisions(precisions: Sequence[str]) -> list[str]:
    wanted = []
    for p in precisions:
        for q in str(p).split(","):
            q = q.strip().lower()
            if not q:
                continue
            if q not in PRECISIONS:
                raise ExportError(f"unknown precision {q!r}; choose from {', '.join(PRECISIONS)}")
            if q not in wanted:
                wanted.append(q)
    return ["fp32"] + [p for p in ("fp16", "int8") if p in wanted]


def _load_run(run_dir, checkpoint):
    from ..train.run import LAST_CHECKPOINT, load_model

    run_dir = Path(run_dir)
    ckpt = Path(checkpoint) if checkpoint else run_dir / LAST_CHECKPOINT
    try:
        model, cfg = load_model(run_dir, ckpt)
    except FileNotFoundError as exc:
        raise ExportError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - corrupted or foreign checkpoint
        raise ExportError(
            f"cannot load the model of {run_dir} from {ckpt.name}: the checkpoint is corrupted "
            f"or does not match config.json ({type(exc).__name__}: {str(exc)[:300]})"
        ) from None
    if tuple(cfg.branches) != ("global", "object", "part"):
        # A single-branch baseline run saves all three branches but trains only some:
        # exporting it would ship untrained branches into the fused vote.
        raise ExportError(
            f"{run_dir} trained only the {', '.join(cfg.branches)} branch(es) (a baseline run); "
            "a bundle needs all three: train with --branches global,object,part"
        )
    return model, cfg, ckpt


def _move_into_place(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _run(sess, x: np.ndarray, batch: int = 32) -> list[np.ndarray]:
    outs = [sess.run(None, {"input": x[i : i + batch]}) for i in range(0, len(x), batch)]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def _build(
    model, cfg, ckpt: Path, run_dir: Path, tmp: Path, precisions, s: int, args: dict, log
) -> dict:
    import torch

    from ..preprocess import network_input, part_zoom

    files: dict[str, dict] = {b: {} for b in BRANCHES}
    io: dict[str, dict] = {}
    for branch in BRANCHES:
        path = tmp / branch_file_name(branch, "fp32")
        log(f"exporting {branch} branch (fp32, opset {args['opset']})")
        export_branch(
            model,
            branch,
            s,
            path,
            opset=args["opset"],
            exporter=args["exporter"],
            simplifier=args["simplifier"],
        )
        io[branch] = graph_io(path)

    fp32 = {b: _session(tmp / branch_file_name(b, "fp32")) for b in BRANCHES}

    def run_object(x):
        return tuple(_run(fp32["object"], x))

    calibration, calib_inputs, parity_front = _calibration(args, cfg, run_object, tmp, log)

    if "fp16" in precisions:
        from .fp16 import convert_fp16

        for branch in BRANCHES:
            log(f"converting {branch} branch to fp16")
            convert_fp16(
                tmp / branch_file_name(branch, "fp32"), tmp / branch_file_name(branch, "fp16")
            )
    if "int8" in precisions:
        from .quantize import quantize_int8

        calibration["per_branch"] = {}
        for branch in BRANCHES:
            log(
                f"quantizing {branch} branch to int8 ({args['calib_method']}, "
                f"{len(calib_inputs[branch])} images)"
            )
            info = quantize_int8(
                tmp / branch_file_name(branch, "fp32"),
                tmp / branch_file_name(branch, "int8"),
                calib_inputs[branch],
                method=args["calib_method"],
            )
            calibration["per_branch"][branch] = {
                k: v for k, v in info.items() if k != "excluded_nodes"
            }
            calibration["per_branch"][branch]["fp32_nodes_after_backbone"] = len(
                info["excluded_nodes"]
            )

    # Parity: PyTorch vs every graph, on held-out images (or random inputs without data).
    log("measuring parity against PyTorch")
    front = parity_front
    if front is not None:
        gx, ox = network_input(front.global_images), network_input(front.object_images)
        parity_source = f"{len(gx)} held-out images ({args.get('_parity_part', 'val')} part)"
    else:
        rng = np.random.default_rng(0)
        gx = rng.random((16, 1, s, s), dtype=np.float32)
        ox = rng.random((16, 1, s, s), dtype=np.float32)
        parity_source = "16 random inputs (no --calib-data given)"
    with torch.inference_mode():
        ref_g = model.global_branch(torch.from_numpy(gx)).numpy()
        ref_o, ref_maps = (t.numpy() for t in model.object_branch(torch.from_numpy(ox)))
    pcfg = cfg.preprocess
    if front is not None:
        obj_u8 = front.object_images
    else:
        obj_u8 = np.clip(np.floor(ox[:, 0] * 255 + 0.5), 0, 255).astype(np.uint8)
    px = network_input(part_zoom(obj_u8, ref_maps, pcfg).images)
    with torch.inference_mode():
        ref_p = model.part_branch(torch.from_numpy(px)).numpy()
    from .parity import fused_top1, logits_parity, part_maps_parity

    ref_top1 = fused_top1({"global": ref_g, "object": ref_o, "part": ref_p}, cfg.fusion)
    parity: dict = {"inputs": parity_source}
    for precision in precisions:
        sessions = {b: _session(tmp / branch_file_name(b, precision)) for b in BRANCHES}
        g = _run(sessions["global"], gx)[0]
        o, maps = _run(sessions["object"], ox)
        p_same = _run(sessions["part"], px)[0]
        own_px = network_input(part_zoom(obj_u8, maps, pcfg).images)
        p_own = _run(sessions["part"], own_px)[0]
        top1 = fused_top1({"global": g, "object": o, "part": p_own}, cfg.fusion)
        parity[precision] = {
            "global": logits_parity(ref_g, g),
            "object": {**logits_parity(ref_o, o), **part_maps_parity(ref_maps, maps)},
            "part": logits_parity(ref_p, p_same),
            "pipeline": {
                "images": int(len(top1)),
                "fused_top1_agreement": float((top1 == ref_top1).mean()),
            },
        }
        log(
            f"  {precision}: "
            + ", ".join(
                f"{b} max|dlogit| {parity[precision][b]['max_abs_logit_diff']:.4f} "
                f"top1 {parity[precision][b]['top1_agreement']:.3f}"
                for b in BRANCHES
            )
            + f", pipeline top1 {parity[precision]['pipeline']['fused_top1_agreement']:.3f}"
        )

    for branch in BRANCHES:
        for precision in precisions:
            f = tmp / branch_file_name(branch, precision)
            files[branch][precision] = {
                "path": f.name,
                "sha256": sha256_file(f),
                "bytes": f.stat().st_size,
            }
    branches = {
        b: {
            "input": {"name": "input", **io[b]["inputs"]["input"]},
            "outputs": {name: spec for name, spec in io[b]["outputs"].items()},
        }
        for b in BRANCHES
    }
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    from ..classes import CLASS_NAMES

    asked = args.get("review") or {}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "classes": list(CLASS_NAMES[: cfg.num_classes]),
        "backbone": cfg.backbone,
        "preprocess": cfg.preprocess.to_dict(),
        "fusion": cfg.fusion,
        "branches": branches,
        "precisions": list(precisions),
        "files": files,
        "calibration": calibration or None,
        "parity": parity,
        "review": {
            **DEFAULT_REVIEW,
            **_ood_review(run_dir, ckpt, log),
            # --min-confidence over the T that finetune placed, over the default
            **({} if "min_confidence" in asked else _placed(run_dir, ckpt, log)),
            **asked,
        },
        "source": {
            "run": str(run_dir.resolve()),
            "checkpoint": ckpt.name,
            "checkpoint_sha256": sha256_file(ckpt),
            "epoch": state.get("epoch") if isinstance(state, dict) else None,
            # how the run came to be, when not trained from scratch (the score CLI's advice)
            **{k: cfg.extra[k] for k in ("adapted", "finetune") if cfg.extra.get(k)},
        },
        "export": {
            "opset": args["opset"],
            "exporter": args["exporter"],
            "simplifier": args["simplifier"],
            "dynamic_batch": True,
        },
        "libraries": _versions(),
    }


def _ood_review(run_dir: Path, ckpt: Path, log) -> dict:
    """``{"ood": RUN/ood.json}`` when it was calibrated for ``ckpt``; else ``{}`` (said)."""
    from ..train.ood_run import load_run_ood

    record, note = load_run_ood(run_dir, ckpt)
    log(f"review: {note}" if record else f"review: no OOD flag in this bundle ({note})")
    return {"ood": record} if record else {}


def _placed(run_dir: Path, ckpt: Path, log) -> dict:
    """``min_confidence`` (and where it came from) when ``RUN/review.json`` placed one for
    ``ckpt`` (``finetune`` writes it); else ``{}``, the default T (said)."""
    from ..train.review_run import REVIEW_FILE, load_run_review

    record, note = load_run_review(run_dir, ckpt)
    if record is None:
        if (run_dir / REVIEW_FILE).exists():
            log(f"review: the default confidence threshold ({note})")
        return {}
    log(f"review: confidence threshold {note}")
    source = {k: record[k] for k in ("chosen", "target", "rule")}
    return {
        "min_confidence": float(record["min_confidence"]),
        "min_confidence_source": {**source, "file": REVIEW_FILE, **record["source"]},
    }


def _check_calibration_inputs(
    calib_data, calib_split, calib_manifest, run_dir, calib_size=256, calib_seed=0
) -> dict | None:
    """The cheap checks of the calibration inputs, made before any graph is exported.

    The folder exists and is a folder, the split file (``--calib-split``, else
    ``RUN/split.json``) loads, the folder holds labelled images (file headers only) and
    some of them are in the split's ``train`` part; a ``--calib-manifest`` that exists is
    a readable manifest whose images are in the train part with the recorded hashes,
    else the calibration set is chosen now (every class present, ``calib_size`` not more
    than the training part has). None without ``calib_data``.

    Returns:
        ``{"root", "split_path", "parts", "chosen_paths", "manifest", "chosen"}`` for
        :func:`_calibration`: a reused manifest (``chosen`` None) or the chosen samples
        (``manifest`` None).

    Raises:
        CalibrationError: what was expected, what was found, what to do.
    """
    from ..data import SplitError, apply_split, load_split, scan_for_split
    from ..data.dataset import no_images_reason
    from .calibration import CalibrationError, check_part_present, read_manifest, select_samples

    if calib_data is None:
        named = (("--calib-split", calib_split), ("--calib-manifest", calib_manifest))
        given = [flag for flag, value in named if value is not None]
        if given:
            raise CalibrationError(
                f"{' and '.join(given)} given without --calib-data: they choose calibration "
                "and parity images from the --calib-data folder; pass --calib-data DIR too, "
                "or leave them out"
            )
        return None
    root = Path(calib_data)
    if not root.is_dir():
        found = "is a file" if root.exists() else "does not exist"
        raise CalibrationError(
            f"--calib-data {root} {found}: expected a folder of class folders (1..22, X, Y) "
            "with the training lab's labelled images"
        )
    split_path = Path(calib_split) if calib_split is not None else Path(run_dir) / "split.json"
    if not split_path.is_file():
        found = "is a folder" if split_path.is_dir() else "not found"
        raise CalibrationError(
            f"no split file: pass --calib-split (calibration must come from the training split; "
            f"{split_path} {found})"
        )
    try:
        split = load_split(split_path)
    except SplitError as exc:
        raise CalibrationError(
            f"--calib-split: {exc}; pass the split file the run was trained with"
        ) from None
    scan = scan_for_split(root, split)
    if not scan.samples:
        raise CalibrationError(f"--calib-data: {no_images_reason(scan)}")
    parts = apply_split(scan.samples, split, allow_missing=True)
    check_part_present(parts, split, "train", scan.samples, root, split_path)
    plan = {"root": root, "split_path": split_path, "parts": parts}
    reuse = None if calib_manifest is None else Path(calib_manifest)
    if reuse is not None and reuse.is_dir():
        raise CalibrationError(
            f"--calib-manifest {reuse} is a folder: expected a manifest file to reuse, "
            "or the path of a new one (e.g. calibration/gband612-n256-seed0.json)"
        )
    if reuse is not None and reuse.is_file():
        # read_manifest names the file and checks the format, the files and their hashes
        listed = [p for p, _ in read_manifest(reuse, root)]
        train_paths = {Path(s.path).resolve() for s in parts["train"]}
        leaked = [p for p in listed if p.resolve() not in train_paths]
        if leaked:
            raise CalibrationError(
                f"{len(leaked)} calibration image(s) in {reuse} are not in the training "
                f"split (e.g. {leaked[0].name})"
            )
        manifest = json.loads(reuse.read_text(encoding="utf-8"))
        return {**plan, "chosen_paths": listed, "manifest": manifest, "chosen": None}
    # names only: the sizes and classes are checked now, the images read later
    chosen = select_samples(parts["train"], int(calib_size), int(calib_seed))
    paths = [Path(s.path) for s in chosen]
    return {**plan, "chosen_paths": paths, "manifest": None, "chosen": chosen}


def _calibration(args: dict, cfg, run_object, tmp: Path, log):
    """Choose/reuse the calibration set; return (record, per-branch inputs, the parity
    images' front or None). In cell size mode each image is sized by its whole cell."""
    from ..backends.base import whole_cell_front
    from ..data import ImageReadError, read_image
    from .calibration import (
        CalibrationError,
        branch_inputs,
        build_manifest,
        select_samples,
        with_cells,
        write_manifest,
    )

    plan = args["calib_plan"]  # _check_calibration_inputs, before any graph was exported
    if plan is None:
        return {}, {}, None
    root, split_path, parts = plan["root"], plan["split_path"], plan["parts"]
    chosen_paths, manifest = plan["chosen_paths"], plan["manifest"]
    if manifest is not None:
        log(f"reusing calibration manifest {args['calib_manifest']}")
    else:
        manifest = build_manifest(
            plan["chosen"], root, int(args["calib_size"]), int(args["calib_seed"]), split_path
        )
        if args["calib_manifest"] is not None:
            write_manifest(manifest, args["calib_manifest"])
            log(f"calibration manifest written to {args['calib_manifest']}")
    write_manifest(manifest, tmp / CALIBRATION_FILE)

    def read_all(paths, part):
        """``(images, keep)`` of ``paths``, with the rest of their cells in cell mode."""
        files, cells, keep = with_cells(paths, part, cfg.preprocess)
        images, kept = [], []
        for p, cell, chosen in zip(files, cells, keep, strict=True):
            try:
                images.append(read_image(p, cell=cell))
                kept.append(chosen)
            except ImageReadError as exc:
                if chosen:
                    raise CalibrationError(f"calibration image unreadable: {exc}") from None
                # an unreadable cell-mate only leaves the cell's median to the others
        return images, kept

    log(
        f"calibration: {len(chosen_paths)} training images, {manifest['classes']} classes, "
        f"{manifest['groups']} groups"
    )
    images, keep = read_all(chosen_paths, parts["train"])
    inputs = branch_inputs(images, cfg.preprocess, run_object, keep=keep)
    held_out = parts["val"]
    args["_parity_part"] = "val"
    if not held_out:
        taken = {p.resolve() for p in chosen_paths}
        held_out = [s for s in parts["train"] if Path(s.path).resolve() not in taken]
        args["_parity_part"] = "train, not in the calibration set"
    parity_front = None
    if held_out:
        size = min(int(args["parity_size"]), len(held_out))
        picked = (
            select_samples(held_out, size, 1, require_all_classes=False)
            if size >= len({s.class_name for s in held_out})
            else list(held_out)[:size]
        )
        images, keep = read_all([Path(s.path) for s in picked], held_out)
        parity_front = whole_cell_front(images, keep, cfg.preprocess)
    record = {
        "manifest": CALIBRATION_FILE,
        "sha256": sha256_file(tmp / CALIBRATION_FILE),
        "method": args["calib_method"],
        "size": manifest["size"],
        "seed": manifest["seed"],
        "data_root": manifest["data_root"],
    }
    return record, inputs, parity_front


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in (
        "edge-iapp",
        "torch",
        "onnx",
        "onnxruntime",
        "onnxsim",
        "onnxscript",
        "onnxconverter-common",
        "numpy",
        "opencv-python-headless",
    ):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out
