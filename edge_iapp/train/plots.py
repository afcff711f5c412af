"""Evaluation figures (matplotlib, Agg backend: no display needed), written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=110)


def _save(plt, fig, path: Path) -> Path:
    from ..ioutil import atomic_write

    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return path


def confusion_png(cm: np.ndarray, names: Sequence[str], path: str | Path, title: str) -> Path:
    """Row-normalised confusion matrix with counts in the off-diagonal cells that are non-zero."""
    plt, fig = _figure(9, 8)
    ax = fig.add_subplot(111)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    k = len(names)
    ax.set_xticks(range(k), names, fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    for i in range(k):
        for j in range(k):
            if cm[i, j] and (i != j or norm[i, j] < 0.995):
                ax.text(
                    j,
                    i,
                    str(int(cm[i, j])),
                    ha="center",
                    va="center",
                    fontsize=5,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    return _save(plt, fig, Path(path))


def roc_png(
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path, title: str
) -> Path:
    """One-vs-all ROC curves, one per class, AUC in the legend."""
    plt, fig = _figure(10, 7)
    ax = fig.add_subplot(111)
    cmap = plt.get_cmap("tab20")
    for n, (name, (fpr, tpr, area)) in enumerate(curves.items()):
        if np.isnan(area):
            continue
        ax.plot(
            fpr,
            tpr,
            lw=1,
            color=cmap(n % 20),
            ls="-" if n < 20 else "--",
            label=f"{name} ({area:.3f})",
        )
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(
        fontsize=7,
        loc="center left",
        bbox_to_anchor=(1.02, 0.5),
        title="class (AUC)",
        title_fontsize=8,
    )
    # the interesting part of near-perfect curves is the top-left corner
    inset = ax.inset_axes([0.55, 0.08, 0.42, 0.42])
    for n, (_, (fpr, tpr, area)) in enumerate(curves.items()):
        if not np.isnan(area):
            inset.plot(fpr, tpr, lw=0.8, color=cmap(n % 20))
    inset.set_xlim(0, 0.1)
    inset.set_ylim(0.8, 1.0)
    inset.tick_params(labelsize=6)
    return _save(plt, fig, Path(path))


def reliability_png(rel: dict, path: str | Path, title: str) -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal; ECE in the title."""
    plt, fig = _figure(5.5, 5)
    ax = fig.add_subplot(111)
    edges = rel["edges"]
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    acc = np.nan_to_num(rel["accuracy"], nan=0.0)
    ax.bar(centres, acc, width=width * 0.9, color="tab:blue", alpha=0.8, label="accuracy")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
    for c, a, n in zip(centres, acc, rel["count"], strict=True):
        if n:
            ax.text(c, a + 0.01, str(int(n)), ha="center", fontsize=6)
    ax.set_xlabel("fused confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.set_title(f"{title} (ECE {rel['ece']:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    return _save(plt, fig, Path(path))


def risk_coverage_png(curves: dict[str, dict], path: str | Path, title: str) -> Path:
    """Risk (error rate of accepted calls) against coverage, one line per model/fusion."""
    plt, fig = _figure(6, 5)
    ax = fig.add_subplot(111)
    for name, rc in curves.items():
        ax.plot(rc["coverage"], rc["risk"], lw=1.2, label=f"{name} (AURC {rc['aurc']:.4f})")
    ax.set_xlabel("coverage (fraction accepted without review)")
    ax.set_ylabel("risk (error rate among accepted)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(plt, fig, Path(path))
