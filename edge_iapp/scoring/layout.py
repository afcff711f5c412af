"""Where slides and cells are on disk, and where their results go.

Input (never modified)::

    SLIDES/                  a folder of slide folders ...
      <slide>/<cell>/*.tiff  ... each slide holds one folder per cell (metaphase)
    SLIDE/<cell>/*.tiff      ... or SLIDES is itself one slide folder

SLIDES is a folder of slides when any of its sub-folders has a sub-folder; otherwise
it is one slide. Hidden entries (names starting with ``.``) are ignored.

Output::

    OUT/index.html                 links every slide report
    OUT/run_info.json              backend, precision, bundle, times (changes every run)
    OUT/<slide>/report.html        per-slide report linking each cell
    OUT/<slide>/slide_summary.csv  one row per cell
    OUT/<slide>/errors.csv         bad files, empty cells, failed cells
    OUT/<slide>/<cell>/predictions.csv, karyogram.png, summary.json (written last)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SUMMARY = "summary.json"
PREDICTIONS = "predictions.csv"
KARYOGRAM = "karyogram.png"
SLIDE_TABLE = "slide_summary.csv"
SLIDE_REPORT = "report.html"
ERRORS = "errors.csv"
INDEX = "index.html"
RUN_INFO = "run_info.json"


@dataclass(frozen=True)
class CellJob:
    """One cell to score."""

    slide: str
    cell: str
    source: Path
    out: Path

    @property
    def summary_path(self) -> Path:
        return self.out / SUMMARY

    @property
    def finished(self) -> bool:
        """A cell is finished when its summary exists (it is written last, atomically)."""
        return self.summary_path.is_file()


@dataclass(frozen=True)
class SlideJob:
    """One slide folder and its cells (sorted by name).

    ``loose``: image files directly in the slide folder, outside every cell folder; they
    are not scored, and ``errors.csv`` lists them (they are never skipped unsaid).
    """

    name: str
    source: Path
    out: Path
    cells: tuple[CellJob, ...]
    loose: tuple[str, ...] = ()


def visible_children(folder: Path) -> list[Path]:
    """Entries of ``folder`` sorted by name, hidden ones left out."""
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def loose_images(folder: Path) -> list[str]:
    """Names of the image files directly in ``folder`` (not in a sub-folder)."""
    from ..data.imread import IMAGE_SUFFIXES

    return [
        p.name
        for p in visible_children(folder)
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    ]


def _subdirs(folder: Path) -> list[Path]:
    return [p for p in visible_children(folder) if p.is_dir()]


def discover(slides: Path, out: Path) -> list[SlideJob]:
    """Find the slides and cells under ``slides``.

    Args:
        slides: one slide folder or a folder of slide folders.
        out: the output root.

    Returns:
        Slides sorted by name, each with its cells sorted by name.

    Raises:
        NotADirectoryError: ``slides`` is not a folder, or ``out`` is a file.
        ValueError: ``out`` and ``slides`` overlap (outputs must never land in the input).
    """
    slides = Path(slides)
    if not slides.is_dir():
        raise NotADirectoryError(
            f"{slides} is not a folder (expected a slide folder or a folder of slides)"
        )
    if Path(out).exists() and not Path(out).is_dir():
        raise NotADirectoryError(
            f"output {out} is a file; choose an output folder (it is created if missing)"
        )
    src, dst = slides.resolve(), Path(out).resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        raise ValueError(
            f"output folder {out} and input folder {slides} overlap; choose an output "
            "folder outside the slides (inputs are never modified)"
        )
    children = _subdirs(slides)
    is_collection = any(_subdirs(child) for child in children)
    slide_dirs = children if is_collection else [slides]
    jobs = []
    for slide_dir in slide_dirs:
        # "." or ".." as SLIDES: the folder's own name, else the slide's outputs would
        # land in OUT itself (or above it) and two slides scored that way would mix
        name = slide_dir.name if is_collection else Path(os.path.abspath(slides)).name
        slide_out = Path(out) / name
        cells = tuple(
            CellJob(slide=name, cell=c.name, source=c, out=slide_out / c.name)
            for c in _subdirs(slide_dir)
        )
        loose = tuple(loose_images(slide_dir))
        jobs.append(SlideJob(name=name, source=slide_dir, out=slide_out, cells=cells, loose=loose))
    return jobs
