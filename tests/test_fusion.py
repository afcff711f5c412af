"""Fusion of the branch votes (paper eq. 15-17) against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_iapp.fusion import confidence_weights, fuse, softmax


def test_softmax_by_hand_and_stable() -> None:
    p = softmax(np.array([[math.log(3.0), 0.0]]))
    np.testing.assert_allclose(p, [[0.75, 0.25]], rtol=0, atol=1e-15)
    big = softmax(np.array([[1e4, 0.0, -1e4]], dtype=np.float32))
    assert np.all(np.isfinite(big))
    np.testing.assert_allclose(big, [[1.0, 0.0, 0.0]], atol=1e-12)


def test_lambda_is_max_softmax() -> None:
    # branch 1: [ln 3, 0] -> softmax [0.75, 0.25]; branch 2: [0, ln 4] -> [0.2, 0.8]
    logits = np.array([[[math.log(3.0), 0.0]], [[0.0, math.log(4.0)]]])
    np.testing.assert_allclose(confidence_weights(logits), [[0.75], [0.8]], atol=1e-15)


def test_sum_and_lambda_fusion_by_hand() -> None:
    # three classes, two branches, one image.
    # y_g = [3, 0, 0]:      lambda_g = e^3 / (e^3 + 2)
    # y_o = [0, 3.2, 3.2]:  lambda_o = e^3.2 / (2 e^3.2 + 1)
    y_g = [3.0, 0.0, 0.0]
    y_o = [0.0, 3.2, 3.2]
    logits = np.array([[y_g], [y_o]])
    lam_g = math.exp(3) / (math.exp(3) + 2)
    lam_o = math.exp(3.2) / (2 * math.exp(3.2) + 1)

    fused_sum, lambdas = fuse(logits, "sum")
    np.testing.assert_allclose(fused_sum, [[3.0, 3.2, 3.2]], atol=1e-12)  # eq. 15
    np.testing.assert_allclose(lambdas[:, 0], [lam_g, lam_o], atol=1e-12)
    assert fused_sum.argmax() == 1  # the unsure branch wins a plain sum ...

    fused_lam, _ = fuse(logits, "lambda")  # eq. 17
    expected = [lam_g * 3.0, lam_o * 3.2, lam_o * 3.2]
    np.testing.assert_allclose(fused_lam, [expected], atol=1e-12)
    assert fused_lam.argmax() == 0  # ... the confident one wins the weighted sum


def test_fuse_batches_independently() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 5, 24)).astype(np.float32)
    fused, lambdas = fuse(logits, "lambda")
    assert fused.shape == (5, 24) and lambdas.shape == (3, 5)
    for n in range(5):
        one, _ = fuse(logits[:, n : n + 1], "lambda")
        np.testing.assert_allclose(fused[n], one[0], rtol=1e-12)
    assert np.all((lambdas >= 1 / 24) & (lambdas <= 1))


def test_fuse_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="branches, N, classes"):
        fuse(np.zeros((4, 24)))
    with pytest.raises(ValueError, match="unknown fusion mode"):
        fuse(np.zeros((2, 1, 24)), "max")  # type: ignore[arg-type]
