"""The training loop: eq. 14 (sum of the branch losses), SGD, a checkpoint per epoch.

Resuming continues the epoch counter from ``RUN/last.pt`` with the saved weights,
optimizer momentum and schedule. Randomness is drawn per epoch from ``(seed, epoch)``,
so a resumed run sees the same batches and flips as an uninterrupted one.
A non-finite loss stops the run at once: nothing is saved after it, and the last
good checkpoint (the previous epoch's) stays.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..fusion import fuse
from .checkpoint import SPLIT_FILE, load_checkpoint, read_metrics, save_checkpoint, write_metrics
from .data import PreparedImages
from .device_data import DeviceImages, device_batches
from .predict import check_branches, forward_branches, predict
from .run import LAST_CHECKPOINT, RunConfig

SCHEDULES: tuple[str, ...] = ("cosine", "step", "constant")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


class RunConflict(RuntimeError):
    """The output folder already holds a different run, or ``--resume`` does not fit it."""


@dataclass
class TrainOutcome:
    """What :func:`train` did.

    Attributes:
        status: ``"finished"`` (all epochs done, including a resume of a finished run).
        epochs_done: epochs completed in this call.
        last_epoch: the epoch number of ``RUN/last.pt``.
        metrics: the ``metrics.json`` record.
    """

    status: str
    epochs_done: int
    last_epoch: int
    metrics: dict[str, Any]


def lr_factor(schedule: str, step: int, total_steps: int, epoch: int, epochs: int) -> float:
    """LR multiplier: ``cosine`` per step to 0, ``step`` x0.1 at 1/2 and 3/4, ``constant``."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    if schedule == "step":
        return 0.1 ** sum(epoch >= m for m in (epochs // 2, (3 * epochs) // 4) if m > 0)
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def build_model(cfg: RunConfig, weights: str | Path | None = None):
    """The IAPP-CNN of ``cfg`` (all three branches; only ``cfg.branches`` are trained)."""
    from ..model import create_model

    return create_model(
        cfg.backbone, num_classes=cfg.num_classes, weights=weights, r1=cfg.r1, r2=cfg.r2
    )


def check_config(cfg: RunConfig) -> None:
    """Refuse a recipe that cannot train, before any image is read.

    Raises:
        ValueError: the message names the option (``--epochs`` ...) and what it must be.
    """
    from ..model import BACKBONES

    check_branches(cfg.branches)
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {cfg.backbone!r}; choose one of {', '.join(BACKBONES)}")
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    for name, value in (("--epochs", cfg.epochs), ("--batch-size", cfg.batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    for name, value in (("--r1", cfg.r1), ("--r2", cfg.r2)):
        if value < 1:
            raise ValueError(f"{name} (an SE reduction ratio) must be at least 1, got {value}")
    if not cfg.lr > 0:
        raise ValueError(f"--lr must be positive, got {cfg.lr}")
    if not 0.0 <= cfg.hflip <= 1.0:
        raise ValueError(f"--hflip is a probability in [0, 1], got {cfg.hflip}")


def _same_recipe(a: RunConfig, b: RunConfig) -> list[str]:
    """Fields that differ in a way that makes resuming wrong (epochs may grow)."""
    da, db = a.to_dict(), b.to_dict()
    ignore = {"epochs", "extra"}
    return sorted(k for k in da if k not in ignore and da[k] != db.get(k))


def evaluate_subset(
    model, data: PreparedImages, branches, device: str, batch_size: int = 64
) -> dict:
    """Loss and accuracy of each branch and of both fusions on ``data``."""
    preds = predict(model, data, branches, device=device, batch_size=batch_size)
    labels = preds.labels
    result: dict[str, Any] = {"images": int(labels.size)}
    if labels.size == 0:
        return result
    from ..fusion import softmax

    for b, logits in zip(preds.branches, preds.logits, strict=True):
        p = softmax(logits)
        result[f"{b}_acc"] = float((logits.argmax(1) == labels).mean())
        result[f"{b}_loss"] = float(
            -np.log(np.maximum(p[np.arange(labels.size), labels], 1e-12)).mean()
        )
    for mode in ("sum", "lambda"):
        fused, _ = fuse(preds.logits, mode)
        result[f"{mode}_acc"] = float((fused.argmax(1) == labels).mean())
    return result


def train(
    cfg: RunConfig,
    train_data: PreparedImages,
    run_dir: str | Path,
    val_data: PreparedImages | None = None,
    *,
    resume: bool = False,
    device: str = "cpu",
    weights: str | Path | None = None,
    init_from: str | Path | None = None,
    keep: int = 2,
    split: dict | None = None,
    console=None,
    log_every: int = 50,
    on_epoch: Callable[[dict, Any], None] | None = None,
    train_raw=None,
) -> TrainOutcome:
    """Train (or resume) the run in ``run_dir``.

    Args:
        cfg: the recipe; saved as ``RUN/config.json``.
        train_data, val_data: preprocessed images (val may be None or empty).
        run_dir: the run folder.
        resume: continue from ``RUN/last.pt`` (start fresh when it does not exist).
        device: ``"cpu"`` or ``"cuda"``.
        weights: local ImageNet state dict for every branch's backbone (fresh runs).
        init_from: a checkpoint (e.g. another run's ``last.pt``) whose full IAPP-CNN
            state dict starts this run (fresh runs only; fine-tuning). Replaces ``weights``.
        keep: epoch checkpoints to keep (0 = all); ``last.pt`` is always kept.
        split: the split record, copied to ``RUN/split.json``.
        console: a rich console for progress bars and messages.
        log_every: when the console is not a terminal, print a line every this many steps.
        on_epoch: called with each epoch's metrics entry and the model, after its checkpoint.
        train_raw: the train part's raw crops (``edge_iapp.train.data.RawImages``),
            needed when ``cfg.extra["augment"]`` names augmentations: the epochs then
            augment and preprocess them per batch (``OnlineDataset``); validation
            stays on the prepared images, without augmentation.

    Raises:
        TrainingDiverged: non-finite loss (last good checkpoint kept, metrics say so).
        RunConflict: ``run_dir`` holds a run and ``resume`` is False, or the saved
            config differs from ``cfg`` in more than the epoch count.
    """
    import torch
    from rich.console import Console

    from ..ioutil import atomic_write_text

    console = console or Console(stderr=True)
    check_config(cfg)
    if cfg.extra.get("augment") and (train_raw is None or len(train_raw) != len(train_data)):
        raise ValueError(
            f"augmentations {cfg.extra['augment']} need the train part's raw crops "
            "(train_raw, edge_iapp.train.data.load_raw) for the same images as train_data"
        )
    branches = check_branches(cfg.branches)
    run_dir = Path(run_dir)
    last = run_dir / LAST_CHECKPOINT
    if last.exists() and not resume:
        raise RunConflict(
            f"{run_dir} already holds a run ({last} exists); pass --resume or choose a new --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)

    amp = bool(cfg.extra.get("amp"))
    if amp and not str(device).startswith("cuda"):
        raise ValueError("--amp (bf16 autocast) needs a CUDA device; this run is on the CPU")
    if str(device).startswith("cuda"):
        # cuDNN picks the fastest convolution per shape (the shapes never change);
        # TF32 keeps float32 weights and is what NVIDIA's training recipes use
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed only
    fresh = not (resume and last.exists())
    model = build_model(cfg, weights if fresh and init_from is None else None)
    if fresh and init_from is not None:
        model.load_state_dict(load_checkpoint(init_from)["model"])
    model = model.to(device)
    if amp:
        model = model.to(memory_format=torch.channels_last)
    params = [p for b in branches for p in getattr(model, f"{b}_branch").parameters()]
    optimizer = torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    steps_per_epoch = max(1, math.ceil(len(train_data) / cfg.batch_size))
    total_steps = steps_per_epoch * cfg.epochs
    start_epoch = 0
    metrics = {"status": "running", "epochs": []}
    if resume and last.exists():
        saved = RunConfig.load(run_dir)
        diff = _same_recipe(saved, cfg)
        if diff:
            raise RunConflict(f"cannot resume {run_dir}: the recipe differs in {', '.join(diff)}")
        state = load_checkpoint(last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        metrics = read_metrics(run_dir)
        metrics["epochs"] = [e for e in metrics.get("epochs", []) if e["epoch"] <= start_epoch]
        console.print(f"resuming {run_dir} after epoch {start_epoch} of {cfg.epochs}")
    elif resume:
        console.print(
            f"[yellow]--resume: {run_dir} has no {LAST_CHECKPOINT}; starting a new run[/]"
        )
    cfg.save(run_dir)
    if split is not None:
        import json

        atomic_write_text(run_dir / SPLIT_FILE, json.dumps(split, indent=1) + "\n")
    metrics.update(
        status="running",
        device=device,
        branches=list(branches),
        train_images=len(train_data),
        val_images=len(val_data) if val_data else 0,
    )
    write_metrics(run_dir, metrics)

    # prepared images go to the training device once; augmented runs make batches per step
    epoch_data = None if cfg.extra.get("augment") else DeviceImages.put(train_data, device)
    # the budget is judged once (recorded as epochs_fit_in_budget), also by a run resumed
    # before that; epochs of an earlier call count with their training time
    budget_s = _time_budget_seconds(cfg) if "epochs_fit_in_budget" not in metrics else None
    epoch_seconds = [float(e.get("seconds", 0.0)) for e in metrics["epochs"]]
    done = 0
    epoch = start_epoch
    while epoch < cfg.epochs:
        t_epoch = time.perf_counter()
        entry = _train_epoch(
            model,
            optimizer,
            cfg,
            branches,
            epoch_data,
            epoch,
            steps_per_epoch,
            total_steps,
            device,
            console,
            log_every,
            raw=train_raw,
        )
        if entry.get("diverged"):
            metrics["status"] = "diverged"
            metrics["message"] = entry["diverged"]
            write_metrics(run_dir, metrics)
            raise TrainingDiverged(
                entry["diverged"] + f"; the last good checkpoint is {last}"
                if last.exists()
                else entry["diverged"] + "; no epoch had finished"
            )
        if val_data is not None and len(val_data):
            entry["val"] = evaluate_subset(model, val_data, branches, device)
        epoch_seconds.append(time.perf_counter() - t_epoch)
        fit = None if budget_s is None else _epochs_in_budget(cfg, budget_s, epoch_seconds, console)
        if fit is not None:  # judged (None: not yet): the budget is done with
            budget_s = None
            if fit < cfg.epochs:
                cfg.extra["planned_epochs"] = cfg.epochs
                cfg.epochs = fit
                cfg.save(run_dir)
                total_steps = steps_per_epoch * cfg.epochs
            metrics["epochs_fit_in_budget"] = fit
        metrics["epochs"].append(entry)
        save_checkpoint(
            run_dir,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "metrics": entry,
                "config": cfg.to_dict(),
            },
            keep=keep,
        )
        write_metrics(run_dir, metrics)
        done += 1
        _print_epoch(console, entry, cfg.epochs)
        if on_epoch:
            on_epoch(entry, model)
        epoch += 1
    if val_data is not None and len(val_data):
        # the OOD review threshold of this run (edge_iapp/ood.py), from its own val images
        from .ood_run import FIT_PER_CLASS, calibration_warnings, write_run_ood

        try:
            record = write_run_ood(
                run_dir,
                predict(model, val_data, branches, device=device),
                source={"part": "val", "data": cfg.extra.get("data"), "images": len(val_data)},
                fit=predict(model, train_data.balanced(FIT_PER_CLASS), branches, device=device),
            )
            metrics["ood_threshold"] = record["threshold"]
            for warning in calibration_warnings(record):
                console.print(f"[yellow]warning:[/] {warning}")
        except ValueError as exc:  # e.g. non-finite val logits: the run itself is done
            console.print(f"[yellow]warning:[/] no OOD calibration written: {exc}")
    metrics["status"] = "finished"
    write_metrics(run_dir, metrics)
    return TrainOutcome("finished", done, max(start_epoch + done, start_epoch), metrics)


SYNC_EVERY = 20
"""Steps between reads of the loss and accuracy from the device: each read waits for the
GPU, so reading every step would keep the host from queueing the next one."""


def _train_epoch(
    model,
    optimizer,
    cfg,
    branches,
    data,
    epoch,
    steps_per_epoch,
    total_steps,
    device,
    console,
    log_every,
    raw=None,
) -> dict:
    """One epoch. ``data`` is :class:`DeviceImages` (prepared images) or unused (augment)."""
    import torch
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    torch.manual_seed(cfg.seed * 100003 + epoch)
    rng = np.random.default_rng([cfg.seed, epoch])
    amp = bool(cfg.extra.get("amp"))
    augment = cfg.extra.get("augment") or []
    if augment:  # augmentations change the crop: preprocess each batch anew
        from .augment import parse_augment
        from .online import OnlineDataset, online_batches

        dataset = OnlineDataset(
            raw, cfg.preprocess, parse_augment(augment), cfg.hflip, int(rng.integers(2**31))
        )
        stream = online_batches(dataset, cfg.batch_size, rng)  # made ahead by threads
    else:
        # the draws of ChromosomeDataset(seed=...) + batches(shuffle=True, rng=rng)
        flip_rng = np.random.default_rng(int(rng.integers(2**31)))
        stream = device_batches(data, cfg.batch_size, rng, flip_rng, cfg.hflip, device)
    model.train()
    tally = _Tally(branches, cfg.fusion)
    t0 = time.perf_counter()
    columns = (
        TextColumn(f"epoch {epoch + 1}/{cfg.epochs}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.1%}"),
        TimeRemainingColumn(),
    )
    with Progress(
        *columns, console=console, transient=True, disable=not console.is_terminal
    ) as bar:
        task = bar.add_task("train", total=steps_per_epoch, loss=float("nan"), acc=0.0)
        for step, batch in enumerate(stream):
            global_step = epoch * steps_per_epoch + step
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(
                    cfg.schedule, global_step, total_steps, epoch, cfg.epochs
                )
            x = {k: batch[k].to(device, non_blocking=True) for k in ("global", "object")}
            if "object_u8" in batch:
                x["object_u8"] = batch["object_u8"]
            y = batch["label"].to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                out = forward_branches(model, x, branches)
                losses = [torch.nn.functional.cross_entropy(out[b].float(), y) for b in branches]
            loss = torch.stack(losses).sum()  # eq. 14
            tally.add(step, loss, losses, out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(task, advance=1)
            logged = bool(log_every) and (step + 1) % log_every == 0
            if (step + 1) % SYNC_EVERY == 0 or logged:
                diverged = tally.flush()
                if diverged:
                    break
                bar.update(task, loss=tally.loss, acc=tally.accuracy["fused"])
                if not console.is_terminal and logged:
                    rate = tally.seen / (time.perf_counter() - t0)
                    console.print(
                        f"epoch {epoch + 1} step {step + 1}/{steps_per_epoch} "
                        f"loss {tally.loss:.3f} acc {tally.accuracy['fused']:.1%} "
                        f"{rate:.1f} img/s"
                    )
        diverged = tally.diverged or tally.flush()
    if diverged:
        step, total, per_branch = diverged
        return {
            "epoch": epoch + 1,
            "diverged": (
                f"loss became {total} at epoch {epoch + 1}, step {step + 1} "
                f"(branch losses {[round(float(v), 4) for v in per_branch]}); "
                "training stopped. "
                "Try a lower --lr"
            ),
        }
    seconds = time.perf_counter() - t0
    return {
        "epoch": epoch + 1,
        "lr_end": optimizer.param_groups[0]["lr"],
        "train_loss": tally.loss,
        "train_acc": tally.accuracy,
        "seconds": seconds,
        "images_per_s": tally.seen / max(seconds, 1e-9),
    }


class _Tally:
    """Running loss and accuracies of an epoch, read from the device every few steps.

    The steps' losses and logits stay on the device until :meth:`flush`, which copies
    them in one go, finds the first non-finite loss (nothing is checkpointed before the
    epoch ends, so the steps after it are lost, not saved) and counts correct calls.
    """

    def __init__(self, branches: tuple[str, ...], fusion: str) -> None:
        self.branches, self.fusion = branches, fusion
        self.pending: list[tuple] = []
        self.loss_sum, self.seen = 0.0, 0
        self.correct = {b: 0 for b in (*branches, "fused")}
        self.diverged: tuple[int, float, list[float]] | None = None

    def add(self, step: int, loss, losses, out: dict, labels) -> None:
        import torch

        logits = torch.stack([out[b].detach() for b in self.branches]).float()
        self.pending.append((step, loss.detach(), torch.stack(losses).detach(), logits, labels))

    def flush(self) -> tuple[int, float, list[float]] | None:
        """Count the pending steps; the first non-finite loss as ``(step, loss, per branch)``."""
        import torch

        if not self.pending or self.diverged:
            return self.diverged
        steps = [p[0] for p in self.pending]
        totals = torch.stack([p[1] for p in self.pending]).cpu().numpy()
        per_branch = torch.stack([p[2] for p in self.pending]).cpu().numpy()
        logits = [p[3].cpu().numpy() for p in self.pending]
        labels = [p[4].cpu().numpy() for p in self.pending]
        self.pending = []
        for k, total in enumerate(totals):
            if not np.isfinite(total):
                self.diverged = (steps[k], float(total), per_branch[k].tolist())
                return self.diverged
            n = int(labels[k].shape[0])
            self.loss_sum += float(total) * n
            self.seen += n
            for b, lg in zip(self.branches, logits[k], strict=True):
                self.correct[b] += int((lg.argmax(1) == labels[k]).sum())
            fused = fuse(logits[k], self.fusion)[0]
            self.correct["fused"] += int((fused.argmax(1) == labels[k]).sum())
        return None

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.seen, 1)

    @property
    def accuracy(self) -> dict[str, float]:
        return {b: c / max(self.seen, 1) for b, c in self.correct.items()}


def _time_budget_seconds(cfg: RunConfig) -> float | None:
    minutes = cfg.extra.get("time_budget_min")
    if minutes is None:
        return None
    if not float(minutes) > 0:
        raise ValueError(f"--time-budget must be a positive number of minutes, got {minutes}")
    return float(minutes) * 60.0


def _epochs_in_budget(
    cfg: RunConfig, budget_s: float, epoch_seconds: list[float], console
) -> int | None:
    """How many epochs (training + validation) fit the budget; None while it is too early.

    Epoch 1 carries the warm-up (cuDNN autotuning, lazy loading of CUDA modules): on an
    H100 it took 3.3x as long as each later epoch of a 3,818-image set, and a budget judged
    by it ran 13 of the 50 epochs that fitted. So the estimate waits for epoch 2 and
    extrapolates from it. After epoch 1 it decides only when a second epoch as slow as the
    first would not fit; then one epoch it is, as before. The schedule is then fitted to
    that many epochs; the epochs before ran on the start of the planned (longer) schedule,
    so at a slightly higher LR.
    """
    done, elapsed = len(epoch_seconds), sum(epoch_seconds)
    if done == 1 and cfg.epochs > 1 and 2 * epoch_seconds[0] <= budget_s:
        return None
    steady = max(epoch_seconds[-1], 1e-9)
    fit = max(done, min(cfg.epochs, done + int(max(0.0, budget_s - elapsed) // steady)))
    if fit < cfg.epochs:
        console.print(
            f"--time-budget {budget_s / 60:g} min: epoch {done} took {steady:.0f} s "
            f"({elapsed:.0f} s so far), so {fit} of the {cfg.epochs} planned epochs fit; the "
            f"{cfg.schedule} schedule now ends at epoch {fit} (recorded in config.json)"
        )
    return fit


def _print_epoch(console, entry: dict, epochs: int) -> None:
    msg = (
        f"epoch {entry['epoch']}/{epochs}: loss {entry['train_loss']:.3f}, "
        f"train acc {entry['train_acc']['fused']:.1%}, {entry['images_per_s']:.1f} img/s"
    )
    val = entry.get("val")
    if val and val.get("images"):
        accs = ", ".join(f"{k[:-4]} {v:.1%}" for k, v in val.items() if k.endswith("_acc"))
        msg += f"; val {accs}"
    console.print(msg)
