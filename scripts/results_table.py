"""Print the docs/RESULTS.md tables from `edge-iapp evaluate` outputs.

Usage: python scripts/results_table.py /work/runs/gband612_eval /work/runs/bioimlab_eval
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def num(x: float | None) -> str:
    """A 0..1 score as written by ``evaluate`` (null where undefined, e.g. one class)."""
    return "n/a" if x is None else f"{x:.3f}"


def main(folders: list[str]) -> None:
    for folder in folders:
        rec = json.loads((Path(folder) / "metrics.json").read_text())
        base = rec.get("baseline")
        print(f"### {folder} ({rec['images']} test images)\n")
        print("| model | accuracy % | macro-F1 % | macro AUC |\n|---|---|---|---|")
        if base:
            print(
                f"| baseline (global branch alone) | {pct(base['accuracy'])} "
                f"| {pct(base['macro_f1'])} | {num(base['macro_auc'])} |"
            )
        for row in rec["ablation"]:
            if len(row["branches"]) == 3:
                auc = num(rec["main"]["macro_auc"]) if row["fusion"] == rec["fusion"] else ""
                print(
                    f"| IAPP-CNN, {row['fusion']} fusion | {pct(row['accuracy'])} "
                    f"| {pct(row['macro_f1'])} | {auc} |"
                )
        print("\nAblation (Table 4 layout), accuracy % sum / lambda:\n")
        print("| branches | sum | lambda |\n|---|---|---|")
        rows: dict[str, dict[str, float]] = {}
        for row in rec["ablation"]:
            rows.setdefault(" + ".join(row["branches"]), {})[row["fusion"]] = row["accuracy"]
        for name, r in rows.items():
            print(f"| {name} | {pct(r.get('sum'))} | {pct(r.get('lambda'))} |")
        rv = rec["review"]
        print(
            f"\nECE {num(rv['ece'])}, AURC {num(rv['aurc'])}, branches agree "
            f"{pct(rv['branches_agree_fraction'])}% (error {pct(rv['error_when_agree'])}% vs "
            f"{pct(rv['error_when_disagree'])}% when they disagree); coverage at 5% risk "
            f"{pct(rv['coverage_at_risk']['0.05']['coverage'])}%\n"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
