"""The model bundle: a folder with ``manifest.json`` and the ONNX graphs; loading and checking it.

Layout (``format_version`` 1)::

    BUNDLE/
      manifest.json          what is here (below)
      global.fp32.onnx       input -> logits
      object.fp32.onnx       input -> logits, part_maps
      part.fp32.onnx         input -> logits
      <branch>.fp16.onnx     FP16 typed graphs, float32 inputs and outputs
      <branch>.int8.onnx     explicit Q/DQ (TensorRT rules)
      calibration.json       the calibration manifest used for INT8 (when present)

The runtime path uses only ``json`` and ``hashlib`` here: :func:`load_bundle` works
without torch or onnx installed. Every listed file's sha256 is checked on load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..ioutil import sha256_file  # noqa: F401 - re-exported

FORMAT = "edge-iapp-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CALIBRATION_FILE = "calibration.json"
BRANCHES: tuple[str, ...] = ("global", "object", "part")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
DEFAULT_REVIEW = {"min_confidence": 0.9, "min_branch_agreement": 2, "flag_fallbacks": True}
"""Review-flag thresholds written when the exporter is not told otherwise (see review.py)."""


class BundleError(RuntimeError):
    """The bundle is missing, incomplete, modified, or from an unknown format version."""


def precision_name(precision: str) -> str:
    """``precision`` as bundles spell it (``"INT8"`` -> ``"int8"``).

    Raises:
        ValueError: not one of :data:`PRECISIONS`.
    """
    name = str(precision).strip().lower()
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return name


def branch_file_name(branch: str, precision: str) -> str:
    return f"{branch}.{precision}.onnx"


@dataclass(frozen=True)
class Bundle:
    """A loaded (and, by default, verified) bundle.

    Attributes:
        path: the bundle folder.
        manifest: the parsed ``manifest.json``.
    """

    path: Path
    manifest: dict

    @property
    def format_version(self) -> int:
        return int(self.manifest["format_version"])

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def backbone(self) -> str:
        return str(self.manifest["backbone"])

    @property
    def input_size(self) -> int:
        return int(self.manifest["preprocess"]["input_size"])

    @property
    def preprocess(self):
        """The :class:`~edge_iapp.preprocess.PreprocessConfig` the model was trained with."""
        from ..preprocess import PreprocessConfig

        return PreprocessConfig.from_dict(self.manifest["preprocess"])

    @property
    def fusion(self) -> str:
        return str(self.manifest.get("fusion", "lambda"))

    @property
    def precisions(self) -> list[str]:
        return list(self.manifest["precisions"])

    @property
    def review(self) -> dict[str, Any]:
        return {**DEFAULT_REVIEW, **self.manifest.get("review", {})}

    @property
    def parity(self) -> dict:
        return dict(self.manifest.get("parity", {}))

    @property
    def calibration(self) -> dict | None:
        return self.manifest.get("calibration")

    def file(self, branch: str, precision: str) -> Path:
        """Path of one branch graph; :class:`BundleError` when the bundle lacks it."""
        try:
            entry = self.manifest["files"][branch][precision]
        except KeyError:
            raise BundleError(
                f"bundle {self.path} has no {precision} graph for the {branch} branch "
                f"(precisions: {', '.join(self.precisions)})"
            ) from None
        return self.path / entry["path"]

    def file_bytes(self, precision: str) -> int:
        """Total size of the three graphs of one precision."""
        return sum(int(self.manifest["files"][b][precision]["bytes"]) for b in BRANCHES)

    def input_name(self, branch: str) -> str:
        return str(self.manifest["branches"][branch]["input"]["name"])

    def output_names(self, branch: str) -> list[str]:
        return list(self.manifest["branches"][branch]["outputs"])

    def verify(self) -> None:
        """Check every listed file's presence and sha256; :class:`BundleError` names the file."""
        fix = "copy the whole bundle folder again, or export it again (edge-iapp export)"
        for rel, digest in _listed_files(self.manifest):
            p = self.path / rel
            if not p.is_file():
                raise BundleError(f"bundle {self.path}: file {rel} is missing; {fix}")
            if sha256_file(p) != digest:
                raise BundleError(
                    f"bundle {self.path}: file {rel} was modified or corrupted (sha256 "
                    f"mismatch); {fix}"
                )


def _listed_files(manifest: dict) -> list[tuple[str, str]]:
    out = []
    for branch, per_precision in manifest.get("files", {}).items():
        for precision, entry in per_precision.items():
            if "path" not in entry or "sha256" not in entry:
                raise BundleError(f"manifest entry {branch}/{precision} lacks path or sha256")
            out.append((entry["path"], entry["sha256"]))
    cal = manifest.get("calibration")
    if cal and cal.get("manifest"):
        out.append((cal["manifest"], cal["sha256"]))
    return out


def _check_structure(p: Path, manifest: dict) -> None:
    """The entries the runtime reads, present and of the right kind (a hand-edited or cut
    manifest is named here, not met later as a ``KeyError``)."""
    redo = f"re-export the bundle (edge-iapp export RUN --out {p} --force)"
    kinds = {
        "classes": list,
        "backbone": str,
        "preprocess": dict,
        "precisions": list,
        "files": dict,
        "branches": dict,
    }
    for key, kind in kinds.items():
        if key not in manifest:
            raise BundleError(f"bundle {p}: {MANIFEST} lacks {key!r}; {redo}")
        if not isinstance(manifest[key], kind):
            raise BundleError(
                f"bundle {p}: {MANIFEST} entry {key!r} is a {type(manifest[key]).__name__}, "
                f"expected a {kind.__name__}; {redo}"
            )
    for key in ("input_size", "canvas"):
        if key not in manifest["preprocess"]:
            raise BundleError(f"bundle {p}: {MANIFEST} preprocess lacks {key!r}; {redo}")
    for branch in BRANCHES:
        entry = manifest["branches"].get(branch)
        entry = entry if isinstance(entry, dict) else {}
        inp = entry.get("input")
        name = inp.get("name") if isinstance(inp, dict) else None
        if not isinstance(name, str) or not isinstance(entry.get("outputs"), dict):
            raise BundleError(
                f"bundle {p}: {MANIFEST} lacks the {branch} branch's input name or outputs; {redo}"
            )
        if not isinstance(manifest["files"].get(branch, {}), dict):
            raise BundleError(f"bundle {p}: {MANIFEST} files entry {branch!r} is broken; {redo}")


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle folder.

    Args:
        path: the bundle folder (or its ``manifest.json``).
        verify: check every file's sha256 (on by default; a few ms per MB).

    Raises:
        BundleError: no folder, no or unreadable manifest, unknown format or version,
            incomplete manifest, a listed file missing or modified (named).
    """
    p = Path(path)
    if p.name == MANIFEST and p.is_file():
        p = p.parent
    if p.is_file():
        raise BundleError(
            f"bundle {p} is a file; pass the bundle folder (the one with {MANIFEST} that "
            "edge-iapp export wrote)"
        )
    if not p.is_dir():
        raise BundleError(f"bundle {p} does not exist (expected a folder with {MANIFEST})")
    mpath = p / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{p} is not a model bundle: {MANIFEST} is missing")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle {p}: {MANIFEST} is unreadable or corrupted ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"bundle {p}: {MANIFEST} is not an edge-iapp bundle manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"bundle {p}: format version {version!r}; this edge-iapp reads version "
            f"{FORMAT_VERSION}: re-export the run with this edge-iapp, or use the edge-iapp "
            "version that wrote the bundle"
        )
    _check_structure(p, manifest)
    for precision in manifest["precisions"]:
        for branch in BRANCHES:
            if precision not in manifest["files"].get(branch, {}):
                raise BundleError(
                    f"bundle {p}: {MANIFEST} lists {precision} but no {branch} graph for it"
                )
    bundle = Bundle(path=p.resolve(), manifest=manifest)
    if verify:
        bundle.verify()
    return bundle
