"""Real-GPU tests: the NVRTC-compiled kernels against the reference; the GPU backend's CUDA
glue end to end (engines mocked by ONNX Runtime); TensorRT where installed.

Every GPU test carries the ``gpu`` marker and skips with a reason where no GPU answers the
probe (cuda-python's cudaGetDeviceCount; no crash without a driver). The backend test also
has an ``emulated`` variant (g++ kernels, host memory) that runs the same code path here,
without the marker. ``scripts/gpu-check`` runs a larger version of the same parity and the
throughput benchmark.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edge_iapp.backends.tensorrt.probe import probe_gpus
from edge_iapp.preprocess import (
    PreprocessConfig,
    global_canvas,
    network_input,
    object_zoom,
    part_zoom,
)
from tests.test_kernels_host import assert_pixels_close, part_maps_cases, random_crops

_probe = probe_gpus()
GPU_MARKS = (
    pytest.mark.gpu,
    pytest.mark.skipif(not _probe.ok, reason=f"no usable NVIDIA GPU: {_probe.error}"),
)
EMULATION_MARKS = (pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed"),)


def needs_gpu(test):
    """The ``gpu`` marker plus the skip without a GPU (what pytestmark was before the
    emulated variant, which must run without a GPU, joined this file)."""
    for mark in reversed(GPU_MARKS):
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def device():
    from edge_iapp.backends.tensorrt import cudart
    from edge_iapp.kernels.launcher import KernelModule

    gpu = _probe.gpus[0]
    cudart.set_device(gpu.index)
    module = KernelModule.for_device(gpu.cc)
    yield gpu, module, cudart.new_stream()
    module.close()


@needs_gpu
@pytest.mark.parametrize("half", [False, True])
@pytest.mark.parametrize(
    "mode,kernel", [("foreground", 3), ("paper", 3), ("foreground", 1), ("paper", 5)]
)
def test_kernels_match_reference_on_gpu(device, half, mode, kernel):
    from edge_iapp.backends.tensorrt import cudart
    from edge_iapp.backends.tensorrt.device_preprocess import DevicePreprocessor

    _, module, stream = device
    rng = np.random.default_rng(kernel + (mode == "paper") * 10 + half)
    cfg = PreprocessConfig(threshold=mode, morph_kernel=kernel)
    crops, bgs = random_crops(rng, 48)
    n = len(crops)
    pre = DevicePreprocessor(module, n, cfg.input_size, input_half=half)
    maps = part_maps_cases(rng, n, 4, 4)
    mbuf = cudart.DeviceBuffer(maps.nbytes)
    try:
        cudart.copy_sync(mbuf.ptr, maps.ctypes.data, maps.nbytes, "h2d")
        pre.upload(crops, bgs, stream)
        pre.global_stage(n, cfg, stream)
        pre.object_stage(n, cfg, stream)
        pre.part_stage(n, mbuf.ptr, False, (4, 4), stream)
        got = pre.fetch(n, stream, part=True)
    finally:
        mbuf.free()
        pre.close()
    g = global_canvas(crops, bgs, cfg)
    o = object_zoom(g.images, cfg)
    p = part_zoom(o.images, maps, cfg)
    assert_pixels_close(got.global_images, g.images)
    assert np.array_equal(got.object_masks, o.masks)
    assert np.array_equal(got.object_boxes, o.boxes) and np.array_equal(
        got.object_fallback, o.fallback
    )
    assert_pixels_close(got.object_images, o.images)
    assert np.array_equal(got.part_masks, p.masks) and np.array_equal(got.part_boxes, p.boxes)
    assert np.array_equal(got.part_fallback, p.fallback)
    assert_pixels_close(got.part_images, p.images)
    want = network_input(g.images)
    np.testing.assert_array_equal(got.global_input, want.astype(np.float16) if half else want)


@needs_gpu
def test_tensorrt_backend_agrees_with_onnxruntime(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed on this GPU machine")
    from edge_iapp.backends.onnxruntime_backend import OnnxRuntimeBackend
    from edge_iapp.backends.tensorrt.builder import Target, build_bundle_engines
    from edge_iapp.backends.tensorrt.gpu_backend import TensorRTBackend
    from edge_iapp.backends.tensorrt.profiles import TargetProfile
    from edge_iapp.backends.tensorrt.trtmod import import_trt
    from edge_iapp.data.imread import from_array
    from edge_iapp.export.bundle import load_bundle
    from tests.conftest import chromosome_crop
    from tests.trt_helpers import make_typed_bundle

    gpu = _probe.gpus[0]
    bundle = load_bundle(make_typed_bundle(tmp_path / "bundle"))
    prof = TargetProfile("test", "", gpu.sm, "fp32", 1, 46, 64, 1024, 3)
    build_bundle_engines(bundle, prof, ["fp32"], import_trt("tensorrt"), Target(gpu.name, gpu.sm))
    images = [from_array(chromosome_crop(30 + i, 12 + i % 30, seed=i)) for i in range(70)]
    with TensorRTBackend(bundle, "fp32") as be:
        got = be.run_pipeline(images)
        assert "CUDA kernels" in be.describe()["preprocessing"]
    want = OnnxRuntimeBackend(bundle, "fp32").run_pipeline(images)
    for branch in ("global", "object", "part"):
        np.testing.assert_allclose(got.logits[branch], want.logits[branch], rtol=1e-2, atol=1e-2)
    for flag in ("object_fallback", "part_fallback"):
        assert np.array_equal(got.flags[flag], want.flags[flag])


# ------------------------------------------------------------------------------------------
# The GPU backend end to end: real cudart, buffers, streams, events and NVRTC kernels; only
# the engines are mocked (tests/gpu_helpers.OrtEngineRunner), because TensorRT cannot be
# installed on any machine of this workplace. The "emulated" variant runs the same code
# with HostMemoryCudart and the g++ kernel emulators, so CI checks the test itself.


@pytest.fixture(scope="module")
def tiny_bundle_dir(tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from tests.gpu_helpers import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("gpu-backend") / "bundle")


def _pipeline_images() -> list:
    """70 images: chromosome-like crops, two larger than the canvas (shrunk), three
    bright-on-black (inverted), one blank (object and part fall-back)."""
    from edge_iapp.data.imread import from_array
    from tests.conftest import chromosome_crop

    arrays = [chromosome_crop(20 + i % 50, 8 + i % 20, seed=i) for i in range(64)]
    arrays += [chromosome_crop(140, 40, seed=100), chromosome_crop(60, 130, seed=101)]
    arrays += [255 - chromosome_crop(40 + 9 * i, 16, seed=200 + i) for i in range(3)]
    arrays.append(np.full((30, 30), 250, np.uint8))
    return [from_array(a) for a in arrays]


def _make_backend(where, bundle, half, lib_dir, monkeypatch):
    """A TensorRTBackend with its GPU pieces real (``device``) or emulated, engines mocked.

    Returns ``(backend, cudart)``. Mirrors ``TensorRTBackend.load`` except for the engines:
    GPU probe -> set_device -> runners -> ``_plan()`` -> kernels -> warm-up.
    """
    from types import SimpleNamespace

    from edge_iapp.backends.tensorrt.gpu_backend import TensorRTBackend
    from tests.gpu_helpers import OrtEngineRunner, engine_records

    if where == "device":
        from edge_iapp.backends.tensorrt import cudart
        from edge_iapp.kernels.launcher import KernelModule

        gpu = _probe.gpus[0]
        cudart.set_device(gpu.index)
    else:
        import edge_iapp.backends.tensorrt as trt_pkg
        from edge_iapp.backends.tensorrt import device_preprocess
        from edge_iapp.backends.tensorrt.probe import GpuInfo
        from edge_iapp.kernels.host import (
            EmulatedKernelModule,
            HostKernels,
            HostMemoryCudart,
            build_host_library,
        )

        cudart = HostMemoryCudart
        monkeypatch.setattr(trt_pkg, "cudart", HostMemoryCudart, raising=False)
        monkeypatch.setattr(device_preprocess, "cudart", HostMemoryCudart)
        gpu = GpuInfo(0, "emulated", (9, 0), 0)
    dtype = "HALF" if half else "FLOAT"
    # max batch 40, so that 70 images take two chunks of 35
    records = engine_records(bundle, (1, 20, 40), input_dtype=dtype, maps_dtype=dtype)
    be = TensorRTBackend(bundle, "fp32")
    be.gpu = gpu
    be.trt = SimpleNamespace(name="mock", version="0", label="ONNX Runtime mock (no TensorRT)")
    be.runners = {
        b: OrtEngineRunner(records[b], bundle.file(b, "fp32"), cudart)
        for b in ("global", "object", "part")
    }
    be._plan()
    if where == "device":
        be.kernels = KernelModule.for_device(gpu.cc)
    else:
        be.kernels = EmulatedKernelModule(HostKernels(build_host_library(lib_dir)))
    be._warm()
    be._loaded = True
    return be, cudart


@pytest.mark.parametrize("half", [False, True], ids=["float32-io", "float16-io"])
@pytest.mark.parametrize(
    "where",
    [pytest.param("device", marks=GPU_MARKS), pytest.param("emulated", marks=EMULATION_MARKS)],
)
def test_gpu_backend_pipeline_on_device(where, half, tiny_bundle_dir, tmp_path, monkeypatch):
    """TensorRTBackend.run_pipeline with real CUDA (or its emulation) against onnxruntime.

    Real: cuda-python runtime, device and pinned buffers, two streams and events per
    thread, NVRTC kernels, batch split, per-thread workspaces. Mocked: the engines
    (ONNX Runtime on the CPU reading and writing the bound device buffers), because
    TensorRT cannot run here. ``half``: engines with float16 inputs and part maps, so the
    kernels write float16 network inputs and read float16 maps; the reference rounds the
    same tensors to float16. CUDA graphs: the backend's capture includes the engines,
    which a host-side mock cannot be part of, so only the preprocessing kernels are
    captured and replayed here.
    """
    from concurrent.futures import ThreadPoolExecutor

    from edge_iapp.export.bundle import load_bundle
    from tests.gpu_helpers import reference_backend

    bundle = load_bundle(tiny_bundle_dir)
    be, cudart = _make_backend(where, bundle, half, tmp_path, monkeypatch)
    try:
        assert (be.min_batch, be.max_batch, be.size, be.grid) == (1, 40, 64, (4, 4))
        assert (be.input_half, be.maps_half) == (half, half)
        d = be.describe()
        assert d["input_dtype"] == ("float16" if half else "float32")
        kinds = ("cubin", "ptx") if where == "device" else ("emulated",)
        assert be.kernels.compiled.kind in kinds and "NVRTC" in d["preprocessing"]
        warm_calls = list(be.runners["part"].batches)
        assert warm_calls == [40]  # the warm-up at "load": min(46, max batch)

        images = _pipeline_images()
        got = be.run_pipeline(images)
        assert be.runners["part"].batches[1:] == [35, 35]  # 70 = two chunks
        ref = reference_backend(bundle, half)
        want = ref.run_pipeline(images)
        for branch in ("global", "object", "part"):
            np.testing.assert_allclose(
                got.logits[branch], want.logits[branch], rtol=1e-4, atol=1e-4, err_msg=branch
            )
        np.testing.assert_allclose(got.part_maps, want.part_maps, rtol=1e-4, atol=1e-4)
        for flag in ("shrunk", "inverted", "object_fallback", "part_fallback"):
            assert np.array_equal(got.flags[flag], want.flags[flag]), flag
        # the inputs exercise every flag both ways (else the comparison proves little)
        for flag in ("shrunk", "inverted", "object_fallback", "part_fallback"):
            assert got.flags[flag].any() and not got.flags[flag].all(), flag
        assert got.flags["object_fallback"][-1] and got.flags["part_fallback"][-1]
        if where == "device":
            # global engine on stream B, object and part engines on stream A
            g_streams, o_streams = be.runners["global"].streams, be.runners["object"].streams
            assert g_streams and o_streams and g_streams.isdisjoint(o_streams)
            ws = be._workspace()  # CUDA events recorded on stream A and read back
            assert cudart.elapsed_ms(ws.marks[0], ws.marks[1]) > 0  # upload + kernels
            assert got.timings["branches"] > 0

        # two threads at once: each gets its own workspace (streams, buffers, pinned memory)
        with ThreadPoolExecutor(2) as pool:
            outs = list(pool.map(be.run_pipeline, [images[:30], images[30:]]))
        assert len(be._workspaces) >= 2
        for out, (lo, hi) in zip(outs, [(0, 30), (30, 70)], strict=True):
            for branch in ("global", "object", "part"):
                np.testing.assert_allclose(
                    out.logits[branch], want.logits[branch][lo:hi], rtol=1e-4, atol=1e-4
                )
            for flag in ("object_fallback", "part_fallback"):
                assert np.array_equal(out.flags[flag], want.flags[flag][lo:hi]), flag

        _check_kernel_graph_replay(be, cudart, half)
    finally:
        be.close()
    assert not be._workspaces and not be.runners


def _check_kernel_graph_replay(be, cudart, half):
    """Capture the preprocessing kernels of one batch into a CUDA graph on the workspace's
    stream, then upload two different batches of the same shapes and replay: each replay
    must match the reference (fresh data, not the captured batch's results)."""
    from tests.gpu_helpers import assert_stages_match
    from tests.test_kernels_host import part_maps_cases, random_crops

    ws = be._workspace()
    pre, stream, cfg = ws.pre, ws.a, be.cfg
    rng = np.random.default_rng(3)
    n = 24
    base, bgs = random_crops(rng, n)
    batches = []
    for k in range(2):  # same shapes (same packed size: the crops buffer is not regrown)
        crops = [np.roll(c, 3 * k + 1, axis=0) if k else c.copy() for c in base]
        maps = part_maps_cases(rng, n, *be.grid)
        if half:  # keep the float16 maps finite (case 2 spans 1e-30..1e30)
            maps[2] = rng.normal(size=maps[2].shape)
            maps = maps.astype(np.float16)
        batches.append((crops, list(bgs), np.ascontiguousarray(maps)))
    mbuf = cudart.DeviceBuffer(batches[0][2].nbytes)
    graph = None
    try:
        cudart.synchronize(stream)
        assert pre.upload(batches[0][0], batches[0][1], stream) == n
        crops_ptr = pre.crops.ptr
        cudart.synchronize(stream)

        def stages():
            pre.global_stage(n, cfg, stream)
            pre.object_stage(n, cfg, stream)
            pre.part_stage(n, mbuf.ptr, half, be.grid, stream)

        graph = cudart.capture(stream, stages)
        for crops, backgrounds, maps in reversed(batches):
            pre.upload(crops, backgrounds, stream)
            assert pre.crops.ptr == crops_ptr  # the graph's kernels read this buffer
            cudart.copy_async(mbuf.ptr, maps.ctypes.data, maps.nbytes, "h2d", stream)
            cudart.graph_launch(graph, stream)
            got = pre.fetch(n, stream, part=True)
            assert_stages_match(got, crops, backgrounds, maps, cfg)
            assert got.global_input.dtype == (np.float16 if half else np.float32)
    finally:
        cudart.synchronize(stream)
        if graph is not None:
            cudart.graph_destroy(graph)
        mbuf.free()


# ------------------------------------------------------------------------------------------
# The training hot path (torch): batches made on the GPU and the part zoom must queue work
# without waiting for the GPU, or the host cannot run ahead of it (a profile of batch 26 at
# 224 px on an H100 was host-bound on per-step syncs).


def _torch_cuda_problem() -> str | None:
    """Why torch cannot run on a CUDA GPU here, or None when it can."""
    try:
        import torch
    except ImportError as exc:
        return f"torch is not installed ({exc})"
    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU"
    return None


_TORCH_CUDA_PROBLEM = _torch_cuda_problem()


@pytest.mark.gpu
@pytest.mark.skipif(_TORCH_CUDA_PROBLEM is not None, reason=f"{_TORCH_CUDA_PROBLEM}")
@pytest.mark.parametrize("where", ["device", "pinned-host"])
def test_training_batches_and_part_zoom_do_not_sync(where):
    """device_batches steps and part_zoom_torch on CUDA under sync debug mode "error".

    ``torch.cuda.set_sync_debug_mode("error")`` raises on the synchronizing calls torch
    makes itself: a blocking copy between host and device (``torch.tensor(..., device=)``,
    ``.to(device)`` from the host without ``non_blocking``, ``.item()``, ``.cpu()``),
    ``torch.equal``, ``nonzero``, boolean-mask indexing, explicit synchronize. It does not
    see waits inside the CUDA driver: a ``non_blocking`` copy from pageable (unpinned) host
    memory, which the driver stages synchronously; ``cudaMalloc`` / ``cudaFree`` when the
    caching allocator grows or is emptied (hence the warm-up epoch first); page-locking
    (``cudaHostAlloc``). Nor does it count kernel launches. So this test catches
    reintroduced ``torch.tensor`` constants, convergence reads and blocking copies,
    not every stall.
    """
    import torch

    from edge_iapp.model.part_zoom import part_zoom_torch
    from edge_iapp.train.device_data import DeviceImages, device_batches

    rng = np.random.default_rng(0)
    n, size, batch = 70, 224, 26  # 3 steps: 26, 26, 18
    host = [
        torch.from_numpy(rng.integers(0, 256, (n, size, size), dtype=np.uint8)),
        torch.from_numpy(rng.integers(0, 256, (n, size, size), dtype=np.uint8)),
        torch.from_numpy(rng.integers(0, 24, n)),
    ]
    if where == "device":
        images = DeviceImages(*(t.cuda() for t in host), "cuda")
    else:  # the fallback for sets too large for the GPU: pinned host tensors
        images = DeviceImages(*(t.pin_memory() for t in host), "cpu")
    maps = torch.from_numpy(rng.standard_normal((batch, 2, 7, 7)).astype(np.float32)).cuda()

    def epoch(images, device, seed):
        out = []
        stream = device_batches(
            images, batch, np.random.default_rng(seed), np.random.default_rng(seed + 1), 0.5, device
        )
        for b in stream:  # what a training step reads: the batch and the part zoom
            part = part_zoom_torch(b["object_u8"], maps[: len(b["label"])].to(device))
            out.append((b, part))
        return out

    epoch(images, "cuda", 1)  # warm-up: CUDA modules, allocator caches, pinned blocks
    torch.cuda.synchronize()
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = epoch(images, "cuda", 2)
    finally:
        torch.cuda.set_sync_debug_mode(before)
    torch.cuda.synchronize()

    want = epoch(DeviceImages(*host, "cpu"), "cpu", 2)
    assert len(got) == len(want) == 3
    for (gb, gp), (wb, wp) in zip(got, want, strict=True):
        assert gb["index"].device.type == "cpu" and torch.equal(gb["index"], wb["index"])
        for key in ("global", "object", "object_u8", "label"):
            assert gb[key].is_cuda and torch.equal(gb[key].cpu(), wb[key]), key
        for key in ("masks", "boxes", "fallback"):
            assert torch.equal(getattr(gp, key).cpu(), getattr(wp, key)), key
        diff = (gp.images.cpu().int() - wp.images.int()).abs().max()
        assert int(diff) <= 1  # pixels within 1/255, as against the reference
