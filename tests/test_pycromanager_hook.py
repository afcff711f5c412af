"""Acquisition hooks: Pycro-Manager's image_process_fn and pymmcore-plus's frameReady.

Neither package is installed here; the hooks are called exactly as they call them
(``fn(image, metadata) -> (image, metadata)``; ``handler(image, event, metadata)``),
with the real classifier behind them.
"""

from __future__ import annotations

import json
import threading

import pytest
from conftest import chromosome_crop

from edge_iapp.runtime.executor import BatchExecutor
from edge_iapp.runtime.pycromanager import PycroManagerHook, frame_ready_handler


@pytest.fixture(scope="module")
def classifier(tiny_bundle):
    from edge_iapp.runtime.classifier import Classifier

    clf = Classifier(tiny_bundle, backend="onnxruntime", precision="fp32")
    yield clf
    clf.close()


def test_waiting_hook_writes_the_call_into_the_metadata(classifier):
    hook = PycroManagerHook(classifier, wait_s=None)
    image = chromosome_crop(seed=3)
    out_image, meta = hook(image, {"Axes": {"time": 2, "z": 0}, "Camera": "Sim"})
    assert out_image is image  # the frame passes through unchanged
    ref = classifier.predict([image])[0]
    assert meta["Camera"] == "Sim" and meta["EdgeIAPP-Status"] == "done"
    assert meta["EdgeIAPP-Class"] == ref.class_name
    assert meta["EdgeIAPP-Confidence"] == pytest.approx(ref.confidence, abs=1e-5)
    assert meta["EdgeIAPP-Backend"] == "onnxruntime" and meta["EdgeIAPP-Precision"] == "fp32"
    assert meta["EdgeIAPP-Key"] == "time=2,z=0"
    json.dumps(meta)  # Pycro-Manager sends metadata to Java as JSON
    assert hook.drain(10)
    assert hook.results["time=2,z=0"][0].class_name == ref.class_name


def test_non_blocking_hook_marks_pending_and_delivers_later(classifier):
    gate = threading.Event()

    def slow_predict(images):  # holds the worker so the frame cannot be done at once
        gate.wait(60)
        return classifier.predict(images)

    got = []
    with BatchExecutor(slow_predict) as ex:
        hook = PycroManagerHook(
            ex, wait_s=0, on_result=lambda key, res, meta: got.append((key, res))
        )
        _, meta = hook(chromosome_crop(seed=4), {})
        assert meta["EdgeIAPP-Status"] == "pending" and meta["EdgeIAPP-Key"] == "frame=1"
        gate.set()
        assert hook.drain(60)
    assert [k for k, _ in got] == ["frame=1"]
    assert got[0][1][0].class_name == classifier.predict([chromosome_crop(seed=4)])[0].class_name


def test_hook_never_raises_into_the_acquisition(classifier):
    ex = BatchExecutor(classifier.predict)
    ex.close()
    hook = PycroManagerHook(ex)
    image, meta = hook(chromosome_crop(), {"Axes": {"time": 0}})
    assert meta["EdgeIAPP-Status"] == "error" and "closed" in meta["EdgeIAPP-Error"]
    assert "time=0" in hook.errors


def test_segmented_frame_gives_one_call_per_crop(classifier):
    crops = [chromosome_crop(seed=s) for s in range(3)]
    hook = PycroManagerHook(classifier, wait_s=None, segment=lambda frame: crops)
    _, meta = hook(chromosome_crop(seed=9), {})
    refs = classifier.predict(crops)
    assert meta["EdgeIAPP-Count"] == 3
    assert meta["EdgeIAPP-Classes"] == ",".join(r.class_name for r in refs)


def test_pymmcore_plus_frame_ready_handler(classifier):
    done = threading.Event()
    calls = []

    def on_result(event, results):
        calls.append((event, results))
        done.set()

    handler = frame_ready_handler(classifier, on_result)
    handler(chromosome_crop(seed=5), {"index": {"t": 0}}, {})
    assert done.wait(60)
    assert calls[0][0] == {"index": {"t": 0}}
    assert calls[0][1][0].class_name == classifier.predict([chromosome_crop(seed=5)])[0].class_name
