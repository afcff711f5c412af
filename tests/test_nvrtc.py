"""NVRTC compiles the preprocessing kernels for every target architecture, without a GPU.

Checks: no ``#include`` (NVRTC has no include path); cubin for sm_75/87/90/110 and PTX;
each kernel's parameter sizes in the cubin equal what ``launcher.pack_args`` packs; nvcc
accepts the same source; the arch choice and the on-disk cache.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from edge_iapp.kernels import launcher

nvrtc_available = True
try:
    launcher.nvrtc_version()
except launcher.KernelError:
    nvrtc_available = False

needs_nvrtc = pytest.mark.skipif(not nvrtc_available, reason="cuda-bindings/NVRTC not installed")
TARGETS = (75, 87, 90, 110)
KERNELS = {
    "iapp_reset",
    "iapp_global_canvas",
    "iapp_erode",
    "iapp_dilate_box",
    "iapp_object_zoom",
    "iapp_part_select",
    "iapp_part_zoom",
}


def test_sources_have_no_include():
    for name in launcher.SOURCES:
        lines = (launcher.KERNEL_DIR / name).read_text().splitlines()
        includes = [ln for ln in lines if ln.lstrip().startswith("#include")]
        assert not includes, f"{name} has {includes}; NVRTC has no include path"


def test_signatures_parse():
    sigs = launcher.parse_signatures()
    assert set(sigs) == KERNELS
    names = [p.name for p in sigs["iapp_global_canvas"]]
    assert names[:4] == ["crops", "offsets", "shapes", "backgrounds"]
    assert sigs["iapp_global_canvas"][1].dtype is np.uint64  # pointer
    assert sigs["iapp_global_canvas"][4].dtype is np.int32  # int n


def test_pack_args_layout_and_errors():
    params = launcher.parse_signatures()["iapp_reset"]
    pointers, storage = launcher.pack_args(params, (0x1000, 0x2000, 46))
    assert pointers.dtype == np.uint64 and len(pointers) == 3
    assert storage[0].item() == 0x1000 and storage[2].dtype == np.int32 and storage[2].item() == 46
    assert int(pointers[2]) == storage[2].ctypes.data
    with pytest.raises(launcher.KernelError, match="expected 3 arguments"):
        launcher.pack_args(params, (1, 2))


def test_choose_target():
    archs = [75, 80, 86, 87, 89, 90, 100, 110, 120]
    assert launcher.choose_target((9, 0), archs) == (90, "cubin")
    assert launcher.choose_target((8, 7), archs) == (87, "cubin")
    assert launcher.choose_target((12, 5), archs) == (120, "ptx")  # newer than NVRTC: PTX
    with pytest.raises(launcher.KernelError, match="sm_72"):
        launcher.choose_target((7, 2), archs)


@needs_nvrtc
def test_nvrtc_knows_every_target():
    assert set(TARGETS) <= set(launcher.supported_archs())


@needs_nvrtc
@pytest.mark.parametrize("arch", TARGETS)
def test_cubin_compiles_with_matching_parameters(arch):
    compiled = launcher.compile_source(arch, "cubin")
    assert compiled.image[:4] == b"\x7fELF"
    sizes = launcher.cubin_param_sizes(compiled.image)
    sigs = launcher.parse_signatures()
    assert set(sigs) <= set(sizes)
    for name, params in sigs.items():
        assert sizes[name] == [np.dtype(p.dtype).itemsize for p in params], name


@needs_nvrtc
@pytest.mark.parametrize("arch", [75, 110])
def test_ptx_compiles(arch):
    compiled = launcher.compile_source(arch, "ptx")
    text = compiled.image.rstrip(b"\0").decode()
    assert f".target sm_{arch}" in text
    for name in KERNELS:
        assert f".entry {name}(" in text


@needs_nvrtc
def test_compile_error_is_reported():
    with pytest.raises(launcher.KernelError, match="compile"):
        launcher.compile_source(90, "cubin", source='extern "C" __global__ void k() { nope; }')


@needs_nvrtc
def test_cache_reuses_the_image(tmp_path):
    first = launcher.compile_cached(87, "cubin", directory=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].read_bytes() == first.image
    second = launcher.compile_cached(87, "cubin", directory=tmp_path)
    assert second.log == "(cached)" and second.image == first.image


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("arch", [75, 90])
def test_nvcc_accepts_the_source(tmp_path, arch):
    src = tmp_path / "kernels.cu"
    src.write_text(launcher.kernel_source())
    out = tmp_path / f"k{arch}.cubin"
    cmd = [
        "nvcc",
        "-std=c++17",
        "-fmad=false",
        "-cubin",
        f"-arch=sm_{arch}",
        "-o",
        str(out),
        str(src),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr.lower(), done.stderr
    sizes = launcher.cubin_param_sizes(out.read_bytes())
    assert set(launcher.parse_signatures()) <= set(sizes)


@needs_nvrtc
def test_no_local_memory_per_thread():
    """Per-thread stack frames reserve local memory for every resident thread of the GPU
    (a 12 KB frame is ~3 GB on an H100, more than an Orin Nano can spare): keep them at 0."""
    import re

    compiled = launcher.compile_source(87, "cubin", extra=("--ptxas-options=-v",))
    frames = [int(m) for m in re.findall(r"(\d+) bytes stack frame", compiled.log)]
    assert len(frames) >= len(KERNELS)
    assert max(frames) == 0, compiled.log
    assert "spill" in compiled.log and not re.search(r"[1-9]\d* bytes spill", compiled.log)
