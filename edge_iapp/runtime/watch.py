"""Watched-folder service: classify every chromosome image a closed capture system writes.

Commercial capture systems expose no plugin API; what they can do is write files.
``FolderWatcher`` polls a folder, waits until each image file is complete, classifies
the new ones in batches, and writes:

    OUT/results/<relative path>.json   one ChromosomeResult per image (atomic)
    OUT/processed.jsonl                the processed-index (one line per file)
    OUT/results.csv                    one row per classified image
    OUT/errors.csv                     one row per file that could not be classified

Rules:
    - Inputs are only read, never moved, renamed or modified.
    - A file is complete when its size and modification time are the same in two
      scans at least ``settle_s`` apart and it is not empty. Names ending ``.tmp``,
      ``.part``, ``.partial``, ``.crdownload``, ``.filepart`` or ``~`` and hidden
      files are ignored: capture software that writes ``x.tif.tmp`` then renames it
      is picked up at the rename. Non-image suffixes (``.xml``, ``.txt``) are ignored.
    - A batch's lines are appended to the index (and fsynced) after its result files
      are written, so a restart skips what is in the index and redoes at most the
      batch that was running (its results are rewritten, never duplicated). Opening
      the folder compacts the index and rebuilds both CSVs from it, so a line cut
      short by a kill is harmless. A file whose size or modification time changed
      since it was indexed is classified again.
    - A bad file (unreadable, truncated, empty) goes to ``errors.csv``; the run goes on.
    - An output folder that cannot be written (full disk) raises ``OSError`` before
      the index records anything of that batch: nothing is lost, the batch is redone.
    - One output folder holds the calls of one model: an index made with another
      bundle, backend or precision (``model``) is refused (:class:`WatchModelMismatch`)
      unless ``force``, which classifies every file again with this model (the old
      rows and their result files are dropped first). A new output folder keeps both.

No torch: the classifier is passed in as a ``predict(paths) -> results`` callable.
"""

from __future__ import annotations

import contextlib
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

INDEX_FILE = "processed.jsonl"
INDEX_FORMAT = "edge-iapp-watch-index"
RESULTS_CSV = "results.csv"
ERRORS_CSV = "errors.csv"
RESULTS_DIR = "results"
LOCK_FILE = ".watch.lock"
INDEX_VERSION = 1
PARTIAL_SUFFIXES: tuple[str, ...] = (".tmp", ".part", ".partial", ".crdownload", ".filepart", "~")

RESULT_COLUMNS = (
    "file",
    "class",
    "confidence",
    "review",
    "review_reasons",
    "lambda_global",
    "lambda_object",
    "lambda_part",
    "backend",
    "precision",
    "processed_at",
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


class WatchModelMismatch(ValueError):
    """The output folder holds calls of another model (bundle, backend or precision)."""


def model_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The entries of two index ``model`` descriptions that could give different calls.

    Compared: the entries both have, except the bundle's path when both record the
    bundle's ``bundle_sha256`` (a bundle moved or copied elsewhere is the same model; a
    bundle exported again into the same folder is not). An index written before the hash
    was recorded is compared by path, backend and precision.
    """
    if not isinstance(old, dict) or not isinstance(new, dict):
        return []
    ignored = {"bundle"} if "bundle_sha256" in old and "bundle_sha256" in new else set()
    return sorted(k for k in (old.keys() & new.keys()) - ignored if old[k] != new[k])


def check_index_model(out_dir: str | Path, model: dict[str, Any], force: bool = False) -> None:
    """Refuse to add calls of ``model`` to an index that holds calls of another model.

    Reads only ``OUT/processed.jsonl`` (nothing is created or written), so the CLI can
    say it before a bundle is loaded; :class:`FolderWatcher` checks it again on opening.
    An index without files, or without a recorded model, has nothing to mix.

    Raises:
        WatchModelMismatch: the index was made with another model and ``force`` is off.
        ValueError: the index is not an edge-iapp watch index.
    """
    path = Path(out_dir) / INDEX_FILE
    header = _read_header(path)
    if force or not model or not header.get("model") or not _has_entries(path):
        return
    differ = model_differences(header["model"], model)
    if differ:
        was, now = _said(header["model"], differ), _said(model, differ)
        raise WatchModelMismatch(
            f"{Path(out_dir)} holds calls of another model ({was}); this run has {now}. "
            "Choose a new output folder to keep both, or --force to classify every file "
            "again with this model (its earlier rows and result files are dropped)"
        )


def _said(model: dict[str, Any], keys: list[str]) -> str:
    """The entries ``keys`` of a model description, for a message (a bundle by its path
    and the start of its manifest hash)."""
    out = []
    for k in keys:
        if k == "bundle_sha256":
            out.append(f"bundle {model.get('bundle', '?')} (manifest sha256 {str(model[k])[:12]})")
        elif not (k == "bundle" and "bundle_sha256" in keys):
            out.append(f"{k} {model[k]}")
    return ", ".join(out)


def _has_entries(path: Path) -> bool:
    """Whether the index has a line after its header."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            fh.readline()
            return any(line.strip() for line in fh)
    except FileNotFoundError:
        return False


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
        model: a description stored in the index (bundle, bundle_sha256, backend,
            precision); an index made with another one is refused (see ``force``).
        retry_errors: classify again the files that failed before (after a backend
            problem was fixed); by default a failed file is retried only if it changes.
        force: start the index over: every file is classified again with this model,
            the earlier rows and result files are dropped first (the way to reuse an
            output folder with another model).

    Raises:
        WatchModelMismatch: ``out_dir`` holds calls of another model and not ``force``.
        WatchLocked: another watcher writes into ``out_dir``.
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
        retry_errors: bool = False,
        force: bool = False,
    ) -> None:
        self.predict = predict
        self.retry_errors = retry_errors
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
        self._csv_stale = False
        try:
            self.index = self._load_index(force)
        except BaseException:
            self.close()
            raise
        # Retry the files that failed before this watcher started, once each (a file
        # that fails again is not retried at every poll).
        self._retry = {
            rel for rel, e in self.index["files"].items() if retry_errors and e["status"] == "error"
        }

    # -- index ------------------------------------------------------------------------
    # processed.jsonl: a header line, then one JSON line per processed file (the last
    # line for a file wins). A batch appends its lines (fsync) after its result files
    # are on disk, so the cost per batch does not grow with the folder; the file is
    # compacted, and the CSVs rebuilt from it, when a watcher opens the folder.

    def _load_index(self, force: bool) -> dict[str, Any]:
        check_index_model(self.out_dir, self.model, force)  # before anything is written
        header = _read_header(self.out_dir / INDEX_FILE)
        files = read_index(self.out_dir)
        dropped = files if force else {}
        index = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "input": str(self.in_dir),
            "model": self.model or header.get("model", {}),
            "files": {} if force else files,
        }
        self._compact(index)  # a forced start: the old rows are gone from index and CSVs
        if dropped:
            log.info("--force: %d earlier file(s) are classified again", len(dropped))
            self._drop_results(dropped)
        return index

    def _drop_results(self, entries: dict[str, dict[str, Any]]) -> None:
        """Delete the result files the dropped index rows name (only under OUT/results)."""
        results = (self.out_dir / RESULTS_DIR).resolve()
        for entry in entries.values():
            name = entry.get("result")
            if not isinstance(name, str):
                continue
            path = (self.out_dir / name).resolve()
            if path.is_relative_to(results):
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)

    def _compact(self, index: dict[str, Any]) -> None:
        """Rewrite the index (one line per file) and both CSVs from it, atomically."""
        header = {k: v for k, v in index.items() if k != "files"}
        lines = [json.dumps(header, sort_keys=True)]
        lines += [
            json.dumps({"file": rel, **e}, sort_keys=True)
            for rel, e in sorted(index["files"].items())
        ]
        atomic_write_text(self.out_dir / INDEX_FILE, "\n".join(lines) + "\n")
        files = sorted(index["files"].items())
        atomic_write_text(
            self.out_dir / RESULTS_CSV,
            _csv(RESULT_COLUMNS, (_result_row(rel, e) for rel, e in files if e["status"] == "ok")),
        )
        atomic_write_text(
            self.out_dir / ERRORS_CSV,
            _csv(ERROR_COLUMNS, (_error_row(rel, e) for rel, e in files if e["status"] == "error")),
        )

    def _record(self, entries: dict[str, dict[str, Any]]) -> None:
        """Add a batch to the index (append + fsync), then to the CSVs.

        Called after the batch's result files are written, so the index never names a
        result that is not on disk. A file processed again (it changed) already has
        CSV rows: the CSVs are then rebuilt instead of appended to.
        """
        again = any(rel in self.index["files"] for rel in entries)
        _append(
            self.out_dir / INDEX_FILE,
            "".join(
                json.dumps({"file": rel, **e}, sort_keys=True) + "\n" for rel, e in entries.items()
            ),
        )
        self.index["files"].update(entries)
        self._retry.difference_update(entries)
        if again or self._csv_stale:
            self._compact(self.index)
            self._csv_stale = False
            return
        ok = [_result_row(r, e) for r, e in entries.items() if e["status"] == "ok"]
        bad = [_error_row(r, e) for r, e in entries.items() if e["status"] == "error"]
        try:
            if ok:
                _append(self.out_dir / RESULTS_CSV, _csv(None, ok))
            if bad:
                _append(self.out_dir / ERRORS_CSV, _csv(None, bad))
        except OSError as exc:
            # The index has the batch (nothing is lost); rebuild the CSVs from it with
            # the next batch, or at the next open.
            self._csv_stale = True
            log.error(
                "cannot append to the CSVs in %s (%s); they will be rebuilt from the index",
                self.out_dir,
                exc,
            )

    def is_done(self, rel: str, size: int, mtime_ns: int) -> bool:
        """The index has this file with this size and mtime (and it is not a failed
        file to retry)."""
        entry = self.index["files"].get(rel)
        if not entry or entry["size"] != size or entry["mtime_ns"] != mtime_ns:
            return False
        return rel not in self._retry

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

    def process_ready(self, stop: Any = None) -> PassReport:
        """One pass: classify every file that is complete now.

        Args:
            stop: a ``threading.Event``; when set, the pass ends after the current
                batch (the rest is done by the next run).
        """
        start = time.perf_counter()
        ready, waiting, done = self.scan()
        report = PassReport(waiting=waiting, already_done=done)
        for i in range(0, len(ready), self.batch_size):
            if stop is not None and stop.is_set():
                break
            self._process_batch(ready[i : i + self.batch_size], report)
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

    def run_forever(
        self,
        poll_s: float = 2.0,
        stop: Any = None,
        on_pass: Callable[[PassReport], None] | None = None,
    ) -> None:
        """Poll until ``stop`` (a ``threading.Event``) is set; finishes the current batch.

        An ``OSError`` writing the outputs (full disk) is logged and retried at the
        next poll: the files stay unindexed and are redone.
        """
        import threading

        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                report = self.process_ready(stop)
            except OSError as exc:
                log.error(
                    "cannot write results to %s: %s; retrying in %.0f s",
                    self.out_dir,
                    exc,
                    max(poll_s, 10.0),
                )
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
                raise RuntimeError(
                    f"predict returned {len(results)} results for {len(paths)} files"
                )
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
            entries[rel] = {
                "status": "ok",
                "size": size,
                "mtime_ns": mtime_ns,
                "processed_at": stamp,
                "result": out.relative_to(self.out_dir).as_posix(),
                "row": _row(data),
            }
        self._record(entries)
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


def _result_row(rel: str, entry: dict[str, Any]) -> list[Any]:
    return [rel, *[entry["row"].get(c, "") for c in RESULT_COLUMNS[1:-1]], entry["processed_at"]]


def _error_row(rel: str, entry: dict[str, Any]) -> list[Any]:
    return [rel, entry["error"], entry["size"], entry["processed_at"]]


def read_index(out_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The processed files recorded in ``OUT/processed.jsonl``: ``{relative path: entry}``.

    A line cut short by a kill (or any unreadable line) is skipped with a warning: its
    file is simply processed again. An index of another format is an error.
    """
    path = Path(out_dir) / INDEX_FILE
    if not path.exists():
        return {}
    _read_header(path)
    files: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        next(fh, None)
        for number, line in enumerate(fh, start=2):
            try:
                entry = json.loads(line)
                rel = entry.pop("file")
                if entry["status"] not in ("ok", "error"):
                    raise ValueError(entry["status"])
                int(entry["size"]), int(entry["mtime_ns"])
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning(
                    "%s line %d is incomplete or unreadable; its file is redone", path, number
                )
                continue
            files[rel] = entry
    return files


def _read_header(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            header = json.loads(fh.readline())
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{path} is not a processed-index ({exc}); move it away to start "
            f"over (results in {RESULTS_DIR}/ are kept and rewritten)"
        ) from exc
    if not isinstance(header, dict) or header.get("format") != INDEX_FORMAT:
        raise ValueError(f"{path} is not an edge-iapp watch index; move it away to start over")
    if header.get("version") != INDEX_VERSION:
        raise ValueError(
            f"{path}: index version {header.get('version')!r}; this edge-iapp "
            f"reads version {INDEX_VERSION}"
        )
    return header


def _append(path: Path, text: str) -> None:
    """Append ``text`` durably; on failure (full disk) cut the file back to where it was,
    so a half-written line never sits in front of the next append."""
    data = text.encode("utf-8")
    with open(path, "ab", buffering=0) as fh:  # unbuffered: nothing left to flush on error
        size = fh.seek(0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[fh.write(view) :]
            os.fsync(fh.fileno())
        except OSError:
            with contextlib.suppress(OSError):  # else read_index skips the broken line
                os.ftruncate(fh.fileno(), size)
            raise


def _error_entry(size: int, mtime_ns: int, stamp: str, error: str) -> dict[str, Any]:
    return {
        "status": "error",
        "size": size,
        "mtime_ns": mtime_ns,
        "processed_at": stamp,
        "error": error,
    }


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


def _csv(columns: Sequence[str] | None, rows: Any) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if columns is not None:
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
