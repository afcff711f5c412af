"""Score real cells rebuilt from gband612 file names; per-cell count and karyotype accuracy.

gband612 is a folder of class folders; each file ``clase<N>_<k>_<case>.<n>.tiff`` names
its cell ``<case>.<n>``. This script rebuilds cells (only those of the run's held-out
split), scores them with ``edge_iapp.scoring`` and compares with the truth:

- ``crops`` mode: each cell folder holds the cell's crops (symbolic links, nothing copied);
  the count is then exact by construction, the test is the karyotype.
- ``spreads`` mode: each cell's crops are pasted, well apart, on one white canvas (a
  synthetic metaphase image), so the count also tests the segmentation.

Also measured: per-chromosome accuracy and the consistency step's effect (a sweep of
threshold and penalty on the recorded probabilities), and the time split of the run
(everything except the branches is scoring overhead). With ``--pipeline`` the writing
overlaps the branches and may slow them, so the overhead is also given against the
branches timed alone on the same cells afterwards (``overhead_fraction_vs_alone``).

    python scripts/score_real_cells.py --run /work/runs/gband612_iapp --mode both \
        --work /tmp/score_real

Nothing is written inside the repository or the data folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from edge_iapp.classes import CLASS_NAMES, canonical_class
from edge_iapp.scoring.cell import CellOptions
from edge_iapp.scoring.consistency import reassign
from edge_iapp.scoring.karyotype import karyotype
from edge_iapp.scoring.score import run_scoring

NAME = re.compile(r"^clase\d+_\d+_(?P<cell>(?P<case>[^.]+)\.[^.]+)\.[A-Za-z0-9]+$")


def find_cells(data: Path) -> dict[str, list[tuple[Path, str]]]:
    """``{cell id: [(file, class), ...]}`` from the class folders of ``data``."""
    cells: dict[str, list[tuple[Path, str]]] = defaultdict(list)
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        try:
            name = canonical_class(folder.name)
        except ValueError:
            continue
        for f in sorted(folder.iterdir()):
            m = NAME.match(f.name)
            if m:
                cells[m["cell"]].append((f, name))
    return cells


def held_out_cases(split_file: Path | None, split: str) -> set[str] | None:
    """Case ids of one part of a split file (None: no split file, score every cell)."""
    if split_file is None or not split_file.is_file():
        return None
    return set(json.loads(split_file.read_text())["groups"][split])


def build_slides(cells: dict, root: Path, mode: str, seed: int = 0) -> dict[str, dict]:
    """Write ``root/<case>/<cell>/`` (links or one composed spread); returns the truth."""
    truth = {}
    for cell, items in sorted(cells.items()):
        case = cell.split(".")[0]
        folder = root / case / cell
        folder.mkdir(parents=True, exist_ok=True)
        classes = [c for _, c in items]
        files = {}
        if mode == "crops":
            for f, c in items:
                link = folder / f.name
                if not link.exists():
                    os.symlink(f, link)
                files[f.name] = c
        else:
            cv2.imwrite(str(folder / "spread.png"), compose_spread([f for f, _ in items], seed))
        truth[f"{case}/{cell}"] = {"classes": classes, "files": files}
    return truth


def compose_spread(files: list[Path], seed: int) -> np.ndarray:
    """The crops in a shuffled grid on a 255 canvas, 12 px apart at least."""
    crops = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
    order = np.random.default_rng(seed).permutation(len(crops))
    cols = 10
    cw = max(c.shape[1] for c in crops) + 12
    ch = max(c.shape[0] for c in crops) + 12
    rows = (len(crops) + cols - 1) // cols
    canvas = np.full((rows * ch + 24, cols * cw + 24), 255, np.uint8)
    for pos, k in enumerate(order):
        c = crops[k]
        r, q = divmod(pos, cols)
        y, x = 12 + r * ch, 12 + q * cw
        np.minimum(
            canvas[y : y + c.shape[0], x : x + c.shape[1]],
            c,
            out=canvas[y : y + c.shape[0], x : x + c.shape[1]],
        )
    return canvas


class Recorder:
    """Wraps the Classifier and keeps each result by image source (for the sweep)."""

    def __init__(self, clf) -> None:
        self.clf = clf
        self.backend_name = clf.backend_name
        self.precision = clf.precision
        self.results: dict[str, object] = {}

    def predict_with_timings(self, images):
        results, timings = self.clf.predict_with_timings(images)
        for im, r in zip(images, results, strict=True):
            self.results[Path(im.source).name] = r
        return results, timings

    def predict(self, images):
        return self.predict_with_timings(images)[0]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def evaluate(out: Path, truth: dict, mode: str) -> dict:
    n = count_ok = k_plain = k_cons = chrom = chrom_ok = chrom_cons_ok = 0
    normal_truth = abnormal_found = abnormal_truth = 0
    for key, t in truth.items():
        summary_path = out / key / "summary.json"
        if not summary_path.is_file():
            continue
        s = json.loads(summary_path.read_text())
        n += 1
        true_k = karyotype(t["classes"]).iscn
        count_ok += s["count"] == len(t["classes"]) and s["clusters"] == 0
        k_plain += s["karyotype"] == true_k
        k_cons += s["consistency"].get("karyotype") == true_k
        if karyotype(t["classes"]).aneuploidy:
            abnormal_truth += 1
            abnormal_found += s["aneuploidy"]
        else:
            normal_truth += 1
        if mode == "crops":
            for p in read_csv(out / key / "predictions.csv"):
                c = t["files"].get(p["object"])
                if c is None or p["kind"] != "chromosome":
                    continue
                chrom += 1
                chrom_ok += p["class"] == c
                chrom_cons_ok += p["consistency_class"] == c
    return {
        "cells": n,
        "count_accuracy": count_ok / max(n, 1),
        "karyotype_accuracy": k_plain / max(n, 1),
        "karyotype_accuracy_consistency": k_cons / max(n, 1),
        "chromosomes": chrom,
        "chromosome_accuracy": chrom_ok / max(chrom, 1) if chrom else None,
        "chromosome_accuracy_consistency": chrom_cons_ok / max(chrom, 1) if chrom else None,
        "aneuploid_cells": abnormal_truth,
        "aneuploid_cells_flagged": abnormal_found,
    }


def sweep(recorder: Recorder, truth: dict) -> list[dict]:
    """Karyotype and chromosome accuracy of the consistency step over its two parameters."""
    cells = []
    for t in truth.values():
        names = [f for f in t["files"] if f in recorder.results]
        if not names:
            continue
        probs = np.stack([np.asarray(recorder.results[f].probabilities, np.float64) for f in names])
        cells.append((probs, [t["files"][f] for f in names], karyotype(t["classes"]).iscn))

    def row(label_t, label_p, calls_per_cell) -> dict:
        k_ok = c_ok = c_n = an_seen = an_exact = norm_ok = n_an = n_norm = 0
        for (_, true, true_k), calls in zip(cells, calls_per_cell, strict=True):
            k = karyotype(calls)
            k_ok += k.iscn == true_k
            c_ok += sum(a == b for a, b in zip(calls, true, strict=True))
            c_n += len(true)
            if karyotype(true).aneuploidy:
                n_an += 1
                an_seen += k.aneuploidy
                an_exact += k.iscn == true_k
            else:
                n_norm += 1
                norm_ok += not k.aneuploidy
        return {
            "threshold": label_t,
            "penalty": label_p,
            "karyotype_accuracy": k_ok / len(cells),
            "chromosome_accuracy": c_ok / c_n,
            "aneuploid_flagged": f"{an_seen}/{n_an}",
            "aneuploid_exact": f"{an_exact}/{n_an}",
            "normal_called_normal": f"{norm_ok}/{n_norm}",
        }

    plain = [[CLASS_NAMES[int(p.argmax())] for p in probs] for probs, _, _ in cells]
    rows = [row(None, None, plain)]
    for threshold in (0.5, 0.7, 0.8, 0.9, 0.95, 0.99):
        for penalty in (1.0, 2.0, 3.0, 5.0):
            adj = [
                reassign(probs, threshold=threshold, penalty=penalty).class_names
                for probs, _, _ in cells
            ]
            rows.append(row(threshold, penalty, adj))
    return rows


def isolated_branches(clf, slides: Path, opts: CellOptions) -> float:
    """Seconds inside the branch calls when the same cells are classified with nothing else
    running (no reading ahead, no writing): the reference that the run's wall time is
    compared with, so that work overlapped with the branches is not counted as free."""
    from edge_iapp.scoring.cell import load_objects
    from edge_iapp.scoring.layout import discover

    total = 0.0
    for slide in discover(slides, slides.parent / "isolated_unused"):
        for job in slide.cells:
            images = [o.image for o in load_objects(job, opts)[0] if o.image is not None]
            total += clf.predict_with_timings(images)[1]["branches"]
    return total


def ensure_bundle(run: Path, bundle: Path) -> Path:
    if (bundle / "manifest.json").is_file():
        return bundle
    from edge_iapp.export.build import export_bundle

    print(f"exporting {run} -> {bundle} (fp32)", flush=True)
    export_bundle(run, bundle, ("fp32",), log=lambda m: print("  " + m, flush=True))
    return bundle


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/gband612"))
    ap.add_argument("--run", type=Path, default=Path("/work/runs/gband612_iapp"))
    ap.add_argument("--bundle", type=Path, default=None, help="default: WORK/bundle (exported)")
    ap.add_argument("--split", default="test", help="split part whose cases are scored")
    ap.add_argument(
        "--split-file",
        type=Path,
        default=None,
        help="default: RUN/split.json, else /work/runs/splits/gband612_case.json",
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/score_real"))
    ap.add_argument("--mode", choices=("crops", "spreads", "both"), default="both")
    ap.add_argument("--max-cells", type=int, default=0, help="0: all held-out cells")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--penalty", type=float, default=2.0)
    ap.add_argument(
        "--pipeline",
        action="store_true",
        help="write each cell's files on a background thread (run_scoring pipeline)",
    )
    ap.add_argument("--no-pipeline", action="store_true", help=argparse.SUPPRESS)  # default
    args = ap.parse_args(argv)

    from edge_iapp.runtime.classifier import Classifier

    cells = find_cells(args.data)
    split_file = args.split_file or args.run / "split.json"
    if not split_file.is_file():
        split_file = Path("/work/runs/splits/gband612_case.json")
    cases = held_out_cases(split_file, args.split)
    if cases is None:
        print(f"no split file ({split_file}): scoring every cell", flush=True)
    else:
        cells = {c: v for c, v in cells.items() if c.split(".")[0] in cases}
    if args.max_cells:
        cells = dict(sorted(cells.items())[: args.max_cells])
    print(f"{len(cells)} cells ({args.split} part of {split_file})", flush=True)
    bundle = ensure_bundle(args.run, args.bundle or args.work / "bundle")
    results = {
        "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
        "bundle": str(bundle),
        "run": str(args.run),
        "split_file": str(split_file),
        "split": args.split,
        "cells": len(cells),
        "modes": {},
    }
    modes = ("crops", "spreads") if args.mode == "both" else (args.mode,)
    for mode in modes:
        slides, out = args.work / f"slides_{mode}", args.work / f"out_{mode}"
        shutil.rmtree(out, ignore_errors=True)
        truth = build_slides(cells, slides, mode)
        with Classifier(bundle, backend=args.backend, precision=args.precision) as clf:
            rec = Recorder(clf)
            opts = CellOptions(threshold=args.threshold, penalty=args.penalty)
            t0, c0 = time.perf_counter(), time.process_time()
            stats = run_scoring(
                slides, out, rec, opts, progress=sys.stderr.isatty(), pipeline=args.pipeline
            )
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            ran = clf.describe()
            alone = isolated_branches(clf, slides, opts)
        branches = stats.stages.get("branches", 0.0)
        entry = evaluate(out, truth, mode)
        entry["time"] = {
            "wall_s": round(wall, 2),
            "process_cpu_s": round(cpu, 2),
            "stages_s": {k: round(v, 3) for k, v in stats.stages.items()},
            "cell_steps_s": {k: round(v, 3) for k, v in stats.cell_steps.items()},
            "branches_s": round(branches, 2),
            "overhead_s": round(wall - branches, 2),
            "overhead_fraction": round((wall - branches) / wall, 4),
            "branches_alone_s": round(alone, 2),
            "overhead_fraction_vs_alone": round((wall - alone) / wall, 4),
            "pipeline": args.pipeline,
            "ran": ran,
        }
        if mode == "crops":
            entry["sweep"] = sweep(rec, truth)
        results["modes"][mode] = entry
        print(
            json.dumps({mode: {k: v for k, v in entry.items() if k != "sweep"}}, indent=1),
            flush=True,
        )
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    print(f"results: {args.work / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
