"""CLI: ``edge-iapp synth``, synthetic G-band (or Q-band) cells for tests and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import console, fail


def synth(
    out: Annotated[Path, typer.Argument(help="output folder: new, empty or an earlier synth set")],
    cells: Annotated[int, typer.Option("--cells", help="number of cells (metaphases)")],
    seed: Annotated[
        int, typer.Option("--seed", help="random seed (the output is a function of it)")
    ] = 0,
    layout: Annotated[
        str,
        typer.Option(
            "--layout",
            help="labelled: OUT/<class>/clase<N>_<k>_S<case>.<cell>.png + cells.csv; "
            "slide: OUT/slide_001/cell_001/<NNN>.png + truth.csv, truth_cells.csv",
        ),
    ] = "labelled",
    qband: Annotated[bool, typer.Option("--qband", help="Q-band look: bright on black")] = False,
    aneuploid: Annotated[
        float, typer.Option("--aneuploid", help="probability that a cell has 45 or 47 chromosomes")
    ] = 0.0,
    cells_per_case: Annotated[
        int, typer.Option("--cells-per-case", help="labelled: cells sharing one case id")
    ] = 2,
    cells_per_slide: Annotated[
        int, typer.Option("--cells-per-slide", help="slide: cells per slide folder")
    ] = 5,
    force: Annotated[
        bool, typer.Option("--force", help="replace a folder holding other content")
    ] = False,
) -> None:
    """Write synthetic chromosome cells (ISCN ideogram lengths, centromeres and bands)."""
    from ..data.synth import (
        LAYOUTS,
        SynthConfig,
        SynthOutputError,
        check_output,
        manifest_for,
        synth_cell,
        write_labelled,
        write_slides,
    )

    if cells < 1:
        fail(f"--cells must be at least 1, got {cells}")
    if seed < 0:
        fail(f"--seed must be 0 or more, got {seed}")
    if layout not in LAYOUTS:
        fail(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if not 0.0 <= aneuploid <= 1.0:
        fail(f"--aneuploid must be a probability in [0, 1], got {aneuploid}")
    per_group = cells_per_case if layout == "labelled" else cells_per_slide
    if per_group < 1:
        fail(f"--cells-per-{'case' if layout == 'labelled' else 'slide'} must be at least 1")
    config = SynthConfig(qband=qband, aneuploid=aneuploid)
    manifest = manifest_for(layout, cells, seed, config, per_group)
    try:
        # Check the folder before spending time on rendering.
        check_output(out, manifest, force)
    except (SynthOutputError, OSError) as exc:
        fail(str(exc))

    import numpy as np
    from rich.progress import Progress

    children = np.random.SeedSequence(seed).spawn(cells)
    rendered = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("rendering cells", total=cells)
        for child in children:
            rendered.append(synth_cell(np.random.default_rng(child), config))
            progress.advance(task)
    try:
        if layout == "labelled":
            n = write_labelled(
                out, rendered, seed, cells_per_case=per_group, config=config, force=force
            )
        else:
            n = write_slides(
                out, rendered, seed, cells_per_slide=per_group, config=config, force=force
            )
    except (SynthOutputError, OSError) as exc:
        fail(f"writing {out} failed: {exc}")
    counts = sorted({len(c) for c in rendered})
    console.print(
        f"wrote {n} images of {cells} cells ({layout}, {'Q' if qband else 'G'}-band, "
        f"chromosomes per cell {counts}) to {out}"
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("synth")(synth)
