"""Real-GPU tests: the NVRTC-compiled kernels against the reference; TensorRT where installed.

All carry the ``gpu`` marker and skip with a reason where no GPU answers the probe
(cuda-python's cudaGetDeviceCount; no crash without a driver). ``scripts/gpu-check``
runs a larger version of the same parity and the throughput benchmark.
"""

from __future__ import annotations

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
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _probe.ok, reason=f"no usable NVIDIA GPU: {_probe.error}"),
]


@pytest.fixture(scope="module")
def device():
    from edge_iapp.backends.tensorrt import cudart
    from edge_iapp.kernels.launcher import KernelModule

    gpu = _probe.gpus[0]
    cudart.set_device(gpu.index)
    module = KernelModule.for_device(gpu.cc)
    yield gpu, module, cudart.new_stream()
    module.close()


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
