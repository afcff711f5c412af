"""Synthetic G-band (or Q-band) chromosomes, cells and labelled folders.

Each class is drawn from its ideogram facts (:mod:`edge_iapp.data.ideogram`): relative
length, centromere index and band pattern. One chromosome is two sister chromatids
(capsules with rounded ends) swept along a smooth, possibly bent, medial axis, pinched at
the centromere (acrocentric short arms get a thin stalk and satellites), darkened by the
band profile, rotated, blurred, noised and cropped tightly like the real crops (median
about 21x61 px). Cells differ in condensation (absolute length), width, contrast, blur,
noise and background, so absolute size is a weak class cue across cells, as on real
slides.

Everything is deterministic given a NumPy ``Generator``; :func:`synth_cells` derives one
independent generator per cell from a seed, so cell ``i`` does not depend on how many
cells were asked for. NumPy/OpenCV only (no torch).

Two folder layouts (:func:`write_labelled`, :func:`write_slides`) are written atomically;
``OUT/synth.json`` records what produced them, so rewriting the same set is allowed and
overwriting a different one needs ``force``. See ``docs/SYNTH.md``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..classes import CLASS_NAMES, canonical_class
from ..ioutil import atomic_write_bytes, atomic_write_text
from .ideogram import ChromosomeFacts, darkness_profile, facts

Cell = list[tuple[str, np.ndarray]]
"""One metaphase: ``(class_name, (H, W) uint8 image)`` in karyotype order."""

_CHR1_RL = 8.44  # relative length of chromosome 1, the length unit of SynthConfig


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of the generator (defaults tuned against gband612 by eye and statistics).

    Attributes:
        qband: bright chromosomes on black (Q-band polarity) instead of dark on white.
        aneuploid: probability that a cell is aneuploid (45 or 47 chromosomes).
        male_fraction: probability that a euploid cell is XY.
        chr1_length: chromosome 1's length in pixels at cell scale 1.
        scale_range: per-cell condensation factor range (multiplies every length).
        width: chromosome width (both chromatids) in pixels at cell scale 1.
        length_jitter: per-chromosome relative length noise (s.d.) within a cell.
        band_level: ideogram level used for the bands (``"850"``, ``"550"``, ``"350"``).
        p_bent: probability of a clearly bent chromosome (arc or hinge).
        p_any_rotation: probability of a uniformly random orientation; otherwise the
            chromosome stands upright (p arm up) within ``rotation_sd`` degrees.
        rotation_sd: s.d. in degrees of the upright orientation.
        p_upside_down: probability of q arm up.
        supersample: rendering oversampling factor before the area-average downsample.
        p_masked: probability that a cell's crops have a pure 255 background outside
            the chromosome (segmentation-tool crops); otherwise noisy background.
    """

    qband: bool = False
    aneuploid: float = 0.0
    male_fraction: float = 0.5
    chr1_length: float = 110.0
    scale_range: tuple[float, float] = (0.72, 1.3)
    width: float = 14.5
    length_jitter: float = 0.05
    band_level: str = "550"
    p_bent: float = 0.3
    p_any_rotation: float = 0.08
    rotation_sd: float = 10.0
    p_upside_down: float = 0.05
    supersample: int = 2
    p_masked: float = 0.5

    def __post_init__(self) -> None:
        for name in (
            "aneuploid",
            "male_fraction",
            "p_bent",
            "p_any_rotation",
            "p_upside_down",
            "p_masked",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        lo, hi = self.scale_range
        if not 0.1 <= lo <= hi <= 10.0:
            raise ValueError(
                f"scale_range must satisfy 0.1 <= lo <= hi <= 10, got {self.scale_range}"
            )
        if self.chr1_length < 10 or self.width < 3:
            raise ValueError("chr1_length must be >= 10 px and width >= 3 px")
        if self.supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {self.supersample}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scale_range"] = list(self.scale_range)
        return d


@dataclass(frozen=True)
class CellStyle:
    """What one cell's preparation and imaging look like (shared by its chromosomes).

    Attributes:
        scale: condensation factor (lengths are ``chr1_length * scale * RL / 8.44``).
        width: chromosome width in pixels.
        base: darkness of a pale (``gneg``) band at the chromatid centre, grey levels.
        contrast: extra darkness of a ``gpos100`` band, grey levels.
        band_blur: s.d. in pixels of the blur along the axis (band resolution).
        blur: s.d. in pixels of the optical blur of the whole image.
        noise: s.d. of additive pixel noise, grey levels.
        background: background grey level (G polarity; Q-band images are inverted).
        overlap: sister chromatid centre offset as a fraction of the chromatid radius
            (below 1 the chromatids overlap into one body with a faint groove).
        gap: gap between sister chromatids as a fraction of the width.
        masked: the crop's background is set to exactly 255 outside the chromosome, as a
            segmentation tool does (gband612's crops look like this).
        config: the generator parameters.
    """

    scale: float
    width: float
    base: float
    contrast: float
    band_blur: float
    blur: float
    noise: float
    background: float
    overlap: float
    gap: float
    masked: bool
    config: SynthConfig = field(default_factory=SynthConfig)


def draw_cell_style(rng: np.random.Generator, config: SynthConfig | None = None) -> CellStyle:
    """Draw one cell's condensation and imaging parameters."""
    cfg = config or SynthConfig()
    scale = float(rng.uniform(*cfg.scale_range))
    # Condensed (short) chromosomes are a little wider.
    width = cfg.width * float(rng.uniform(0.88, 1.12)) * scale**-0.25
    return CellStyle(
        scale=scale,
        width=width,
        base=float(rng.uniform(90, 130)),
        contrast=float(rng.uniform(110, 160)),
        band_blur=float(rng.uniform(0.8, 1.6)),
        blur=float(rng.uniform(0.5, 1.0)),
        noise=float(rng.uniform(2.0, 6.0)),
        background=float(rng.uniform(242, 256)),
        overlap=float(rng.uniform(0.3, 0.8)),
        gap=float(rng.uniform(0.0, 0.06)),
        masked=bool(rng.random() < cfg.p_masked),
        config=cfg,
    )


def _axis(length: float, ext: float, step: float, rng: np.random.Generator, cfg: SynthConfig):
    """Medial axis points ``(M, 2)`` (x, y), arc length ``(M,)`` and angle ``(M,)``.

    ``s`` runs from ``-ext`` to ``length + ext``; the axis is straight beyond the ends.
    """
    s = np.arange(-ext, length + ext + step, step)
    u = np.clip(s, 0.0, length) / length  # 0..1 along the chromosome
    if rng.random() < cfg.p_any_rotation:
        theta = rng.uniform(0, 2 * np.pi)
    else:
        theta = np.pi / 2 + np.deg2rad(rng.normal(0, cfg.rotation_sd))  # pointing down
    if rng.random() < cfg.p_upside_down:
        theta += np.pi
    shape = rng.random()
    if rng.random() >= cfg.p_bent:
        phi = theta + rng.normal(0, np.deg2rad(8)) * (u - 0.5)  # near straight
    elif shape < 0.65:
        phi = theta + rng.uniform(-1, 1) * np.deg2rad(rng.uniform(25, 80)) * (u - 0.5)
    else:  # hinge: a bend concentrated at one point, like a folded arm
        turn = rng.choice([-1, 1]) * np.deg2rad(rng.uniform(40, 100))
        at = rng.uniform(0.3, 0.7)
        phi = theta + turn * 0.5 * np.tanh((u - at) / rng.uniform(0.07, 0.15))
    dx, dy = np.cos(phi) * step, np.sin(phi) * step
    pts = np.stack([np.cumsum(dx), np.cumsum(dy)], axis=1)
    return pts, s, phi


def _nearest_axis(pix: np.ndarray, pts: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Index of the nearest axis point for each pixel ``(K, 2)`` -> ``(K,)``."""
    centre = pts.mean(0)
    q = (pts - centre).astype(np.float32)
    qx, qy, a2 = q[:, 0], q[:, 1], (q**2).sum(1) * np.float32(0.5)
    out = np.empty(len(pix), dtype=np.int64)
    for i in range(0, len(pix), chunk):
        p = (pix[i : i + chunk] - centre).astype(np.float32)
        # argmin |p - q|^2 = argmin (|q|^2 / 2 - p.q); a K=2 matmul is slow in BLAS.
        d2 = a2[None, :] - p[:, :1] * qx[None, :] - p[:, 1:] * qy[None, :]
        out[i : i + chunk] = np.argmin(d2, axis=1)
    return out


def _smooth_noise(rng: np.random.Generator, n: int, corr: float) -> np.ndarray:
    """``(n,)`` zero-mean unit-ish noise, Gaussian-correlated over ``corr`` samples."""
    x = rng.normal(0, 1, n + 8 * int(corr) + 1).astype(np.float32)
    k = cv2.getGaussianKernel(int(6 * corr) | 1, corr).ravel().astype(np.float32)
    y = np.convolve(x, k, mode="same")[4 * int(corr) : 4 * int(corr) + n]
    return y / max(float(np.sqrt((k**2).sum())), 1e-6)


def _shape_profiles(
    chrom: ChromosomeFacts,
    u: np.ndarray,
    r0: float,
    c0: float,
    length: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Chromatid radius ``r(u)`` and half separation ``c(u)`` along ``u`` (pixels)."""
    ci = chrom.centromere_index * length
    pinch = np.exp(-(((u - ci) / max(0.7 * r0, 1.0)) ** 2))
    depth = rng.uniform(0.2, 0.4)
    r = r0 * (1.0 - depth * pinch)
    c = c0 * (1.0 - 0.85 * pinch)
    for band in chrom.bands:
        if band.stain == "stalk":
            # Thin stalk between the centromere and the satellite.
            m = (
                np.clip(
                    1
                    - np.abs(u / length - 0.5 * (band.start + band.end))
                    / max(0.5 * (band.end - band.start), 1e-3),
                    0,
                    1,
                )
                ** 0.5
            )
            r = r * (1 - 0.45 * m)
            c = c * (1 - 0.6 * m)
    return r, c


def render_chromosome(
    class_name: str, rng: np.random.Generator, cell_style: CellStyle
) -> np.ndarray:
    """Draw one chromosome of ``class_name`` as a tight crop.

    Args:
        class_name: ``"1"``..``"22"``, ``"X"``, ``"Y"`` (or 23/24).
        rng: source of all randomness (the result is a function of its state).
        cell_style: the cell's condensation and imaging (:func:`draw_cell_style`).

    Returns:
        ``(H, W)`` uint8: dark chromosome on a light background (background about
        240-255 with noise, or exactly 255 when ``cell_style.masked``), or bright on
        black when ``cell_style.config.qband``.
    """
    cfg = cell_style.config
    chrom = facts(canonical_class(class_name), cfg.band_level)
    ss = cfg.supersample
    length_px = (
        cfg.chr1_length
        * cell_style.scale
        * chrom.relative_length
        / _CHR1_RL
        * float(np.clip(rng.normal(1, cfg.length_jitter), 0.8, 1.2))
    )
    width_px = cell_style.width * float(np.clip(rng.normal(1, 0.04), 0.85, 1.15))
    length, width = length_px * ss, width_px * ss
    gap = cell_style.gap * width * float(rng.uniform(0.5, 1.5))
    overlap = cell_style.overlap * float(rng.uniform(0.85, 1.15))
    # width = 2 * (r0 + c0) + gap with c0 = overlap * r0 + gap / 2
    r0 = max((width - 2 * gap) / (2.0 * (1.0 + overlap)), 1.0)
    c0 = overlap * r0 + gap / 2.0
    length = max(length, 2.2 * r0)

    pts, s_axis, phi = _axis(length, width, 2.0, rng, cfg)
    lo = pts.min(0) - width
    hi = pts.max(0) + width
    gw, gh = int(np.ceil(hi[0] - lo[0])), int(np.ceil(hi[1] - lo[1]))
    gw += (-gw) % ss  # whole output pixels
    gh += (-gh) % ss
    ys, xs = np.mgrid[0:gh, 0:gw]
    pix = np.stack([xs.ravel() + 0.5 + lo[0], ys.ravel() + 0.5 + lo[1]], 1)
    idx = _nearest_axis(pix, pts)
    tang = np.stack([np.cos(phi), np.sin(phi)], 1)[idx]
    rel = pix - pts[idx]
    s = s_axis[idx] + (rel * tang).sum(1)
    t = rel[:, 1] * tang[:, 0] - rel[:, 0] * tang[:, 1]

    # Along-axis profiles at 1 supersampled pixel resolution.
    n = int(np.ceil(length)) + 1
    u_grid = np.arange(n, dtype=np.float64)
    r_prof, c_prof = _shape_profiles(chrom, u_grid, r0, c0, length, rng)
    dark = darkness_profile(chrom, n * 4).reshape(n, 4).mean(1)
    sigma = cell_style.band_blur * ss
    dark = cv2.GaussianBlur(
        dark.reshape(1, -1), (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE
    ).ravel()

    u = np.clip(s, 0.0, length)
    c = np.interp(u, u_grid, c_prof)
    band = np.interp(u, u_grid, dark)
    tone = cell_style.base + cell_style.contrast * band
    density = np.zeros(len(s))
    for sign in (-1.0, 1.0):
        # Ragged outline and uneven staining along each chromatid.
        rough = 1.0 + 0.09 * _smooth_noise(rng, n, 2.0 * ss)
        tex = 1.0 + 0.08 * _smooth_noise(rng, n, 1.5 * ss)
        r = np.interp(u, u_grid, r_prof * rough)
        cap = np.maximum(np.maximum(r - s, s - (length - r)), 0.0)  # rounded ends
        dist = np.sqrt(cap**2 + (t - sign * c) ** 2)
        cover = np.clip(r - dist + 0.5, 0.0, 1.0)
        body = 0.5 + 0.5 * np.sqrt(np.clip(1.0 - (dist / np.maximum(r, 1e-3)) ** 2, 0.0, 1.0))
        density = np.maximum(density, cover * body * np.interp(u, u_grid, tex) * tone)
    density = density.reshape(gh, gw).astype(np.float32)
    # Blotchy 2-D texture of real chromatin.
    blotch = cv2.GaussianBlur(rng.normal(0, 1, density.shape).astype(np.float32), (0, 0), 1.2 * ss)
    density *= 1.0 + 0.15 * blotch / max(float(blotch.std()), 1e-6)
    if ss > 1:
        density = cv2.resize(density, (gw // ss, gh // ss), interpolation=cv2.INTER_AREA)
    density *= float(np.clip(rng.normal(1.0, 0.05), 0.85, 1.15))
    density = cv2.GaussianBlur(density, (0, 0), sigmaX=cell_style.blur)

    mask = density > 14.0
    if not mask.any():
        mask = density >= density.max()
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    margin = 0 if cell_style.masked else int(rng.integers(0, 3))
    y0, y1 = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, density.shape[0])
    x0, x1 = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, density.shape[1])
    crop = density[y0:y1, x0:x1]
    noise = rng.normal(0.0, cell_style.noise, crop.shape)
    grey = cell_style.background - crop + noise
    if cell_style.masked:
        grey = np.where(mask[y0:y1, x0:x1], np.minimum(grey, 250.0), 255.0)
    img = np.clip(np.floor(grey + 0.5), 0, 255).astype(np.uint8)
    return 255 - img if cfg.qband else img


# ---- cells and karyotypes -------------------------------------------------------------

_AUTOSOMES = CLASS_NAMES[:22]


def karyotype(classes: list[str]) -> str:
    """Numeric ISCN-style karyotype of a list of class names.

    Examples: ``46,XY``; ``47,XX,+21``; ``45,XY,-7``; ``45,X``; ``47,XXY``.
    """
    counts = {name: 0 for name in CLASS_NAMES}
    for name in classes:
        counts[canonical_class(name)] += 1
    sex = "X" * counts["X"] + "Y" * counts["Y"]
    parts = [str(len(classes)), sex or "?"]
    for name in _AUTOSOMES:
        k = counts[name]
        parts += [f"+{name}"] * max(k - 2, 0) + [f"-{name}"] * max(2 - k, 0)
    return ",".join(parts)


def draw_karyotype(rng: np.random.Generator, config: SynthConfig | None = None) -> list[str]:
    """Class names of one cell in karyotype order (46, or 45/47 when aneuploid)."""
    cfg = config or SynthConfig()
    male = rng.random() < cfg.male_fraction
    counts = {name: 2 for name in _AUTOSOMES}
    counts["X"], counts["Y"] = (1, 1) if male else (2, 0)
    if rng.random() < cfg.aneuploid:
        kind = rng.random()
        if kind < 0.55:  # the viable trisomies
            counts[str(rng.choice([21, 21, 21, 18, 13]))] += 1
        elif kind < 0.9:  # a lost chromosome (often a preparation artefact)
            counts[str(rng.choice(_AUTOSOMES))] -= 1
        elif male:
            counts["X"] += 1  # 47,XXY
        else:
            counts["X"] -= 1  # 45,X
    return [name for name in CLASS_NAMES for _ in range(counts[name])]


def synth_cell(
    rng: np.random.Generator, config: SynthConfig | None = None, classes: list[str] | None = None
) -> Cell:
    """One metaphase: every chromosome of a drawn (or given) karyotype, in karyotype order.

    Args:
        rng: source of all randomness.
        config: generator parameters (defaults if None).
        classes: the karyotype as class names; drawn with :func:`draw_karyotype` if None.

    Returns:
        ``[(class_name, (H, W) uint8), ...]``; 46 entries for a euploid cell.
    """
    cfg = config or SynthConfig()
    names = draw_karyotype(rng, cfg) if classes is None else [canonical_class(c) for c in classes]
    style = draw_cell_style(rng, cfg)
    return [(name, render_chromosome(name, rng, style)) for name in names]


def synth_cells(n: int, seed: int, config: SynthConfig | None = None) -> list[Cell]:
    """``n`` cells; cell ``i`` depends only on ``(seed, i, config)``."""
    if n < 0:
        raise ValueError(f"number of cells must be >= 0, got {n}")
    children = np.random.SeedSequence(seed).spawn(n)
    return [synth_cell(np.random.default_rng(child), config) for child in children]


# ---- folder layouts -------------------------------------------------------------------

MANIFEST = "synth.json"
LAYOUTS: tuple[str, ...] = ("labelled", "slide")
_FORMAT = "edge-iapp synth"
_LABELLED_RE = re.compile(r"clase\d+_\d+_S\d+\.\d+\.png")
_SLIDE_RE = re.compile(r"slide_\d+/cell_\d+/\d+\.png")
_SIDE_FILES = ("cells.csv", "truth.csv", "truth_cells.csv")


class SynthOutputError(Exception):
    """The output folder cannot be used (not a folder, or holds other content)."""


def file_number(class_name: str) -> int:
    """Class number used in gband612-style file names: 1..22, 23 = X, 24 = Y."""
    return CLASS_NAMES.index(canonical_class(class_name)) + 1


def manifest_for(
    layout: str, n_cells: int, seed: int, config: SynthConfig | None, per_group: int
) -> dict:
    """The record written to ``OUT/synth.json``: everything that determines the content."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    key = "cells_per_case" if layout == "labelled" else "cells_per_slide"
    return {
        "format": _FORMAT,
        "version": 1,
        "layout": layout,
        "cells": int(n_cells),
        "seed": int(seed),
        key: int(per_group),
        "config": (config or SynthConfig()).to_dict(),
    }


def _read_manifest(out: Path) -> dict | None:
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == _FORMAT else None


def _remove_previous(out: Path) -> None:
    """Delete what an earlier synth run wrote (its file patterns only), keep anything else."""
    for path in sorted(out.rglob("*.png")):
        rel = path.relative_to(out).as_posix()
        if _SLIDE_RE.fullmatch(rel) or (
            len(path.relative_to(out).parts) == 2 and _LABELLED_RE.fullmatch(path.name)
        ):
            path.unlink()
    for name in _SIDE_FILES:
        (out / name).unlink(missing_ok=True)
    for folder in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()


def check_output(out: str | Path, manifest: dict, force: bool = False) -> Path:
    """Make ``out`` ready for a synth run described by ``manifest``.

    An empty or missing folder is fine; a folder written by the same parameters is
    rewritten (the content is deterministic, so this also completes a killed run). Any
    other non-empty folder is an error unless ``force``; with ``force`` the files of an
    earlier synth run are deleted first (other files are left alone).

    Raises:
        SynthOutputError: ``out`` is a file, or holds other content and ``force`` is False.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SynthOutputError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        old = _read_manifest(out)
        if old != manifest:
            if not force:
                what = "a different synthetic set" if old else "other files"
                raise SynthOutputError(
                    f"{out} is not empty and holds {what}; choose another folder or use --force"
                )
            if old is not None:
                _remove_previous(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - OpenCV encodes any 2-D uint8
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _csv(header: Sequence[str], rows: list[Sequence]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_labelled(
    out: str | Path,
    cells: Sequence[Cell],
    seed: int,
    *,
    cells_per_case: int = 2,
    config: SynthConfig | None = None,
    force: bool = False,
) -> int:
    """Write cells as a labelled folder in gband612's naming.

    Layout: ``OUT/<class>/clase<N>_<k>_S<case:04d>.<cell>.png`` (N = 1..24 with 23 = X,
    24 = Y; k = copy index within the cell; case = ``i // cells_per_case + 1``; cell =
    ``i % cells_per_case + 1``), so the group of a file is ``S0003`` and its cell
    ``S0003.1``; plus ``OUT/cells.csv`` (file, class, case, cell, karyotype) and
    ``OUT/synth.json``.

    Args:
        out: output folder (see :func:`check_output` for existing folders).
        cells: the cells, e.g. from :func:`synth_cells`.
        seed, config: what produced ``cells``, recorded in the manifest.
        cells_per_case: cells sharing one case id.
        force: overwrite a folder holding other content.

    Returns:
        Number of images written.
    """
    if cells_per_case < 1:
        raise ValueError(f"cells_per_case must be >= 1, got {cells_per_case}")
    out = check_output(
        out, manifest_for("labelled", len(cells), seed, config, cells_per_case), force
    )
    rows = []
    for i, cell in enumerate(cells):
        case = f"S{i // cells_per_case + 1:04d}"
        cell_id = f"{case}.{i % cells_per_case + 1}"
        kary = karyotype([name for name, _ in cell])
        copies: dict[str, int] = {}
        for name, image in cell:
            k = copies.get(name, 0)
            copies[name] = k + 1
            rel = f"{name}/clase{file_number(name)}_{k}_{cell_id}.png"
            atomic_write_bytes(out / rel, _png(image))
            rows.append((rel, name, case, cell_id, kary))
    atomic_write_text(out / "cells.csv", _csv(("file", "class", "case", "cell", "karyotype"), rows))
    return len(rows)


def write_slides(
    out: str | Path,
    cells: Sequence[Cell],
    seed: int,
    *,
    cells_per_slide: int = 5,
    config: SynthConfig | None = None,
    force: bool = False,
) -> int:
    """Write cells as slide folders of unlabelled crops, with the truth in side files.

    Layout: ``OUT/slide_001/cell_001/001.png ...`` (crops of one cell in a seeded random
    order; names do not reveal the class), ``OUT/truth.csv`` (slide, cell, file, class;
    file relative to OUT), ``OUT/truth_cells.csv`` (slide, cell, count, karyotype) and
    ``OUT/synth.json``.

    Args:
        out: output folder (see :func:`check_output` for existing folders).
        cells: the cells, e.g. from :func:`synth_cells`.
        seed: seeds the crop order; recorded in the manifest with ``config``.
        cells_per_slide: cells per slide folder.
        force: overwrite a folder holding other content.

    Returns:
        Number of images written.
    """
    if cells_per_slide < 1:
        raise ValueError(f"cells_per_slide must be >= 1, got {cells_per_slide}")
    out = check_output(out, manifest_for("slide", len(cells), seed, config, cells_per_slide), force)
    truth, per_cell = [], []
    for i, cell in enumerate(cells):
        slide = f"slide_{i // cells_per_slide + 1:03d}"
        cell_dir = f"cell_{i % cells_per_slide + 1:03d}"
        order = np.random.default_rng([int(seed), 7919, i]).permutation(len(cell))
        width = max(3, len(str(len(cell))))
        for pos, j in enumerate(order):
            name, image = cell[int(j)]
            rel = f"{slide}/{cell_dir}/{pos + 1:0{width}d}.png"
            atomic_write_bytes(out / rel, _png(image))
            truth.append((slide, cell_dir, rel, name))
        per_cell.append((slide, cell_dir, len(cell), karyotype([name for name, _ in cell])))
    atomic_write_text(out / "truth.csv", _csv(("slide", "cell", "file", "class"), truth))
    atomic_write_text(
        out / "truth_cells.csv", _csv(("slide", "cell", "count", "karyotype"), per_cell)
    )
    return len(truth)
