"""IAPP-CNN: three independent branches (global, object, part) with fused votes.

Shapes use N = batch, S = input size, C = backbone channels, K = 24 classes,
and ``h x w`` = the backbone's last feature grid (S/32 for ResNets).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..classes import NUM_CLASSES
from .backbones import create_backbone
from .part_aware_se import PartAwareSE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InputStem(nn.Module):
    """``(N, 1, S, S)`` grey in [0, 1] -> ``(N, 3, S, S)`` ImageNet-normalised RGB.

    Part of every branch (and of its ONNX graph), so every backend is fed the same
    one-channel tensor that :func:`edge_iapp.preprocess.network_input` makes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std


class Branch(nn.Module):
    """One scale's CNN: stem, backbone, global average pooling, linear classifier.

    Forward: ``(N, 1, S, S)`` -> logits ``(N, K)``.
    """

    def __init__(
        self, backbone: str, num_classes: int = NUM_CLASSES, weights: str | Path | None = None
    ):
        super().__init__()
        self.stem = InputStem()
        self.features, channels = create_backbone(backbone, weights)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)).mean(dim=(2, 3)))


class ObjectBranch(Branch):
    """The object branch, with the part-aware double SE before its classifier.

    Forward: ``(N, 1, S, S)`` -> ``(logits (N, K), part_maps (N, 2, h, w))``.
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int = NUM_CLASSES,
        weights: str | Path | None = None,
        r1: int = 8,
        r2: int = 16,
    ):
        super().__init__(backbone, num_classes, weights)
        self.part_se = PartAwareSE(self.head.in_features, r1, r2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        pooled, part_maps = self.part_se(self.features(self.stem(x)))
        return self.head(pooled), part_maps


class IAPPCNN(nn.Module):
    """The three branches. The part zoom between object and part branch is data, not a layer.

    Attributes:
        global_branch: :class:`Branch`, reads the global image.
        object_branch: :class:`ObjectBranch`, reads the object image.
        part_branch: :class:`Branch`, reads the part image.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = NUM_CLASSES,
        weights: str | Path | None = None,
        r1: int = 8,
        r2: int = 16,
    ):
        super().__init__()
        self.backbone = backbone
        self.global_branch = Branch(backbone, num_classes, weights)
        self.object_branch = ObjectBranch(backbone, num_classes, weights, r1, r2)
        self.part_branch = Branch(backbone, num_classes, weights)

    def forward(
        self,
        global_x: torch.Tensor,
        object_x: torch.Tensor,
        part_x: torch.Tensor | None = None,
        part_fn=None,
    ) -> dict[str, torch.Tensor]:
        """Run all three branches.

        Args:
            global_x, object_x: ``(N, 1, S, S)`` network inputs.
            part_x: the part input if already computed; otherwise ``part_fn(object_x,
                part_maps) -> part_x`` computes it (no gradient flows through the crop).

        Returns:
            ``{"global", "object", "part"}`` logits ``(N, K)`` and ``"part_maps"``.
        """
        global_logits = self.global_branch(global_x)
        object_logits, part_maps = self.object_branch(object_x)
        if part_x is None:
            if part_fn is None:
                raise ValueError("pass part_x, or part_fn to compute it from the object branch")
            with torch.no_grad():
                part_x = part_fn(object_x, part_maps.detach())
        return {
            "global": global_logits,
            "object": object_logits,
            "part": self.part_branch(part_x),
            "part_maps": part_maps,
        }


def create_model(backbone: str = "resnet18", **kwargs) -> IAPPCNN:
    """Factory for :class:`IAPPCNN` (``kwargs``: ``num_classes``, ``weights``, ``r1``, ``r2``)."""
    return IAPPCNN(backbone, **kwargs)
