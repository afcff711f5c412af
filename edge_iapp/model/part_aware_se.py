"""Part-aware mechanism, network side (paper eq. 6-9): double squeeze-and-excitation."""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcitation(nn.Module):
    """``m = sigmoid(W2 relu(W1 GAP(F)))``, ``U = m * F`` (eq. 6-8) with reduction ``r``."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        squeezed = features.mean(dim=(2, 3))
        weights = torch.sigmoid(self.fc2(torch.relu(self.fc1(squeezed))))
        return features * weights[:, :, None, None]


class PartAwareSE(nn.Module):
    """Two SE blocks with reduction ratios ``r1`` and ``r2`` on the object features.

    Forward: ``(N, C, h, w)`` -> ``(pooled (N, C), part_maps (N, 2, h, w))``.
    ``pooled`` is the global average of ``(U1 + U2) / 2``: the object head reads it,
    so the SE weights learn from the object loss (NOTES.md section 3). ``part_maps``
    are the channel sums of U1 and U2 (eq. 9), from which the part mask is drawn.
    """

    def __init__(self, channels: int, r1: int = 8, r2: int = 16) -> None:
        super().__init__()
        self.se1 = SqueezeExcitation(channels, r1)
        self.se2 = SqueezeExcitation(channels, r2)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u1 = self.se1(features)
        u2 = self.se2(features)
        pooled = ((u1 + u2) * 0.5).mean(dim=(2, 3))
        part_maps = torch.stack((u1.sum(dim=1), u2.sum(dim=1)), dim=1)
        return pooled, part_maps
