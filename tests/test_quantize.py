"""INT8 Q/DQ: the checker passes our graphs and rejects TensorRT-hostile ones; calibration set."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from export_helpers import INPUT_SIZE, tiny_bundle

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from edge_iapp.classes import CLASS_NAMES  # noqa: E402
from edge_iapp.export.bundle import BRANCHES, load_bundle  # noqa: E402
from edge_iapp.export.calibration import CalibrationError, select_samples  # noqa: E402
from edge_iapp.export.qdq_check import check_qdq_rules  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(tiny_bundle(tmp_path_factory))


def _calib(n=8, seed=0):
    return np.random.default_rng(seed).random((n, 1, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)


def _ort_quantize(src, dst, **kwargs):
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    x = _calib()

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": x}])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(dst), Reader(), **kwargs)
    return dst


def test_our_int8_graphs_pass_the_checker(bundle):
    for branch in BRANCHES:
        assert check_qdq_rules(bundle.file(branch, "int8")) == []


def test_our_int8_graphs_follow_tensorrt_rules_concretely(bundle):
    from onnx import numpy_helper

    model = onnx.load(str(bundle.file("object", "int8")))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    ops = [n.op_type for n in model.graph.node]
    assert not any(op.startswith("QLinear") or op.endswith("Integer") for op in ops)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for n in qdq:
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any()
    # Residual adds read one input straight from a Conv.
    prod = {o: n for n in model.graph.node for o in n.output}
    adds = [n for n in model.graph.node if n.op_type == "Add" and n.name.startswith("/features")]
    assert len(adds) == 8
    for add in adds:
        kinds = sorted(prod[t].op_type for t in add.input)
        assert kinds == ["Conv", "DequantizeLinear"], (add.name, kinds)
    # Nothing after the backbone is quantized: the part-map sums read float tensors.
    for n in model.graph.node:
        if n.op_type in ("ReduceSum", "Sigmoid", "Gemm"):
            assert all(
                prod.get(t) is None or prod[t].op_type != "DequantizeLinear" for t in n.input
            )


def test_checker_rejects_ort_default_asymmetric_uint8(bundle, tmp_path):
    from onnxruntime.quantization import QuantFormat, QuantType

    # ORT's classic defaults: asymmetric uint8 activations and weights, per-tensor.
    bad = _ort_quantize(
        bundle.file("global", "fp32"),
        tmp_path / "bad.onnx",
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QUInt8,
    )
    text = "\n".join(check_qdq_rules(bad))
    assert "zero-point is uint8" in text
    assert "asymmetric" in text
    assert "per-channel" in text


def test_checker_rejects_ort_current_defaults(bundle, tmp_path):
    from onnxruntime.quantization import QuantFormat

    # ORT 1.2x+ defaults to int8 but still asymmetric, per-tensor, with int32 biases.
    bad = _ort_quantize(
        bundle.file("global", "fp32"), tmp_path / "bad.onnx", quant_format=QuantFormat.QDQ
    )
    text = "\n".join(check_qdq_rules(bad))
    assert "asymmetric" in text and "per-channel" in text and "bias" in text


def test_checker_rejects_qoperator_format(bundle, tmp_path):
    from onnxruntime.quantization import QuantFormat, QuantType

    bad = _ort_quantize(
        bundle.file("global", "fp32"),
        tmp_path / "qop.onnx",
        quant_format=QuantFormat.QOperator,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    assert any("QOperator" in v for v in check_qdq_rules(bad))


def test_checker_rejects_unfused_residual_adds_and_quantized_part_maps(bundle, tmp_path):
    from onnxruntime.quantization import QuantFormat, QuantType

    bad = _ort_quantize(
        bundle.file("object", "fp32"),
        tmp_path / "se.onnx",
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["Conv", "Add", "Mul"],
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )
    text = "\n".join(check_qdq_rules(bad))
    assert "residual Add" in text
    assert "part-map" in text
    assert "zero-point" not in text  # symmetric int8 otherwise: only the placement is wrong


@pytest.mark.parametrize("method", ["max", "percentile"])
def test_quantize_methods_give_valid_graphs(bundle, tmp_path, method):
    from edge_iapp.export.quantize import quantize_int8

    # 20 images: batches of 16 would leave a short last batch (histograms must cope).
    info = quantize_int8(
        bundle.file("part", "fp32"), tmp_path / f"{method}.onnx", _calib(20), method=method
    )
    assert info["method"] == method and info["residual_adds_fused"] == 8
    assert check_qdq_rules(tmp_path / f"{method}.onnx") == []


def test_percentile_clips_ranges_below_max(bundle, tmp_path):
    from onnx import numpy_helper

    from edge_iapp.export.quantize import quantize_int8

    scales = {}
    for method in ("max", "percentile"):
        quantize_int8(
            bundle.file("part", "fp32"),
            tmp_path / f"{method}.onnx",
            _calib(),
            method=method,
            percentile=99.0,
        )
        m = onnx.load(str(tmp_path / f"{method}.onnx"))
        scales[method] = {
            t.name: float(numpy_helper.to_array(t))
            for t in m.graph.initializer
            if t.name.endswith("_scale") and numpy_helper.to_array(t).size == 1
        }
    common = set(scales["max"]) & set(scales["percentile"])
    assert common
    assert all(scales["percentile"][k] <= scales["max"][k] * (1 + 1e-6) for k in common)
    assert any(scales["percentile"][k] < 0.99 * scales["max"][k] for k in common)


@pytest.mark.slow
def test_entropy_method_is_not_max(bundle, tmp_path):
    from edge_iapp.export.quantize import _has_calibration_cache, quantize_int8

    if not _has_calibration_cache():
        pytest.skip("this onnxruntime has no calibration_cache_path: entropy is refused there")

    quantize_int8(bundle.file("global", "fp32"), tmp_path / "e.onnx", _calib(4), method="entropy")
    assert check_qdq_rules(tmp_path / "e.onnx") == []


def _scales(path) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    m = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer if "scale" in t.name}


@pytest.mark.parametrize("method", ["max", "percentile"])
def test_an_onnxruntime_without_calibration_cache_gives_the_same_graph(
    bundle, tmp_path, tmp_path_factory, monkeypatch, method
):
    """onnxruntime 1.23 (the last for Python 3.10, JetPack 6) has no calibration_cache_path:
    quantize_static's own calibrator, set up alike, must give the same scales. The older
    release cannot be installed beside this one, so its absence is simulated."""
    from edge_iapp.export import quantize
    from edge_iapp.export.quantize import QuantizationError, quantize_int8

    src = bundle.file("part", "fp32")
    quantize_int8(src, tmp_path / "cache.onnx", _calib(20), method=method, percentile=99.0)
    monkeypatch.setattr(quantize, "_has_calibration_cache", lambda: False)
    quantize_int8(src, tmp_path / "own.onnx", _calib(20), method=method, percentile=99.0)
    cached, own = _scales(tmp_path / "cache.onnx"), _scales(tmp_path / "own.onnx")
    assert len(cached) > 10 and cached.keys() == own.keys()
    for name, value in cached.items():
        np.testing.assert_allclose(own[name], value, rtol=1e-6, err_msg=name)
    if method == "max":  # entropy cannot be set up alike there: refused, not downgraded
        with pytest.raises(QuantizationError, match="entropy needs an onnxruntime"):
            quantize_int8(src, tmp_path / "e.onnx", _calib(4), method="entropy")
        # and export refuses it before any work
        from export_helpers import make_run, shared

        from edge_iapp.export.build import export_bundle

        run = shared(tmp_path_factory, "run", lambda d: make_run(d / "run"))
        with pytest.raises(QuantizationError, match="entropy needs an onnxruntime"):
            export_bundle(
                run, tmp_path / "b", ("int8",), calib_data=tmp_path, calib_method="entropy"
            )
        assert not (tmp_path / "b").exists()


def test_unknown_method_and_empty_calibration_are_errors(bundle, tmp_path):
    from edge_iapp.export.quantize import QuantizationError, quantize_int8

    with pytest.raises(ValueError, match="calibration method"):
        quantize_int8(bundle.file("part", "fp32"), tmp_path / "x.onnx", _calib(), method="kl")
    with pytest.raises(QuantizationError, match="M > 0"):
        quantize_int8(
            bundle.file("part", "fp32"), tmp_path / "x.onnx", np.zeros((0, 1, 8, 8), np.float32)
        )


# -- the calibration set --------------------------------------------------------------------


def _samples(per_class=6, groups=3, classes=CLASS_NAMES):
    return [
        SimpleNamespace(
            path=Path(f"/d/{c}/f{c}_{k}_G{k % groups}.png"), class_name=c, group=f"G{k % groups}"
        )
        for c in classes
        for k in range(per_class)
    ]


def test_selection_is_stratified_spread_and_deterministic():
    samples = _samples()
    a = select_samples(samples, 48, seed=0)
    b = select_samples(list(reversed(samples)), 48, seed=0)
    assert [s.path for s in a] == [s.path for s in b]  # input order does not matter
    counts = {c: sum(s.class_name == c for s in a) for c in CLASS_NAMES}
    assert set(counts.values()) == {2}
    for c in CLASS_NAMES:  # two images of a class come from two different groups
        assert len({s.group for s in a if s.class_name == c}) == 2
    assert len({s.group for s in a}) == 3
    assert [s.path for s in select_samples(samples, 48, seed=1)] != [s.path for s in a]
    # the same data in another folder: the same images (a new user's copy, a CI checkout)
    moved = [
        SimpleNamespace(**{**vars(x), "path": Path("/elsewhere/x") / x.path.relative_to("/d")})
        for x in samples
    ]
    assert [s.path.relative_to("/elsewhere/x") for s in select_samples(moved, 48, seed=0)] == [
        s.path.relative_to("/d") for s in a
    ]


def test_selection_remainder_and_shortfall():
    samples = _samples(per_class=6)[:-5]  # class Y has 1 image only
    chosen = select_samples(samples, 50, seed=0)
    assert len(chosen) == 50
    assert sum(s.class_name == "Y" for s in chosen) == 1


def test_selection_errors_are_clear():
    with pytest.raises(CalibrationError, match="no images"):
        select_samples([], 10)
    with pytest.raises(CalibrationError, match="lacks class"):
        select_samples(_samples(classes=CLASS_NAMES[:-1]), 30)
    with pytest.raises(CalibrationError, match="smaller than"):
        select_samples(_samples(), 10)
    with pytest.raises(CalibrationError, match=r"has only 24: ask for 24 or fewer \(--calib-size"):
        select_samples(_samples(per_class=1), 30)


def test_a_calibration_folder_outside_the_training_split_is_explained():
    from types import SimpleNamespace

    from edge_iapp.export.calibration import check_part_present

    split = {"groups": {"train": ["a", "b"], "val": [], "test": ["c"]}}
    samples = [SimpleNamespace(group="c")]
    with pytest.raises(CalibrationError, match=r"2 of the split's 2 train group\(s\)"):
        check_part_present({"train": []}, split, "train", samples, "DATA", "split.json")
    check_part_present({"train": samples}, split, "train", samples, "DATA", "split.json")


def test_manifest_lists_training_images_with_hashes(bundle, tmp_path):
    from edge_iapp.data import load_split
    from edge_iapp.export.calibration import read_manifest, sha256_file

    manifest = json.loads((bundle.path / "calibration.json").read_text())
    assert manifest["split"]["part"] == "train"
    data_root = next(p for p in Path(bundle.path).parents[1].iterdir() if p.name.startswith("data"))
    root = data_root / "set"
    split = load_split(root.parent / "set_split.json")
    train = set(split["groups"]["train"])
    assert all(im["group"] in train for im in manifest["images"])
    assert all(sha256_file(root / im["path"]) == im["sha256"] for im in manifest["images"])
    assert len(read_manifest(bundle.path / "calibration.json", root)) == 24
    # A changed image is caught.
    copy = tmp_path / "set"
    import shutil

    shutil.copytree(root, copy)
    victim = copy / manifest["images"][0]["path"]
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(CalibrationError, match="sha256"):
        read_manifest(bundle.path / "calibration.json", copy)


# -- calibration and parity images in the cell-relative size mode ----------------------------


def _cells_of_crops(n_cells=2, per_cell=12):
    """ChromosomeImages of ``n_cells`` cells; each cell holds every length class once-ish."""
    from export_helpers import crop

    from edge_iapp.data import from_array

    return [
        from_array(crop(k * 2 % 24, 100 * c + k), source=f"c{c}_{k}", cell=f"G/{c}")
        for c in range(n_cells)
        for k in range(per_cell)
    ]


def test_whole_cell_front_sizes_kept_images_by_their_whole_cell():
    from edge_iapp.backends.base import reference_front, whole_cell_front
    from edge_iapp.preprocess import PreprocessConfig

    cfg = PreprocessConfig(canvas=96, input_size=48, size_mode="cell", cell_length=40)
    images = _cells_of_crops()
    keep = [k in (0, 1, 13) for k in range(len(images))]  # the two longest of cell 0, one of 1
    front = whole_cell_front(images, keep, cfg, chunk=12)  # one cell per call
    whole = reference_front(images, cfg)
    rows = [k for k, kept in enumerate(keep) if kept]
    np.testing.assert_array_equal(front.global_images, whole.global_images[rows])
    np.testing.assert_array_equal(front.object_images, whole.object_images[rows])
    assert not front.size_fallback.any()
    # measured on the kept images alone, the two long ones of cell 0 would be their own
    # median: the picture the runtime never makes
    alone = reference_front([images[k] for k in rows], cfg)
    assert not np.array_equal(alone.global_images[:2], front.global_images[:2])
    # absolute mode: the images themselves, cell-mates or not
    absolute = PreprocessConfig(canvas=96, input_size=48)
    np.testing.assert_array_equal(
        whole_cell_front(images, keep, absolute).global_images,
        reference_front([images[k] for k in rows], absolute).global_images,
    )


def test_with_cells_adds_the_rest_of_each_cell_in_cell_mode_only(tmp_path):
    from export_helpers import make_dataset

    from edge_iapp.data import cell_key, scan_folder
    from edge_iapp.export.calibration import with_cells
    from edge_iapp.preprocess import PreprocessConfig

    data, _ = make_dataset(tmp_path / "set", groups=3)
    part = scan_folder(data).samples
    chosen = [Path(part[0].path), Path(part[30].path)]
    cfg = PreprocessConfig(size_mode="cell")
    files, cells, keep = with_cells(chosen, part, cfg)
    assert files[:2] == chosen and keep == [True, True] + [False] * (len(files) - 2)
    by_path = {Path(s.path): s for s in part}
    wanted = {cell_key(by_path[p]) for p in chosen}
    assert set(cells) == wanted
    assert all(cell_key(by_path[f]) == c for f, c in zip(files, cells, strict=True))
    assert len(files) == sum(cell_key(s) in wanted for s in part)  # whole cells, no repeat
    files, cells, keep = with_cells(chosen, part, PreprocessConfig())
    assert files == chosen and keep == [True, True]
