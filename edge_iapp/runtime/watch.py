"""Watched-folder service: classify every chromosome image a closed capture system writes.

Commercial capture systems expose no plugin API; what they can do is write files.
``FolderWatcher`` polls a folder, waits until each image file is complete, classifies
the new ones in batches, and writes:

    OUT/results/<relative path>.json   one ChromosomeResult per image (atomic)
    OUT/processed.json                 the processed-index (atomic, after each batch)
    OUT/results.csv                    one row per classified image (rebuilt from the index)
    OUT/errors.csv                     one row per file that could not be classified

Rules:
    - Inputs are only read, never moved, renamed or modified.
    - A file is complete when its size and modification time are the same in two
      scans at least ``settle_s`` apart and it is not empty. Names ending ``.tmp``,
      ``.part``, ``.partial``, ``.crdownload``, ``.filepart`` or ``~`` and hidden
      files are ignored: capture software that writes ``x.tif.tmp`` then renames it
      is picked up at the rename. Non-image suffixes (``.xml``, ``.txt``) are ignored.
    - The index is written after each batch's results, so a restart skips what is
      in the index and redoes at most the batch that was running (its results are
      rewritten identically, never duplicated). A file whose size or modification
      time changed since it was indexed is classified again.
    - A bad file (unreadable, truncated, empty) goes to ``errors.csv``; the run goes on.
    - An output folder that cannot be written (full disk) raises ``OSError`` before
      the index records anything of that batch: nothing is lost, the batch is redone.

No torch: the classifier is passed in as a ``predict(paths) -> results`` callable.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..ioutil import atomic_write_text

log = logging.getLogger(__name__)

INDEX_FILE = "processed.json"
RESULTS_CSV = "results.csv"
ERRORS_CSV = "errors.csv"
RESULTS_DIR = "results"
LOCK_FILE = ".watch.lock"
INDEX_VERSION = 1
PARTIAL_SUFFIXES: tuple[str, ...] = (".tmp", ".part", ".partial", ".crdownload", ".filepart", "~")

RESULT_COLUMNS = (
    "file", "class", "confidence", "review", "review_reasons",
    "lambda_global", "lambda_object", "lambda_part", "backend", "precision", "processed_at",
)
ERROR_COLUMNS = ("file", "error", "size", "processed_at")

PredictPaths = Callable[[list[Path]], Sequence[Any]]


def image_suffixes() -> frozenset[str]:
    from ..data.imread import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES


@dataclass
class PassReport:
    """What one pass over the folder did.

    Attributes:
        classified: files with a call this pass.
        errors: files that went to ``errors.csv`` this pass.
        waiting: image files seen but not yet complete (still being written).
        already_done: files skipped because the index has them.
    """

    classified: int = 0
    errors: int = 0
    waiting: int = 0
    already_done: int = 0
    seconds: float = 0.0
    new_errors: list[str] = field(default_factory=list)


class WatchLocked(RuntimeError):
    """Another watcher already writes into this output folder."""


class FolderWatcher:
    """Poll ``in_dir``, classify complete new images, keep a processed-index in ``out_dir``.

    Args:
        predict: ``predict(paths) -> results``, one ``ChromosomeResult`` per path in
            order (``Classifier.predict``). It may raise: the batch is then re-run
            file by file and the files that still raise go to ``errors.csv``.
        in_dir: the folder the capture system writes to.
        out_dir: where results go; may be inside ``in_dir`` (it is then not scanned).
        settle_s: seconds a file's size and mtime must stay unchanged.
        recursive: also watch sub-folders (one per slide or session, say).
        batch_size: images per ``predict`` call.
        model: a description stored in the index (bundle, backend, precision).
    """

    def __init__(
        self,
        predict: PredictPaths,
        in_dir: str | Path,
        out_dir: str | Path,
        *,
        settle_s: float = 2.0,
        recursive: bool = True,
        batch_size: int = 46,
        model: dict[str, Any] | None = None,
    ) -> None:
        self.predict = predict
        self.in_dir = Path(in_dir).resolve()
        self.out_dir = Path(out_dir).resolve()
        if not self.in_dir.is_dir():
            raise NotADirectoryError(f"watched folder {self.in_dir} does not exist")
        if self.out_dir == self.in_dir:
            raise ValueError("the output folder must differ from the watched folder")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.settle_s = settle_s
        self.recursive = recursive
        self.batch_size = batch_size
        self.model = dict(model or {})
        self._suffixes = image_suffixes()
        # rel path -> (size, mtime_ns, monotonic time first seen with that signature)
        self._seen: dict[str, tuple[int, int, float]] = {}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fh = _lock(self.out_dir / LOCK_FILE)
        self.index = self._load_index()

    # -- index ------------------------------------------------------------------------

    def _load_index(self) -> dict[str, Any]:
        path = self.out_dir / INDEX_FILE
        if not path.exists():
            return {"version": INDEX_VERSION, "input": str(self.in_dir), "model": self.model,
                    "files": {}}
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"{path} is not a readable processed-index ({exc}); move it away to "
                f"start over (results already in {RESULTS_DIR}/ are kept and rewritten)"
            ) from exc
        if index.get("version") != INDEX_VERSION or not isinstance(index.get("files"), dict):
            raise ValueError(f"{path}: unknown processed-index version {index.get('version')!r}")
        if self.model and index.get("model") and index["model"] != self.model:
            log.warning("the index in %s was made with %s; now running %s (already "
                        "processed files are not redone)", self.out_dir, index["model"],
                        self.model)
        return index

    def _save(self) -> None:
        """Write the index, then the CSVs rebuilt from it (all atomic).

        Called after a batch's result files are written, so the index never names a
        result that is not on disk.
        """
        self.index["model"] = self.model or self.index.get("model", {})
        atomic_write_text(self.out_dir / INDEX_FILE,
                          json.dumps(self.index, indent=1, sort_keys=True))
        files = self.index["files"]
        ok = [(rel, e) for rel, e in sorted(files.items()) if e["status"] == "ok"]
        bad = [(rel, e) for rel, e in sorted(files.items()) if e["status"] == "error"]
        atomic_write_text(self.out_dir / RESULTS_CSV, _csv(
            RESULT_COLUMNS, ([rel, *[e["row"].get(c, "") for c in RESULT_COLUMNS[1:-1]],
                              e["processed_at"]] for rel, e in ok)))
        atomic_write_text(self.out_dir / ERRORS_CSV, _csv(
            ERROR_COLUMNS, ([rel, e["error"], e["size"], e["processed_at"]] for rel, e in bad)))

    def is_done(self, rel: str, size: int, mtime_ns: int) -> bool:
        entry = self.index["files"].get(rel)
        return bool(entry) and entry["size"] == size and entry["mtime_ns"] == mtime_ns

    # -- scanning ---------------------------------------------------------------------

    def _candidates(self) -> Iterator[tuple[str, Path, os.stat_result]]:
        stack = [self.in_dir]
        while stack:
            folder = stack.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as exc:  # a folder removed while scanning, permissions
                log.warning("cannot list %s: %s", folder, exc)
                continue
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                path = Path(entry.path)
                try:
                    if entry.is_dir():
                        if self.recursive and path.resolve() != self.out_dir:
                            stack.append(path)
                        continue
                    if not entry.is_file():
                        continue
                    if name.lower().endswith(PARTIAL_SUFFIXES):
                        continue
                    if path.suffix.lower() not in self._suffixes:
                        continue
                    st = entry.stat()
                except OSError:  # vanished between listing and stat
                    continue
                yield path.relative_to(self.in_dir).as_posix(), path, st

    def scan(self) -> tuple[list[tuple[str, Path, int, int]], int, int]:
        """Files ready to classify now, how many are still being written, how many done.

        Returns:
            ``(ready, waiting, done)``: ready is a list of ``(rel, path, size, mtime_ns)``
            sorted by modification time then name.
        """
        now = time.monotonic()
        ready: list[tuple[int, str, Path, int]] = []
        waiting = done = 0
        present: set[str] = set()
        for rel, path, st in self._candidates():
            present.add(rel)
            size, mtime_ns = st.st_size, st.st_mtime_ns
            if self.is_done(rel, size, mtime_ns):
                done += 1
                continue
            seen = self._seen.get(rel)
            if seen is None or seen[:2] != (size, mtime_ns):
                self._seen[rel] = (size, mtime_ns, now)
                waiting += 1
            elif now - seen[2] >= self.settle_s:
                ready.append((mtime_ns, rel, path, size))
            else:
                waiting += 1
        for rel in set(self._seen) - present:  # deleted before completion
            del self._seen[rel]
        ready.sort()
        return [(rel, path, size, mtime) for mtime, rel, path, size in ready], waiting, done

    # -- processing -------------------------------------------------------------------

    def process_ready(self) -> PassReport:
        """One pass: classify every file that is complete now."""
        start = time.perf_counter()
        ready, waiting, done = self.scan()
        report = PassReport(waiting=waiting, already_done=done)
        for i in range(0, len(ready), self.batch_size):
            self._process_batch(ready[i:i + self.batch_size], report)
        report.seconds = time.perf_counter() - start
        return report

    def run_once(self) -> PassReport:
        """Process what is there now and return (``--once``, tests, cron).

        Scans twice, ``settle_s`` apart, so files still being written are left for
        the next run instead of being read half-written.
        """
        self.scan()
        if self.settle_s > 0:
            time.sleep(self.settle_s)
        return self.process_ready()

    def run_forever(self, poll_s: float = 2.0, stop: Any = None,
                    on_pass: Callable[[PassReport], None] | None = None) -> None:
        """Poll until ``stop`` (a ``threading.Event``) is set; finishes the current batch.

        An ``OSError`` writing the outputs (full disk) is logged and retried at the
        next poll: the files stay unindexed and are redone.
        """
        import threading

        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                report = self.process_ready()
            except OSError as exc:
                log.error("cannot write results to %s: %s; retrying in %.0f s",
                          self.out_dir, exc, max(poll_s, 10.0))
                stop.wait(max(poll_s, 10.0))
                continue
            if on_pass is not None:
                on_pass(report)
            stop.wait(poll_s)

    def _classify(self, paths: list[Path]) -> list[tuple[Any, str | None]]:
        """``(result, error)`` per path; a raising batch is re-run file by file."""
        try:
            results = list(self.predict(paths))
            if len(results) != len(paths):
                raise RuntimeError(f"predict returned {len(results)} results for "
                                   f"{len(paths)} files")
            return [(r, getattr(r, "error", None)) for r in results]
        except Exception as exc:  # noqa: BLE001 - isolated below, never lost
            if len(paths) == 1:
                return [(None, f"{type(exc).__name__}: {exc}")]
            log.debug("batch failed (%r); classifying file by file", exc)
            return [pair for path in paths for pair in self._classify([path])]

    def _process_batch(self, batch: list[tuple[str, Path, int, int]], report: PassReport) -> None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        entries: dict[str, dict[str, Any]] = {}
        empty = [b for b in batch if b[2] == 0]
        batch = [b for b in batch if b[2] > 0]
        for rel, _path, size, mtime_ns in empty:
            entries[rel] = _error_entry(size, mtime_ns, stamp, "empty file (0 bytes)")
        outcomes = self._classify([path for _rel, path, _s, _m in batch]) if batch else []
        for (rel, _path, size, mtime_ns), (result, error) in zip(batch, outcomes, strict=True):
            if error is not None:
                entries[rel] = _error_entry(size, mtime_ns, stamp, str(error))
                continue
            data = _result_dict(result)
            data.update(file=rel, size=size, mtime_ns=mtime_ns, processed_at=stamp)
            out = self.out_dir / RESULTS_DIR / (rel + ".json")
            atomic_write_text(out, json.dumps(data, indent=1, default=_json_default))
            entries[rel] = {"status": "ok", "size": size, "mtime_ns": mtime_ns,
                            "processed_at": stamp, "result": out.relative_to(self.out_dir)
                            .as_posix(), "row": _row(data)}
        self.index["files"].update(entries)
        self._save()
        for rel, entry in entries.items():
            self._seen.pop(rel, None)
            if entry["status"] == "ok":
                report.classified += 1
            else:
                report.errors += 1
                report.new_errors.append(f"{rel}: {entry['error']}")

    def close(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> FolderWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error_entry(size: int, mtime_ns: int, stamp: str, error: str) -> dict[str, Any]:
    return {"status": "error", "size": size, "mtime_ns": mtime_ns, "processed_at": stamp,
            "error": error}


def _result_dict(result: Any) -> dict[str, Any]:
    if hasattr(result, "to_dict"):
        return result.to_dict()
    if isinstance(result, dict):
        return dict(result)
    raise TypeError(f"predict returned {type(result).__name__}, not a ChromosomeResult")


def _row(data: dict[str, Any]) -> dict[str, Any]:
    lambdas = data.get("lambdas") or {}
    return {
        "class": data.get("class_name") or "",
        "confidence": f"{float(data.get('confidence', 0.0)):.6f}",
        "review": int(bool(data.get("review"))),
        "review_reasons": ";".join(data.get("review_reasons") or []),
        "lambda_global": _fmt(lambdas.get("global")),
        "lambda_object": _fmt(lambdas.get("object")),
        "lambda_part": _fmt(lambdas.get("part")),
        "backend": data.get("backend", ""),
        "precision": data.get("precision", ""),
    }


def _fmt(value: Any) -> str:
    return "" if value is None else f"{float(value):.6f}"


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays in lambdas or extra fields
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _csv(columns: Sequence[str], rows: Any) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buf.getvalue()


def _lock(path: Path) -> Any:
    """Hold an exclusive lock on ``path`` so two watchers never share an output folder."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, documented
        return None
    fh = open(path, "a+")  # noqa: SIM115 - held open for the watcher's lifetime
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        fh.close()
        raise WatchLocked(f"another edge-iapp watch is writing to {path.parent}") from exc
    return fh
