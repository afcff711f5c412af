"""CLI commands ``train`` and ``evaluate`` (IAPP-CNN training and the paper's evaluation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..ioutil import sha256_file  # noqa: F401 - re-exported
from ..train.review_threshold import DEFAULT_TARGET
from .common import console, fail, refuse_file_output

PAPER_INPUT_SIZE = 224
"""The paper's input size (section 4.2); ``--input-size`` overrides it."""
BRANCHES = "global,object,part"
Opt = typer.Option


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device is visible to torch")
    if name not in ("cpu", "cuda"):
        fail(f"--device must be auto, cpu or cuda, got {name!r}")
    return name


def _set_threads(threads: int | None) -> None:
    """``--threads N``: torch's CPU threads (left out: torch's default)."""
    import torch

    if threads is None:
        return
    if threads < 1:
        fail(f"--threads must be at least 1, got {threads} (leave it out for torch's default)")
    torch.set_num_threads(threads)


def _at_least(minimum: int, **options: int | None) -> None:
    """Refuse a count option below ``minimum`` (None: left out); names like ``max_per_class``."""
    for name, value in options.items():
        if value is not None and value < minimum:
            fail(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")


def _prepare(samples, cfg, label: str, cache: Path | None, raw=None):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..train.data import prepare

    with Progress(
        TextColumn(f"preprocessing {label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(label, total=len(samples))
        data = prepare(
            samples, cfg, progress=lambda n: bar.advance(task, n), cache_dir=cache, raw=raw
        )
    for path, reason in data.skipped[:10]:
        console.print(f"[yellow]skipped[/] {path}: {reason}")
    if len(data.skipped) > 10:
        console.print(f"[yellow]... and {len(data.skipped) - 10} more unreadable files skipped[/]")
    console.print(
        f"{label}: {len(data)} images preprocessed ({len(data.skipped)} unreadable skipped, "
        f"{int(data.object_fallback.sum())} object-mask fall-backs, "
        f"{int(data.shrunk.sum())} shrunk)"
    )
    return data


def _with_reference_length(pcfg, raw):
    """Cell size mode: the training part's median chromosome length, kept in the config
    (and so in the bundle manifest) as the fall-back for crops without a usable cell."""
    import dataclasses

    from ..train.data import median_chromosome_length

    length = median_chromosome_length(raw, pcfg)
    if not length > 0:
        fail("--size-mode cell: no chromosome could be measured in the training part")
    console.print(
        f"cell size mode: training median chromosome length {length:.1f} px "
        f"(reference_length; scaled to {pcfg.cell_length} px)"
    )
    return dataclasses.replace(pcfg, reference_length=round(length, 3))


def _augment_names(text: str) -> list[str]:
    """``--augment`` as the list kept in ``RunConfig.extra["augment"]`` ([] = off)."""
    from ..train.augment import parse_augment

    try:
        return parse_augment(text).names
    except ValueError as exc:
        fail(f"--augment: {exc}")


def _report_scan(parts) -> None:
    if parts.skipped:
        console.print(f"[yellow]{len(parts.skipped)} entries of the data folder skipped[/], e.g.:")
        for path, reason in parts.skipped[:5]:
            console.print(f"  {path}: {reason}")
    if parts.unassigned:
        console.print(
            f"[yellow]{parts.unassigned} images belong to groups the split does not name "
            "(not used)[/]"
        )


def train_command(
    data: Annotated[Path, typer.Argument(help="Labelled folder: DATA/<class>/<images>.")],
    split: Annotated[Path, Opt("--split", help="Split file (edge-iapp data split).")],
    out: Annotated[Path, Opt("--out", help="Run folder to create (or to resume).")],
    input_size: Annotated[int, Opt(help="Network input side (paper: 224).")] = PAPER_INPUT_SIZE,
    canvas: Annotated[int, Opt(help="Canvas side, source px (larger crops shrink).")] = 176,
    threshold: Annotated[str, Opt(help="Eq. 3 reading: foreground or paper.")] = "foreground",
    size_mode: Annotated[
        str, Opt(help="absolute (paper: pixel size kept) or cell (relative to the cell).")
    ] = "absolute",
    cell_length: Annotated[
        int, Opt(help="cell mode: canvas px of the cell's median chromosome length.")
    ] = 72,
    backbone: Annotated[str, Opt(help="resnet18/34/50, vgg16_bn, densenet121, ...")] = "resnet18",
    weights: Annotated[Path | None, Opt(help="Local torchvision ImageNet .pth.")] = None,
    branches: Annotated[str, Opt(help="Branches to train; 'global' = baseline.")] = BRANCHES,
    fusion: Annotated[str, Opt(help="Fusion for running accuracy: lambda or sum.")] = "lambda",
    epochs: Annotated[
        int | None, Opt(help="Epochs [default: 50, the paper's]; with --resume: extend to this.")
    ] = None,
    batch_size: Annotated[int, Opt(help="Batch size (paper: 26).")] = 26,
    lr: Annotated[float, Opt(help="SGD learning rate (paper: 0.02).")] = 0.02,
    momentum: Annotated[float, Opt(help="SGD momentum (paper: 0.9).")] = 0.9,
    weight_decay: Annotated[float, Opt(help="Weight decay (paper: 1e-5).")] = 1e-5,
    schedule: Annotated[str, Opt(help="cosine, step or constant.")] = "cosine",
    hflip: Annotated[float, Opt(help="Horizontal flip probability.")] = 0.5,
    r1: Annotated[int, Opt(help="Reduction ratio of the first SE block.")] = 8,
    r2: Annotated[int, Opt(help="Reduction ratio of the second SE block.")] = 16,
    seed: Annotated[int, Opt(help="Seed for weights, batches and flips.")] = 0,
    max_per_class: Annotated[
        int | None,
        Opt(
            help="Class-balanced subset of train (with --size-mode cell: whole cells, "
            "as many images in all)."
        ),
    ] = None,
    val_max_per_class: Annotated[int | None, Opt(help="Same for the val part.")] = None,
    threads: Annotated[int | None, Opt(help="torch CPU threads.")] = None,
    device: Annotated[str, Opt(help="auto, cpu or cuda.")] = "auto",
    resume: Annotated[bool, Opt("--resume", help="Continue RUN from last.pt.")] = False,
    keep: Annotated[int, Opt(help="Epoch checkpoints kept (0 = all); last.pt always.")] = 2,
    cache: Annotated[Path | None, Opt(help="Folder for preprocessed-image caches.")] = None,
    amp: Annotated[bool, Opt("--amp", help="CUDA only: bf16 autocast, channels-last.")] = False,
    time_budget: Annotated[
        float | None, Opt(help="Minutes for training: epochs cut to what fits, judged by epoch 2.")
    ] = None,
    augment: Annotated[
        str,
        Opt(
            help="Training augmentations: none, all, or a list of scale,contrast,blur,noise,"
            "sharpness,rotation,bend (docs/AUGMENT.md)."
        ),
    ] = "none",
) -> None:
    """Train IAPP-CNN (or one branch) on DATA with the split's train part; val each epoch."""
    import torch

    from ..preprocess import PreprocessConfig
    from ..train.data import balanced_subset
    from ..train.loading import DataProblem, check_training_classes, load_parts
    from ..train.run import LAST_CHECKPOINT, RunConfig
    from ..train.trainer import RunConflict, TrainingDiverged, check_config, train

    _set_threads(threads)
    dev = _device(device)
    _at_least(1, max_per_class=max_per_class, val_max_per_class=val_max_per_class)
    _at_least(0, keep=keep)
    refuse_file_output(out)
    refuse_file_output(cache, "--cache")
    if resume and (out / "config.json").is_file():
        try:
            cfg = RunConfig.load(out)
        except ValueError as exc:
            fail(f"cannot resume {out}: {exc}")
        if epochs is not None:
            cfg.epochs = epochs
        console.print(f"--resume: using the recipe saved in {out / 'config.json'}")
    else:
        try:
            cfg = RunConfig(
                backbone=backbone,
                preprocess=PreprocessConfig(
                    canvas=canvas,
                    input_size=input_size,
                    threshold=threshold,  # type: ignore[arg-type]
                    size_mode=size_mode,  # type: ignore[arg-type]
                    cell_length=cell_length,
                ),
                r1=r1,
                r2=r2,
                fusion=fusion,
                epochs=50 if epochs is None else epochs,
                batch_size=batch_size,
                lr=lr,
                momentum=momentum,
                weight_decay=weight_decay,
                schedule=schedule,
                hflip=hflip,
                seed=seed,
                branches=tuple(b.strip() for b in branches.split(",") if b.strip()),
                extra={
                    "data": str(data.resolve()),  # ood-calibrate and adapt's hint read it
                    "split_sha256": sha256_file(split) if split.is_file() else None,
                    "max_per_class": max_per_class,
                    "val_max_per_class": val_max_per_class,
                    "weights": str(weights) if weights else None,
                    "amp": amp,
                    "time_budget_min": time_budget,
                    "augment": _augment_names(augment),
                },
            )
        except ValueError as exc:
            fail(str(exc))
    if cfg.fusion not in ("lambda", "sum"):
        fail(f"--fusion must be lambda or sum, got {cfg.fusion!r}")
    try:
        check_config(cfg)  # before minutes of preprocessing
    except ValueError as exc:
        fail(str(exc))
    if cfg.extra.get("amp") and dev != "cuda":
        fail("--amp is bf16 autocast on a CUDA device; this run would be on the CPU")
    if time_budget is not None and not time_budget > 0:
        fail(f"--time-budget must be a positive number of minutes, got {time_budget}")
    if weights is not None and not weights.is_file():
        fail(f"--weights {weights} does not exist; pass a torchvision ImageNet .pth file")
    if not resume and (out / LAST_CHECKPOINT).exists():  # before minutes of preprocessing
        fail(
            f"{out} already holds a run ({out / LAST_CHECKPOINT}); "
            "pass --resume or choose a new --out"
        )
    try:
        parts = load_parts(data, split)
    except DataProblem as exc:
        fail(str(exc))
    if resume and (out / LAST_CHECKPOINT).exists():
        _same_split(out, split, parts.split)
    _report_scan(parts)
    train_samples, val_samples = parts.parts["train"], parts.parts["val"]
    if cfg.extra.get("max_per_class"):
        train_samples = balanced_subset(
            train_samples, int(cfg.extra["max_per_class"]), cfg.seed, cfg.preprocess
        )
    if cfg.extra.get("val_max_per_class"):
        val_samples = balanced_subset(
            val_samples, int(cfg.extra["val_max_per_class"]), cfg.seed, cfg.preprocess
        )
    try:
        check_training_classes([s.label for s in train_samples])
    except DataProblem as exc:
        fail(str(exc))
    measure = cfg.preprocess.size_mode == "cell" and not cfg.preprocess.reference_length > 0
    augment = cfg.extra.get("augment")
    train_raw = None
    if measure or augment:  # the crops themselves are needed: read them once
        from ..train.data import load_raw

        train_raw = load_raw(train_samples)
    if measure:
        cfg.preprocess = _with_reference_length(cfg.preprocess, train_raw)
    train_data = _prepare(train_samples, cfg.preprocess, "train", cache, raw=train_raw)
    if augment:
        console.print(
            f"train: augmented per batch with {', '.join(augment)}; validation is not augmented"
        )
    else:
        train_raw = None  # the epochs use the prepared images only
    val_data = _prepare(val_samples, cfg.preprocess, "val", cache) if val_samples else None
    try:
        missing = check_training_classes(train_data.labels)
    except DataProblem as exc:
        fail(str(exc))
    if missing:
        console.print(
            f"[yellow]warning:[/] the training part has no images of class(es) "
            f"{', '.join(missing)}: the model cannot learn them"
        )
    console.print(
        f"training {'+'.join(cfg.branches)} {cfg.backbone} at {cfg.preprocess.input_size} px on "
        f"{dev} ({torch.get_num_threads()} threads): {len(train_data)} train, "
        f"{len(val_data) if val_data else 0} val images, {cfg.epochs} epochs"
    )
    try:
        outcome = train(
            cfg,
            train_data,
            out,
            val_data,
            resume=resume,
            device=dev,
            weights=weights,
            keep=keep,
            split=parts.split,
            console=console,
            train_raw=train_raw,
        )
    except (RunConflict, ValueError) as exc:
        fail(str(exc))
    except TrainingDiverged as exc:
        fail(f"training diverged: {exc}", code=3)
    except FileNotFoundError as exc:
        fail(str(exc))
    console.print(
        f"[green]done[/]: {outcome.epochs_done} epoch(s) this call; {out / 'last.pt'} is epoch "
        f"{outcome.last_epoch}"
    )


def evaluate_command(
    run: Annotated[Path, typer.Argument(help="Training run folder.")],
    data: Annotated[Path, Opt("--data", help="Labelled folder.")],
    split: Annotated[Path, Opt("--split", help="Split file.")],
    out: Annotated[Path, Opt("--out", help="Output folder: metrics, report, figures.")],
    subset: Annotated[str, Opt(help="Split part: test, val or train.")] = "test",
    checkpoint: Annotated[Path | None, Opt(help="Checkpoint (default RUN/last.pt).")] = None,
    baseline: Annotated[Path | None, Opt(help="Single-branch run to compare with.")] = None,
    max_per_class: Annotated[int | None, Opt(help="Class-balanced subset (quick).")] = None,
    batch_size: Annotated[int, Opt(help="Images per forward pass.")] = 64,
    threads: Annotated[int | None, Opt(help="torch CPU threads.")] = None,
    device: Annotated[str, Opt(help="auto, cpu or cuda.")] = "auto",
    cache: Annotated[Path | None, Opt(help="Folder for preprocessed-image caches.")] = None,
    min_confidence: Annotated[
        float | None,
        Opt(help="Review flag's confidence threshold T to report (default: the runtime's 0.9)."),
    ] = None,
    review_target: Annotated[
        float, Opt(help="Share of errors to place the review threshold for (0-1].")
    ] = DEFAULT_TARGET,
) -> None:
    """Accuracy, macro-F1, Table 3/4, confusion, ROC, reliability and risk-coverage for RUN."""

    from ..train.data import balanced_subset, cell_key
    from ..train.evaluate import evaluate_predictions
    from ..train.loading import DataProblem, load_parts
    from ..train.predict import predict
    from ..train.run import load_model

    _set_threads(threads)
    dev = _device(device)
    if subset not in ("train", "val", "test"):
        fail(f"--subset must be train, val or test, got {subset!r}")
    _at_least(1, batch_size=batch_size, max_per_class=max_per_class)
    refuse_file_output(out)
    refuse_file_output(cache, "--cache")
    for name, value in (("--min-confidence", min_confidence), ("--review-target", review_target)):
        if value is not None and not 0.0 < value <= 1.0:
            fail(f"{name} must be in (0, 1], got {value}")
    if not run.is_dir():
        what = "is a file" if run.exists() else "does not exist"
        fail(f"{run} {what}: expected a training run folder (edge-iapp train --out)")
    try:
        model, cfg = load_model(run, checkpoint)
        base_model, base_cfg = load_model(baseline) if baseline else (None, None)
    except (FileNotFoundError, ValueError, RuntimeError, KeyError) as exc:
        fail(f"cannot load the run: {exc}")
    if base_cfg is not None and base_cfg.preprocess != cfg.preprocess:
        fail("the baseline run uses other preprocessing parameters; compare runs made alike")
    try:
        parts = load_parts(data, split)
    except DataProblem as exc:
        fail(str(exc))
    _report_scan(parts)
    leaked = _trained_on(run, cfg, data, parts.split, subset)
    if leaked:
        console.print(f"[yellow]warning:[/] {leaked}", highlight=False)
    samples = parts.parts[subset]
    if max_per_class:
        samples = balanced_subset(samples, max_per_class, 0, cfg.preprocess)
    if not samples:
        fail(f"the split's {subset!r} part has no images in {data}")
    prepared = _prepare(samples, cfg.preprocess, subset, cache)
    if len(prepared) == 0:
        fail(f"none of the {len(samples)} {subset} images could be read")
    console.print(f"evaluating {'+'.join(cfg.branches)} on {len(prepared)} {subset} images ({dev})")
    preds = predict(model.to(dev), prepared, cfg.branches, device=dev, batch_size=batch_size)
    base_preds = None
    if base_model is not None:
        base_preds = predict(
            base_model.to(dev), prepared, ("global",), device=dev, batch_size=batch_size
        )
    info = {
        "run": str(run),
        "checkpoint": str(checkpoint or run / "last.pt"),
        "data": str(data),
        "split": str(split),
        "split_sha256": sha256_file(split),
        "subset": subset,
        "backbone": cfg.backbone,
        "input_size": cfg.preprocess.input_size,
        "canvas": cfg.preprocess.canvas,
        "device": dev,
        "unreadable_skipped": len(prepared.skipped),
        "data_entries_skipped": len(parts.skipped),  # at the scan, before the split
    }
    if baseline:
        info["baseline"] = str(baseline)
    if leaked:
        info["warning"] = leaked  # in metrics.json and report.md too
    from ..train.ood_run import load_run_ood

    ood, ood_note = load_run_ood(run, checkpoint)
    console.print(f"OOD flag: {ood_note}")
    cell_of = {str(x.path): cell_key(x) for x in samples}
    record = evaluate_predictions(
        preds,
        out,
        cfg.fusion,
        f"{run.name} ({subset})",
        base_preds,
        info,
        ood=ood,
        cells=[cell_of.get(path) for path in prepared.paths],
        min_confidence=min_confidence,
        review_target=review_target,
    )
    console.print(
        f"accuracy {record['main']['accuracy']:.2%}, macro-F1 {record['main']['macro_f1']:.2%}; "
        f"report: {out / 'report.md'}"
    )
    if record.get("consistency"):
        c = record["consistency"]
        console.print(
            f"with the karyotype consistency step ({c['cells']} cells): accuracy "
            f"{c['accuracy']:.2%} ({c['fixed']} calls fixed, {c['broken']} broken)"
        )
    for name, row in record.get("ood", {}).get("by", {}).items():
        console.print(
            f"  review by {FLAG_NAMES[name]:<22}: errors flagged {_share(row['errors_flagged'])}, "
            f"correct calls flagged {_share(row['correct_flagged'])}"
        )
    for row in record["ablation"]:
        console.print(f"  {'+'.join(row['branches']):<20} {row['fusion']:<6} {row['accuracy']:.2%}")
    _print_placed(record, run, subset)


def _same_split(run: Path, split_path: Path, split: dict) -> None:
    """``--resume`` with the split the run started with: another one would change the
    training part halfway and put images the run learnt into its test part."""
    from ..data.split import SplitError, load_split

    saved = run / "split.json"
    try:
        before = load_split(saved)
    except SplitError:
        return  # a run without its split (an old one): nothing to compare with
    if before["groups"] != split["groups"] or before.get("pattern") != split.get("pattern"):
        fail(
            f"cannot resume {run}: {split_path} is not the split it was trained with "
            f"({saved}); pass --split {saved}, or train a new run with the new split"
        )


def _trained_on(run: Path, cfg, data: Path, split: dict, subset: str) -> str | None:
    """A warning when ``subset`` of ``split`` holds groups of ``data`` that RUN trained on.

    ``data split`` run again (another seed, more images) writes another split; a run
    evaluated with it scores images it learnt. RUN keeps its own ``split.json``.
    """
    from ..data.split import SplitError, load_split

    saved = run / "split.json"
    trained_on = cfg.extra.get("data")
    if subset == "train" or not saved.is_file() or not trained_on:
        return None
    if Path(trained_on).resolve() != data.resolve():  # another lab: its own group names
        return None
    try:
        learnt = {str(g) for g in load_split(saved)["groups"]["train"]}
    except SplitError:
        return None
    both = sorted(str(g) for g in split["groups"][subset] if str(g) in learnt)
    if not both:
        return None
    shown = ", ".join(both[:5]) + (" ..." if len(both) > 5 else "")
    return (
        f"{len(both)} of the split's {len(split['groups'][subset])} {subset} group(s) ({shown}) "
        f"were in the train part of this run ({saved}): their scores are inflated; evaluate "
        f"with the split the run was trained with (--split {saved})"
    )


FLAG_NAMES = {
    "ood": "OOD",
    "confidence": "confidence",
    "either": "OOD or confidence",
    "review": "all review reasons",
}
"""How ``evaluate`` prints the flags of :func:`~edge_iapp.train.evaluate.ood_review`."""


def _print_placed(record: dict, run: Path, subset: str) -> None:
    """The threshold T checked (``--min-confidence``), or where T goes for the target."""
    placed = record["review_threshold"]["placed"]
    target = f"{placed['target']:.0%} of the errors"
    row = record["review_threshold"]["checked"]
    if row is not None:
        console.print(
            f"review threshold T = {row['min_confidence']:g} (--min-confidence): flags "
            f"{_share(row['errors_flagged'])} of the errors and {_share(row['correct_flagged'])} "
            f"of the correct calls here; target {target}: "
            + ("met" if row["target_met"] else "not met")
        )
        return
    t = placed["min_confidence"]
    if t is None:
        console.print(f"review threshold: none needed to flag {target} ({placed['note']})")
        return
    console.print(
        f"review threshold for {target}: T = {t:g} flags {_share(placed['errors_flagged'])} "
        f"of the errors and {_share(placed['correct_flagged'])} of the correct calls here"
        + ("" if placed["reached"] else f" (not reached: {placed['note']})")
    )
    moved = record["review_threshold"].get("spread")
    if moved:
        from ..train.evaluate import render_spread

        console.print("  " + render_spread(moved, placed["target"]), highlight=False)
    if subset == "val":
        from ..train.review_threshold import suggest

        safer, which = suggest(record["review_threshold"])
        console.print(
            f"  write it into a bundle: edge-iapp export {run} --min-confidence {t:g}"
            + (f" (or {safer:g}, safer for cells not seen here)" if which == "upper" else "")
        )
    else:  # test: meets the target by construction; train: the model learnt these cells
        console.print(
            f"  placed on the {subset} part: place it on --subset val, check it on test with "
            "--min-confidence T"
        )


def _share(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``evaluate`` to ``app``."""
    app.command("train")(train_command)
    app.command("evaluate")(evaluate_command)
