"""The slide runner: score every cell of one slide or a folder of slides.

Resumable: a cell whose ``summary.json`` exists is skipped (``force=True`` re-scores
it). Never stops at a bad file or a failing cell; stops only when outputs cannot be
written (a full disk), keeping every finished cell. Inputs are only read.
One run per output folder at a time (a lock file guards it).
"""

from __future__ import annotations

import errno
import json
import os
import platform
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..ioutil import atomic_write_text
from .cell import CellOptions, EmptyCellError, Predictor, ScoredCell, prepare_cell, write_cell
from .layout import (
    ERRORS,
    INDEX,
    KARYOGRAM,
    PREDICTIONS,
    RUN_INFO,
    SLIDE_REPORT,
    SLIDE_TABLE,
    SUMMARY,
    CellJob,
    SlideJob,
    discover,
)
from .report import write_index, write_slide_reports

LOCK = ".edge-iapp-score.lock"
_OUTPUT_NAMES = (
    SUMMARY,
    PREDICTIONS,
    KARYOGRAM,
    SLIDE_TABLE,
    SLIDE_REPORT,
    ERRORS,
    INDEX,
    RUN_INFO,
)


class OutputWriteError(Exception):
    """An output file could not be written; the run stops, finished cells are kept."""

    def __init__(self, path: Path, exc: OSError, finished: int) -> None:
        self.path, self.exc, self.finished = path, exc, finished
        why = exc.strerror or str(exc)
        if exc.errno == errno.ENOSPC:
            why += " (the output disk is full)"
        fix = "free space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "path, permissions"
        super().__init__(
            f"cannot write {path}: {why}. {finished} finished cell(s) are kept; fix the output "
            f"folder ({fix}) and run the same command again to resume"
        )


class OutputLockedError(Exception):
    """Another scoring run is writing to the same output folder."""


class OutputMismatchError(ValueError):
    """OUT holds cells scored with another model, backend, precision or cell options."""


RESUME_KEYS = ("model", "options", "segment")
"""``run_info.json`` entries that must match for a run to add cells to an existing OUT:
``model`` (bundle manifest sha256, the backend and precision that ran; set by the CLI)
and the cell options (see ``_check_resume``)."""


@dataclass
class RunStats:
    """What a run did.

    Attributes:
        cells: cells found; scored: scored by this run; skipped: already finished;
        failed: cells that could not be scored (empty folders included); errors: error rows.
        seconds: wall time; predict_seconds: time inside ``predictor.predict``.
        stages: the classifier's own split (read, preprocess, branches, fusion).
        cell_steps: the scorer's split per step (load, classify, consistency, karyogram,
            write), summed over cells.
    """

    cells: int = 0
    scored: int = 0
    skipped: int = 0
    failed: int = 0
    errors: int = 0
    seconds: float = 0.0
    predict_seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    cell_steps: dict[str, float] = field(default_factory=dict)
    slides: list[dict[str, Any]] = field(default_factory=list)


class _TimedPredictor:
    """Wraps a predictor to add up the time spent in ``predict`` (and its own split).

    When the predictor offers ``predict_with_timings`` (the runtime ``Classifier``), its
    per-stage seconds (``read``, ``preprocess``, ``branches``, ``fusion``) are summed too.
    """

    def __init__(self, inner: Predictor) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.stages: dict[str, float] = {}
        self.backend_name = _name_of(inner)
        self.precision = str(getattr(inner, "precision", ""))
        self.checks_ood = bool(getattr(inner, "checks_ood", True))

    def predict(self, images: Sequence[Any]) -> list[Any]:
        t0 = time.perf_counter()
        try:
            timed = getattr(self.inner, "predict_with_timings", None)
            if timed is None:
                return self.inner.predict(images)
            results, stages = timed(list(images))
            for k, v in stages.items():
                self.stages[k] = self.stages.get(k, 0.0) + float(v)
            return results
        finally:
            self.seconds += time.perf_counter() - t0


def _name_of(predictor: Any) -> str:
    name = getattr(predictor, "backend_name", None) or getattr(predictor, "backend", "")
    return name if isinstance(name, str) else str(getattr(name, "name", ""))


def _remove_stale_temps(folder: Path) -> None:
    """Remove temporary files a killed run left (``ioutil`` names them ``.<name>.*.tmp``)."""
    if not folder.is_dir():
        return
    for name in _OUTPUT_NAMES:
        for p in folder.glob(f".{name}.*.tmp"):
            p.unlink(missing_ok=True)


def _acquire_lock(out: Path) -> Path:
    lock = out / LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise OutputLockedError(
                    f"another scoring run (pid {pid}) is writing to {out}; wait for it or use "
                    f"another output folder (remove {lock} if that process is gone)"
                ) from None
            lock.unlink(missing_ok=True)  # left by a killed run
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return lock
    raise OutputLockedError(f"could not lock {out}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_scoring(
    slides: Path,
    out: Path,
    predictor: Predictor,
    options: CellOptions | None = None,
    force: bool = False,
    progress: bool = True,
    run_info: dict[str, Any] | None = None,
    pipeline: bool = False,
) -> RunStats:
    """Score all cells under ``slides`` into ``out``.

    Args:
        slides: one slide folder or a folder of slide folders.
        out: output root (created; must not overlap ``slides``).
        predictor: the classifier (``predict(list[ChromosomeImage]) -> list[ChromosomeResult]``).
        options: cell scoring options.
        force: re-score finished cells.
        progress: draw a progress bar with ETA on stderr.
        run_info: extra facts for ``run_info.json`` (bundle, backend, precision...).
        pipeline: write each cell's files on a background thread while the next cell
            is classified (same outputs). Off by default: on a busy 2-core CPU it was 3%
            slower (40 real cells: 43.7 s vs 42.4 s); it is meant for GPU backends, where
            the CPU waits during the branches (not measured here).

    Returns:
        :class:`RunStats`.

    Raises:
        NotADirectoryError, ValueError: bad ``slides``/``out`` (before any work).
        OutputLockedError: another run holds ``out``.
        OutputWriteError: an output could not be written (the run stops; finished cells kept).
    """
    options = options or CellOptions()
    jobs = discover(slides, out)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(out, exc, 0) from exc
    lock = _acquire_lock(out)
    try:
        info = {**run_info_entries(options), **(run_info or {})}
        if not force:
            has_cells = any(c.finished for slide in jobs for c in slide.cells)
            _check_resume(out, info, has_cells)
        timed = _TimedPredictor(predictor)
        return _run(jobs, out, timed, options, force, progress, info, pipeline)
    finally:
        lock.unlink(missing_ok=True)


def _run(
    jobs: list[SlideJob],
    out: Path,
    predictor: _TimedPredictor,
    options: CellOptions,
    force: bool,
    progress: bool,
    run_info: dict[str, Any],
    pipeline: bool,
) -> RunStats:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    stats = RunStats(cells=sum(len(s.cells) for s in jobs))
    t0 = time.perf_counter()
    info = {
        "format": "edge-iapp-run-info/1",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "status": "running",
        "python": platform.python_version(),
        "machine": platform.machine(),
        **run_info,  # with the cell options (run_info_entries)
        "forced": force,  # an unfinished --force run leaves cells of two settings
    }
    _write(out / RUN_INFO, json.dumps(info, indent=1) + "\n", stats)
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    all_cells = [c for s in jobs for c in s.cells]

    def n_finished() -> int:
        return sum(1 for c in all_cells if c.finished)

    writer = _Writer(pipeline)
    try:
        with Progress(*columns, disable=not progress, transient=False) as bar:
            task = bar.add_task("scoring", total=stats.cells)
            for slide in jobs:
                problems: dict[str, str] = {}
                for job in slide.cells:
                    bar.update(task, description=f"{slide.name}/{job.cell}")
                    _remove_stale_temps(job.out)
                    if job.finished and not force:
                        stats.skipped += 1
                        bar.advance(task)
                        continue
                    cell = _prepare(job, predictor, options, force, problems, stats, n_finished)
                    # The previous cell's files were written meanwhile; collect them first,
                    # so a full disk stops the run before more work is queued.
                    writer.collect(problems, stats, n_finished)
                    if cell is not None:
                        writer.submit(cell)
                    bar.advance(task)
                writer.collect(problems, stats, n_finished)
                _remove_stale_temps(slide.out)
                try:
                    stats.slides.append(write_slide_reports(slide, problems))
                except OSError as exc:
                    raise OutputWriteError(slide.out, exc, n_finished()) from exc
    finally:
        writer.close()
    stats.cell_steps.update({k: stats.cell_steps.get(k, 0.0) + v for k, v in writer.steps.items()})
    stats.errors = sum(s["errors"] for s in stats.slides)
    _remove_stale_temps(out)
    try:
        write_index(out, stats.slides)
    except OSError as exc:
        raise OutputWriteError(out / INDEX, exc, n_finished()) from exc
    stats.seconds = time.perf_counter() - t0
    stats.predict_seconds = predictor.seconds
    stats.stages = dict(predictor.stages)
    info.update(
        status="finished",
        finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        stats={k: v for k, v in asdict(stats).items() if k != "slides"},
    )
    _write(out / RUN_INFO, json.dumps(info, indent=1) + "\n", stats)
    return stats


def run_info_entries(options: CellOptions) -> dict[str, Any]:
    """The cell options as ``run_info.json`` records them (JSON types)."""
    entries = {
        "options": {k: v for k, v in asdict(options).items() if k != "segment"},
        "segment": asdict(options.segment),
    }
    return json.loads(json.dumps(entries))


def _check_resume(out: Path, info: dict[str, Any], has_cells: bool) -> None:
    """Refuse to add cells to ``out`` when its finished ones came from other settings.

    A report mixing two models, backends, precisions or option sets would look like one
    run; ``--force`` re-scores every cell instead, and a new OUT keeps both. Compared:
    the entries of :data:`RESUME_KEYS` (option fields only where both runs have them, so
    a new field in a later version refuses nothing); for an OUT written before ``model``
    was recorded, the backend and precision that ran. A ``--force`` run that did not
    finish leaves cells of both settings: only another ``--force`` run may continue it.
    """
    if not has_cells:  # nothing finished yet: nothing to mix
        return
    try:
        old = json.loads((out / RUN_INFO).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OutputMismatchError(
            f"{out / RUN_INFO} is unreadable ({exc}), so the cells already in {out} cannot be "
            "matched to this run: choose a new output folder, or --force to re-score every cell"
        ) from exc
    if old.get("forced") and old.get("status") != "finished":
        raise OutputMismatchError(
            f"the last run into {out} re-scored its cells with --force and did not finish, so "
            "they come from two settings: run it again with --force"
        )
    new = json.loads(json.dumps({k: info[k] for k in RESUME_KEYS if k in info}))
    if "model" not in old and isinstance(old.get("ran"), dict) and "model" in new:
        old["model"] = {k: old["ran"].get(k) for k in ("backend", "precision")}
        new["model"] = {k: new["model"].get(k) for k in ("backend", "precision")}
    differ = [k for k in RESUME_KEYS if k in old and k in new and _differs(k, old[k], new[k])]
    if differ:
        was = ", ".join(f"{k} {json.dumps(old[k], sort_keys=True)}" for k in differ)
        now = ", ".join(f"{k} {json.dumps(new[k], sort_keys=True)}" for k in differ)
        raise OutputMismatchError(
            f"{out} holds cells scored with other settings ({was}); this run has {now}. "
            "Choose a new output folder to keep both, or --force to re-score every cell"
        )


def _differs(key: str, old: Any, new: Any) -> bool:
    """Whether two run_info entries could give different calls (fields both have)."""
    if isinstance(old, dict) and isinstance(new, dict):
        ignored = {"batch_size"} if key == "options" else set()  # changes no call
        shared = (old.keys() & new.keys()) - ignored
        return any(old[k] != new[k] for k in shared)
    return old != new


class _Writer:
    """Writes finished cells (karyogram, CSV, summary last) on one background thread.

    While cell N's files are drawn and written, cell N+1 is read and classified: on a GPU
    backend the CPU would otherwise wait during the branches. At most one cell is in flight,
    and it is collected before the next is queued, so a killed run loses at most the
    cells that had no summary yet, and write errors surface one cell late at most.
    ``enabled=False`` writes inline (same files, same order).
    """

    def __init__(self, enabled: bool) -> None:
        self.pool = (
            ThreadPoolExecutor(1, thread_name_prefix="edge-iapp-score-write") if enabled else None
        )
        self.pending: tuple[CellJob, Future] | None = None
        self.steps: dict[str, float] = {}  # only the writing thread adds to it

    def submit(self, cell: ScoredCell) -> None:
        if self.pool is None:
            future: Future = Future()
            try:
                future.set_result(write_cell(cell, self.steps))
            except BaseException as exc:  # noqa: BLE001 - re-raised by collect()
                future.set_exception(exc)
        else:
            future = self.pool.submit(write_cell, cell, self.steps)
        self.pending = (cell.job, future)

    def collect(self, problems: dict[str, str], stats: RunStats, n_finished) -> None:
        if self.pending is None:
            return
        job, future = self.pending
        self.pending = None
        try:
            future.result()
        except OSError as exc:
            if _is_output_error(exc, job.out):
                raise OutputWriteError(Path(exc.filename or job.out), exc, n_finished()) from exc
            problems[job.cell] = f"cell could not be written: {exc}"
            stats.failed += 1
        except Exception as exc:  # noqa: BLE001 - one bad cell must not stop the slide
            problems[job.cell] = f"cell failed: {type(exc).__name__}: {exc}"
            stats.failed += 1
        else:
            stats.scored += 1

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def _prepare(
    job: CellJob,
    predictor: _TimedPredictor,
    options: CellOptions,
    force: bool,
    problems: dict[str, str],
    stats: RunStats,
    n_finished,
) -> ScoredCell | None:
    try:
        if force:
            # The old summary goes first: a forced cell is never half old, half new.
            job.summary_path.unlink(missing_ok=True)
        return prepare_cell(job, predictor, options, stats.cell_steps)
    except EmptyCellError:
        problems[job.cell] = "empty cell folder (no files); it will be scored on the next run"
    except OSError as exc:
        if _is_output_error(exc, job.out):
            raise OutputWriteError(Path(exc.filename or job.out), exc, n_finished()) from exc
        problems[job.cell] = f"cell could not be read: {exc}"
    except Exception as exc:  # noqa: BLE001 - one bad cell must not stop the slide
        problems[job.cell] = f"cell failed: {type(exc).__name__}: {exc}"
    stats.failed += 1
    return None


def _is_output_error(exc: OSError, cell_out: Path) -> bool:
    """True when ``exc`` concerns the output side (a write under the output folder)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return True
    name = exc.filename
    if name is None:
        return False
    try:
        p = Path(name).resolve()
        return p == cell_out.resolve() or cell_out.resolve() in p.parents
    except OSError:
        return True


def _write(path: Path, text: str, stats: RunStats) -> None:
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise OutputWriteError(path, exc, stats.scored + stats.skipped) from exc
