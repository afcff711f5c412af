"""CLI: ``edge-iapp data summary``, ``data split``, ``data copies`` and ``edge-iapp preview``."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .common import console, fail

data_app = typer.Typer(help="Labelled chromosome folders: summaries and group-aware splits.")

_PATTERN_HELP = (
    "regex with a named group (?P<group>...) (and optionally (?P<cell>...)) searched in each "
    "file name; default rules handle clase<N>_<k>_<case>.<cell>.<ext> and '<K> <C>[ab].bmp'"
)
_FOLDERS_HELP = (
    "FOLDER is pre-split: train/, test/ and maybe val/ (or training, valid, validation, dev, "
    "testing), each with class folders; the split keeps those parts"
)


def register(app: typer.Typer) -> None:
    """Add ``data`` (summary, split, copies) and ``preview`` to ``app``."""
    app.add_typer(data_app, name="data")
    app.command("preview")(preview)


def _scan(folder: Path, group_pattern: str | None, verify: bool, parts: bool = False):
    from edge_iapp.data.dataset import scan_folder

    try:
        return scan_folder(folder, group_pattern, parts=parts, verify=verify)
    except (NotADirectoryError, ValueError) as exc:
        fail(str(exc))


@data_app.command("summary")
def summary(
    folder: Annotated[Path, typer.Argument(help="folder with one sub-folder per class")],
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    group_pattern: Annotated[
        str | None, typer.Option("--group-pattern", help=_PATTERN_HELP)
    ] = None,
    verify: Annotated[
        bool,
        typer.Option("--verify/--headers-only", help="decode every image (finds damaged files)"),
    ] = True,
    from_folders: Annotated[bool, typer.Option("--from-folders", help=_FOLDERS_HELP)] = False,
) -> None:
    """Count images per class, groups and cells; list skipped files and warnings."""
    from edge_iapp.data.dataset import no_images_reason, summarize

    scan = _scan(folder, group_pattern, verify, parts=from_folders)
    info = summarize(scan)
    if as_json:
        typer.echo(json.dumps(info, indent=1))
        return
    _print_summary(info)
    if not scan.samples:  # a table of zeros alone does not say what the folder should hold
        fail(no_images_reason(scan), code=1)


_PLAIN = {"markup": False, "highlight": False, "soft_wrap": True}  # paths stay on one line


def _print_summary(info: dict) -> None:
    from rich.console import Console

    out = Console()
    out.print(f"{info['root']}: [bold]{info['total']}[/] images", highlight=False)
    items = [f"{name:>2}: {count:>6}" for name, count in info["per_class"].items()]
    for row in range(0, len(items), 6):
        out.print("  " + "   ".join(items[row : row + 6]), highlight=False)
    out.print(
        f"groups: {info['groups']}  cells: {info['cells']}  "
        f"ungrouped (group = file stem): {info['ungrouped']}"
    )
    if info["skipped"]:
        out.print(f"[yellow]skipped {len(info['skipped'])} file(s):[/]")
        for item in info["skipped"]:
            out.print(f"  {item['path']}: {item['reason']}", **_PLAIN)
    if info["warnings"]:
        out.print(f"[yellow]{len(info['warnings'])} warning(s):[/]")
        for item in info["warnings"][:50]:
            out.print(f"  {item['path']}: {item['warning']}", **_PLAIN)
        if len(info["warnings"]) > 50:
            out.print(f"  ... and {len(info['warnings']) - 50} more (see --json)")


@data_app.command("split")
def split(
    folder: Annotated[Path, typer.Argument(help="folder with one sub-folder per class")],
    out: Annotated[Path, typer.Option("--out", help="split file to write (JSON)")],
    test: Annotated[
        float | None, typer.Option("--test", help="fraction of samples for test [default: 0.2]")
    ] = None,
    val: Annotated[
        float | None,
        typer.Option(
            "--val",
            help="fraction of samples for val [default: 0.1; with --from-folders, of the "
            "train folder's, where there is no val folder]",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="random seed (deterministic)")] = 0,
    group_pattern: Annotated[
        str | None, typer.Option("--group-pattern", help=_PATTERN_HELP)
    ] = None,
    from_folders: Annotated[bool, typer.Option("--from-folders", help=_FOLDERS_HELP)] = False,
    check_copies: Annotated[
        bool,
        typer.Option(
            "--check-copies/--no-check-copies",
            help="look for val/test images that train also holds (as `data copies` does)",
        ),
    ] = True,
) -> None:
    """Write a group-aware train/val/test split: every group goes to one part only."""
    from edge_iapp.data.dataset import no_images_reason
    from edge_iapp.data.split import (
        SplitError,
        apply_split,
        make_folder_split,
        make_split,
        write_split,
    )

    if from_folders and test is not None:
        fail("--test does not go with --from-folders: the test folder is the test part")
    scan = _scan(folder, group_pattern, verify=False, parts=from_folders)
    if not scan.samples:
        fail(no_images_reason(scan))
    if scan.skipped:
        console.print(f"[yellow]skipped {len(scan.skipped)} file(s)[/] (see `data summary`)")
    if scan.ungrouped:
        parts = "train and val" if from_folders else "train and in test"
        console.print(
            f"[yellow]{len(scan.ungrouped)} file(s) matched no group rule[/] (e.g. "
            f"{escape(scan.ungrouped[0].name)}); each is its own group, so one case's images "
            f"can fall in {parts}: pass --group-pattern with a (?P<group>...) for the "
            "case in the file name"
        )
    if from_folders:
        _report_shared_cases(scan)
    try:
        if from_folders:
            result = make_folder_split(scan, val=val, seed=seed)
        else:
            test, val = 0.2 if test is None else test, 0.1 if val is None else val
            result = make_split(scan.samples, test=test, val=val, seed=seed, pattern=group_pattern)
        write_split(result, out)
    except SplitError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {out}: {exc}")
    parts = ", ".join(
        f"{p} {c['samples']} images / {c['groups']} groups" for p, c in result["counts"].items()
    )
    console.print(f"wrote {escape(str(out))}: {parts}")
    if check_copies:
        _report_copies(apply_split(scan.samples, result), out)


def _report_shared_cases(scan) -> None:
    """Warn about cases that the part folders put in two parts (not a group-aware split)."""
    from edge_iapp.data.split import shared_cases

    shared = shared_cases(scan)
    if shared:
        case, parts = next(iter(shared.items()))
        console.print(
            f"[yellow]{len(shared)} case(s) have images in more than one part folder[/] (e.g. "
            f"{escape(case)} in {' and '.join(parts)}): the folders' split is not group-aware "
            "there, and test scores on those cases would be inflated; split the merged folders "
            "with `edge-iapp data split` instead, or move each case's images into one part"
        )


@data_app.command("copies")
def copies(
    folder: Annotated[Path, typer.Argument(help="folder with one sub-folder per class")],
    split_file: Annotated[Path, typer.Option("--split", help="its split file (JSON)")],
) -> None:
    """Find val/test images that the train part also holds: a link, a copy, or the same
    pixels in another encoding. Exit code 1 when there are any."""
    from edge_iapp.train.loading import DataProblem, load_parts

    try:
        parts = load_parts(folder, split_file).parts
    except DataProblem as exc:
        fail(str(exc))
    if _report_copies(parts, split_file):
        raise typer.Exit(1)


def _report_copies(parts: dict, split_file: Path) -> int:
    """Print the val/test images that ``parts["train"]`` also holds; return how many."""
    from edge_iapp.data.held_out import held_out_images

    held_out = [*parts["val"], *parts["test"]]
    console.print(f"checking {len(held_out)} val/test images for copies in train ...")
    found = held_out_images(held_out, parts["train"])
    if not found:
        console.print("no val/test image is also in train (files, copies, re-encodings)")
        return 0
    console.print(
        f"[yellow]{len(found)} val/test image(s) of {escape(str(split_file))} are also in "
        "train[/] (their scores would be inflated):"
    )
    for match in found[:10]:
        console.print(f"  {escape(str(match))}")
    console.print("put each copy's groups in one part (--group-pattern), or remove the copies")
    return len(found)


def preview(
    source: Annotated[Path, typer.Argument(help="an image file, or a folder of images")],
    out: Annotated[Path, typer.Option("--out", help="PNG to write")],
    threshold: Annotated[
        str, typer.Option("--threshold", help="eq. 3 reading: paper | foreground")
    ] = "foreground",
    n: Annotated[int, typer.Option("--n", help="images on a folder's contact sheet")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="which random images a sheet shows")] = 0,
    columns: Annotated[int, typer.Option("--columns", help="images per sheet row")] = 5,
) -> None:
    """Global | object | part views of one image, or a contact sheet of a folder.

    The part view uses a centred part mask until a model provides part maps.
    """
    from edge_iapp.data.imread import IMAGE_SUFFIXES, ImageReadError, read_image
    from edge_iapp.preprocess import PreprocessConfig
    from edge_iapp.preview import compute_views, contact_sheet, strip, write_png

    if n < 1 or columns < 1:
        fail(f"--n and --columns must be at least 1, got {n} and {columns}")
    if out.suffix.lower() != ".png":  # the bytes are PNG: another suffix would mislead viewers
        fail(f"--out {out}: the preview is written as PNG; give a name ending in .png")
    try:
        cfg = PreprocessConfig(threshold=threshold)  # type: ignore[arg-type]
    except ValueError as exc:
        fail(str(exc))
    if source.is_dir():
        paths = sorted(
            p
            for p in source.rglob("*")
            if p.is_file()
            and p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(source).parts)
        )
        if not paths:
            fail(f"no images (TIFF, BMP, PNG, JPEG) under {source}")
        paths = sorted(random.Random(seed).sample(paths, min(n, len(paths))))
    elif source.exists():
        paths = [source]
    else:
        fail(f"{source} does not exist")
    images, bad = [], []
    for p in paths:
        try:
            images.append(read_image(p))
        except ImageReadError as exc:
            bad.append(str(exc))
    for message in bad:
        console.print(f"[yellow]skipped[/] {escape(message)}", highlight=False, soft_wrap=True)
    if not images:
        fail("no readable image to preview")
    views = compute_views(images, cfg)
    tiles = [strip(views, k) for k in range(len(images))]
    picture = tiles[0] if source.is_file() else contact_sheet(tiles, columns)
    try:
        write_png(out, picture)
    except OSError as exc:
        fail(f"cannot write {out}: {exc}")
    flagged = int(views.object_fallback.sum())
    console.print(
        f"wrote {escape(str(out))}: {len(images)} image(s), global | object | part, "
        f"threshold={threshold}"
        + (f", {flagged} object fall-back(s) (empty mask)" if flagged else "")
    )
