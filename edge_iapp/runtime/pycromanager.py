"""Hooks for microscope acquisition software: Pycro-Manager and pymmcore-plus.

Pycro-Manager calls ``Acquisition(image_process_fn=fn)``'s ``fn(image, metadata)`` on
its own processing thread for every frame and saves what ``fn`` returns. Neither
package is imported here: the hooks are plain callables, so this module loads (and
its examples run) where no microscope software is installed.

    from pycromanager import Acquisition
    from edge_iapp import Classifier
    from edge_iapp.runtime.pycromanager import PycroManagerHook

    with Classifier("bundle/") as clf:
        hook = PycroManagerHook(clf, wait_s=0.2)
        with Acquisition("data", "run", image_process_fn=hook) as acq:
            acq.acquire(events)
        hook.drain()                      # wait for the calls still running
        calls = hook.results              # {frame key: [ChromosomeResult, ...]}

The frame is submitted without blocking the acquisition (``classifier.submit``). If
the call is ready within ``wait_s`` seconds it is written into the frame's metadata
(and so saved with the image); otherwise the metadata records ``EdgeIAPP-Status:
pending`` and the frame key, and the call arrives in ``hook.results`` and
``on_result``. ``wait_s=None`` waits for every call (simplest, slows the acquisition
to the classifier's pace); ``wait_s=0`` never waits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "EdgeIAPP-"
"""Metadata key prefix (Micro-Manager keys are flat strings)."""

# Pycro-Manager metadata keys that identify a frame in an acquisition.
_AXES_KEYS = ("Axes", "axes")


def frame_key(metadata: dict[str, Any] | None, counter: int) -> str:
    """A key for a frame: its axes (``time=0,z=3``) when given, else a running number."""
    if metadata:
        for key in _AXES_KEYS:
            axes = metadata.get(key)
            if isinstance(axes, dict) and axes:
                return ",".join(f"{k}={axes[k]}" for k in sorted(axes))
    return f"frame={counter}"


def call_metadata(results: Sequence[Any], latency_s: float | None = None) -> dict[str, Any]:
    """Flat, JSON-safe metadata entries for one frame's calls.

    One chromosome: ``EdgeIAPP-Class``, ``-Confidence``, ``-Review``, ``-ReviewReasons``,
    ``-Backend``, ``-Precision``. Several (a segmented frame): ``EdgeIAPP-Count`` and
    ``EdgeIAPP-Classes`` (comma-separated) plus ``EdgeIAPP-Review`` if any needs review.
    """
    meta: dict[str, Any] = {f"{PREFIX}Status": "done", f"{PREFIX}Count": len(results)}
    if latency_s is not None:
        meta[f"{PREFIX}LatencyMs"] = round(latency_s * 1000.0, 3)
    if not results:
        return meta
    first = results[0]
    meta[f"{PREFIX}Backend"] = getattr(first, "backend", "")
    meta[f"{PREFIX}Precision"] = getattr(first, "precision", "")
    meta[f"{PREFIX}Review"] = any(bool(getattr(r, "review", False)) for r in results)
    if len(results) == 1:
        meta[f"{PREFIX}Class"] = first.class_name or ""
        meta[f"{PREFIX}Confidence"] = round(float(first.confidence), 6)
        meta[f"{PREFIX}ReviewReasons"] = ",".join(first.review_reasons)
        if first.error:
            meta[f"{PREFIX}Error"] = str(first.error)
    else:
        meta[f"{PREFIX}Classes"] = ",".join(r.class_name or "?" for r in results)
    return meta


class PycroManagerHook:
    """``image_process_fn`` for Pycro-Manager: classify each frame without blocking it.

    Args:
        classifier: anything with ``submit(images, callback=None) -> Future``
            (``Classifier``, ``BatchExecutor``).
        wait_s: seconds to wait for the call before returning the frame (see the
            module docstring); None waits for every call, 0 never waits.
        segment: ``segment(image) -> list of crops`` for frames that hold a whole
            metaphase; None classifies the frame as one chromosome crop.
        on_result: ``on_result(key, results, metadata)`` on a worker thread when a
            frame's call is done; ``on_error(key, exc, metadata)`` when it failed.
        keep_results: keep every call in ``self.results`` (turn off for long runs
            that use ``on_result``).
    """

    def __init__(
        self,
        classifier: Any,
        *,
        wait_s: float | None = 0.0,
        segment: Callable[[Any], list[Any]] | None = None,
        on_result: Callable[[str, list[Any], dict[str, Any]], None] | None = None,
        on_error: Callable[[str, BaseException, dict[str, Any]], None] | None = None,
        keep_results: bool = True,
    ) -> None:
        self.classifier = classifier
        self.wait_s = wait_s
        self.segment = segment
        self.on_result = on_result
        self.on_error = on_error
        self.keep_results = keep_results
        self.results: dict[str, list[Any]] = {}
        self.errors: dict[str, BaseException] = {}
        # Calls whose callback has not finished; Future.done() alone is not enough:
        # concurrent.futures wakes waiters before it runs the callbacks.
        self._pending = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._counter = 0

    def __call__(self, image: Any, metadata: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Pycro-Manager's ``image_process_fn(image, metadata) -> (image, metadata)``.

        Never raises into the acquisition: a failure is recorded in the metadata
        (``EdgeIAPP-Status: error``) and in ``self.errors``; the image passes through.
        """
        metadata = metadata if metadata is not None else {}
        with self._lock:
            self._counter += 1
            key = frame_key(metadata, self._counter)
            self._pending += 1
        meta_copy = dict(metadata)
        try:
            crops = self.segment(image) if self.segment is not None else [image]
            future = self.classifier.submit(list(crops), callback=self._done(key, meta_copy))
        except Exception as exc:  # queue full, closed, segmentation failed
            log.warning("edge-iapp: frame %s not classified: %s", key, exc)
            with self._lock:
                self.errors[key] = exc
                self._pending -= 1
                self._idle.notify_all()
            metadata[f"{PREFIX}Status"] = "error"
            metadata[f"{PREFIX}Error"] = f"{type(exc).__name__}: {exc}"
            metadata[f"{PREFIX}Key"] = key
            return image, metadata
        metadata[f"{PREFIX}Key"] = key
        done, _ = wait([future], timeout=self.wait_s)
        if not done:
            metadata[f"{PREFIX}Status"] = "pending"
            return image, metadata
        exc = future.exception()
        if exc is not None:
            metadata[f"{PREFIX}Status"] = "error"
            metadata[f"{PREFIX}Error"] = f"{type(exc).__name__}: {exc}"
        else:
            metadata.update(call_metadata(future.result(), getattr(future, "latency_s", None)))
        return image, metadata

    def _done(self, key: str, metadata: dict[str, Any]) -> Callable[[Future], None]:
        def callback(future: Future) -> None:
            try:
                deliver(future)
            finally:
                with self._lock:
                    self._pending -= 1
                    self._idle.notify_all()

        def deliver(future: Future) -> None:
            if future.cancelled():
                exc: BaseException | None = RuntimeError("cancelled at close")
            else:
                exc = future.exception()
            if exc is not None:
                with self._lock:
                    self.errors[key] = exc
                if self.on_error is not None:
                    self.on_error(key, exc, metadata)
                return
            results = future.result()
            if self.keep_results:
                with self._lock:
                    self.results[key] = results
            if self.on_result is not None:
                self.on_result(key, results, metadata)

        return callback

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted frame's call is delivered; True when none is left."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout)


def frame_ready_handler(
    classifier: Any,
    on_result: Callable[[Any, list[Any]], None],
    *,
    segment: Callable[[Any], list[Any]] | None = None,
    on_error: Callable[[Any, BaseException], None] | None = None,
) -> Callable[..., None]:
    """A slot for pymmcore-plus: ``core.mda.events.frameReady.connect(handler)``.

    pymmcore-plus emits ``frameReady(image, event, metadata)`` on its acquisition
    thread; the handler submits the frame and returns at once; ``on_result(event,
    results)`` runs on the classifier's worker thread when the call is done (use a
    Qt signal from there to reach a GUI).
    """

    def handler(image: Any, event: Any = None, metadata: Any = None) -> None:
        def done(future: Future) -> None:
            exc = None if future.cancelled() else future.exception()
            if future.cancelled() or exc is not None:
                err = exc or RuntimeError("cancelled at close")
                if on_error is not None:
                    on_error(event, err)
                else:
                    log.warning("edge-iapp: frame %s not classified: %s", event, err)
                return
            on_result(event, future.result())

        try:
            crops = segment(image) if segment is not None else [image]
            classifier.submit(list(crops), callback=done)
        except Exception as exc:  # queue full, closed: never raise into the acquisition
            if on_error is not None:
                on_error(event, exc)
            else:
                log.warning("edge-iapp: frame %s not classified: %s", event, exc)

    return handler
