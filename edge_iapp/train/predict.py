"""Run a model over prepared images: per-branch logits (the input of fusion and metrics)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .data import ChromosomeDataset, PreparedImages, batches

BRANCHES: tuple[str, ...] = ("global", "object", "part")


def check_branches(branches: Sequence[str]) -> tuple[str, ...]:
    """Validate a branch subset (in canonical order); the part branch needs the object branch.

    Raises:
        ValueError: unknown or empty subset, or ``part`` without ``object``.
    """
    unknown = [b for b in branches if b not in BRANCHES]
    if unknown or not branches:
        raise ValueError(f"branches must be a non-empty subset of {BRANCHES}, got {list(branches)}")
    if "part" in branches and "object" not in branches:
        raise ValueError("the part branch reads the object branch's part maps: add 'object'")
    return tuple(b for b in BRANCHES if b in branches)


def forward_branches(model, batch: dict, branches: Sequence[str]) -> dict:
    """Forward the active branches of :class:`~edge_iapp.model.IAPPCNN` on one batch.

    Args:
        model: the IAPP-CNN.
        batch: ``{"global", "object"}`` ``(B, 1, S, S)`` inputs on the model's device;
            optionally ``"object_u8"`` ``(B, S, S)`` uint8, the object input before the
            division by 255 (saves converting it back for the part zoom).
        branches: active branches (see :func:`check_branches`).

    Returns:
        ``{branch: logits (B, K)}`` plus ``"part_fallback"`` ``(B,)`` when the part
        branch ran. The part crop carries no gradient.
    """
    import torch

    from ..model.part_zoom import part_zoom_torch, to_u8

    out: dict = {}
    if "global" in branches:
        out["global"] = model.global_branch(batch["global"])
    if "object" in branches:
        out["object"], part_maps = model.object_branch(batch["object"])
        if "part" in branches:
            with torch.no_grad():
                # float32 maps: under bf16 autocast (--amp) the mask must still come from
                # float32 comparisons, as at export
                object_u8 = batch.get("object_u8")
                if object_u8 is None:
                    object_u8 = to_u8(batch["object"])
                zoom = part_zoom_torch(object_u8, part_maps.detach().float())
                part_x = (zoom.images.to(torch.float32) / 255.0)[:, None]
            out["part"] = model.part_branch(part_x)
            out["part_fallback"] = zoom.fallback
    return out


@dataclass
class Predictions:
    """Per-branch logits of a whole subset.

    Attributes:
        branches: branch names, in the order of ``logits``.
        logits: ``(B, N, K)`` float32.
        labels: ``(N,)`` int64.
        part_fallback: ``(N,)`` bool (all False when the part branch did not run).
    """

    branches: tuple[str, ...]
    logits: np.ndarray
    labels: np.ndarray
    part_fallback: np.ndarray

    def select(self, subset: Sequence[str]) -> np.ndarray:
        """``(len(subset), N, K)`` logits of the named branches."""
        return self.logits[[self.branches.index(b) for b in subset]]


def predict(
    model,
    data: PreparedImages,
    branches: Sequence[str],
    device: str = "cpu",
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> Predictions:
    """Logits of every active branch for every image of ``data`` (eval mode, no gradient)."""
    import torch

    branches = check_branches(branches)
    model.eval()
    chunks: dict[str, list[np.ndarray]] = {b: [] for b in branches}
    fallback: list[np.ndarray] = []
    with torch.inference_mode():
        for batch in batches(ChromosomeDataset(data), batch_size, shuffle=False):
            x = {k: batch[k].to(device) for k in ("global", "object")}
            out = forward_branches(model, x, branches)
            for b in branches:
                chunks[b].append(out[b].float().cpu().numpy())
            n = batch["label"].shape[0]
            pf = out.get("part_fallback")
            fallback.append(pf.cpu().numpy() if pf is not None else np.zeros(n, bool))
            if progress:
                progress(n)
    k = model.global_branch.head.out_features
    logits = np.stack(
        [np.concatenate(chunks[b]) if chunks[b] else np.zeros((0, k), np.float32) for b in branches]
    )
    return Predictions(
        branches=branches,
        logits=logits,
        labels=data.labels.copy(),
        part_fallback=np.concatenate(fallback) if fallback else np.zeros(0, bool),
    )
