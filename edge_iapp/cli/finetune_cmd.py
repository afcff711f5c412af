"""CLI command ``finetune``: adapt a trained run to a new lab with a few labelled cells."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import console, fail

Opt = typer.Option


def finetune_command(
    run: Annotated[Path, typer.Argument(help="Trained run folder (config.json, last.pt).")],
    data: Annotated[Path, Opt("--data", help="The new lab's labelled folder.")],
    split: Annotated[Path, Opt("--split", help="Its split: cells from train, scores on test.")],
    cells: Annotated[int, Opt("--cells", help="K cells to fine-tune on (0: evaluate only).")],
    out: Annotated[Path, Opt("--out", help="New run folder (finetune.json, last.pt).")],
    epochs: Annotated[int, Opt(help="Fine-tuning epochs.")] = 10,
    lr: Annotated[float, Opt(help="SGD learning rate (the rest of the recipe is RUN's).")] = 0.005,
    seed: Annotated[int, Opt(help="Seed of the cell choice, batches and flips.")] = 0,
    device: Annotated[str, Opt(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[int | None, Opt(help="torch CPU threads.")] = None,
    max_test_per_class: Annotated[
        int | None, Opt(help="Class-balanced subset of the test part (quick).")
    ] = None,
    cache: Annotated[Path | None, Opt(help="Folder for preprocessed-image caches.")] = None,
) -> None:
    """Fine-tune RUN on K cells of a new lab; accuracy before and after on its test part."""
    import torch

    from ..train.finetune import FinetuneError, finetune
    from ..train.loading import DataProblem
    from ..train.trainer import RunConflict, TrainingDiverged
    from .train_cmd import _device, _prepare

    if threads:
        torch.set_num_threads(threads)
    dev = _device(device)
    if cells > 0 and epochs < 1:
        fail(f"--epochs must be at least 1 when fine-tuning, got {epochs}")
    if not lr > 0:
        fail(f"--lr must be positive, got {lr}")
    try:
        record = finetune(
            run,
            data,
            split,
            cells,
            out,
            epochs=epochs,
            lr=lr,
            seed=seed,
            device=dev,
            max_test_per_class=max_test_per_class,
            prepare_fn=lambda samples, pcfg, label: _prepare(samples, pcfg, label, cache),
            log=lambda msg: console.print(
                msg.replace("warning:", "[yellow]warning:[/]", 1), highlight=False
            ),
            console=console,
        )
    except (FinetuneError, DataProblem, RunConflict, FileNotFoundError) as exc:
        fail(str(exc))
    except TrainingDiverged as exc:
        fail(f"fine-tuning diverged: {exc}", code=3)
    _print_table(record)
    console.print(f"cells: {', '.join(record['cells']) or '(none: zero-shot)'}")
    console.print(f"written: {out / 'finetune.json'}")


def _print_table(record: dict) -> None:
    from rich.table import Table

    branches = list(record["before"]["branches"])
    table = Table(title=f"{record['test_images']} test images of {record['data']} (values in %)")
    for name in ("model", "run", "cells", "accuracy", "macro-F1", *branches):
        table.add_column(name, justify="left" if name in ("model", "run") else "right")
    rows = [("before", record["run"], 0, record["before"])]
    if record["after"] is not None:
        rows.append(("after", record["out"], record["cells_requested"], record["after"]))
    for name, path, k, s in rows:
        table.add_row(
            name,
            Path(path).name,
            str(k),
            f"{100 * s['fused']['accuracy']:.1f}",
            f"{100 * s['fused']['macro_f1']:.1f}",
            *(f"{100 * s['branches'][b]['accuracy']:.1f}" for b in branches),
        )
    console.print(table)
    ood = record["before"].get("ood")
    if ood:
        by = ood["by"]
        console.print(
            "review flags before fine-tuning (OOD / confidence / either): errors flagged "
            + " / ".join(_share(by[k]["errors_flagged"]) for k in ("ood", "confidence", "either"))
            + "; correct calls flagged "
            + " / ".join(_share(by[k]["correct_flagged"]) for k in ("ood", "confidence", "either"))
        )


def _share(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def register(app: typer.Typer) -> None:
    """Add ``finetune`` to ``app``."""
    app.command("finetune")(finetune_command)
