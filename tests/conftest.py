"""Shared test fixtures (keep small; area-specific helpers live in the test files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def chromosome_crop(h: int = 60, w: int = 22, seed: int = 0) -> np.ndarray:
    """A banded dark ellipse on a near-white (243) background: ``(h, w)`` uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    inside = ((yy - cy) / max(h * 0.42, 1)) ** 2 + ((xx - cx) / max(w * 0.35, 1)) ** 2 <= 1
    bands = 60 + 90 * (np.sin(yy * 0.6) > 0)
    image = np.where(inside, bands, 243).astype(np.float32) + rng.normal(0, 3, (h, w))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture
def crop() -> np.ndarray:
    """A 60 x 22 uint8 dark-on-white chromosome-like crop."""
    return chromosome_crop()


@pytest.fixture
def make_crop():
    """``make_crop(h, w, seed)`` -> a chromosome-like uint8 crop (see ``chromosome_crop``)."""
    return chromosome_crop


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A tiny exported bundle, built once per session (about 15 s on 2 cores).

    Untrained resnet18 IAPP-CNN (fixed seed), input 64, FP32 graphs only: enough for
    anything that runs the whole pipeline on ONNX Runtime (runtime, scoring, watch,
    examples). Built by ``export_helpers.tiny_bundle``; treat it as read-only.
    """
    from export_helpers import tiny_bundle as build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory, ("fp32",))
