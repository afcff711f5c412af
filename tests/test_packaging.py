"""What a wheel install gets: the package data and the target profiles (``export/*.json``).

Builds the wheel from this checkout (``pip wheel --no-build-isolation``: the build
needs only the setuptools already installed, no network) and reads its file list.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from edge_iapp.backends.tensorrt import profiles

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_carries_kernels_and_every_target_profile(tmp_path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("edge_iapp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if "/data/share/edge-iapp/export/" in n}
    assert shipped == {p.name for p in (ROOT / "export").glob("*.json")}
    assert any(n.startswith("edge_iapp/kernels/") and n.endswith(".cu") for n in names)


def test_installed_profiles_are_found_without_a_checkout(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(profiles.ENV, raising=False)
    # as installed from a wheel: no export/ three levels above the module
    monkeypatch.setattr(profiles, "__file__", str(tmp_path / "site" / "a" / "b" / "profiles.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    installed = tmp_path.joinpath("prefix", *profiles.INSTALLED_DIR)
    installed.mkdir(parents=True)
    (installed / "jetson-orin-nano.json").write_bytes(
        (ROOT / "export" / "jetson-orin-nano.json").read_bytes()
    )
    assert profiles.profiles_dir() == installed
    assert profiles.list_profiles() == ["jetson-orin-nano"]
    assert profiles.load_profile("jetson-orin-nano").sm == 87


def test_the_cli_starts_without_numpy_or_torch() -> None:
    """``edge-iapp --help`` and every command's parsing import only the CLI modules."""
    code = (
        "import sys, edge_iapp.cli.main\n"
        "print(sorted(m for m in ('numpy', 'torch', 'onnx', 'cv2') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
