"""The asynchronous runtime: threads, back-pressure, errors through Futures, close/drain.

Every test runs the real pipeline (a tiny exported bundle on ONNX Runtime). Where a
test needs the worker to stay busy or a backend call to fail on cue, the real
``Classifier.predict`` is wrapped (a gate Event, or a raise for one marked input):
there is no other way to make a queue fill or a backend raise deterministically.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError

import numpy as np
import pytest

from edge_iapp.runtime.executor import BatchExecutor, ExecutorClosed, QueueFull


@pytest.fixture(scope="module")
def classifier(tiny_bundle):
    from edge_iapp.runtime.classifier import Classifier

    clf = Classifier(tiny_bundle, backend="onnxruntime", precision="fp32")
    yield clf
    clf.close()


@pytest.fixture(scope="module")
def crops(request):
    from conftest import chromosome_crop

    # Different sizes and seeds so that every image gives different probabilities.
    return [chromosome_crop(40 + 3 * i, 14 + (i % 5) * 2, seed=i) for i in range(24)]


def _same(a, b) -> None:
    """Same call: class exactly, probabilities to float32 rounding (batching may differ)."""
    assert a.class_index == b.class_index
    assert a.review == b.review
    assert a.error == b.error
    np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=0, atol=1e-5)
    assert a.lambdas.keys() == b.lambdas.keys()
    for k in a.lambdas:
        assert a.lambdas[k] == pytest.approx(b.lambdas[k], abs=1e-5)


def test_eight_threads_give_the_same_results_as_serial_calls(classifier, crops):
    serial = [classifier.predict([img])[0] for img in crops]
    # The test must be able to fail: the images must not all give the same call.
    assert len({tuple(np.round(r.probabilities, 6)) for r in serial}) == len(crops)

    by_predict: dict[int, object] = {}
    by_submit: dict[int, object] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(t: int) -> None:
        try:
            barrier.wait()  # all eight start together
            mine = list(range(t, len(crops), 8))
            for i, r in zip(mine, classifier.predict([crops[i] for i in mine]), strict=True):
                by_predict[i] = r
            futures = [(i, classifier.submit(crops[i])) for i in mine]
            for i, f in futures:
                by_submit[i] = f.result(timeout=120)[0]
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert sorted(by_predict) == sorted(by_submit) == list(range(len(crops)))
    for i, ref in enumerate(serial):
        _same(by_predict[i], ref)
        _same(by_submit[i], ref)


def _gated(classifier):
    """``classifier.predict`` that waits for ``gate`` first: keeps the worker busy."""
    gate = threading.Event()
    started = threading.Event()

    def predict(images):
        started.set()
        assert gate.wait(60), "test gate never opened"
        return classifier.predict(images)

    return predict, gate, started


def test_full_queue_raises_queue_full_after_the_timeout(classifier, crops):
    predict, gate, started = _gated(classifier)
    ex = BatchExecutor(predict, batch_size=1, max_queue=2)
    try:
        running = ex.submit(crops[0])
        assert started.wait(30)  # the worker holds request 0; the queue is empty
        queued = [ex.submit(crops[1]), ex.submit(crops[2])]
        with pytest.raises(QueueFull, match="queue is full"):
            ex.submit(crops[3], timeout=0)
        t0 = time.monotonic()
        with pytest.raises(QueueFull):
            ex.submit(crops[3], timeout=0.3)
        assert time.monotonic() - t0 >= 0.25  # it did wait before giving up
        gate.set()
        for f, i in zip([running, *queued], [0, 1, 2], strict=True):
            _same(f.result(timeout=60)[0], classifier.predict([crops[i]])[0])
    finally:
        gate.set()
        ex.close()


def test_full_queue_blocks_until_there_is_room(classifier, crops):
    predict, gate, started = _gated(classifier)
    ex = BatchExecutor(predict, batch_size=1, max_queue=1)  # submit_timeout None = block
    try:
        ex.submit(crops[0])
        assert started.wait(30)
        ex.submit(crops[1])  # fills the queue
        got: list = []
        blocked = threading.Thread(target=lambda: got.append(ex.submit(crops[2])))
        blocked.start()
        blocked.join(0.5)
        assert blocked.is_alive() and not got  # still waiting for room
        gate.set()
        blocked.join(60)
        assert not blocked.is_alive() and len(got) == 1
        _same(got[0].result(timeout=60)[0], classifier.predict([crops[2]])[0])
    finally:
        gate.set()
        ex.close()


class BackendFailure(RuntimeError):
    pass


def test_backend_exception_reaches_only_its_future(classifier, crops):
    marker = np.zeros((5, 5), np.uint8)

    def predict(images):
        # Fault injection: a backend error for one input (e.g. a device lost mid-call).
        if any(img is marker for img in images):
            raise BackendFailure("device lost")
        return classifier.predict(images)

    gate = threading.Event()
    ex = BatchExecutor(lambda imgs: (gate.wait(60), predict(imgs))[1], batch_size=46)
    try:
        first = ex.submit(crops[0])  # takes the worker; the next three queue up and merge
        good_a, bad, good_b = (
            ex.submit(crops[1]),
            ex.submit([crops[2], marker]),
            ex.submit(crops[3]),
        )
        gate.set()
        with pytest.raises(BackendFailure, match="device lost"):
            bad.result(timeout=60)
        for f, i in ((first, 0), (good_a, 1), (good_b, 3)):
            _same(f.result(timeout=60)[0], classifier.predict([crops[i]])[0])
        stats = ex.stats()
        assert stats["failed"] == 1 and stats["completed"] == 3
    finally:
        gate.set()
        ex.close()


def test_classifier_submit_delivers_errors_and_results_through_the_future(
    classifier, crops, tmp_path
):
    missing = tmp_path / "missing.png"
    future = classifier.submit([crops[0], missing])
    try:
        results = future.result(timeout=60)
    except Exception as exc:  # the runtime may raise for the bad input: it must name it
        assert "missing.png" in str(exc)
    else:  # or flag it: never a silent call for a file that does not exist
        assert len(results) == 2
        assert results[1].error and results[1].class_index == -1
        _same(results[0], classifier.predict([crops[0]])[0])


def test_close_drains_every_queued_request(classifier, crops):
    predict, gate, started = _gated(classifier)
    ex = BatchExecutor(predict, batch_size=2, max_queue=16)
    futures = [ex.submit(c) for c in crops[:7]]
    assert started.wait(30)
    closer = threading.Thread(target=ex.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive()  # close waits for the queue to drain
    with pytest.raises(ExecutorClosed):
        ex.submit(crops[0])
    gate.set()
    closer.join(120)
    assert not closer.is_alive()
    for f, c in zip(futures, crops[:7], strict=True):
        _same(f.result(timeout=0)[0], classifier.predict([c])[0])
    assert ex.stats()["completed"] == 7


def test_close_without_drain_cancels_what_did_not_start(classifier, crops):
    predict, gate, started = _gated(classifier)
    ex = BatchExecutor(predict, batch_size=1, max_queue=16)
    futures = [ex.submit(c) for c in crops[:4]]
    assert started.wait(30)
    ex.close(drain=False, timeout=0)
    gate.set()
    ex.close()
    assert futures[0].result(timeout=60)[0].class_name is not None  # it was running
    for f in futures[1:]:
        with pytest.raises(CancelledError):
            f.result(timeout=0)
    assert ex.stats()["cancelled"] == 3


def test_callbacks_latency_and_a_raising_callback(classifier, crops):
    seen: list = []
    lock = threading.Lock()

    def callback(future):
        with lock:
            seen.append(future)
        if len(seen) == 1:
            raise ValueError("a user callback bug must not stop the worker")

    with BatchExecutor(classifier.predict, batch_size=4) as ex:
        futures = [ex.submit(c, callback=callback) for c in crops[:6]]
        for f in futures:
            f.result(timeout=60)
    assert sorted(map(id, seen)) == sorted(map(id, futures))  # once each
    assert ex.stats()["callback_errors"] == 1
    assert all(f.latency_s > 0 for f in futures)
    lat = ex.latency_stats()
    assert lat["calls"] == 6 and 0 < lat["p50_ms"] <= lat["max_ms"]
    assert lat["max_ms"] == pytest.approx(1000 * max(f.latency_s for f in futures))


def test_a_list_is_several_images_and_an_empty_request_is_done_at_once(classifier, crops):
    with BatchExecutor(classifier.predict, batch_size=46) as ex:
        assert ex.submit([]).result(timeout=1) == []
        three = ex.submit(crops[:3]).result(timeout=60)
        one = ex.submit(crops[0]).result(timeout=60)
    assert len(three) == 3 and len(one) == 1
    _same(three[0], one[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        BatchExecutor(lambda x: x, batch_size=0)
    with pytest.raises(ValueError, match="max_queue"):
        BatchExecutor(lambda x: x, max_queue=0)


def test_runtime_modules_import_no_torch_and_start_no_threads():
    import subprocess
    import sys

    code = (
        "import sys, threading\n"
        "import edge_iapp.runtime.executor, edge_iapp.runtime.watch\n"
        "import edge_iapp.runtime.pycromanager, edge_iapp.cli.watch_cmd\n"
        "bad = [m for m in ('torch', 'onnx', 'tensorrt', 'pycromanager') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_submit_from_a_callback_never_deadlocks(classifier, crops):
    outcome: dict = {}
    called = threading.Event()

    def callback(_future):
        # Runs on the only worker: B fills the queue; a blocking submit of C would
        # wait for that worker forever, so it must raise QueueFull at once instead.
        outcome["b"] = ex.submit(crops[1])
        try:
            ex.submit(crops[2])
        except QueueFull as exc:
            outcome["c"] = exc
        called.set()

    ex = BatchExecutor(classifier.predict, batch_size=1, max_queue=1)
    with ex:
        ex.submit(crops[0], callback=callback).result(timeout=60)
        assert called.wait(60)  # result() can return before the callback has run
        _same(outcome["b"].result(timeout=60)[0], classifier.predict([crops[1]])[0])
    assert isinstance(outcome.get("c"), QueueFull)


def test_requests_of_an_unclosed_classifier_finish_at_interpreter_exit(tiny_bundle):
    import subprocess
    import sys

    code = (
        "import atexit, numpy as np\n"
        "calls = []\n"
        "atexit.register(lambda: print('called back', len(calls)))  # runs last (LIFO)\n"
        "from edge_iapp.runtime.classifier import Classifier\n"
        f"clf = Classifier({str(tiny_bundle)!r})\n"
        "img = np.full((40, 16), 243, np.uint8); img[5:35, 4:12] = 60\n"
        "for _ in range(3):\n"
        "    clf.submit(img, callback=lambda f: calls.append(f.result()[0].class_name))\n"
        "# no close(): the program just ends\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "called back 3" in proc.stdout


def test_several_workers_give_the_same_results(classifier, crops):
    serial = classifier.predict(crops[:12])
    with BatchExecutor(classifier.predict, workers=3, batch_size=2, max_queue=4) as ex:
        futures: dict[int, object] = {}

        def feed(start: int) -> None:
            for i in range(start, 12, 4):
                futures[i] = ex.submit(crops[i])  # max_queue 4: some submits block

        threads = [threading.Thread(target=feed, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        got = {i: f.result(timeout=120)[0] for i, f in futures.items()}
    assert sorted(got) == list(range(12))
    for i in range(12):
        _same(got[i], serial[i])
