"""Part zoom in batched torch (paper eq. 10-13): the reference ``part_zoom`` on tensors.

Runs on whatever device the object branch runs on, without a host round trip: no
host-to-device copies (constants are Python scalars or fills made on the device) and, for
feature grids up to :data:`SYNC_FREE_MAX_CELLS` cells, no device-to-host read either, so
on a GPU the host can queue the next work while this runs. It draws the same arrays as
:func:`edge_iapp.preprocess.part_zoom`: masks and boxes bit-exact, pixels within 1/255
(on CPU they are equal; the same float32 operations in the same order). No gradient
flows through the crop (NOTES.md section 3).

Shapes: N = batch, S = input size, ``h x w`` = the object branch's feature grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..preprocess import BACKGROUND, PreprocessConfig


@dataclass
class TorchPartBatch:
    """Part zooms of a batch, as tensors on the input's device.

    Attributes:
        images: ``(N, S, S)`` uint8.
        masks: ``(N, h, w)`` bool, the largest 8-connected region of the part mask.
        boxes: ``(N, 4)`` int64 ``(y0, x0, y1, x1)`` end-exclusive on the object image.
        fallback: ``(N,)`` bool, the mask was empty and the object image was used.
    """

    images: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    fallback: torch.Tensor


def part_mask_torch(part_maps: torch.Tensor) -> torch.Tensor:
    """Eq. 10-12: ``(N, 2, h, w)`` maps -> ``(N, h, w)`` bool, each above its float64 mean."""
    if part_maps.ndim != 4 or part_maps.shape[1] != 2:
        raise ValueError(f"expected part maps of shape (N, 2, h, w), got {tuple(part_maps.shape)}")
    maps = part_maps.detach().to(torch.float64)
    above = maps > maps.mean(dim=(2, 3), keepdim=True)
    return above[:, 0] & above[:, 1]


_CONVERGENCE_CHECK = 4
"""Propagation rounds between convergence checks in :func:`largest_component_torch`."""

SYNC_FREE_MAX_CELLS = 64
"""Feature grids of at most this many cells run a fixed number of propagation rounds.

Min-propagation reaches its fixed point within ``h * w - 1`` rounds (the longest path
inside a region), and rounds after it change nothing, so a fixed count needs no
convergence check, and a check is a device-to-host read that waits for the GPU to drain
its queue. The object branch's grid is 7 x 7 at 224 px (48 rounds of two small kernels)
and 4 x 4 at 128 px; 64 cells (8 x 8) keeps the launches few. Larger grids check every
:data:`_CONVERGENCE_CHECK` rounds and usually stop long before ``h * w`` rounds.
"""


def largest_component_torch(mask: torch.Tensor) -> torch.Tensor:
    """Largest 8-connected region per image; ties go to the region met first in raster order.

    Each pixel starts with its raster index; 3x3 min-propagation inside the mask until
    nothing changes labels every region with its first raster pixel, so the tie rule
    of the reference (``argmin`` of first pixels among the largest) is exact. Grids of
    up to :data:`SYNC_FREE_MAX_CELLS` cells run ``h * w - 1`` rounds without a check (no
    device-to-host sync); larger ones check for convergence every few rounds.

    Args:
        mask: ``(N, h, w)`` bool.

    Returns:
        ``(N, h, w)`` bool.
    """
    n, h, w = mask.shape
    if n == 0 or h * w == 0:
        return torch.zeros_like(mask)
    big = h * w  # label of "no region"; larger than every raster index
    index = torch.arange(h * w, device=mask.device, dtype=torch.float32).view(1, 1, h, w)
    inside = mask[:, None]
    # Labels are kept negated, so that the 3x3 minimum is one max-pool (outside pixels are
    # padded with -inf). The window holds the pixel itself, so the pool never raises a
    # label; pixels outside the mask keep -big, below every label inside.
    neg = torch.where(inside, -index, -float(big))

    def spread(x: torch.Tensor) -> torch.Tensor:
        return torch.where(inside, torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1), x)

    if h * w <= SYNC_FREE_MAX_CELLS:
        for _ in range(h * w - 1):
            neg = spread(neg)
    else:
        # Min-propagation reaches a fixed point, after which more rounds change nothing, so
        # convergence is checked every CHECK rounds: each check waits for the GPU.
        for _ in range(0, h * w, _CONVERGENCE_CHECK):
            before = neg
            for _ in range(_CONVERGENCE_CHECK):
                neg = spread(neg)
            if torch.equal(neg, before):
                break
    labels = -neg
    flat = labels.view(n, h * w).to(torch.int64)
    counts = torch.zeros((n, big + 1), dtype=torch.int64, device=mask.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat))
    counts[:, big] = 0
    # largest area; among equals the smallest label (= first in raster order)
    best = counts.max(dim=1, keepdim=True).values
    candidates = (counts == best) & (best > 0)
    order = torch.arange(big + 1, device=mask.device).expand(n, -1)
    chosen = torch.where(candidates, order, torch.full_like(order, big + 1)).min(dim=1).values
    return (flat == chosen[:, None]).view(n, h, w) & mask


def _mask_boxes(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, h, w)`` bool -> ``(boxes (N, 4) int64 end-exclusive, empty (N,) bool)``."""
    n, h, w = mask.shape
    rows = mask.any(dim=2)
    cols = mask.any(dim=1)
    empty = ~rows.any(dim=1)
    ry = torch.arange(h, device=mask.device)
    rx = torch.arange(w, device=mask.device)
    y0 = torch.where(rows, ry, h).min(dim=1).values
    y1 = torch.where(rows, ry, -1).max(dim=1).values + 1
    x0 = torch.where(cols, rx, w).min(dim=1).values
    x1 = torch.where(cols, rx, -1).max(dim=1).values + 1
    return torch.stack((y0, x0, y1, x1), dim=1), empty


def _zoom_boxes(images: torch.Tensor, boxes: torch.Tensor, out_size: int) -> torch.Tensor:
    """Torch ``sampling.zoom_boxes``: crop each box, fit it aspect-kept and centred.

    Args:
        images: ``(N, S, S)`` float32 grey levels 0..255.
        boxes: ``(N, 4)`` int64 ``(y0, x0, y1, x1)``, non-empty, inside the image.

    Returns:
        ``(N, out_size, out_size)`` uint8, the same float32 maths as ``sampling.place``.
    """
    n, s, _ = images.shape
    dev = images.device
    f32 = torch.float32
    y0, x0, y1, x1 = boxes.unbind(dim=1)
    bh, bw = y1 - y0, x1 - x0
    longest = torch.maximum(bh, bw).to(f32)
    # a fill on the device, not torch.tensor (a host-to-device copy); not ``out_size /
    # longest`` either, which torch computes as ``longest.reciprocal() * out_size``
    scale = torch.full_like(longest, float(out_size)) / longest
    top = (out_size - bh.to(f32) * scale) / 2.0
    left = (out_size - bw.to(f32) * scale) / 2.0
    grid = torch.arange(out_size, device=dev, dtype=f32) + 0.5
    v = (grid[None, :] - top[:, None]) / scale[:, None] - 0.5  # (N, S_out) rows
    u = (grid[None, :] - left[:, None]) / scale[:, None] - 0.5  # (N, S_out) cols
    vf, uf = torch.floor(v), torch.floor(u)
    fy = (v - vf)[:, :, None]
    fx = (u - uf)[:, None, :]
    vi, ui = vf.to(torch.int64), uf.to(torch.int64)
    flat = images.reshape(n, s * s)
    fill = float(BACKGROUND)  # a Python scalar: torch.where keeps the tensor's float32

    def read(ry: torch.Tensor, rx: torch.Tensor) -> torch.Tensor:
        # ry (N, S_out), rx (N, S_out): crop coordinates; outside the crop reads the fill
        valid = ((ry >= 0) & (ry < bh[:, None]))[:, :, None] & ((rx >= 0) & (rx < bw[:, None]))[
            :, None, :
        ]
        gy = (ry + y0[:, None]).clamp(0, s - 1)
        gx = (rx + x0[:, None]).clamp(0, s - 1)
        idx = (gy[:, :, None] * s + gx[:, None, :]).reshape(n, -1)
        vals = torch.gather(flat, 1, idx).view(n, out_size, out_size)
        return torch.where(valid, vals, fill)

    p00, p01 = read(vi, ui), read(vi, ui + 1)
    p10, p11 = read(vi + 1, ui), read(vi + 1, ui + 1)
    # ``1.0 - t`` (torch.rsub, float32) equals ``torch.tensor(1.0) - t`` bit for bit
    top_row = p00 * (1.0 - fx) + p01 * fx
    bottom_row = p10 * (1.0 - fx) + p11 * fx
    out = top_row * (1.0 - fy) + bottom_row * fy
    return torch.clamp(torch.floor(out + 0.5), 0, 255).to(torch.uint8)


def part_zoom_torch(object_images: torch.Tensor, part_maps: torch.Tensor) -> TorchPartBatch:
    """Part-scale images from ``(N, S, S)`` uint8 object images and ``(N, 2, h, w)`` maps."""
    if object_images.ndim != 3 or object_images.dtype != torch.uint8:
        raise ValueError(
            "expected (N, S, S) uint8 object images, "
            f"got {object_images.dtype} {tuple(object_images.shape)}"
        )
    n, s, _ = object_images.shape
    if part_maps.shape[0] != n:
        raise ValueError(f"{n} object images but {part_maps.shape[0]} part maps")
    part_maps = part_maps.to(object_images.device)
    masks = largest_component_torch(part_mask_torch(part_maps))
    h, w = masks.shape[1:]
    grid_boxes, fallback = _mask_boxes(masks)
    gy0, gx0, gy1, gx1 = grid_boxes.unbind(dim=1)
    # grid box -> image pixels, outward: floor for starts, ceil for ends (integer maths)
    boxes = torch.stack(
        (
            torch.div(gy0 * s, h, rounding_mode="floor"),
            torch.div(gx0 * s, w, rounding_mode="floor"),
            -torch.div(-gy1 * s, h, rounding_mode="floor"),
            -torch.div(-gx1 * s, w, rounding_mode="floor"),
        ),
        dim=1,
    )
    full = boxes.new_zeros((1, 4))  # (0, 0, s, s), made on the device (fills, no copy)
    full[:, 2:] = s
    boxes = torch.where(fallback[:, None], full, boxes)
    zoomed = _zoom_boxes(object_images.to(torch.float32), boxes, s)
    images = torch.where(fallback[:, None, None], object_images, zoomed)
    return TorchPartBatch(images=images, masks=masks, boxes=boxes, fallback=fallback)


def to_u8(x: torch.Tensor) -> torch.Tensor:
    """``(N, 1, S, S)`` network input in [0, 1] -> ``(N, S, S)`` uint8 (round half up)."""
    return torch.clamp(torch.floor(x[:, 0].detach() * 255.0 + 0.5), 0, 255).to(torch.uint8)


def part_inputs(
    object_x: torch.Tensor, part_maps: torch.Tensor, cfg: PreprocessConfig | None = None
) -> torch.Tensor:
    """``(N, 1, S, S)`` object inputs + ``(N, 2, h, w)`` maps -> ``(N, 1, S, S)`` part inputs.

    Args:
        object_x: object-branch input, float32 = uint8 / 255.
        part_maps: the object branch's part maps (detached here).
        cfg: preprocessing parameters (kept for the signature; the size is the input's).

    Returns:
        float32 part inputs on ``object_x``'s device, no gradient.
    """
    with torch.no_grad():
        parts = part_zoom_torch(to_u8(object_x), part_maps.detach()).images
        return (parts.to(torch.float32) / 255.0)[:, None]
