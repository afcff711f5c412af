"""TensorRT-RTX builds real engines of all three precisions without a GPU; cache and checks.

TensorRT itself cannot be installed here; TensorRT-RTX has the same builder, network
and ONNX-parser API and builds for sm_86 with no GPU, so the whole build path (strongly
typed network, optimisation profile, workspace, optimisation level, precision checks,
cache records) runs for real. Deserialising needs a GPU and is left to tests/test_gpu.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_iapp.backends.tensorrt import cache
from edge_iapp.backends.tensorrt.profiles import (
    ProfileError,
    list_profiles,
    load_profile,
    parse_profile,
)
from edge_iapp.backends.tensorrt.runner import io_specs, plan_bindings, split_batch

rtx = pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx is not installed")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxconverter_common")

SM = 86
PRECISIONS = ["fp32", "fp16", "int8"]
PROFILES = {"jetson-orin-nano", "jetson-agx-orin", "jetson-thor", "l4", "a100", "h100"}


@pytest.fixture(scope="module")
def typed_bundle(tmp_path_factory) -> Path:
    from tests.trt_helpers import make_typed_bundle

    return make_typed_bundle(tmp_path_factory.mktemp("trt") / "bundle")


@pytest.fixture(scope="module")
def trt():
    from edge_iapp.backends.tensorrt.trtmod import import_trt

    return import_trt("tensorrt_rtx")


@pytest.fixture(scope="module")
def small_profile():
    return load_profile("l4").__class__(
        **{
            **load_profile("l4").to_dict(),
            "name": "test-sm86",
            "sm": SM,
            "batch_max": 64,
            "workspace_mib": 256,
        }
    )


@pytest.fixture(scope="module")
def built(typed_bundle, trt, small_profile):
    from edge_iapp.backends.tensorrt.builder import Target, build_bundle_engines
    from edge_iapp.export.bundle import load_bundle

    bundle = load_bundle(typed_bundle)
    events = []
    records = build_bundle_engines(
        bundle,
        small_profile,
        PRECISIONS,
        trt,
        Target("any sm_86", SM),
        on_engine=lambda r, c: events.append(c),
    )
    assert events == [False] * 9  # all freshly built
    return bundle, {(r["key"]["branch"], r["key"]["precision"]): r for r in records}


def test_profiles_all_present_and_valid():
    assert set(list_profiles()) >= PROFILES
    for name in PROFILES:
        p = load_profile(name)
        assert p.batch_min == 1 and p.batch_opt == 46 and p.batch_max >= 46
        assert p.precision in PRECISIONS and p.sm in (80, 87, 89, 90, 110)
        assert 0 <= p.builder_optimization_level <= 5 and p.workspace_mib >= 256
    assert load_profile("jetson-orin-nano").workspace_mib < load_profile("h100").workspace_mib


def test_profile_errors():
    with pytest.raises(ProfileError, match="known: .*h100"):
        load_profile("no-such-device")
    base = {
        "name": "x",
        "sm": 90,
        "precision": "int8",
        "workspace_mib": 64,
        "builder_optimization_level": 3,
        "batch": {"min": 1, "opt": 46, "max": 8},
    }
    with pytest.raises(ProfileError, match="min <= opt <= max"):
        parse_profile(base)
    with pytest.raises(ProfileError, match="precision"):
        parse_profile({**base, "precision": "fp8", "batch": {"min": 1, "opt": 1, "max": 8}})
    with pytest.raises(ProfileError, match="missing"):
        parse_profile({"name": "x"})


@pytest.mark.parametrize("precision", PRECISIONS)
def test_engine_io_has_dynamic_batch(built, precision):
    _, records = built
    for branch in ("global", "object", "part"):
        io = records[(branch, precision)]["io"]
        names = [(t["mode"], t["name"]) for t in io]
        want = [("input", "input"), ("output", "logits")]
        if branch == "object":
            want.append(("output", "part_maps"))
        assert names == want
        shapes = {t["name"]: t["shape"] for t in io}
        assert shapes["input"] == [-1, 1, 64, 64] and shapes["logits"] == [-1, 24]
        if branch == "object":
            assert shapes["part_maps"] == [-1, 2, 2, 2]
        # typed graphs keep float32 I/O at every precision
        assert {t["dtype"] for t in io} == {"FLOAT"}


def test_precision_is_in_the_engine(built):
    """Q/DQ and half layers reach TensorRT, and the engines shrink accordingly."""
    _, records = built
    for branch in ("global", "object", "part"):
        r32, r16, r8 = (records[(branch, p)] for p in PRECISIONS)
        assert (
            r32["build"]["layers"]["quantize"] == 0 and r32["build"]["layers"]["half_tensors"] == 0
        )
        assert r16["build"]["layers"]["half_tensors"] > 0
        assert r8["build"]["layers"]["quantize"] > 0 and r8["build"]["layers"]["dequantize"] > 0
        assert r16["bytes"] < 0.6 * r32["bytes"]
        assert r8["bytes"] < 0.45 * r32["bytes"]


def test_records_and_index(built):
    bundle, records = built
    folder = cache.engine_dir(bundle.path)
    index = cache.read_index(folder)
    assert len(index) == 9
    for (branch, precision), r in records.items():
        key = r["key"]
        assert key["trt_module"] == "tensorrt_rtx" and key["compute_capability"] == "8.6"
        assert key["batch"] == [1, 46, 64] and key["profile"] == "test-sm86"
        assert key["onnx_sha256"] == bundle.manifest["files"][branch][precision]["sha256"]
        engine = folder / r["engine"]
        assert cache.sha256_file(engine) == r["sha256"] and engine.stat().st_size == r["bytes"]
        sidecar = json.loads(engine.with_suffix(".json").read_text())
        assert sidecar["digest"] == r["digest"] == cache.EngineKey.from_dict(key).digest()
        assert r["build"]["seconds"] > 0 and isinstance(r["build"]["log"], list)
    summary = cache.engines_summary(bundle.path)
    assert {(s["branch"], s["precision"]) for s in summary} == set(records)


def test_second_build_uses_the_cache(built, trt, small_profile):
    from edge_iapp.backends.tensorrt.builder import Target, build_bundle_engines

    bundle, records = built
    engine = cache.engine_dir(bundle.path) / records[("part", "int8")]["engine"]
    mtime = engine.stat().st_mtime_ns
    events = []
    build_bundle_engines(
        bundle,
        small_profile,
        ["int8"],
        trt,
        Target("any sm_86", SM),
        on_engine=lambda r, c: events.append(c),
    )
    assert events == [True, True, True] and engine.stat().st_mtime_ns == mtime


def _check(record, folder, bundle, **over):
    args = {
        "trt_module": "tensorrt_rtx",
        "trt_version": record["key"]["trt_version"],
        "compute_capability": "8.6",
        "onnx_sha256": record["key"]["onnx_sha256"],
        "bundle_path": bundle.path,
    }
    args.update(over)
    return cache.check_record(record, folder, **args)


def test_load_checks_name_what_was_expected(built, tmp_path):
    bundle, records = built
    folder = cache.engine_dir(bundle.path)
    r = records[("global", "fp16")]
    assert _check(r, folder, bundle) == folder / r["engine"]
    with pytest.raises(
        cache.EngineMismatch,
        match=r"tensorrt_rtx 1\..* this machine has tensorrt 10.3.0.*edge-iapp build",
    ):
        _check(r, folder, bundle, trt_module="tensorrt", trt_version="10.3.0")
    with pytest.raises(
        cache.EngineMismatch, match="compute capability 8.6.*this GPU is 8.7.*--precision fp16"
    ):
        _check(r, folder, bundle, compute_capability="8.7")
    with pytest.raises(cache.EngineMismatch, match="different global.fp16.onnx"):
        _check(r, folder, bundle, onnx_sha256="0" * 64)
    # a truncated copy of the engine: the hash check catches it before TensorRT sees it
    copy = tmp_path / "engines"
    copy.mkdir()
    data = (folder / r["engine"]).read_bytes()
    (copy / r["engine"]).write_bytes(data[: len(data) // 2])
    with pytest.raises(cache.EngineMismatch, match="modified or truncated"):
        _check(r, copy, bundle)


def test_select_record(built):
    bundle, records = built
    folder = cache.engine_dir(bundle.path)
    r, path = cache.select_record(
        folder,
        "object",
        "int8",
        trt_module="tensorrt_rtx",
        trt_version=records[("object", "int8")]["key"]["trt_version"],
        compute_capability="8.6",
        onnx_sha256=None,
        bundle_path=bundle.path,
    )
    assert r["digest"] == records[("object", "int8")]["digest"] and path.is_file()
    with pytest.raises(cache.EngineMismatch, match="this GPU is 9.0"):
        cache.select_record(
            folder,
            "object",
            "int8",
            trt_module="tensorrt_rtx",
            trt_version=r["key"]["trt_version"],
            compute_capability="9.0",
            onnx_sha256=None,
            bundle_path=bundle.path,
        )
    with pytest.raises(cache.EngineMismatch, match="no part fp32 engine .* for profile h100"):
        cache.select_record(
            folder,
            "part",
            "fp32",
            trt_module="x",
            trt_version="1",
            compute_capability="9.0",
            onnx_sha256=None,
            bundle_path=bundle.path,
            profile="h100",
        )


def test_mislabelled_precision_is_refused(typed_bundle, trt, small_profile):
    from edge_iapp.backends.tensorrt.builder import BuildError, Target, build_engine

    with pytest.raises(BuildError, match="INT8 but has no Q/DQ"):
        build_engine(trt, typed_bundle / "global.fp32.onnx", "int8", small_profile, Target("x", SM))
    with pytest.raises(BuildError, match="FP16 but has no half"):
        build_engine(trt, typed_bundle / "global.fp32.onnx", "fp16", small_profile, Target("x", SM))
    with pytest.raises(BuildError, match="FP32 but holds"):
        build_engine(trt, typed_bundle / "global.int8.onnx", "fp32", small_profile, Target("x", SM))


def test_rtx_rejects_unsupported_sm(typed_bundle, trt, small_profile):
    from edge_iapp.backends.tensorrt.builder import BuildError, Target, build_engine

    with pytest.raises(BuildError, match="cannot build for sm_87.*sm_86"):
        build_engine(trt, typed_bundle / "global.fp32.onnx", "fp32", small_profile, Target("x", 87))


def test_strongly_typed_flag(trt):
    assert trt.network_flags() == 1 << int(rtx.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert not trt.has_weak_typing  # no FP16/INT8 builder flags to fall back on


def test_binding_plan_from_engine_io(built):
    _, records = built
    specs = io_specs(records[("object", "fp16")]["io"])
    plan = plan_bindings(specs, 46, (1, 64))
    assert plan == {
        "input": 46 * 64 * 64 * 4,
        "logits": 46 * 24 * 4,
        "part_maps": 46 * 2 * 2 * 2 * 4,
    }
    with pytest.raises(ValueError, match="outside the engine's profile 1..64"):
        plan_bindings(specs, 65, (1, 64))
    assert split_batch(130, 64) == [(0, 44), (44, 87), (87, 130)]
    assert split_batch(46, 64) == [(0, 46)] and split_batch(0, 64) == []
    assert sum(b - a for a, b in split_batch(1000, 7)) == 1000


def test_cli_build_without_tensorrt_says_what_to_do(typed_bundle):
    from typer.testing import CliRunner

    from edge_iapp.cli.main import app

    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    res = CliRunner().invoke(app, ["build", str(typed_bundle), "--profile", "h100"])
    assert res.exit_code == 2
    assert "import tensorrt" in res.output and "onnxruntime" in res.output


def test_cli_build_of_a_precision_the_bundle_lacks_gives_a_safe_command(typed_bundle, tmp_path):
    """The advice used to be `export RUN --out B --precision fp16`: refused without
    --force, and with it the re-export dropped the precisions the bundle had."""
    import json
    import shutil

    from typer.testing import CliRunner

    from edge_iapp.cli.main import app

    copy = tmp_path / "bundle"
    shutil.copytree(typed_bundle, copy, ignore=shutil.ignore_patterns("engines"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["precisions"] = [p for p in manifest["precisions"] if p != "fp16"]
    for per_precision in manifest["files"].values():
        per_precision.pop("fp16", None)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    res = CliRunner().invoke(app, ["build", str(copy), "--profile", "l4", "-p", "fp16"])
    flat = " ".join(res.output.split())
    assert res.exit_code == 2 and "has no fp16 graphs" in flat
    assert "--force --precision fp32,int8,fp16 --calib-data" in flat


def test_cli_build_with_rtx_and_doctor(typed_bundle, built):
    from typer.testing import CliRunner

    from edge_iapp.cli.main import app

    res = CliRunner().invoke(
        app,
        [
            "build",
            str(typed_bundle),
            "--profile",
            "l4",
            "--precision",
            "int8",
            "--trt-module",
            "tensorrt_rtx",
            "--sm",
            "86",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert res.output.count("int8:") == 3 and "engines.json" in res.output
    res = CliRunner().invoke(
        app,
        [
            "build",
            str(typed_bundle),
            "--profile",
            "l4",
            "--trt-module",
            "tensorrt_rtx",
            "--sm",
            "87",
        ],
    )
    assert res.exit_code == 2 and "sm_87" in res.output
    res = CliRunner().invoke(app, ["doctor", "--json"])
    assert res.exit_code == 0
    report = json.loads(res.output)
    assert report["tensorrt_rtx"]["ok"] and report["nvrtc"]["ok"]
    assert set(report) >= {"gpu", "tensorrt", "tensorrt_rtx", "nvrtc", "tensorrt backend"}
    assert report["cuda-python"]["ok"]  # cuda-bindings comes with the tensorrt extra


def test_backend_without_gpu_is_unavailable_not_a_crash(built):
    from edge_iapp.backends.base import BackendUnavailable
    from edge_iapp.backends.tensorrt.gpu_backend import TensorRTBackend
    from edge_iapp.backends.tensorrt.probe import probe_gpus

    if probe_gpus().ok:
        pytest.skip("a GPU is present; tests/test_gpu.py covers loading")
    bundle, _ = built
    with pytest.raises(BackendUnavailable, match="no usable NVIDIA GPU.*cudaGetDeviceCount"):
        TensorRTBackend(bundle, "int8").load()


def test_engine_files_survive_a_bundle_copy(built, tmp_path):
    """Records hold file names relative to engines/, so a copied bundle still checks out."""
    bundle, records = built
    dst = tmp_path / "copy"
    shutil.copytree(bundle.path, dst)
    r = records[("part", "fp32")]
    folder = cache.engine_dir(dst)
    assert cache.find_record(folder, cache.EngineKey.from_dict(r["key"]))["digest"] == r["digest"]
    assert np.dtype(io_specs(r["io"])[0].dtype) == np.float32


class _OrtRunner:
    """Stands in for EngineRunner (no GPU): runs the bundle's ONNX with onnxruntime on the
    host memory that the emulated device buffers are."""

    def __init__(self, record, onnx_path):
        import onnxruntime as ort

        self.record = record
        self.specs = io_specs(record["io"])
        self.inputs = [s for s in self.specs if s.mode == "input"]
        self.outputs = [s for s in self.specs if s.mode == "output"]
        self.batch_range = (record["key"]["batch"][0], record["key"]["batch"][2])
        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.batches = []

    def enqueue(self, batch, addresses, stream):
        import ctypes

        plan_bindings(self.specs, batch, self.batch_range)
        feeds = {}
        for s in self.inputs:
            buf = (ctypes.c_uint8 * s.nbytes(batch)).from_address(addresses[s.name])
            feeds[s.name] = np.frombuffer(buf, dtype=s.dtype).reshape(s.shape_for(batch)).copy()
        outs = self.session.run([s.name for s in self.outputs], feeds)
        for s, value in zip(self.outputs, outs, strict=True):
            value = np.ascontiguousarray(value, dtype=s.dtype)
            ctypes.memmove(addresses[s.name], value.ctypes.data, value.nbytes)
        self.batches.append(batch)


def test_gpu_backend_pipeline_emulated(built, trt, monkeypatch, tmp_path):
    """TensorRTBackend.run_pipeline end to end with emulated kernels and ORT for the engines.

    Only the GPU itself is replaced (kernels -> g++ harness emulators, engines -> ONNX
    Runtime, device memory -> host memory); streams, buffers, batch splitting, flag and
    logit plumbing are the backend's own. It must agree with the onnxruntime backend,
    which uses the reference preprocessing.
    """
    import edge_iapp.backends.tensorrt as trt_pkg
    from edge_iapp.backends.onnxruntime_backend import OnnxRuntimeBackend
    from edge_iapp.backends.tensorrt import device_preprocess
    from edge_iapp.backends.tensorrt.gpu_backend import TensorRTBackend
    from edge_iapp.backends.tensorrt.probe import GpuInfo
    from edge_iapp.data.imread import from_array
    from edge_iapp.kernels.host import (
        EmulatedKernelModule,
        HostKernels,
        HostMemoryCudart,
        build_host_library,
    )
    from tests.conftest import chromosome_crop

    monkeypatch.setattr(trt_pkg, "cudart", HostMemoryCudart, raising=False)
    monkeypatch.setattr(device_preprocess, "cudart", HostMemoryCudart)
    bundle, records = built
    be = TensorRTBackend(bundle, "fp32")
    be.gpu, be.trt = GpuInfo(0, "emulated", (8, 6), 0), trt
    be.runners = {
        b: _OrtRunner(records[(b, "fp32")], bundle.file(b, "fp32"))
        for b in ("global", "object", "part")
    }
    for r in be.runners.values():  # a small max batch so that 70 images take two chunks
        r.batch_range = (1, 40)
    be._plan()
    be.kernels = EmulatedKernelModule(HostKernels(build_host_library(tmp_path)))
    be._loaded = True
    images = [from_array(chromosome_crop(20 + i % 50, 8 + i % 20, seed=i)) for i in range(69)]
    images.append(from_array(np.full((30, 30), 250, np.uint8)))  # blank: object fallback
    got = be.run_pipeline(images)
    assert be.runners["part"].batches == [35, 35]
    ref = OnnxRuntimeBackend(bundle, "fp32")
    want = ref.run_pipeline(images)
    for branch in ("global", "object", "part"):
        np.testing.assert_allclose(got.logits[branch], want.logits[branch], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.part_maps, want.part_maps, rtol=1e-5, atol=1e-5)
    for flag in ("shrunk", "inverted", "object_fallback", "part_fallback"):
        assert np.array_equal(got.flags[flag], want.flags[flag]), flag
    assert got.flags["object_fallback"][-1]
    # cell-relative size: the same host-side rescale as the reference path
    import dataclasses

    cell_cfg = dataclasses.replace(
        bundle.preprocess,
        size_mode="cell",
        cell_length=min(40, bundle.preprocess.canvas),
        reference_length=30.0,
    )
    celled = [from_array(im.pixels, cell="c") for im in images[:20]] + [images[20]]
    got_c, want_c = be.run_pipeline(celled, cell_cfg), ref.run_pipeline(celled, cell_cfg)
    np.testing.assert_allclose(got_c.logits["part"], want_c.logits["part"], rtol=1e-5, atol=1e-5)
    for flag in ("shrunk", "size_fallback"):
        assert np.array_equal(got_c.flags[flag], want_c.flags[flag]), flag
    assert want_c.flags["size_fallback"].tolist() == [False] * 20 + [True]
    assert be.describe()["input_dtype"] == "float32"
    # warm-up, and two threads at once: each gets its own workspace (buffers, contexts)
    be.warmup()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda ims: be.run_pipeline(ims), [images[:30], images[30:]]))
    assert len(be._workspaces) >= 2  # the test's thread + pool thread(s)
    for out, (lo, hi) in zip(outs, [(0, 30), (30, 70)], strict=True):
        np.testing.assert_allclose(out.logits["part"], want.logits["part"][lo:hi], atol=1e-5)
    # CUDA-graph mode: the first batch of a size runs eagerly and is captured, the next replays
    be.options["cuda_graph"] = True
    calls = len(be.runners["part"].batches)
    first, second = be.run_pipeline(images[:46]), be.run_pipeline(images[:46])
    assert len(be._local.ws.graphs) == 1  # 46 = 23 + 23: one batch size, one graph
    assert len(be.runners["part"].batches) == calls + 4
    for out in (first, second):
        np.testing.assert_allclose(out.logits["object"], want.logits["object"][:46], atol=1e-5)
        assert np.array_equal(out.flags["part_fallback"], want.flags["part_fallback"][:46])
    be.close()
    assert not be._workspaces and not be.runners


def test_progress_monitor_reports_build_phases(typed_bundle, trt, small_profile):
    from edge_iapp.backends.tensorrt.builder import Target, build_engine

    class Recorder:  # the part of rich.progress.Progress the monitor uses
        def __init__(self):
            self.added, self.updates, self.removed = [], 0, 0

        def add_task(self, description, total):
            self.added.append(description.strip())
            return len(self.added)

        def update(self, task, completed):
            self.updates += 1

        def remove_task(self, task):
            self.removed += 1

    rec = Recorder()
    out = build_engine(
        trt, typed_bundle / "part.fp32.onnx", "fp32", small_profile, Target("x", SM), progress=rec
    )
    assert out.engine and "Building engine" in rec.added
    assert rec.updates > 0 and rec.removed == len(rec.added)
