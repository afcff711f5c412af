"""The runtime Classifier: ORT == torch top-1 on fp32, bad inputs flagged, thread-safe, no torch."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from export_helpers import crop, tiny_bundle

pytest.importorskip("onnxruntime")

from edge_iapp.backends import BackendUnavailable  # noqa: E402
from edge_iapp.runtime.classifier import Classifier  # noqa: E402
from edge_iapp.runtime.review import ReviewPolicy  # noqa: E402


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def images(bundle_dir):
    root = (
        next(p for p in Path(bundle_dir).parents[1].iterdir() if p.name.startswith("data")) / "set"
    )
    return sorted(root.rglob("*.png"))[:30]


@pytest.fixture(scope="module")
def ort_fp32(bundle_dir):
    with Classifier(bundle_dir, backend="onnxruntime", precision="fp32", threads=1) as clf:
        yield clf


def test_ort_fp32_matches_torch_reference(bundle_dir, images, ort_fp32):
    import torch

    torch.set_num_threads(1)
    ref = Classifier(bundle_dir, backend="torch", precision="fp32", warmup=False)
    a = ort_fp32.predict(images)
    b = ref.predict(images)
    assert [r.class_index for r in a] == [r.class_index for r in b]
    assert np.allclose([r.confidence for r in a], [r.confidence for r in b], atol=1e-4)
    assert b[0].backend == "torch" and a[0].backend == "onnxruntime"
    ref.close()


def test_result_fields(images, ort_fp32):
    results = ort_fp32.predict(images[:5])
    for r in results:
        assert r.error is None and r.class_name is not None
        assert r.probabilities.shape == (24,) and abs(float(r.probabilities.sum()) - 1) < 1e-4
        assert set(r.lambdas) == {"global", "object", "part"}
        assert all(0 < v <= 1 for v in r.lambdas.values())
        assert r.confidence == pytest.approx(float(r.probabilities.max()))
        assert (r.backend, r.precision) == ("onnxruntime", "fp32")
        assert r.review == bool(r.review_reasons)


def test_mixed_and_bad_inputs_do_not_stop_the_batch(images, ort_fp32):
    from edge_iapp.data import read_image

    bright_on_black = 255 - crop(3, 1)
    rgba = np.dstack(
        [np.repeat(crop(5, 2)[..., None], 3, 2), np.full(crop(5, 2).shape, 255, np.uint8)]
    )
    batch = [
        images[0],
        str(images[1]),
        read_image(images[2]),
        crop(1, 0),
        bright_on_black,
        crop(2, 3).astype(np.uint16) * 257,
        rgba,
        np.full((1, 1), 200, np.uint8),
        np.full((500, 30), 255, np.uint8),
        np.zeros((0, 5), np.uint8),
        "/no/such/file.tif",
        np.full((4, 4), np.nan, np.float32),
        object(),
    ]
    results = ort_fp32.predict(batch)
    assert len(results) == len(batch)
    assert [r.error is None for r in results] == [True] * 9 + [False] * 4
    assert results[4].inverted and not results[3].inverted
    for r in results[9:]:
        assert r.class_index == -1 and r.review and "unreadable" in r.review_reasons and r.error
    assert "file.tif" in results[10].error
    assert results[8].object_fallback and "object_fallback" in results[8].review_reasons
    assert all(np.isfinite(r.probabilities).all() for r in results)


def test_single_array_and_batches_larger_than_batch_size(bundle_dir, images):
    with Classifier(bundle_dir, batch_size=4, warmup=False) as clf:
        one = clf.predict(crop(0, 0))
        many = clf.predict(images[:10])
    assert len(one) == 1 and len(many) == 10


def test_predict_is_thread_safe(images, ort_fp32):
    expected = [r.class_index for r in ort_fp32.predict(images)]
    got: dict[int, list[int]] = {}

    def work(k: int) -> None:
        got[k] = [r.class_index for r in ort_fp32.predict(images)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(got[k] == expected for k in range(4))


def test_latency_is_recorded_and_close_is_final(bundle_dir, images):
    clf = Classifier(bundle_dir, warmup=False)
    clf.predict(images[:3])
    clf.predict(images[:2])
    stats = clf.latency_stats()
    assert stats["calls"] == 2 and stats["images"] == 5 and stats["p50_ms"] > 0
    clf.close()
    clf.close()
    with pytest.raises(RuntimeError, match="closed"):
        clf.predict(images[:1])


def test_review_thresholds_from_manifest_and_override(bundle_dir, images):
    with Classifier(bundle_dir, warmup=False, review={"min_confidence": 1.01}) as strict:
        assert all("low_confidence" in r.review_reasons for r in strict.predict(images[:5]))
    with Classifier(
        bundle_dir, warmup=False, review={"min_confidence": 0.0, "min_branch_agreement": 0}
    ) as lax:
        assert not any(r.review_reasons for r in lax.predict(images[:5]))


def test_misspelt_or_nan_review_settings_and_unknown_fusion_are_refused(bundle_dir, images):
    """review={"min_confidnce": 0.99} used to be dropped silently (the flag kept 0.9); a
    NaN threshold turned the low-confidence flag off; fusion="foo" failed only in predict."""
    for review, message in (
        ({"min_confidnce": 0.99}, "unknown review setting.*min_confidnce"),
        ({"min_confidence": float("nan")}, "min_confidence must be a number"),
        ({"min_confidence": "high"}, "min_confidence must be a number"),
    ):
        with pytest.raises(ValueError, match=message):
            Classifier(bundle_dir, warmup=False, review=review)
    with pytest.raises(ValueError, match="unknown fusion mode 'foo'"):
        Classifier(bundle_dir, warmup=False, fusion="foo")
    # the manifest's own review entry, passed back with a change, is accepted
    with Classifier(bundle_dir, warmup=False) as clf:
        review = {**clf.bundle.review, "min_confidence": 1.01}
    with Classifier(bundle_dir, warmup=False, review=review) as strict:
        assert "low_confidence" in strict.predict(images[:1])[0].review_reasons


def test_review_policy_rules():
    p = ReviewPolicy(min_confidence=0.9, min_branch_agreement=2, flag_fallbacks=True)
    assert p.reasons(0.95, 3, False, False) == []
    assert p.reasons(0.5, 1, True, True) == [
        "low_confidence",
        "branch_disagreement",
        "object_fallback",
        "part_fallback",
    ]
    assert ReviewPolicy(flag_fallbacks=False).reasons(0.99, 3, True, False) == []
    assert ReviewPolicy.from_dict({"min_confidence": 0.5, "unknown": 1}).min_confidence == 0.5


def test_no_silent_fallbacks(bundle_dir):
    import json

    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendUnavailable, match="CUDA"):
            Classifier(bundle_dir, device="cuda", warmup=False)
    m = json.loads((Path(bundle_dir) / "manifest.json").read_text())
    assert "fp32" in m["precisions"]
    with pytest.raises(BackendUnavailable, match="FP32 reference"):
        Classifier(bundle_dir, backend="torch", precision="int8")
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        Classifier(bundle_dir, backend="nope")


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precisions_run_and_say_so(bundle_dir, images, precision):
    with Classifier(bundle_dir, precision=precision, warmup=False) as clf:
        results = clf.predict(images[:4])
    assert all(r.precision == precision and r.error is None for r in results)


def test_openvino_backend_runs_the_same_int8_file(bundle_dir, images):
    pytest.importorskip("openvino")
    with Classifier(bundle_dir, backend="openvino", precision="int8", warmup=False) as clf:
        results = clf.predict(images[:4])
        info = clf.describe()
    assert info["backend"] == "openvino" and info["inference_precision"] == "f32"
    assert all(r.backend == "openvino" and r.precision == "int8" for r in results)


def test_openvino_fp16_says_it_computes_in_f32(bundle_dir, images):
    pytest.importorskip("openvino")
    from edge_iapp.backends.base import precision_label

    with Classifier(bundle_dir, backend="openvino", precision="fp16", warmup=False) as clf:
        info = clf.describe()
    assert info["compute"] == "f32" and precision_label(info) == "fp16, computed in f32"
    assert precision_label({"precision": "int8"}) == "int8"


def test_precision_names_are_checked_and_normalised(bundle_dir, images):
    with Classifier(bundle_dir, precision="INT8", warmup=False) as clf:
        assert clf.precision == "int8"
    with pytest.raises(BackendUnavailable, match="unknown precision 'int9'; choose from"):
        Classifier(bundle_dir, precision="int9", warmup=False)


def test_a_precision_the_bundle_lacks_says_what_to_do(bundle_dir):
    from edge_iapp.export.bundle import Bundle, load_bundle

    b = load_bundle(bundle_dir)
    fp32_int8 = Bundle(b.path, {**b.manifest, "precisions": ["fp32", "int8"]})
    with pytest.raises(BackendUnavailable, match=r"no fp16 graphs .*export the bundle again"):
        Classifier(fp32_int8, precision="fp16", warmup=False)


def test_runtime_path_imports_no_torch(bundle_dir, images):
    code = (
        "import sys\n"
        "import edge_iapp\n"
        f"clf = edge_iapp.Classifier({str(bundle_dir)!r}, backend='onnxruntime',"
        " precision='int8')\n"
        f"res = clf.predict([{str(images[0])!r}])\n"
        "assert res[0].error is None, res[0].error\n"
        "print('torch' in sys.modules, res[0].class_name is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


def test_unknown_backend_options_are_refused(bundle_dir):
    """``thread=4`` (for ``threads=4``) used to be dropped silently: ORT then ran on every
    core. Options beside a ready Backend were dropped too."""
    from edge_iapp.backends import backend_class, get_backend

    with pytest.raises(ValueError, match=r"unknown option\(s\) 'thread'.*onnxruntime backend;"):
        Classifier(bundle_dir, thread=4, warmup=False)
    with pytest.raises(ValueError, match="accepts device, threads; Classifier itself takes"):
        Classifier(bundle_dir, backend="ort", thread=4, warmup=False)
    with pytest.raises(ValueError, match=r"'device'.*torch backend; it accepts run, threads"):
        Classifier(bundle_dir, backend="torch", device="cpu", warmup=False)
    with pytest.raises(ValueError, match=r"'batchsize', 'warm_up'.*takes batch_size, warmup"):
        Classifier(bundle_dir, batchsize=8, warm_up=False)
    with Classifier(bundle_dir, warmup=False) as clf:
        ready = clf.backend
        with pytest.raises(ValueError, match="given with a ready OnnxRuntimeBackend"):
            Classifier(bundle_dir, backend=ready, threads=2, warmup=False)
    bundle = ready.bundle
    with pytest.raises(ValueError, match=r"'thread' for the onnxruntime backend; it accepts dev"):
        get_backend("onnxruntime", bundle, "fp32", thread=4)  # the backends check too
    for name in ("onnxruntime", "openvino", "torch", "tensorrt"):
        assert backend_class(name).accepted_options, name  # every backend declares them
    with Classifier(bundle_dir, threads=1, device="cpu", warmup=False) as clf:
        assert clf.describe()["device"] == "cpu"


def test_predict_takes_any_iterable_of_images(images, ort_fp32):
    """``predict(generator)`` used to be one unreadable item: any iterable is now a list
    of images; an array, a path, str or bytes stay one item; a dict or a set is refused."""
    from collections import deque

    want = [r.class_index for r in ort_fp32.predict([str(p) for p in images[:3]])]
    for iterable in (
        (str(p) for p in images[:3]),
        map(str, images[:3]),
        iter(images[:3]),
        deque(images[:3]),
    ):
        got = ort_fp32.predict(iterable)
        assert [r.class_index for r in got] == want and all(r.error is None for r in got)
    assert len(ort_fp32.predict(np.stack([crop(1, 0)[:40, :12]] * 3, axis=-1))) == 1  # RGB
    assert len(ort_fp32.predict(str(images[0]))) == 1
    assert len(ort_fp32.predict(images[0])) == 1
    assert ort_fp32.predict(b"\x89PNG")[0].error  # one item, said unreadable
    assert ort_fp32.predict(x for x in []) == []
    for bad in ({"a": images[0]}, {str(images[0])}):
        with pytest.raises(TypeError, match=r"list\("):
            ort_fp32.predict(bad)
    future = ort_fp32.submit(str(p) for p in images[:3])
    assert [r.class_index for r in future.result(timeout=60)] == want
