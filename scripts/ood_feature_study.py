#!/usr/bin/env python3
"""Issue #7: does a feature-space distance flag cross-lab errors better than the energy score?

For one training run it collects, per branch, the pooled features that enter the branch's
classifier (``head``'s input: ``(N, C)``, C = 512 for resnet18) and the logits, on four
sets: the training lab's train part (the reference set), its val part (calibration), its
test part (in-domain cost) and the other lab's test part (cross-lab). Then, for each score,
the threshold is the val part's ``--quantile`` and the script reports

* ``own_correct_flagged``: share of the training lab's correct test calls sent to review;
* ``cross_errors_flagged`` / ``cross_correct_flagged``: the issue's two numbers, on the
  other lab's test part;
* ``auroc_domain``: training lab test vs other lab test, by score alone;
* ``auroc_errors``: on the other lab, wrong vs right calls, by score alone.

Scores (higher = more unusual; branch scores are averaged after dividing each by its val
part's standard deviation, so no branch dominates by scale):

* ``energy``: :func:`edge_iapp.ood.ood_scores` (what the product ships);
* ``maha``: Mahalanobis distance to the closest class mean, one covariance shared by the
  classes (Lee et al., NeurIPS 2018), fitted on the train part, with a small ridge;
* ``rmaha``: relative Mahalanobis (Ren et al., 2021): ``maha`` minus the distance under one
  Gaussian of all train features;
* ``logit_maha``, ``logit_rmaha``: the same two on the branch logits (K = 24 values
  that every backend already returns) instead of the features;
* ``knn``: distance of the L2-normalised feature to its k-th nearest L2-normalised train
  feature (Sun et al., ICML 2022);
* ``shipped``: what edge-iapp computes (:mod:`edge_iapp.ood`, ``energy+mahalanobis``:
  the larger of the scaled energy and ``logit_maha``), fitted on the same train images;
* each of them ``+conf``: the score's flag or the fused confidence below 0.9.

Usage::

    python scripts/ood_feature_study.py RUN --source DATA/gband612 \
        --source-split docs/splits/gband612_case.json --target DATA/bioimlab \
        --target-split docs/splits/bioimlab_karyotype.json --json out.json

Needs torch (training-side study; the runtime does not import this).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_iapp.fusion import fuse, softmax  # noqa: E402
from edge_iapp.ood import calibrate_combined, ood_scores  # noqa: E402

MIN_CONFIDENCE = 0.9


def collect(model, data, branches, batch_size: int = 64) -> tuple[np.ndarray, dict]:
    """Logits ``(B, N, K)`` and ``{branch: features (N, C)}`` of ``data``, plus labels."""
    from edge_iapp.train.predict import predict

    feats: dict[str, list[np.ndarray]] = {b: [] for b in branches}
    hooks = []
    for b in branches:
        head = getattr(model, f"{b}_branch").head
        hooks.append(
            head.register_forward_pre_hook(
                lambda _m, args, b=b: feats[b].append(args[0].float().cpu().numpy())
            )
        )
    try:
        preds = predict(model, data, branches, batch_size=batch_size)
    finally:
        for h in hooks:
            h.remove()
    return preds, {b: np.concatenate(v) for b, v in feats.items()}


class Mahalanobis:
    """Class means and one shared covariance of the train features (with a ridge)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, ridge: float = 1e-3) -> None:
        x = x.astype(np.float64)
        classes = np.unique(y)
        self.means = np.stack([x[y == c].mean(0) for c in classes])
        centred = x - self.means[np.searchsorted(classes, y)]
        cov = centred.T @ centred / len(x)
        cov += ridge * np.trace(cov) / len(cov) * np.eye(len(cov))
        self.precision = np.linalg.inv(cov)
        self.mean0 = x.mean(0)
        cov0 = np.cov(x, rowvar=False, bias=True)
        cov0 += ridge * np.trace(cov0) / len(cov0) * np.eye(len(cov0))
        self.precision0 = np.linalg.inv(cov0)

    @staticmethod
    def _d2(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
        d = x - mean
        return ((d @ precision) * d).sum(1)

    def score(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        return np.min([self._d2(x, m, self.precision) for m in self.means], axis=0)

    def relative(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        return self.score(x) - self._d2(x, self.mean0, self.precision0)


def knn_score(ref: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Euclidean distance of normalised ``x`` to its k-th nearest normalised ``ref`` row."""
    r = ref / np.linalg.norm(ref, axis=1, keepdims=True).clip(1e-12)
    q = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    sim = q @ r.T
    kth = -np.partition(-sim, k - 1, axis=1)[:, k - 1]
    return np.sqrt(np.clip(2.0 - 2.0 * kth, 0.0, None))


def auroc(neg: np.ndarray, pos: np.ndarray) -> float | None:
    """P(score(pos) > score(neg)), ties half (Mann-Whitney)."""
    if len(neg) == 0 or len(pos) == 0:
        return None
    allv = np.concatenate([neg, pos])
    ranks = np.empty(len(allv))
    order = np.argsort(allv, kind="mergesort")
    ranks[order] = np.arange(1, len(allv) + 1)
    for v in np.unique(allv):  # average ranks of ties
        tie = allv == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return float((ranks[len(neg) :].sum() - len(pos) * (len(pos) + 1) / 2) / (len(neg) * len(pos)))


def errors_caught_at(correct: np.ndarray, errors: np.ndarray, budget: float) -> float | None:
    """Share of ``errors`` above the threshold that flags ``budget`` of ``correct``.

    The threshold is set on the cross-lab data itself: an upper bound of what the score
    can do, not a deployable rule.
    """
    if len(correct) == 0 or len(errors) == 0:
        return None
    t = np.quantile(correct, 1.0 - budget)
    return float((errors > t).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--source", type=Path, required=True, help="training lab's data folder")
    ap.add_argument("--source-split", type=Path, required=True)
    ap.add_argument("--target", type=Path, required=True, help="other lab's data folder")
    ap.add_argument("--target-split", type=Path, required=True)
    ap.add_argument("--train-per-class", type=int, default=60, help="reference set size")
    ap.add_argument("--val-per-class", type=int, default=20)
    ap.add_argument("--test-per-class", type=int, default=20, help="training lab's test")
    ap.add_argument("--target-per-class", type=int, default=0, help="0 = whole test part")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 5, 20])
    ap.add_argument("--quantile", type=float, default=0.95)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from edge_iapp.train.data import balanced_subset, prepare
    from edge_iapp.train.loading import load_parts
    from edge_iapp.train.run import load_model

    torch.set_num_threads(args.threads)
    model, cfg = load_model(args.run)
    model.eval()
    branches = tuple(cfg.branches)
    src = load_parts(args.source, args.source_split).parts
    tgt = load_parts(args.target, args.target_split).parts

    def take(samples, n):  # whole cells in the cell size mode (each crop scaled by its cell)
        return balanced_subset(samples, n, 0, cfg.preprocess) if n else samples

    sets = {
        "train": take(src["train"], args.train_per_class),
        "val": take(src["val"], args.val_per_class),
        "own": take(src["test"], args.test_per_class),
        "cross": take(tgt["test"], args.target_per_class),
    }
    out: dict = {}
    for name, samples in sets.items():
        data = prepare(samples, cfg.preprocess, cache_dir=args.cache)
        preds, feats = collect(model, data, branches)
        probs = softmax(fuse(preds.logits, cfg.fusion)[0])
        out[name] = {"preds": preds, "feats": feats, "probs": probs}
        acc = float((probs.argmax(1) == preds.labels).mean())
        print(f"{name}: {len(data)} images, accuracy {acc:.1%}", flush=True)

    labels = out["train"]["preds"].labels
    scores: dict[str, dict[str, np.ndarray]] = {}
    for name in ("val", "own", "cross"):
        scores.setdefault("energy", {})[name] = ood_scores(out[name]["preds"].logits)
    for b in branches:
        maha = Mahalanobis(out["train"]["feats"][b], labels)
        per = {
            "maha": lambda x, m=maha: m.score(x),
            "rmaha": lambda x, m=maha: m.relative(x),
            **{
                f"knn{k}": (lambda x, k=k, ref=out["train"]["feats"][b]: knn_score(ref, x, k))
                for k in args.k
            },
        }
        for score_name, fn in per.items():
            raw = {name: fn(out[name]["feats"][b]) for name in ("val", "own", "cross")}
            scale = raw["val"].std() or 1.0
            for name, v in raw.items():
                acc = scores.setdefault(score_name, {}).setdefault(name, 0.0)
                scores[score_name][name] = acc + v / scale / len(branches)
    # the same distances on the logits (what every backend already returns): no new output
    for i in range(len(branches)):
        lm = Mahalanobis(out["train"]["preds"].logits[i], labels)
        for score_name, fn in (("logit_maha", lm.score), ("logit_rmaha", lm.relative)):
            raw = {n: fn(out[n]["preds"].logits[i]) for n in ("val", "own", "cross")}
            scale = raw["val"].std() or 1.0
            for name, v in raw.items():
                acc = scores.setdefault(score_name, {}).setdefault(name, 0.0)
                scores[score_name][name] = acc + v / scale / len(branches)
    for b in branches:  # each branch alone, kNN with the middle k
        k = args.k[len(args.k) // 2]
        ref = out["train"]["feats"][b]
        for name in ("val", "own", "cross"):
            scores.setdefault(f"knn{k}_{b}", {})[name] = knn_score(ref, out[name]["feats"][b], k)

    # what edge-iapp ships (edge_iapp/ood.py): energy + logit Mahalanobis, fitted on train
    shipped = calibrate_combined(
        out["val"]["preds"].logits, out["train"]["preds"].logits, labels, args.quantile
    )
    for name in ("val", "own", "cross"):
        scores.setdefault("shipped", {})[name] = ood_scores(out[name]["preds"].logits, shipped)
    # rules that use no calibration: low fused confidence, branches not all voting alike
    for name in ("val", "own", "cross"):
        probs, logits = out[name]["probs"], out[name]["preds"].logits
        scores.setdefault("low_confidence", {})[name] = -probs.max(1)
        votes = (logits.argmax(2) == probs.argmax(1)).sum(0)
        scores.setdefault("disagreement", {})[name] = (len(branches) - votes).astype(float)

    results = {}
    own_ok = out["own"]["probs"].argmax(1) == out["own"]["preds"].labels
    cross_ok = out["cross"]["probs"].argmax(1) == out["cross"]["preds"].labels
    own_conf = out["own"]["probs"].max(1) < MIN_CONFIDENCE
    cross_conf = out["cross"]["probs"].max(1) < MIN_CONFIDENCE
    print(f"{'score':<18} own ok flagged | cross err / ok flagged | AUROC dom, err | err@20%")
    for score_name, s in scores.items():
        t = float(np.quantile(s["val"], args.quantile))
        for combo in ("", "+conf"):
            f_own = s["own"] > t
            f_cross = s["cross"] > t
            if combo:
                f_own, f_cross = f_own | own_conf, f_cross | cross_conf
            row = {
                "own_correct_flagged": float(f_own[own_ok].mean()),
                "cross_errors_flagged": float(f_cross[~cross_ok].mean()),
                "cross_correct_flagged": float(f_cross[cross_ok].mean())
                if cross_ok.any()
                else None,
                "auroc_domain": auroc(s["own"], s["cross"]),
                "auroc_errors": auroc(s["cross"][cross_ok], s["cross"][~cross_ok]),
                "errors_at_20pct_correct": errors_caught_at(
                    s["cross"][cross_ok], s["cross"][~cross_ok], 0.20
                ),
            }
            results[score_name + combo] = row
            cc = row["cross_correct_flagged"]
            print(
                f"{score_name + combo:<18} {row['own_correct_flagged']:>13.1%} | "
                f"{row['cross_errors_flagged']:>8.1%} / {(cc or 0):>6.1%}        | "
                f"{row['auroc_domain']:.3f}, {(row['auroc_errors'] or 0):.3f}  | "
                f"{(row['errors_at_20pct_correct'] or 0):.1%}"
            )
    summary = {
        "run": str(args.run),
        "sets": {n: len(out[n]["preds"].labels) for n in out},
        "accuracy": {
            n: float((out[n]["probs"].argmax(1) == out[n]["preds"].labels).mean()) for n in out
        },
        "quantile": args.quantile,
        "min_confidence": MIN_CONFIDENCE,
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
