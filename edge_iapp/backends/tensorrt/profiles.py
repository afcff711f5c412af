"""Target profiles: what to build for a device (``export/<name>.json`` at the repository top).

A profile fixes the engine's default precision, the batch optimisation profile
(min 1, opt 46 = one cell, max), the builder workspace limit, the builder optimisation
level and the target SM. ``$EDGE_IAPP_PROFILES`` points at another folder.

Where they are read from: ``$EDGE_IAPP_PROFILES``, else ``export/`` of the source checkout
this package runs from (editable installs, the Jetson set-up), else the copy a wheel
installs under ``<prefix>/share/edge-iapp/export`` (``pyproject.toml``, data-files).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...export.bundle import PRECISIONS

ENV = "EDGE_IAPP_PROFILES"


class ProfileError(ValueError):
    """Unknown or malformed profile; the message lists what exists."""


@dataclass(frozen=True)
class TargetProfile:
    """One deployment target.

    Attributes:
        name: file stem, e.g. ``"jetson-orin-nano"``.
        sm: compute capability as an integer (87 = 8.7).
        precision: default precision built for it.
        batch_min, batch_opt, batch_max: the optimisation profile's batch sizes.
        workspace_mib: builder workspace (memory pool) limit.
        builder_optimization_level: 0..5 (TensorRT's default is 3).
    """

    name: str
    description: str
    sm: int
    precision: str
    batch_min: int
    batch_opt: int
    batch_max: int
    workspace_mib: int
    builder_optimization_level: int
    notes: str = ""

    def batch(self) -> tuple[int, int, int]:
        return self.batch_min, self.batch_opt, self.batch_max

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


INSTALLED_DIR = ("share", "edge-iapp", "export")
"""Where a wheel install puts ``export/*.json``, relative to ``sys.prefix``."""


def profiles_dir() -> Path:
    """The folder of target profiles (see the module docstring for the order)."""
    env = os.environ.get(ENV)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[3] / "export"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix).joinpath(*INSTALLED_DIR)


def list_profiles(directory: Path | None = None) -> list[str]:
    d = directory or profiles_dir()
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def parse_profile(data: dict[str, Any], source: str = "<dict>") -> TargetProfile:
    """Validate a profile dict (the JSON file's content)."""
    try:
        batch = data["batch"]
        prof = TargetProfile(
            name=str(data["name"]),
            description=str(data.get("description", "")),
            sm=int(data["sm"]),
            precision=str(data["precision"]),
            batch_min=int(batch["min"]),
            batch_opt=int(batch["opt"]),
            batch_max=int(batch["max"]),
            workspace_mib=int(data["workspace_mib"]),
            builder_optimization_level=int(data["builder_optimization_level"]),
            notes=str(data.get("notes", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"profile {source}: missing or invalid field ({exc})") from None
    if prof.precision not in PRECISIONS:
        raise ProfileError(f"profile {source}: precision {prof.precision!r} not in {PRECISIONS}")
    if not 1 <= prof.batch_min <= prof.batch_opt <= prof.batch_max:
        raise ProfileError(f"profile {source}: need 1 <= min <= opt <= max, got {prof.batch()}")
    if not 0 <= prof.builder_optimization_level <= 5:
        raise ProfileError(f"profile {source}: builder_optimization_level must be 0..5")
    if prof.workspace_mib < 16:
        raise ProfileError(f"profile {source}: workspace_mib must be >= 16")
    if prof.sm < 70:
        raise ProfileError(f"profile {source}: sm {prof.sm} is below what CUDA 12/13 supports")
    return prof


def load_profile(name_or_path: str | Path, directory: Path | None = None) -> TargetProfile:
    """A profile by name (``export/<name>.json``) or by path to a JSON file."""
    p = Path(name_or_path)
    if p.suffix != ".json" or not p.is_file():
        p = (directory or profiles_dir()) / f"{name_or_path}.json"
    if not p.is_file():
        known = ", ".join(list_profiles(directory)) or "none found"
        raise ProfileError(f"unknown profile {str(name_or_path)!r} (known: {known})")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"profile {p}: unreadable ({exc})") from None
    return parse_profile(data, str(p))
