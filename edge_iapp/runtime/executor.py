"""Asynchronous, batching front of the runtime: ``submit(images) -> Future``.

Capture software calls the classifier from its own threads (camera callbacks, Qt
workers, Pycro-Manager's processing thread) and must not stall. ``BatchExecutor``
puts each request on a bounded queue and returns a ``concurrent.futures.Future`` at
once; worker thread(s) merge queued requests into batches of up to ``batch_size``
images, call the (thread-safe) ``predict_fn`` once per batch, and split the results
back per request.

Guarantees:
    - Back-pressure: at most ``max_queue`` requests wait. A submit to a full queue
      blocks; with ``timeout`` (or the executor's ``submit_timeout``) it raises
      ``QueueFull`` after that many seconds (``0`` raises at once).
    - Nothing is lost: every accepted request's Future ends with results, the
      exception raised for it, or ``CancelledError`` (``close(drain=False)``). When a
      merged batch raises, its requests are re-run one by one so that only the
      request that caused the error gets it.
    - ``close()`` (or leaving the ``with`` block) refuses new requests, lets the
      workers finish everything queued (drain) and joins them. An executor that is
      never closed is drained at interpreter exit.
    - Per-call latency (submit to result, queue wait included) is recorded on the
      Future (``future.latency_s``) and summarised by ``latency_stats()``.

No torch, no heavy imports: this module only needs the standard library.
"""

from __future__ import annotations

import atexit
import io
import itertools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

PredictFn = Callable[[list[Any]], Sequence[Any]]
Callback = Callable[[Future], None]

_COUNTER = itertools.count(1)


class QueueFull(RuntimeError):
    """The request queue stayed full for the whole submit timeout."""


class ExecutorClosed(RuntimeError):
    """``submit`` was called after ``close()``."""


def as_image_list(images: Any) -> list[Any]:
    """One request's images as a list.

    A list, a tuple or any other iterable (a generator, ``map``, a ``deque``...) is
    taken as several images, read once here. An array of any shape (anything with
    ``__array__``), a path, ``str``, ``bytes`` or a ``ChromosomeImage`` is one image. A
    stack ``(N, H, W)`` must be passed as ``list(stack)``: a 3-D array is ambiguous
    with one RGB image.

    Raises:
        TypeError: a mapping or a set (which of its parts are the images, in what
            order?): pass ``list(...)`` of the images instead; an open file.
    """
    if isinstance(images, (list, tuple)):
        return list(images)
    if (
        isinstance(images, (str, bytes, bytearray, memoryview, os.PathLike))
        or hasattr(images, "__array__")
        or hasattr(images, "__array_interface__")
    ):
        return [images]
    if isinstance(images, (Mapping, AbstractSet)):
        raise TypeError(
            f"cannot classify a {type(images).__name__}: pass a list of images, e.g. "
            "list(d.values()) for a dict of images, or sorted(...) for a set of paths"
        )
    if isinstance(images, io.IOBase):  # iterating it would give lines, not images
        raise TypeError(
            f"cannot classify an open file ({type(images).__name__}): pass its path, or "
            "the decoded image as an array"
        )
    if isinstance(images, Iterable):
        return list(images)
    return [images]


@dataclass
class _Request:
    images: list[Any]
    future: Future
    submitted: float
    callback: Callback | None = None
    id: int = field(default_factory=lambda: next(_COUNTER))


class BatchExecutor:
    """Bounded queue + worker thread(s) that batch requests for ``predict_fn``.

    Args:
        predict_fn: ``predict_fn(images: list) -> sequence`` with one result per image,
            in order. Must be thread-safe when ``workers > 1``.
        batch_size: most images merged into one ``predict_fn`` call. A request with
            more images than this still runs, alone, in one call.
        max_queue: most requests waiting (not counting those being run).
        workers: worker threads. One is enough for a CPU backend (ONNX Runtime
            already uses all cores inside a call); two overlap preprocessing and the
            GPU on a TensorRT backend.
        submit_timeout: default seconds a submit waits for room in a full queue
            before ``QueueFull``; ``None`` waits as long as it takes.
        latency_window: how many recent latencies ``latency_stats()`` keeps.
        name: thread name prefix (shows in debuggers and logs).
    """

    def __init__(
        self,
        predict_fn: PredictFn,
        *,
        batch_size: int = 46,
        max_queue: int = 64,
        workers: int = 1,
        submit_timeout: float | None = None,
        latency_window: int = 10_000,
        name: str = "edge-iapp",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._predict = predict_fn
        self.batch_size = batch_size
        self.max_queue = max_queue
        self.submit_timeout = submit_timeout
        self._pending: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._latencies: deque[float] = deque(maxlen=latency_window)
        self._counts = {
            "submitted": 0,
            "completed": 0,
            "failed": 0,
            "cancelled": 0,
            "batches": 0,
            "callback_errors": 0,
        }
        self._threads = [
            threading.Thread(target=self._worker, name=f"{name}-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()
        # Workers are daemon threads (a forgotten close must not hang the program), so
        # drain at interpreter exit: accepted requests still get their results.
        ref = weakref.ref(self)
        self._atexit = lambda: (ex := ref()) is not None and ex.close()
        atexit.register(self._atexit)

    # -- public API ---------------------------------------------------------------------

    def submit(
        self,
        images: Any,
        callback: Callback | None = None,
        timeout: float | None = ...,  # type: ignore[assignment]
    ) -> Future:
        """Queue one request and return its Future at once.

        Args:
            images: one image or a list of images (see ``as_image_list``).
            callback: called as ``callback(future)`` when the request ends (results,
                error or cancel), on the worker thread: keep it short, hand heavy
                work to your own thread. Exceptions it raises are logged. A submit
                from a callback never blocks (it would wait on its own worker): it
                raises ``QueueFull`` at once when the queue is full.
            timeout: seconds to wait for room in a full queue; default: the
                executor's ``submit_timeout``; ``None`` waits; ``0`` never waits.

        Returns:
            A Future whose ``result()`` is the list of ``predict_fn`` results for
            these images (one per image); ``future.latency_s`` holds the seconds from
            submit to result.

        Raises:
            QueueFull: the queue stayed full for ``timeout`` seconds.
            ExecutorClosed: after ``close()``.
        """
        wait = self.submit_timeout if timeout is ... else timeout
        if threading.current_thread() in self._threads:
            wait = 0  # from a callback: blocking would wait on ourselves forever
        request = _Request(as_image_list(images), Future(), time.perf_counter(), callback)
        if callback is not None:
            request.future.add_done_callback(self._guard(callback))
        if not request.images:  # nothing to run: done at once, without a queue slot
            if self._closed:
                raise ExecutorClosed("this executor is closed; create a new Classifier")
            with self._cond:
                self._counts["submitted"] += 1
            request.future.set_running_or_notify_cancel()
            self._finish(request, results=[])
            return request.future
        with self._cond:
            has_room = self._cond.wait_for(
                lambda: self._closed or len(self._pending) < self.max_queue, timeout=wait
            )
            if self._closed:
                raise ExecutorClosed("this executor is closed; create a new Classifier")
            if not has_room:
                raise QueueFull(
                    f"the request queue is full ({self.max_queue} requests waiting) and "
                    f"stayed full for {wait} s: the classifier is slower than the "
                    "capture; submit fewer images, raise max_queue, or wait"
                )
            self._pending.append(request)
            self._counts["submitted"] += 1
            self._cond.notify_all()
        return request.future

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Refuse new requests, finish (``drain``) or cancel the queued ones, join.

        Args:
            drain: True runs every queued request before the workers stop; False
                cancels those not yet started (their Futures raise ``CancelledError``).
            timeout: seconds to wait for the workers; None waits for all.
        """
        atexit.unregister(self._atexit)
        with self._cond:
            self._closed = True
            if not drain:
                while self._pending:
                    request = self._pending.popleft()
                    if request.future.cancel():
                        self._counts["cancelled"] += 1
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread is threading.current_thread():
                continue  # close() from a callback: the worker exits after it returns
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)

    @property
    def closed(self) -> bool:
        return self._closed

    def queue_size(self) -> int:
        """Requests waiting now (not counting those being run)."""
        with self._cond:
            return len(self._pending)

    def stats(self) -> dict[str, int]:
        """Counters: submitted, completed, failed, cancelled, batches, callback_errors."""
        with self._cond:
            return dict(self._counts)

    def latency_stats(self) -> dict[str, float]:
        """Latency (submit to result, queue wait included) of recent calls, in ms.

        Same keys as ``Classifier.latency_stats`` (which times ``predict`` alone):
        calls, mean_ms, p50_ms, p95_ms, p99_ms, plus max_ms.
        """
        with self._cond:
            values = sorted(self._latencies)
        if not values:
            return {"calls": 0}

        def pct(q: float) -> float:
            return 1000.0 * values[min(len(values) - 1, int(round(q * (len(values) - 1))))]

        return {
            "calls": len(values),
            "mean_ms": 1000.0 * sum(values) / len(values),
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
            "max_ms": 1000.0 * values[-1],
        }

    def __enter__(self) -> BatchExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- workers ------------------------------------------------------------------------

    def _take_batch(self) -> list[_Request] | None:
        """Wait for work; pop requests up to ``batch_size`` images. None: stop."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending or self._closed)
            if not self._pending:
                return None  # closed and drained
            batch = [self._pending.popleft()]
            total = len(batch[0].images)
            while self._pending and total + len(self._pending[0].images) <= self.batch_size:
                request = self._pending.popleft()
                total += len(request.images)
                batch.append(request)
            self._cond.notify_all()  # room for blocked submitters
            return batch

    def _worker(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            # A Future cancelled by its owner while queued is skipped, not run.
            live = [r for r in batch if r.future.set_running_or_notify_cancel()]
            with self._cond:
                self._counts["cancelled"] += len(batch) - len(live)
            if live:
                self._run(live)

    def _run(self, batch: list[_Request]) -> None:
        images = [image for request in batch for image in request.images]
        try:
            results = self._call(images)
        except BaseException as exc:  # noqa: BLE001 - delivered through the Futures
            if len(batch) == 1:
                self._finish(batch[0], error=exc)
                return
            # Re-run one by one so only the request that caused the error gets it.
            log.debug(
                "batch of %d requests failed (%r); re-running them one by one", len(batch), exc
            )
            for request in batch:
                try:
                    one = self._call(request.images)
                except BaseException as one_exc:  # noqa: BLE001
                    self._finish(request, error=one_exc)
                else:
                    self._finish(request, results=one)
            return
        start = 0
        for request in batch:
            end = start + len(request.images)
            self._finish(request, results=results[start:end])
            start = end

    def _call(self, images: list[Any]) -> list[Any]:
        with self._cond:
            self._counts["batches"] += 1
        results = list(self._predict(images))
        if len(results) != len(images):
            raise RuntimeError(
                f"predict_fn returned {len(results)} results for {len(images)} images"
            )
        return results

    def _finish(
        self,
        request: _Request,
        results: list[Any] | None = None,
        error: BaseException | None = None,
    ) -> None:
        latency = time.perf_counter() - request.submitted
        request.future.latency_s = latency  # type: ignore[attr-defined]
        with self._cond:
            self._latencies.append(latency)
            self._counts["failed" if error is not None else "completed"] += 1
        # Set last: done-callbacks run inside set_result and must see the latency.
        if error is not None:
            request.future.set_exception(error)
        else:
            request.future.set_result(results)

    def _guard(self, callback: Callback) -> Callback:
        def run(future: Future) -> None:
            try:
                callback(future)
            except Exception:  # a user callback must not kill the worker
                with self._cond:
                    self._counts["callback_errors"] += 1
                log.exception("edge-iapp: the result callback raised")

        return run
