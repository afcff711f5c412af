"""CLI commands ``finetune`` and ``adapt``: a trained run to a new lab, with few or no labels."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Annotated

import typer

from .common import console, fail, refuse_file_output

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
    adapt_cells: Annotated[
        int,
        Opt(
            help="Also re-estimate BatchNorm statistics on M cells of the new lab, without "
            "their labels (0: off): of RUN's model, and of the fine-tuned one after "
            "fine-tuning. With --cells 0 the adapted RUN is the new run."
        ),
    ] = 0,
    pseudo_cells: Annotated[
        int,
        Opt(
            help="Also fine-tune on P more cells of the new lab with pseudo-labels: the calls "
            "of the model fine-tuned on the K cells, made consistent per cell (two of each "
            "autosome, XX or XY). Their labels are not read for training (0: off)."
        ),
    ] = 0,
    pseudo_consistency: Annotated[
        bool, Opt(help="Make each pseudo-labelled cell's calls consistent (off: plain calls).")
    ] = True,
    pseudo_slides: Annotated[
        Path | None,
        Opt(
            help="Take the --pseudo-cells cells from these unlabelled slides (SLIDE/<cell>/"
            "<crops>, as score reads them; keep the split's test cells out) instead of the "
            "rest of DATA's train part."
        ),
    ] = None,
    pseudo_rounds: Annotated[
        int,
        Opt(
            help="Rounds of pseudo-labelling: each round's model labels the P cells again for "
            "the next, fine-tuned afresh from RUN's weights."
        ),
    ] = 1,
    cache: Annotated[Path | None, Opt(help="Folder for preprocessed-image caches.")] = None,
) -> None:
    """Fine-tune RUN on K cells of a new lab; accuracy before and after on its test part."""

    from ..train.finetune import FinetuneError, finetune
    from ..train.loading import DataProblem
    from ..train.trainer import RunConflict, TrainingDiverged
    from .train_cmd import _at_least, _device, _prepare, _set_threads

    _set_threads(threads)
    dev = _device(device)
    if cells > 0 and epochs < 1:
        fail(f"--epochs must be at least 1 when fine-tuning, got {epochs}")
    if adapt_cells < 0:
        fail(f"--adapt-cells must be 0 or more, got {adapt_cells}")
    _at_least(1, max_test_per_class=max_test_per_class)
    refuse_file_output(out)
    refuse_file_output(cache, "--cache")
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
            adapt_cells=adapt_cells,
            pseudo_cells=pseudo_cells,
            pseudo_consistency=pseudo_consistency,
            pseudo_rounds=pseudo_rounds,
            pseudo_slides=pseudo_slides,
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


def _agreement(agree: dict | None) -> str:
    if agree is None:
        return "no labels to compare them with"
    return (
        f"the folder's labels, not used, agree with {agree['used']:.1%} of them "
        f"({agree['plain']:.1%} before consistency)"
    )


def _print_table(record: dict) -> None:
    from rich.table import Table

    branches = list(record["before"]["branches"])
    table = Table(title=f"{record['test_images']} test images of {record['data']} (values in %)")
    for name in ("model", "run", "cells", "accuracy", "macro-F1", *branches):
        table.add_column(name, justify="left" if name in ("model", "run") else "right")
    rows = [("before", record["run"], "0", record["before"])]
    n_adapt = len(record.get("adapt_cells") or [])
    if record.get("adapted") is not None:
        rows.append(("adapted", record["out"], f"{n_adapt}u", record["adapted"]))
    k = str(record["cells_requested"])
    pseudo = record.get("pseudo")
    if pseudo:  # the model the pseudo-labels came from (removed)
        rows.append(("labelled only", record["out"], k, record["labelled_only"]))
        k += f"+{len(pseudo['cell_ids'])}p"
    if record.get("finetuned") is not None:  # before the statistics of the M cells
        rows.append(("fine-tuned", record["out"], k, record["finetuned"]))
    if record["after"] is not None and record["cells_requested"]:
        rows.append(
            ("after", record["out"], k + (f"+{n_adapt}u" if n_adapt else ""), record["after"])
        )
    for name, path, k, s in rows:
        table.add_row(
            name,
            Path(path).name,
            k,
            f"{100 * s['fused']['accuracy']:.1f}",
            f"{100 * s['fused']['macro_f1']:.1f}",
            *(f"{100 * s['branches'][b]['accuracy']:.1f}" for b in branches),
        )
    console.print(table)
    if pseudo:
        agree = pseudo["agreement_with_folder_labels"]
        rounds = pseudo.get("rounds", [])
        by = f"the model fine-tuned on the {record['cells_requested']} labelled ones"
        if len(rounds) > 1:
            by = f"the model of round {len(rounds) - 1} of {len(rounds)} (rounds below)"
        console.print(
            f"Np: N cells of the {pseudo.get('source', 'train part')} pseudo-labelled by {by}:"
            f" {pseudo['images']} images, {pseudo['changed_by_consistency']} calls "
            f"changed by consistency; {_agreement(agree)}"
        )
        for r, info in enumerate(rounds if len(rounds) > 1 else [], start=1):
            console.print(
                f"   round {r}: labelled by a model with {info['labeller_accuracy']:.1%} on the "
                f"test part; {_agreement(info['agreement_with_folder_labels'])}"
            )
    if n_adapt:
        console.print(
            "Nu: N unlabelled cells of the new lab, used for BatchNorm statistics only "
            "(adapted: RUN's weights; after: the fine-tuned weights)"
        )
    rules = ("ood", "confidence", "either")
    for key, when in (("before", "before fine-tuning"), ("after", "after fine-tuning")):
        ood = (record.get(key) or {}).get("ood")
        if ood and (key == "before" or record["cells_requested"]):
            by = ood["by"]
            console.print(
                f"review flags {when} (OOD / confidence / either): errors flagged "
                + " / ".join(_share(by[k]["errors_flagged"]) for k in rules)
                + "; correct calls flagged "
                + " / ".join(_share(by[k]["correct_flagged"]) for k in rules)
            )
    if record.get("ood_calibration_out"):
        console.print(f"OOD calibration of the fine-tuned run: {record['ood_calibration_out']}")


def _share(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def adapt_command(
    run: Annotated[Path, typer.Argument(help="Trained run folder (config.json, last.pt).")],
    slides: Annotated[
        Path, Opt("--slides", help="The new lab's slides: SLIDE/<cell>/<crops> (no labels).")
    ],
    out: Annotated[Path, Opt("--out", help="New run folder (config.json, last.pt, adapt.json).")],
    cells: Annotated[int, Opt(help="Cells to read (a few are enough; see docs/RESULTS.md).")] = 5,
    seed: Annotated[int, Opt(help="Seed of the cell choice.")] = 0,
    device: Annotated[str, Opt(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[int | None, Opt(help="torch CPU threads.")] = None,
) -> None:
    """Adapt RUN to a new lab without labels: BatchNorm statistics from a few of its cells."""

    from ..train.adapt_bn import adapt_run
    from .train_cmd import _device, _prepare, _set_threads

    _set_threads(threads)
    try:
        record = adapt_run(
            run,
            slides,
            out,
            cells,
            seed=seed,
            device=_device(device),
            prepare_fn=lambda samples, pcfg, label: _prepare(samples, pcfg, label, None),
            log=lambda msg: console.print(msg, highlight=False),
        )
    except (ValueError, OSError, RuntimeError, KeyError, pickle.UnpicklingError) as exc:
        fail(f"cannot adapt {run}: {exc}")
    a = record["adaptation"]
    console.print(
        f"BatchNorm statistics of {a['layers']} layers re-estimated on {a['images']} images "
        f"of {len(record['cells'])} cell(s): {', '.join(record['cells'])}"
    )
    threshold = record.get("ood_threshold")
    if threshold is not None:
        console.print(
            f"review flag: out of distribution now means unlike these cells "
            f"(energy threshold {threshold:.4f}, {out / 'ood.json'})"
        )
    data = record.get("training_data") or "DATA"
    console.print(
        f"written: {out}; export it with `edge-iapp export {out} --out BUNDLE` "
        f"(INT8: add `-p fp32 -p int8 --calib-data {data}`: it calibrates on the training "
        "lab's images with RUN's split, copied here)"
    )


def register(app: typer.Typer) -> None:
    """Add ``finetune`` and ``adapt`` to ``app``."""
    app.command("finetune")(finetune_command)
    app.command("adapt")(adapt_command)
