"""How often does a review threshold placed on a few val cells meet its target on new cells?

Simulated labs, not real data: each cell's errors sit at a confidence of their own (a
cell's staining makes its chromosomes hard or easy together), its correct calls at 0.9-1.
For each repetition, T is placed on ``--val-cells`` cells (``review_threshold.place``) and
its cluster-bootstrap upper bound computed (``review_threshold.spread``); both are then
checked on ``--new-cells`` fresh cells of the same lab. docs/RESULTS.md (round 9) quotes:

    python scripts/review_spread_sim.py --val-cells 12
    python scripts/review_spread_sim.py --val-cells 30

``tests/test_review_threshold.py`` runs a small version.
"""

from __future__ import annotations

import argparse

import numpy as np

from edge_iapp.train.review_threshold import DEFAULT_TARGET, flagged_shares, place, spread


def simulated_lab(
    rng: np.random.Generator, n_cells: int, per_cell: int = 46, error_rate: float = 0.15
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(confidence, correct, cells)`` of ``n_cells`` cells of ``per_cell`` calls each."""
    confidence, correct, cells = [], [], []
    for c in range(n_cells):
        centre = rng.uniform(0.55, 0.99)  # where this cell's errors sit
        wrong = rng.random(per_cell) < error_rate
        conf = np.where(wrong, rng.normal(centre, 0.03, per_cell), rng.uniform(0.9, 1.0, per_cell))
        confidence.append(np.clip(conf, 0.0, 1.0))
        correct.append(~wrong)
        cells += [f"c{c}"] * per_cell
    return np.concatenate(confidence), np.concatenate(correct), cells


def coverage(
    val_cells: int,
    new_cells: int,
    repeats: int,
    resamples: int,
    seed: int = 0,
    target: float = DEFAULT_TARGET,
) -> dict[str, float]:
    """Shares of the repetitions in which the placed and the upper T meet ``target`` on new
    cells, and the mean share of correct calls each flags there."""
    rng = np.random.default_rng(seed)
    met = {"placed": 0, "upper": 0}
    cost = {"placed": 0.0, "upper": 0.0}
    for _ in range(repeats):
        val, new = simulated_lab(rng, val_cells), simulated_lab(rng, new_cells)
        chosen = {
            "placed": place(val[0], val[1], target)["min_confidence"],
            "upper": spread(*val, target, resamples=resamples)["upper"],
        }
        for name, t in chosen.items():
            shares = flagged_shares(new[0] < t, new[1])
            met[name] += shares["errors_flagged"] >= target
            cost[name] += shares["correct_flagged"] / repeats
    return {
        **{f"met_{k}": v / repeats for k, v in met.items()},
        **{f"correct_flagged_{k}": v for k, v in cost.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--val-cells", type=int, default=12)
    ap.add_argument("--new-cells", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--resamples", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    got = coverage(args.val_cells, args.new_cells, args.repeats, args.resamples, args.seed)
    print(f"{args.val_cells} val cells; {args.repeats} times, {args.new_cells} new cells each")
    for name in ("placed", "upper"):
        print(
            f"  {name:<6} T: met the target on new cells in {got[f'met_{name}']:.1%} of the "
            f"repetitions; correct calls flagged there {got[f'correct_flagged_{name}']:.1%}"
        )


if __name__ == "__main__":
    main()
