"""The backend interface: run one branch graph; the pipeline around it is written once here.

A backend loads the three branch graphs of one precision from a bundle and runs them.
:meth:`Backend.run_pipeline` does the whole batch with the reference preprocessing::

    images -> global canvas -> object zoom -> global + object branches
           -> part zoom (object branch part maps) -> part branch

A backend that does its own preprocessing (a CUDA backend with device kernels)
overrides ``run_pipeline`` and returns the same :class:`PipelineOutput`. Heavy imports
(onnxruntime, openvino, torch, tensorrt) happen in ``load()``, never at import time.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..export.bundle import BRANCHES, Bundle, precision_name


def precision_label(info: dict[str, Any]) -> str:
    """The precision a backend ran, as printed from its :meth:`Backend.describe`.

    ``"fp16, computed in f32"`` where the backend's arithmetic differs from the graphs'
    precision (``info["compute"]``: OpenVINO runs an fp16 bundle in f32 on a CPU).
    """
    precision = str(info.get("precision", ""))
    return f"{precision}, computed in {info['compute']}" if info.get("compute") else precision


class BackendUnavailable(RuntimeError):
    """This backend or precision cannot run here; the message says why (never a silent fallback)."""


def unknown_options(backend: type, options: Any) -> list[str]:
    """The names in ``options`` that ``backend`` (a :class:`Backend` class) does not take;
    ``[]`` when it declares no :attr:`~Backend.accepted_options`."""
    accepted = getattr(backend, "accepted_options", None)
    if accepted is None:
        return []
    return sorted(str(k) for k in options if k not in accepted)


def check_options(backend: type, options: Any, note: str = "") -> None:
    """Refuse options ``backend`` does not take, naming the ones it does (and ``note``).

    Raises:
        ValueError: e.g. ``thread=4`` for the ``threads`` of ONNX Runtime.
    """
    unknown = unknown_options(backend, options)
    if unknown:
        accepted = ", ".join(backend.accepted_options) or "none"
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for the {backend.name} "
            f"backend; it accepts {accepted}{note}"
        )


@dataclass
class FrontBatch:
    """The reference preprocessing up to the object zoom, for N images.

    Attributes:
        global_images, object_images: ``(N, S, S)`` uint8.
        shrunk, inverted, object_fallback: ``(N,)`` bool.
        size_fallback: ``(N,)`` bool, cell-relative size without a usable cell
            (``rescale_to_reference``); all False in absolute mode.
    """

    global_images: np.ndarray
    object_images: np.ndarray
    shrunk: np.ndarray
    inverted: np.ndarray
    object_fallback: np.ndarray
    size_fallback: np.ndarray | None = None


@dataclass
class PipelineOutput:
    """What a backend returns for a batch of N images (fusion is the caller's).

    Attributes:
        logits: ``{"global", "object", "part"}`` -> ``(N, K)`` float32.
        part_maps: ``(N, 2, h, w)`` float32 from the object branch.
        flags: ``(N,)`` bool arrays: ``shrunk``, ``inverted``, ``object_fallback``,
            ``part_fallback``, ``size_fallback``.
        timings: seconds for the batch: ``preprocess`` (all host/device preprocessing,
            part zoom included) and ``branches`` (the three networks).
    """

    logits: dict[str, np.ndarray]
    part_maps: np.ndarray
    flags: dict[str, np.ndarray]
    timings: dict[str, float] = field(default_factory=dict)


def sized_crops(images: Sequence, cfg):
    """The crops of ``ChromosomeImage`` objects as they go on the global canvas.

    In ``size_mode="cell"`` they are rescaled by their cell's median chromosome length
    (images grouped by ``image.cell``; see ``edge_iapp.preprocess.size_reference``); in
    absolute mode they are the pixels themselves. Every backend calls this (on the
    host) so that all of them put the same crops on the canvas.

    Returns:
        ``(crops, backgrounds, size)``: N uint8 crops, N background levels, and the
        :class:`~edge_iapp.preprocess.SizeReference` (``fallback`` per image).
    """
    from ..preprocess import rescale_to_reference

    backgrounds = [int(im.polarity.background) for im in images]
    cells = [getattr(im, "cell", None) for im in images]
    size = rescale_to_reference([im.pixels for im in images], backgrounds, cells, cfg)
    return size.crops, backgrounds, size


def reference_front(images: Sequence, cfg) -> FrontBatch:
    """Global canvas and object zoom for ``ChromosomeImage`` objects (reference NumPy code).

    The images of one cell must be in the same call in cell size mode (see
    :func:`sized_crops`).
    """
    from ..preprocess import global_canvas, object_zoom

    crops, backgrounds, size = sized_crops(images, cfg)
    g = global_canvas(crops, backgrounds, cfg)
    o = object_zoom(g.images, cfg)
    return FrontBatch(
        global_images=g.images,
        object_images=o.images,
        shrunk=g.shrunk,
        inverted=np.array([bool(im.polarity.inverted) for im in images], dtype=bool),
        object_fallback=o.fallback,
        size_fallback=size.fallback,
    )


def cell_batches(
    decoded: list[tuple[int, Any]], batch_size: int, group: bool = True
) -> list[list[tuple[int, Any]]]:
    """Batches of about ``batch_size`` ``(index, image)`` pairs that never split a cell.

    The cell-relative size needs every image of a cell in one backend call: images
    with the same ``cell`` go to one batch (which may then exceed ``batch_size``);
    images without a cell fill batches in input order. Cells keep their first
    position's order. ``group=False`` (absolute size): plain ``batch_size`` slices.
    """
    if not group:
        return [decoded[i : i + batch_size] for i in range(0, len(decoded), batch_size)]
    units: list[list[tuple[int, Any]]] = []
    by_cell: dict[str, list[tuple[int, Any]]] = {}
    for pair in decoded:
        cell = getattr(pair[1], "cell", None)
        if cell is None:
            units.append([pair])
        elif cell in by_cell:
            by_cell[cell].append(pair)
        else:
            by_cell[cell] = [pair]
            units.append(by_cell[cell])
    batches: list[list[tuple[int, Any]]] = []
    for unit in units:
        if batches and len(batches[-1]) + len(unit) <= batch_size:
            batches[-1].extend(unit)
        else:
            batches.append(list(unit))
    return batches


def whole_cell_front(images: Sequence, keep: Sequence[bool], cfg, chunk: int = 512) -> FrontBatch:
    """:func:`reference_front` of the images where ``keep`` is True, each with its whole cell.

    A calibration or parity set picks a few images per cell; in ``size_mode="cell"`` their
    size comes from their cell's median length, so the other images of each cell come
    along (``keep`` False) and are measured but not returned. Calls of about ``chunk``
    images never split a cell (:func:`cell_batches`).

    Returns:
        The kept images' :class:`FrontBatch`, in their input order.
    """
    order, fronts = [], []
    for batch in cell_batches(list(enumerate(images)), chunk):
        rows = [j for j, (i, _) in enumerate(batch) if keep[i]]
        if not rows:
            continue
        front = reference_front([image for _, image in batch], cfg)
        order.extend(batch[j][0] for j in rows)
        fronts.append({k: v[rows] for k, v in vars(front).items() if v is not None})
    if not fronts:
        raise ValueError("whole_cell_front: no image is kept")
    back = np.argsort(order, kind="stable")
    return FrontBatch(**{k: np.concatenate([f[k] for f in fronts])[back] for k in fronts[0]})


class Backend(ABC):
    """Runs the branch graphs of one bundle at one precision.

    Subclasses set :attr:`name`, implement :meth:`load` and :meth:`run_branch`, and
    report what actually ran in :meth:`describe`. ``precision`` is never changed
    behind the caller's back: a backend that cannot run it raises
    :class:`BackendUnavailable` from ``__init__`` or ``load``.

    Args:
        bundle: a loaded :class:`~edge_iapp.export.bundle.Bundle`.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        **options: backend-specific (``threads``, ``device``...), the names in
            :attr:`accepted_options`; any other is refused.

    Raises:
        ValueError: an option this backend does not take (a typo such as ``thread=4``
            would otherwise be dropped silently).
    """

    name: ClassVar[str] = "base"
    thread_safe: ClassVar[bool] = False
    """True when :meth:`run_branch` may be called from several threads at once."""
    accepted_options: ClassVar[tuple[str, ...] | None] = None
    """The ``**options`` this backend reads; others are refused by ``__init__``. Every
    backend of this package declares them; None (not declared: a backend registered
    from elsewhere, written before this existed) checks nothing."""

    def __init__(self, bundle: Bundle, precision: str = "fp32", **options: Any) -> None:
        check_options(type(self), options)
        try:
            precision = precision_name(precision)
        except ValueError as exc:
            raise BackendUnavailable(str(exc)) from None
        if precision not in bundle.precisions:
            raise BackendUnavailable(
                f"the bundle has no {precision} graphs (it has {', '.join(bundle.precisions)}): "
                f"use one of those, or export the bundle again with {precision} as well "
                "(edge-iapp export RUN --force --precision ...)"
            )
        self.bundle = bundle
        self.precision = precision
        self.options = options
        self.cfg = bundle.preprocess
        self._lock = threading.Lock()
        self._loaded = False

    # -- to implement -----------------------------------------------------------------
    @abstractmethod
    def load(self) -> None:
        """Import the runtime and load the three graphs (BackendUnavailable if impossible)."""

    @abstractmethod
    def run_branch(self, branch: str, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """Run one branch.

        Args:
            branch: ``"global"``, ``"object"`` or ``"part"``.
            x: ``(N, 1, S, S)`` float32 in [0, 1].

        Returns:
            The outputs in bundle order: ``(logits (N, K),)`` or, for the object
            branch, ``(logits, part_maps (N, 2, h, w))``; float32 NumPy arrays.
        """

    def describe(self) -> dict[str, Any]:
        """What runs: at least ``backend``, ``precision`` and ``device``."""
        return {"backend": self.name, "precision": self.precision, "device": "cpu"}

    def close(self) -> None:
        """Release sessions and memory (idempotent)."""
        self._loaded = False

    # -- shared -------------------------------------------------------------------------
    def ensure_loaded(self) -> None:
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    self.load()
                    self._loaded = True

    def _branch(self, branch: str, x: np.ndarray) -> tuple[np.ndarray, ...]:
        if self.thread_safe:
            return self.run_branch(branch, x)
        with self._lock:
            return self.run_branch(branch, x)

    def warmup(self, batch: int = 2) -> None:
        """Run every branch once on blank inputs (first-call allocation, kernel selection)."""
        self.ensure_loaded()
        s = self.bundle.input_size
        x = np.ones((batch, 1, s, s), dtype=np.float32)
        for branch in BRANCHES:
            self._branch(branch, x)

    def run_pipeline(self, images: Sequence, cfg=None) -> PipelineOutput:
        """The whole batch: reference preprocessing, three branches, part zoom between.

        Args:
            images: N ``ChromosomeImage`` objects (``.pixels`` ``(H, W)`` uint8 dark on
                white, ``.polarity``).
            cfg: preprocessing parameters; default the bundle's.

        Returns:
            A :class:`PipelineOutput` (no fusion).
        """
        from ..preprocess import network_input, part_zoom

        self.ensure_loaded()
        cfg = cfg or self.cfg
        t0 = time.perf_counter()
        front = reference_front(images, cfg)
        gx = network_input(front.global_images)
        ox = network_input(front.object_images)
        t1 = time.perf_counter()
        (g_logits,) = self._branch("global", gx)[:1]
        o_logits, part_maps = self._branch("object", ox)[:2]
        t2 = time.perf_counter()
        part = part_zoom(front.object_images, np.asarray(part_maps, dtype=np.float32), cfg)
        px = network_input(part.images)
        t3 = time.perf_counter()
        (p_logits,) = self._branch("part", px)[:1]
        t4 = time.perf_counter()
        return PipelineOutput(
            logits={
                "global": np.asarray(g_logits, np.float32),
                "object": np.asarray(o_logits, np.float32),
                "part": np.asarray(p_logits, np.float32),
            },
            part_maps=np.asarray(part_maps, np.float32),
            flags={
                "shrunk": front.shrunk,
                "inverted": front.inverted,
                "object_fallback": front.object_fallback,
                "part_fallback": part.fallback,
                "size_fallback": front.size_fallback,
            },
            timings={"preprocess": (t1 - t0) + (t3 - t2), "branches": (t2 - t1) + (t4 - t3)},
        )

    def __enter__(self) -> Backend:
        self.ensure_loaded()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
