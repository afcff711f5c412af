"""Is the synthetic set learnable by a small CNN, and not by length alone?

Trains a 4-layer CNN on 64x64 global-canvas images (edge_iapp.preprocess) of some
synthetic cells and tests on other cells; fits nearest-centroid and logistic-regression
classifiers on [long side, area, mean grey] on the same split. Prints JSON. The numbers in
docs/SYNTH.md come from this script, e.g.::

    nice python scripts/synth_learnability.py --train-cells 12 --test-cells 8 --seeds 0 1 2

CPU only, one torch thread.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from edge_iapp.classes import class_index
from edge_iapp.data.synth import SynthConfig, synth_cells
from edge_iapp.preprocess import PreprocessConfig, global_canvas, normalize_polarity


def cells_to_arrays(cells, canvas: int, size: int = 64):
    """(N, size, size) uint8 global images, (N,) labels, (N, 3) length features."""
    crops, bgs, labels, feats = [], [], [], []
    for cell in cells:
        for name, image in cell:
            grey, pol = normalize_polarity(image)
            crops.append(grey)
            bgs.append(pol.background)
            labels.append(class_index(name))
            fg = grey < pol.background - 25
            area = float(fg.sum())
            mean = float(grey[fg].mean()) if area else float(pol.background)
            feats.append((max(grey.shape), area, mean))
    cfg = PreprocessConfig(canvas=canvas, input_size=size)
    batch = global_canvas(crops, bgs, cfg)
    return batch.images, np.array(labels), np.array(feats, dtype=np.float64)


def length_baselines(f_tr, y_tr, f_te, y_te) -> dict[str, float]:
    """Accuracy of nearest-centroid and logistic regression on standardised features."""
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-9
    a, b = (f_tr - mu) / sd, (f_te - mu) / sd
    classes = np.unique(y_tr)
    cents = np.stack([a[y_tr == c].mean(0) for c in classes])
    pred_nc = classes[np.argmin(((b[:, None, :] - cents[None]) ** 2).sum(-1), 1)]

    # Multinomial logistic regression (quadratic features), plain gradient descent.
    def expand(x):
        return np.concatenate([x, x**2, x[:, :1] * x[:, 1:2], np.ones((len(x), 1))], 1)

    xa, xb = expand(a), expand(b)
    w = np.zeros((xa.shape[1], 24))
    onehot = np.eye(24)[y_tr]
    for _ in range(3000):
        z = xa @ w
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        w -= 0.5 * (xa.T @ (p - onehot) / len(xa) + 1e-4 * w)
    pred_lr = np.argmax(xb @ w, 1)
    return {
        "nearest_centroid": float((pred_nc == y_te).mean()),
        "logistic": float((pred_lr == y_te).mean()),
    }


def train_cnn(x_tr, y_tr, x_te, y_te, epochs: int = 25, seed: int = 0) -> float:
    """Test accuracy of a small CNN trained on ``x_tr`` (uint8 (N, S, S))."""
    import torch
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(seed)

    def block(cin, cout):
        return [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]

    net = nn.Sequential(
        *block(1, 16),
        *block(16, 32),
        *block(32, 64),
        *block(64, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(64, 24),
    )
    xt = torch.from_numpy(1.0 - x_tr.astype(np.float32) / 255.0).unsqueeze(1)
    yt = torch.from_numpy(y_tr).long()
    xe = torch.from_numpy(1.0 - x_te.astype(np.float32) / 255.0).unsqueeze(1)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * ((len(xt) + 31) // 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 32):
            idx = perm[i : i + 32]
            xb = xt[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = nn.functional.cross_entropy(net(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        pred = net(xe).argmax(1).numpy()
    return float((pred == y_te).mean())


def run(
    train_cells: int,
    test_cells: int,
    seed: int,
    canvas: int,
    epochs: int,
    config: SynthConfig | None = None,
) -> dict:
    t0 = time.time()
    cells = synth_cells(train_cells + test_cells, seed, config)
    x_tr, y_tr, f_tr = cells_to_arrays(cells[:train_cells], canvas)
    x_te, y_te, f_te = cells_to_arrays(cells[train_cells:], canvas)
    t1 = time.time()
    result = {
        "seed": seed,
        "train_images": len(y_tr),
        "test_images": len(y_te),
        "canvas": canvas,
        "epochs": epochs,
    }
    result.update(length_baselines(f_tr, y_tr, f_te, y_te))
    result["cnn"] = train_cnn(x_tr, y_tr, x_te, y_te, epochs, seed)
    result["seconds_render"] = round(t1 - t0, 1)
    result["seconds_total"] = round(time.time() - t0, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-cells", type=int, default=12)
    ap.add_argument("--test-cells", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--canvas", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=25)
    args = ap.parse_args()
    for seed in args.seeds:
        print(
            json.dumps(run(args.train_cells, args.test_cells, seed, args.canvas, args.epochs)),
            flush=True,
        )


if __name__ == "__main__":
    main()
