"""Training augmentations that model differences between labs, scanners and cells.

Every function works on one uint8 crop after polarity normalisation (dark chromosome
on a light background, background level ``background``), returns a new uint8 crop of
at least 1 x 1 and fills every new pixel with ``background``. Geometric changes
(scale, bend, rotation) come first, then the optics (band sharpness, blur), the
staining / exposure curve (contrast) and last the sensor (noise)::

    crop -> scale -> bend -> rotation -> sharpness -> blur -> contrast -> noise

Each augmentation runs with probability :attr:`AugmentConfig.p`, its strength drawn
uniformly from its range (the scale factor log-uniformly). NumPy/OpenCV only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

AUGMENTATIONS: tuple[str, ...] = (
    "scale",
    "contrast",
    "blur",
    "noise",
    "sharpness",
    "rotation",
    "bend",
)
"""Every augmentation name (the CLI's spelling)."""

ORDER: tuple[str, ...] = ("scale", "bend", "rotation", "sharpness", "blur", "contrast", "noise")
"""The order in which :func:`augment_crop` applies them (geometry, optics, tone, sensor)."""

SHARPEN_SIGMA = 1.0
"""Gaussian sigma (px) of the unsharp mask: about one G-band at the crops' resolution."""


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run and how strong they may be.

    Attributes:
        enabled: names from :data:`AUGMENTATIONS` (empty = no augmentation).
        p: probability that each enabled augmentation is applied to a crop.
        scale: ``(low, high)`` size factor, drawn log-uniformly.
        scale_per_cell: draw one scale factor per cell (metaphase) and epoch, as a
            lab's pixel size is the same for every chromosome of a slide; False draws
            one per crop.
        gamma: ``(low, high)`` exponent of the background-relative grey curve.
        stretch: ``(low, high)`` factor on the darkness below the background.
        blur_sigma: ``(low, high)`` Gaussian sigma in pixels.
        noise_sigma: ``(low, high)`` Gaussian noise sigma in grey levels.
        sharpness: ``(low, high)`` unsharp-mask amount (negative = softer bands).
        rotation_deg: largest rotation in degrees (both directions).
        bend: largest bend amplitude as a fraction of the crop's long side.
    """

    enabled: frozenset[str] = frozenset()
    p: float = 0.5
    scale: tuple[float, float] = (0.8, 1.25)
    scale_per_cell: bool = True
    gamma: tuple[float, float] = (0.7, 1.4)
    stretch: tuple[float, float] = (0.75, 1.3)
    blur_sigma: tuple[float, float] = (0.0, 1.2)
    noise_sigma: tuple[float, float] = (0.0, 6.0)
    sharpness: tuple[float, float] = (-0.5, 1.0)
    rotation_deg: float = 15.0
    bend: float = 0.10

    def __post_init__(self) -> None:
        unknown = set(self.enabled) - set(AUGMENTATIONS)
        if unknown:
            raise ValueError(_unknown_message(sorted(unknown)))
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"augmentation probability p must be in [0, 1], got {self.p}")
        for name in ("scale", "gamma", "stretch", "blur_sigma", "noise_sigma", "sharpness"):
            low, high = getattr(self, name)
            if not low <= high:
                raise ValueError(f"augmentation range {name} must be (low, high), got {low, high}")
        if min(self.scale) <= 0 or min(self.gamma) <= 0 or min(self.stretch) < 0:
            raise ValueError("scale and gamma must be positive, stretch non-negative")
        if min(self.blur_sigma) < 0 or min(self.noise_sigma) < 0:
            raise ValueError("blur and noise sigmas must be non-negative")

    @property
    def names(self) -> list[str]:
        """The enabled names in :data:`AUGMENTATIONS` order (what ``RunConfig`` records)."""
        return [a for a in AUGMENTATIONS if a in self.enabled]

    def on(self, name: str) -> bool:
        return name in self.enabled


def _unknown_message(names: list[str]) -> str:
    return (
        f"unknown augmentation(s) {', '.join(names)}; valid: none, all, or a comma list of "
        f"{', '.join(AUGMENTATIONS)}"
    )


def parse_augment(text: str | list[str] | tuple[str, ...] | None) -> AugmentConfig:
    """``"none"``, ``"all"`` or a comma list (``"scale,blur"``) -> :class:`AugmentConfig`.

    A list (as saved in ``RunConfig.extra["augment"]``) is accepted too; ``[]`` = none.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
    """
    if text is None:
        return AugmentConfig()
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [t.strip().lower() for t in items if t.strip()]
    if names in ([], ["none"]):
        return AugmentConfig()
    if names == ["all"]:
        return AugmentConfig(enabled=frozenset(AUGMENTATIONS))
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(_unknown_message(unknown))
    return AugmentConfig(enabled=frozenset(names))


def _to_u8(values: np.ndarray) -> np.ndarray:
    """Round half up and clip float grey levels to uint8 (NaN cannot occur upstream)."""
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def scale_crop(crop: np.ndarray, factor: float) -> np.ndarray:
    """Resize by ``factor`` (aspect kept).

    Models the pixel size: another camera, objective or scanner resolution makes every
    chromosome of a slide longer or shorter in pixels.
    """
    h, w = crop.shape
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    if (nh, nw) == (h, w):
        return crop.copy()
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(crop, (nw, nh), interpolation=interp)


def contrast_crop(crop: np.ndarray, background: int, gamma: float, stretch: float) -> np.ndarray:
    """Background-relative gamma curve, then scale the darkness below the background.

    Models staining intensity, exposure and the camera's tone curve: with ``t`` the grey
    level over the background (0 = black, 1 = background), ``t' = 1 - stretch * (1 - t**gamma)``.
    The map is monotone and keeps the background level, so the geometry is unchanged.
    """
    bg = float(max(int(background), 1))
    t = np.minimum(crop.astype(np.float32) / np.float32(bg), np.float32(1.0))
    dark = (1.0 - np.power(t, np.float32(gamma))) * np.float32(stretch)
    out = np.float32(bg) * (1.0 - np.minimum(dark, np.float32(1.0)))
    # pixels brighter than the background (dust, halo) keep their level
    return np.where(crop > bg, crop, _to_u8(out)).astype(np.uint8)


def _pad(crop: np.ndarray, background: int, pad: int) -> np.ndarray:
    return cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=int(background))


def _gaussian(crop: np.ndarray, background: int, sigma: float) -> np.ndarray:
    """Float32 Gaussian blur with the background outside the crop."""
    pad = max(1, math.ceil(3 * sigma))
    padded = _pad(crop, background, pad).astype(np.float32)
    blurred = cv2.GaussianBlur(padded, (0, 0), sigmaX=sigma, sigmaY=sigma)
    return blurred[pad:-pad, pad:-pad]


def blur_crop(crop: np.ndarray, background: int, sigma: float) -> np.ndarray:
    """Gaussian blur with ``sigma`` pixels.

    Models focus and the optics' resolution (numerical aperture, scanner MTF), and the
    softening of a JPEG-compressed or down-sampled image.
    """
    if sigma <= 0:
        return crop.copy()
    return _to_u8(_gaussian(crop, background, sigma))


def noise_crop(crop: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise of ``sigma`` grey levels to every pixel.

    Models the camera sensor (shot and read noise, gain setting) and short exposures.
    """
    if sigma <= 0:
        return crop.copy()
    noise = rng.standard_normal(crop.shape, dtype=np.float32) * np.float32(sigma)
    return _to_u8(crop.astype(np.float32) + noise)


def sharpness_crop(crop: np.ndarray, background: int, amount: float) -> np.ndarray:
    """Unsharp mask ``crop + amount * (crop - blur(crop))`` at the scale of one band.

    Models band sharpness: the chromosome condensation (prometaphase vs metaphase),
    the banding protocol (trypsin time) and the lab's image enhancement. A negative
    amount softens the bands, a positive one crisps them.
    """
    if amount == 0:
        return crop.copy()
    src = crop.astype(np.float32)
    detail = src - _gaussian(crop, background, SHARPEN_SIGMA)
    return _to_u8(src + np.float32(amount) * detail)


def rotate_crop(crop: np.ndarray, background: int, degrees: float) -> np.ndarray:
    """Rotate by ``degrees`` about the centre on an enlarged crop (nothing is cut).

    Models how the chromosome lies on the slide and how each lab's karyotyping software
    straightens (or does not straighten) it before the crop is saved.
    """
    if degrees == 0:
        return crop.copy()
    h, w = crop.shape
    rad = math.radians(degrees)
    c, s = abs(math.cos(rad)), abs(math.sin(rad))
    nw, nh = max(1, math.ceil(w * c + h * s)), max(1, math.ceil(w * s + h * c))
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), degrees, 1.0)
    m[0, 2] += (nw - w) / 2.0
    m[1, 2] += (nh - h) / 2.0
    return cv2.warpAffine(
        crop,
        m,
        (nw, nh),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=int(background),
    )


def bend_crop(crop: np.ndarray, background: int, amplitude: float, shape: str) -> np.ndarray:
    """Shift each row (across the long axis) by a smooth curve of the position along it.

    Models bent chromosomes, which are more frequent in long, less condensed
    (prometaphase) preparations and in labs whose software does not straighten them.
    ``shape`` ``"arc"`` bows the chromosome (a half sine, 0 at both ends), ``"s"``
    bends it into an S (a full sine). ``amplitude`` is the largest shift as a fraction
    of the long side; the crop grows sideways so nothing is cut. Shifting whole rows
    keeps the area.
    """
    if amplitude == 0:
        return crop.copy()
    if crop.shape[1] > crop.shape[0]:  # work with the long axis vertical
        return bend_crop(crop.T, background, amplitude, shape).T.copy()
    h, w = crop.shape
    shift_px = amplitude * h
    pad = math.ceil(abs(shift_px)) + 1
    y = (np.arange(h, dtype=np.float32) + 0.5) / np.float32(h)
    cycles = 1.0 if shape == "arc" else 2.0
    if shape not in ("arc", "s"):
        raise ValueError(f"bend shape must be 'arc' or 's', got {shape!r}")
    dx = np.float32(shift_px) * np.sin(np.float32(math.pi * cycles) * y)
    nw = w + 2 * pad
    map_x = np.arange(nw, dtype=np.float32)[None, :] - np.float32(pad) - dx[:, None]
    map_y = np.repeat(np.arange(h, dtype=np.float32)[:, None], nw, axis=1)
    return cv2.remap(
        crop,
        map_x.astype(np.float32),
        map_y,
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=int(background),
    )


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def draw_scale(rng: np.random.Generator, cfg: AugmentConfig) -> float:
    """A log-uniform scale factor from ``cfg.scale`` (so 0.8 and 1.25 are equally likely)."""
    low, high = cfg.scale
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def augment_crop(
    crop: np.ndarray,
    background: int,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    scale: float | None = None,
) -> np.ndarray:
    """Apply the enabled augmentations of ``cfg`` to one crop.

    Args:
        crop: ``(h, w)`` uint8, dark on light.
        background: the crop's background level (``Polarity.background``).
        rng: the random stream (the draws depend only on it and ``cfg``).
        cfg: which augmentations and their ranges.
        scale: the scale factor to use when ``scale`` is enabled and drawn elsewhere
            (one per cell); None draws one here.

    Returns:
        ``(h', w')`` uint8 with ``h', w' >= 1``; the input when nothing is enabled.
    """
    if crop.dtype != np.uint8 or crop.ndim != 2 or min(crop.shape) < 1:
        raise ValueError(f"expected a non-empty (h, w) uint8 crop, got {crop.dtype} {crop.shape}")
    if not cfg.enabled:
        return crop
    out = crop
    bg = int(background)
    for name in ORDER:
        if not cfg.on(name):
            continue
        # draw the coin and the strength every time, so one augmentation's draws do not
        # depend on whether another one fired
        fire = rng.random() < cfg.p
        if name == "scale":
            factor = draw_scale(rng, cfg) if scale is None else scale
            if fire or scale is not None:
                out = scale_crop(out, factor)
        elif name == "bend":
            amp = rng.uniform(-cfg.bend, cfg.bend)
            shape = "arc" if rng.random() < 0.5 else "s"
            if fire:
                out = bend_crop(out, bg, amp, shape)
        elif name == "rotation":
            deg = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
            if fire:
                out = rotate_crop(out, bg, deg)
        elif name == "sharpness":
            amount = _uniform(rng, cfg.sharpness)
            if fire:
                out = sharpness_crop(out, bg, amount)
        elif name == "blur":
            sigma = _uniform(rng, cfg.blur_sigma)
            if fire:
                out = blur_crop(out, bg, sigma)
        elif name == "contrast":
            gamma = math.exp(rng.uniform(math.log(cfg.gamma[0]), math.log(cfg.gamma[1])))
            stretch = _uniform(rng, cfg.stretch)
            if fire:
                out = contrast_crop(out, bg, gamma, stretch)
        elif name == "noise":
            sigma = _uniform(rng, cfg.noise_sigma)
            if fire:
                out = noise_crop(out, sigma, rng)
    return np.ascontiguousarray(out, dtype=np.uint8)
