"""The engine cache: keys, ``BUNDLE/engines/engines.json``, and the checks before loading.

An engine is valid for exactly one (GPU compute capability, TensorRT module and
version, precision, batch profile, builder settings, ONNX file). The key holds all of
them; its digest names the file, so engines for several targets live side by side::

    BUNDLE/engines/
      engines.json                       index: one record per engine (below)
      global.int8.3f9c0a1b2c3d4e5f.engine
      global.int8.3f9c0a1b2c3d4e5f.json  the same record beside the engine
      timing-cache.<module>-<version>-sm<NN>.bin

A record: ``key`` (what the engine was built for), ``digest``, ``engine`` (file name),
``sha256`` and ``bytes`` of the engine, ``io`` (tensor names, dtypes, shapes with -1 for
the batch) and ``build`` (seconds, time, host, builder log). ``manifest.json`` belongs
to the exporter; :func:`engines_summary` gives it a short form if it wants one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...ioutil import sha256_file  # noqa: F401 - re-exported

ENGINE_DIR = "engines"
INDEX = "engines.json"
INDEX_FORMAT = "edge-iapp-engines"
INDEX_VERSION = 1


class EngineMismatch(RuntimeError):
    """The engine on disk does not fit this machine or bundle; the message says how to rebuild."""


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on.

    Attributes:
        branch, precision: which graph.
        onnx_sha256: the exact ONNX file it was built from.
        trt_module, trt_version: ``tensorrt`` / ``tensorrt_rtx`` and version.
        device: GPU name, or ``"any sm_86 (TensorRT-RTX)"`` for a GPU-less RTX build.
        compute_capability: ``"8.7"``.
        profile: target profile name; batch and builder settings from it.
    """

    branch: str
    precision: str
    onnx_sha256: str
    trt_module: str
    trt_version: str
    device: str
    compute_capability: str
    profile: str
    batch: tuple[int, int, int]
    workspace_mib: int
    builder_optimization_level: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["batch"] = list(self.batch)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineKey:
        return cls(**{**d, "batch": tuple(int(b) for b in d["batch"])})

    def digest(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def file_name(self) -> str:
        return f"{self.branch}.{self.precision}.{self.digest()}.engine"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def engine_dir(bundle_path: Path) -> Path:
    return Path(bundle_path) / ENGINE_DIR


def read_index(directory: Path) -> list[dict[str, Any]]:
    """Records in ``directory/engines.json`` ([] when absent; an error when corrupt)."""
    p = Path(directory) / INDEX
    if not p.is_file():
        return []
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EngineMismatch(
            f"{p} is unreadable ({exc}); delete it and rebuild the engines"
        ) from None
    if data.get("format") != INDEX_FORMAT or data.get("version") != INDEX_VERSION:
        raise EngineMismatch(
            f"{p} is not a version-{INDEX_VERSION} engine index; rebuild the engines"
        )
    return list(data.get("engines", []))


def write_record(directory: Path, record: dict[str, Any]) -> None:
    """Write the record beside its engine and replace any same-digest record in the index."""
    from ...ioutil import atomic_write_text

    directory = Path(directory)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    atomic_write_text(directory / (Path(record["engine"]).stem + ".json"), text)
    records = [r for r in read_index(directory) if r.get("digest") != record["digest"]]
    records.append(record)
    records.sort(key=lambda r: (r["key"]["branch"], r["key"]["precision"], r["digest"]))
    index = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "engines": records}
    atomic_write_text(directory / INDEX, json.dumps(index, indent=2, sort_keys=True) + "\n")


def find_record(directory: Path, key: EngineKey) -> dict[str, Any] | None:
    """The record built for exactly ``key`` whose engine file is still intact, else None."""
    for r in read_index(directory):
        if r.get("digest") == key.digest() and EngineKey.from_dict(r["key"]) == key:
            path = Path(directory) / r["engine"]
            if path.is_file() and sha256_file(path) == r.get("sha256"):
                return r
    return None


def rebuild_hint(bundle_path: Path, precision: str, profile: str | None) -> str:
    prof = profile or "<target profile>"
    return (
        f"rebuild on this machine: edge-iapp build {bundle_path} --profile {prof} "
        f"--precision {precision}"
    )


def check_record(
    record: dict[str, Any],
    directory: Path,
    *,
    trt_module: str,
    trt_version: str,
    compute_capability: str,
    onnx_sha256: str | None,
    bundle_path: Path,
) -> Path:
    """Everything that must hold before ``deserialize_cuda_engine`` is called.

    Returns:
        The engine path.

    Raises:
        EngineMismatch: naming what the engine was built for, what this machine is,
            and the command that rebuilds it.
    """
    key = record["key"]
    path = Path(directory) / record["engine"]
    hint = rebuild_hint(bundle_path, key["precision"], key.get("profile"))
    what = f"{key['branch']} {key['precision']} engine {record['engine']}"
    if (key["trt_module"], key["trt_version"]) != (trt_module, trt_version):
        raise EngineMismatch(
            f"{what} was built with {key['trt_module']} {key['trt_version']}, "
            f"but this machine has {trt_module} {trt_version}; {hint}"
        )
    if key["compute_capability"] != compute_capability:
        raise EngineMismatch(
            f"{what} was built for compute capability {key['compute_capability']} "
            f"({key['device']}), but this GPU is {compute_capability}; {hint}"
        )
    if onnx_sha256 is not None and key["onnx_sha256"] != onnx_sha256:
        raise EngineMismatch(
            f"{what} was built from a different {key['branch']}.{key['precision']}.onnx "
            f"(sha256 {key['onnx_sha256'][:12]}..., the bundle now has {onnx_sha256[:12]}...); "
            f"{hint}"
        )
    if not path.is_file():
        raise EngineMismatch(f"{what}: the file {path} is missing; {hint}")
    digest = sha256_file(path)
    if digest != record.get("sha256"):
        raise EngineMismatch(
            f"{what}: file sha256 {digest[:12]}... differs from the recorded "
            f"{str(record.get('sha256'))[:12]}... (modified or truncated); {hint}"
        )
    return path


def select_record(
    directory: Path,
    branch: str,
    precision: str,
    *,
    trt_module: str,
    trt_version: str,
    compute_capability: str,
    onnx_sha256: str | None,
    bundle_path: Path,
    profile: str | None = None,
) -> tuple[dict[str, Any], Path]:
    """The one engine for this branch, precision and machine, checked; else EngineMismatch.

    When several fit (built for several profiles), ``profile`` chooses; otherwise the
    one with the largest maximum batch.
    """
    records = [
        r
        for r in read_index(directory)
        if r["key"]["branch"] == branch and r["key"]["precision"] == precision
    ]
    if profile is not None:
        records = [r for r in records if r["key"]["profile"] == profile]
    if not records:
        raise EngineMismatch(
            f"no {branch} {precision} engine in {directory}"
            + (f" for profile {profile}" if profile else "")
            + f"; {rebuild_hint(bundle_path, precision, profile)}"
        )
    errors = []
    records.sort(key=lambda r: -int(r["key"]["batch"][2]))
    for r in records:
        try:
            return r, check_record(
                r,
                directory,
                trt_module=trt_module,
                trt_version=trt_version,
                compute_capability=compute_capability,
                onnx_sha256=onnx_sha256,
                bundle_path=bundle_path,
            )
        except EngineMismatch as exc:
            errors.append(str(exc))
    raise EngineMismatch(
        errors[0] if len(errors) == 1 else "no engine fits this machine:\n  " + "\n  ".join(errors)
    )


def engines_summary(bundle_path: Path) -> list[dict[str, Any]]:
    """Short form of the engine index (for a manifest or a report): one dict per engine."""
    out = []
    for r in read_index(engine_dir(bundle_path)):
        k = r["key"]
        out.append(
            {
                "branch": k["branch"],
                "precision": k["precision"],
                "engine": f"{ENGINE_DIR}/{r['engine']}",
                "sha256": r["sha256"],
                "trt": f"{k['trt_module']} {k['trt_version']}",
                "device": k["device"],
                "compute_capability": k["compute_capability"],
                "profile": k["profile"],
                "batch": k["batch"],
            }
        )
    return out
