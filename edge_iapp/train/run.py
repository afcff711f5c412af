"""A training run folder: its config, its checkpoints, and loading the model back.

Layout of ``RUN/``::

    config.json          RunConfig (backbone, preprocessing, recipe, seed, data paths)
    split.json           the split used (copied)
    checkpoints/epoch_001.pt ...   {"model", "optimizer", "scheduler", "epoch", "metrics"}
    last.pt -> the newest checkpoint (a copy, written atomically)
    metrics.json         one entry per epoch
    ood.json             OOD review threshold from the val part (edge_iapp/ood.py)
    finetune.json        a fine-tuned run: its cells, scores before and after (finetune.py)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..preprocess import PreprocessConfig

CONFIG_FILE = "config.json"
LAST_CHECKPOINT = "last.pt"


@dataclass
class RunConfig:
    """Everything needed to rebuild the model of a run (and to repeat the run)."""

    backbone: str = "resnet18"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    num_classes: int = 24
    r1: int = 8
    r2: int = 16
    fusion: str = "lambda"
    epochs: int = 50
    batch_size: int = 26
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-5
    schedule: str = "cosine"
    hflip: float = 0.5
    seed: int = 0
    branches: tuple[str, ...] = ("global", "object", "part")
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocess"] = self.preprocess.to_dict()
        data["branches"] = list(self.branches)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        data = dict(data)
        data["preprocess"] = PreprocessConfig.from_dict(data.get("preprocess", {}))
        data["branches"] = tuple(data.get("branches", ("global", "object", "part")))
        return cls(**data)

    def save(self, run_dir: str | Path) -> None:
        from ..ioutil import atomic_write_text

        atomic_write_text(Path(run_dir) / CONFIG_FILE, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, run_dir: str | Path) -> RunConfig:
        """Read ``RUN/config.json``.

        Raises:
            FileNotFoundError: there is no ``config.json``.
            ValueError: it is not a run config (not JSON, or other fields).
        """
        path = Path(run_dir) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a training run: {CONFIG_FILE} is missing")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise TypeError(f"a JSON {type(data).__name__}, not an object")
            return cls.from_dict(data)
        except (ValueError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
            raise ValueError(
                f"{path} is not a readable run config ({exc}); it is written by `edge-iapp "
                "train`: restore the run folder from a copy, or train again"
            ) from None


def load_model(run_dir: str | Path, checkpoint: str | Path | None = None):
    """Rebuild the :class:`~edge_iapp.model.IAPPCNN` of a run with its trained weights.

    Args:
        run_dir: the run folder.
        checkpoint: a checkpoint file; default ``RUN/last.pt``.

    Returns:
        ``(model in eval mode, RunConfig)``.
    """
    from ..model import create_model
    from .checkpoint import load_checkpoint

    cfg = RunConfig.load(run_dir)
    ckpt = Path(checkpoint) if checkpoint else Path(run_dir) / LAST_CHECKPOINT
    if not ckpt.is_file():
        raise FileNotFoundError(f"no checkpoint at {ckpt}; has the run finished an epoch?")
    model = create_model(cfg.backbone, num_classes=cfg.num_classes, r1=cfg.r1, r2=cfg.r2)
    state = load_checkpoint(ckpt)
    if "model" not in state:
        raise ValueError(
            f"{ckpt} holds no 'model' weights: it is not a checkpoint of an edge-iapp run "
            f"(pass RUN/{LAST_CHECKPOINT} or one of RUN/checkpoints/epoch_NNN.pt)"
        )
    model.load_state_dict(state["model"])
    return model.eval(), cfg
