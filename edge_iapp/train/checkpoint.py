"""Checkpoints and the per-epoch metrics file of a run, all written atomically."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from ..ioutil import atomic_write_bytes, atomic_write_text
from .run import LAST_CHECKPOINT

CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.json"
SPLIT_FILE = "split.json"


def epoch_checkpoint(run_dir: str | Path, epoch: int) -> Path:
    """Path of the checkpoint written after ``epoch`` (1-based)."""
    return Path(run_dir) / CHECKPOINT_DIR / f"epoch_{epoch:03d}.pt"


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], keep: int = 0) -> Path:
    """Write ``checkpoints/epoch_NNN.pt`` and ``last.pt`` (same bytes), each atomically.

    ``last.pt`` is a hard link to the epoch file where the file system allows it (a
    resnet18 IAPP-CNN checkpoint is about 130 MB; a copy per epoch adds up), else a copy.

    Args:
        run_dir: the run folder.
        state: ``{"model", "optimizer", "scheduler", "epoch", "metrics", ...}``.
        keep: keep only the newest ``keep`` epoch files (0 keeps all); ``last.pt`` stays.

    Returns:
        The epoch checkpoint path.
    """
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path = atomic_write_bytes(epoch_checkpoint(run_dir, int(state["epoch"])), data)
    _link_or_write(path, Path(run_dir) / LAST_CHECKPOINT, data)
    if keep > 0:
        old = sorted((Path(run_dir) / CHECKPOINT_DIR).glob("epoch_*.pt"))[:-keep]
        for p in old:
            p.unlink(missing_ok=True)
    return path


def _link_or_write(source: Path, dest: Path, data: bytes) -> None:
    """Point ``dest`` at ``source``'s bytes atomically: a hard link, else a copy."""
    tmp = dest.with_name(dest.name + ".link-tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # no hard links here (FAT, some network mounts)
        atomic_write_bytes(dest, data)
        return
    os.replace(tmp, dest)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU (it holds our own dicts, hence ``weights_only=False``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty, truncated or damaged, or holds no dict.
    """
    import torch

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for damaged files
        raise ValueError(
            f"{path} is not a readable checkpoint: it is empty, truncated or damaged "
            f"({type(exc).__name__}: {str(exc).split('. ')[0][:200]}); use another epoch's "
            f"file from {CHECKPOINT_DIR}/ or train again"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(
            f"{path} is not a checkpoint of an edge-iapp run (it holds a "
            f"{type(state).__name__}, not a dict); pass RUN/{LAST_CHECKPOINT} or one of "
            f"RUN/{CHECKPOINT_DIR}/epoch_NNN.pt"
        )
    return state


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """``RUN/metrics.json`` or an empty record."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return {"status": "new", "epochs": []}
    return json.loads(path.read_text(encoding="utf-8"))


def write_metrics(run_dir: str | Path, metrics: dict[str, Any]) -> None:
    """Write ``RUN/metrics.json`` atomically."""
    atomic_write_text(Path(run_dir) / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")


def weights_source(run_dir: str | Path) -> dict[str, Any]:
    """``{"checkpoint", "checkpoint_sha256"}`` of ``RUN/last.pt``, for a record derived from
    those weights (``ood.json``, ``review.json``) so that a reader can tell they changed."""
    from ..ioutil import sha256_file

    ckpt = Path(run_dir) / LAST_CHECKPOINT
    return {
        "checkpoint": LAST_CHECKPOINT,
        "checkpoint_sha256": sha256_file(ckpt) if ckpt.is_file() else None,
    }


def weights_changed(
    record: dict[str, Any], run_dir: str | Path, checkpoint: str | Path | None = None
) -> bool:
    """Whether ``checkpoint`` (default ``RUN/last.pt``) is not the weights ``record`` was
    derived from (its ``source.checkpoint_sha256``; a record without one never differs)."""
    from ..ioutil import sha256_file

    ckpt = Path(checkpoint) if checkpoint else Path(run_dir) / LAST_CHECKPOINT
    want = (record.get("source") or {}).get("checkpoint_sha256")
    return bool(want) and ckpt.is_file() and sha256_file(ckpt) != want
