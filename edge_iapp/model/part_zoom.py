"""Part zoom for training: torch tensors in, torch tensors out, same arrays as the reference."""

from __future__ import annotations

import numpy as np
import torch

from ..preprocess import PreprocessConfig, part_zoom


def part_inputs(object_x: torch.Tensor, part_maps: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """``(N, 1, S, S)`` object inputs + ``(N, 2, h, w)`` maps -> ``(N, 1, S, S)`` part inputs.

    The crop carries no gradient (NOTES.md section 3), so this runs the reference
    preprocessing on the host; the result equals it by construction.
    """
    images = np.clip(np.floor(object_x[:, 0].detach().cpu().numpy() * 255.0 + 0.5), 0, 255).astype(np.uint8)
    maps = part_maps.detach().float().cpu().numpy()
    parts = part_zoom(images, maps, cfg).images
    return torch.from_numpy(parts.astype(np.float32) / 255.0)[:, None].to(object_x.device)
