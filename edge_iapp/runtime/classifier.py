"""``Classifier``: a bundle + a backend -> one :class:`ChromosomeResult` per chromosome image.

    with Classifier("bundle/", backend="onnxruntime", precision="int8") as clf:
        results = clf.predict(["a.tif", array, chromosome_image])

The pipeline per batch: read/normalise -> backend.run_pipeline (reference preprocessing,
global + object branches, part zoom, part branch) -> fusion (eq. 15-17) -> review flag.
No torch on this path (unless ``backend="torch"``).

Thread safety: ``predict`` may be called from several threads at once; per-call state
is local, the backend serialises itself when it is not thread-safe, and the latency
log has its own lock. ``edge_iapp.runtime.executor`` builds ``submit()`` (queue,
batching, futures) on top of ``predict``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import cell_batches
from ..classes import CLASS_NAMES
from ..export.bundle import BRANCHES, Bundle, load_bundle
from ..fusion import fuse, softmax
from ..ood import ood_scores, with_arrays
from .executor import as_image_list
from .result import ChromosomeResult
from .review import ReviewPolicy

LATENCY_LOG = 10000
"""Per-call latencies kept for :meth:`Classifier.latency_stats`."""


class Classifier:
    """Classify chromosome images with a model bundle.

    Args:
        bundle: bundle folder or a loaded :class:`~edge_iapp.export.bundle.Bundle`.
        backend: ``"onnxruntime"`` (default), ``"openvino"``, ``"torch"``,
            ``"tensorrt"`` (when installed), or a ready :class:`~edge_iapp.backends.Backend`.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``; never changed silently.
        batch_size: images per backend call (larger inputs are split).
        warmup: run every branch once at load.
        review: override the manifest's review thresholds (dict or ReviewPolicy).
        fusion: ``"lambda"`` (eq. 17) or ``"sum"`` (eq. 15); default the manifest's.
        **backend_options: passed to the backend named by ``backend``: ``device``
            and ``threads`` (onnxruntime), ``device``, ``threads`` and ``hint``
            (openvino), ``run`` and ``threads`` (torch), ``device``, ``trt_module``,
            ``profile`` and ``cuda_graph`` (tensorrt). Any other name is refused.

    Raises:
        BundleError: missing or modified bundle.
        BackendUnavailable: the backend or precision cannot run here.
        ValueError: an option the backend does not take (``thread=4`` for ``threads``),
            options beside a ready ``Backend``, a misspelt review key, an unknown fusion.
    """

    def __init__(
        self,
        bundle: str | Path | Bundle,
        backend: Any = "onnxruntime",
        precision: str = "fp32",
        *,
        batch_size: int = 46,
        warmup: bool = True,
        review: dict | ReviewPolicy | None = None,
        fusion: str | None = None,
        **backend_options: Any,
    ) -> None:
        from ..backends import Backend, backend_class, get_backend
        from ..backends.base import check_options

        if isinstance(backend, Backend):
            if backend_options:  # they would be dropped: the backend is already made
                raise ValueError(
                    f"backend option(s) {', '.join(map(repr, sorted(backend_options)))} given "
                    f"with a ready {type(backend).__name__}: pass them when you create it, "
                    "or name the backend (backend='onnxruntime', ...)"
                )
        else:
            # said before the bundle's graphs are hashed and loaded
            check_options(
                backend_class(str(backend)),  # BackendUnavailable for an unknown name
                backend_options,
                note="; Classifier itself takes batch_size, warmup, review and fusion",
            )
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        if isinstance(backend, Backend):
            self.backend = backend
        else:
            self.backend = get_backend(str(backend), self.bundle, precision, **backend_options)
        self.precision = self.backend.precision
        self.batch_size = max(1, int(batch_size))
        if isinstance(review, ReviewPolicy):
            self.review = review
        else:
            _check_review_keys(review or {}, self.bundle.review)
            self.review = ReviewPolicy.from_dict({**self.bundle.review, **(review or {})})
        self._ood_calibration = with_arrays(self.review.ood)  # converted once, not per batch
        self.fusion = fusion or self.bundle.fusion
        if self.fusion not in ("lambda", "sum"):  # said now, not at the first predict()
            raise ValueError(f"unknown fusion mode {self.fusion!r}; expected 'sum' or 'lambda'")
        self.classes = tuple(self.bundle.classes) or CLASS_NAMES
        self._latency: deque[tuple[int, float]] = deque(maxlen=LATENCY_LOG)
        self._latency_lock = threading.Lock()
        self._closed = False
        self._queue = None  # the submit() queue (runtime.executor), made on first use
        self._queue_lock = threading.Lock()
        self.backend.ensure_loaded()
        if warmup:
            self.backend.warmup()

    # -- public -----------------------------------------------------------------------
    @property
    def checks_ood(self) -> bool:
        """Whether calls can say ``out_of_distribution`` (the bundle has a calibration)."""
        return self.review.ood is not None

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def describe(self) -> dict[str, Any]:
        """What runs: backend, precision, device, providers (from the backend)."""
        return self.backend.describe()

    def predict(self, images: Any) -> list[ChromosomeResult]:
        """Classify images.

        Args:
            images: a list, tuple or any other iterable (a generator, ``map``...) of
                arrays (any shape/dtype ``to_grey_u8`` accepts), ``ChromosomeImage``
                objects or file paths; or one such item. An array (even 3-D), a path,
                ``str`` or ``bytes`` is one item: a 3-D array is one (colour) image, so
                pass a stack as ``list(stack)``. A dict or a set is refused (TypeError):
                pass ``list(...)`` of what to classify, in the order wanted.

        Returns:
            One :class:`ChromosomeResult` per input, in order. Unreadable inputs give a
            result with ``error`` set (and ``review``), not an exception.
        """
        return self.predict_with_timings(images)[0]

    def predict_one(self, image: Any) -> ChromosomeResult:
        return self.predict([image])[0]

    def predict_with_timings(self, images: Any) -> tuple[list[ChromosomeResult], dict[str, float]]:
        """:meth:`predict`, plus seconds spent in ``read``, ``preprocess``, ``branches``,
        ``fusion`` and ``total`` for this call."""
        if self._closed:
            raise RuntimeError("this Classifier is closed")
        items = as_image_list(images)
        t0 = time.perf_counter()
        timings = {"read": 0.0, "preprocess": 0.0, "branches": 0.0, "fusion": 0.0}
        results: list[ChromosomeResult | None] = [None] * len(items)
        decoded: list[tuple[int, Any]] = []
        for k, item in enumerate(items):
            image, error = _coerce(item, k)
            if error is not None:
                results[k] = self._error_result(error)
            else:
                decoded.append((k, image))
        timings["read"] = time.perf_counter() - t0
        group = self.backend.cfg.size_mode == "cell"
        for chunk in cell_batches(decoded, self.batch_size, group):
            out = self.backend.run_pipeline([im for _, im in chunk])
            timings["preprocess"] += out.timings.get("preprocess", 0.0)
            timings["branches"] += out.timings.get("branches", 0.0)
            t = time.perf_counter()
            for (k, _image), res in zip(
                chunk, self._results(out, [im for _, im in chunk]), strict=True
            ):
                results[k] = res
            timings["fusion"] += time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        with self._latency_lock:
            self._latency.append((len(items), timings["total"]))
        return [r for r in results if r is not None], timings

    def latency_stats(self) -> dict[str, float]:
        """Per-call latency over the recent calls: count, images, mean/p50/p95/p99 ms."""
        with self._latency_lock:
            log = list(self._latency)
        if not log:
            return {"calls": 0, "images": 0}
        ms = np.array([s for _, s in log]) * 1000.0
        return {
            "calls": len(log),
            "images": int(sum(n for n, _ in log)),
            "mean_ms": float(ms.mean()),
            "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)),
        }

    # -- asynchronous use: a bounded queue and a worker (edge_iapp.runtime.executor) ----
    def submit(self, images: Any, callback: Any = None, timeout: Any = ...) -> Any:
        """Queue images and return a ``concurrent.futures.Future`` of their results at once.

        Requests from all threads are batched up to ``batch_size`` images;
        ``callback(future)`` runs on the worker thread when the request ends. A full
        queue blocks, or raises ``QueueFull`` after ``timeout`` seconds (default: the
        queue's ``submit_timeout``). ``future.latency_s``: submit-to-result seconds.
        See :class:`~edge_iapp.runtime.executor.BatchExecutor`.
        """
        return self.start_queue().submit(images, callback=callback, timeout=timeout)

    def start_queue(
        self, max_queue: int = 64, submit_timeout: float | None = None, workers: int = 1
    ) -> Any:
        """The queue behind :meth:`submit`; made on first use (settings apply then)."""
        with self._queue_lock:
            if self._queue is None:
                if self._closed:
                    raise RuntimeError("this Classifier is closed")
                from .executor import BatchExecutor

                self._queue = BatchExecutor(
                    self.predict,
                    batch_size=self.batch_size,
                    max_queue=max_queue,
                    workers=workers,
                    submit_timeout=submit_timeout,
                    name="edge-iapp-classifier",
                )
            return self._queue

    def close(self) -> None:
        """Finish the queued :meth:`submit` requests, then release the backend (idempotent)."""
        if self._queue is not None:
            self._queue.close()  # drains: every accepted request gets its result
        if not self._closed:
            self._closed = True
            self.backend.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------
    def _ood(self, logits: np.ndarray) -> np.ndarray:
        """The OOD score the manifest's calibration defines, on its branches (``(N,)``)."""
        calibration = self._ood_calibration
        wanted = (calibration or {}).get("branches") or list(BRANCHES)
        return ood_scores(logits[[BRANCHES.index(b) for b in wanted]], calibration)

    def _results(self, out, images: Sequence) -> list[ChromosomeResult]:
        logits = np.stack([out.logits[b] for b in BRANCHES])  # (3, N, K)
        fused, lambdas = fuse(logits, self.fusion)
        probs = softmax(fused)
        branch_idx = logits.argmax(axis=-1)  # (3, N)
        ood = self._ood(logits)  # (N,) checked against the manifest's threshold
        info = self.backend.describe()
        backend, precision = (
            str(info.get("backend", self.backend.name)),
            str(info.get("precision", self.precision)),
        )
        results = []
        for n in range(fused.shape[0]):
            idx = int(np.argmax(probs[n]))
            conf = float(probs[n, idx])
            votes = int((branch_idx[:, n] == idx).sum())
            flags = {k: bool(v[n]) for k, v in out.flags.items()}
            reasons = self.review.reasons(
                conf,
                votes,
                flags.get("object_fallback", False),
                flags.get("part_fallback", False),
                ood_score=float(ood[n]),
                size_fallback=flags.get("size_fallback", False),
            )
            results.append(
                ChromosomeResult(
                    class_name=self.classes[idx],
                    class_index=idx,
                    confidence=conf,
                    probabilities=probs[n].astype(np.float32),
                    lambdas={b: float(lambdas[i, n]) for i, b in enumerate(BRANCHES)},
                    branch_classes={
                        b: self.classes[int(branch_idx[i, n])] for i, b in enumerate(BRANCHES)
                    },
                    review=bool(reasons),
                    review_reasons=reasons,
                    inverted=flags.get("inverted", bool(images[n].polarity.inverted)),
                    shrunk=flags.get("shrunk", False),
                    object_fallback=flags.get("object_fallback", False),
                    part_fallback=flags.get("part_fallback", False),
                    size_fallback=flags.get("size_fallback", False),
                    ood_score=float(ood[n]),
                    backend=backend,
                    precision=precision,
                )
            )
        return results

    def _error_result(self, error: str) -> ChromosomeResult:
        k = len(self.classes)
        return ChromosomeResult(
            class_name=None,
            class_index=-1,
            confidence=0.0,
            probabilities=np.zeros(k, dtype=np.float32),
            review=True,
            review_reasons=["unreadable"],
            backend=self.backend.name,
            precision=self.precision,
            error=error,
        )


def _check_review_keys(review: dict, manifest_review: dict) -> None:
    """A misspelt ``review=`` key would be dropped and the flag left as it was: refuse it.
    Keys of the manifest's own ``review`` entry (passed back whole) are accepted."""
    from dataclasses import fields

    known = [f.name for f in fields(ReviewPolicy)]
    unknown = sorted(set(review) - set(known) - set(manifest_review))
    if unknown:
        raise ValueError(
            f"unknown review setting(s) {', '.join(map(repr, unknown))}; "
            f"expected {', '.join(known)}"
        )
    for key in ("min_confidence", "min_branch_agreement"):
        value = review.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ValueError(f"review {key} must be a number, got {value!r}")


def _coerce(item: Any, k: int) -> tuple[Any, str | None]:
    """One input -> (ChromosomeImage, None) or (None, error message)."""
    from ..data.imread import ChromosomeImage, ImageReadError, from_array, read_image

    try:
        if isinstance(item, ChromosomeImage):
            return item, None
        if isinstance(item, (str, Path)):
            return read_image(item), None
        if (
            isinstance(item, np.ndarray)
            or hasattr(item, "__array__")
            or hasattr(item, "__array_interface__")  # PIL images
        ):
            return from_array(np.asarray(item), source=f"array[{k}]"), None
        return (
            None,
            f"input {k}: cannot classify a {type(item).__name__}; "
            "pass an array, a path or a ChromosomeImage",
        )
    except ImageReadError as exc:
        return None, str(exc)
    except (ValueError, TypeError, OSError) as exc:
        return None, f"input {k}: {exc}"
