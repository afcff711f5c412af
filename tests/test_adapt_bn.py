"""BatchNorm adaptation to a new lab (AdaBN): statistics from the new images, nothing else."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_iapp.model import create_model  # noqa: E402
from edge_iapp.train.adapt_bn import adapt_batchnorm, batchnorm_layers  # noqa: E402
from edge_iapp.train.data import PreparedImages  # noqa: E402

SIZE = 40


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def images(n: int, seed: int = 0, gain: float = 1.0) -> PreparedImages:
    """``n`` random images; ``gain`` scales the contrast around mid-grey (a 'new lab')."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 256, (n, SIZE, SIZE)).astype(np.float64)
    o = rng.integers(0, 256, (n, SIZE, SIZE)).astype(np.float64)

    def lab(x):
        return np.clip(128 + gain * (x - 128), 0, 255).astype(np.uint8)

    return PreparedImages(
        global_images=lab(g),
        object_images=lab(o),
        labels=rng.integers(0, 24, n),
        paths=[f"{i}.png" for i in range(n)],
        groups=["g"] * n,
        object_fallback=np.zeros(n, bool),
        shrunk=np.zeros(n, bool),
    )


def model(seed: int = 0):
    torch.manual_seed(seed)
    m = create_model("resnet18").eval()
    with torch.no_grad():  # trained-looking statistics, so that a missing reset shows
        for bn in batchnorm_layers(m):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    return m


def state(m) -> dict:
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_first_layer_statistics_are_those_of_the_new_images() -> None:
    m = model()
    data = images(12, gain=0.5)
    info = adapt_batchnorm(m, data, ("global", "object", "part"), batch_size=4)
    assert info == {"layers": 60, "images": 12, "batches": 3, "left_out": 0}
    b = m.global_branch
    x = torch.from_numpy(data.global_images).float()[:, None] / 255.0
    with torch.no_grad():
        conv = b.features[0](b.stem(x))  # resnet18: conv1, then bn1
    bn1 = b.features[1]
    assert isinstance(bn1, torch.nn.BatchNorm2d)
    # three equal batches: the average of batch means is the mean over all images
    torch.testing.assert_close(bn1.running_mean, conv.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not m.training and bn1.momentum == 0.1  # eval mode and the momentum restored


def test_only_running_statistics_change_and_labels_are_not_read() -> None:
    before = state(model())
    m1, m2 = model(), model()
    data = images(9, seed=3, gain=0.4)
    adapt_batchnorm(m1, data, ("global", "object", "part"), batch_size=4)
    relabelled = images(9, seed=3, gain=0.4)
    relabelled.labels = (relabelled.labels + 5) % 24
    adapt_batchnorm(m2, relabelled, ("global", "object", "part"), batch_size=4)
    after = state(m1)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(
        k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed
    )
    for k, v in m2.state_dict().items():
        assert torch.equal(v, after[k]), k  # labels changed nothing


def test_inactive_branches_keep_their_statistics() -> None:
    m = model()
    before = state(m)
    info = adapt_batchnorm(m, images(6), ("global",), batch_size=4)
    assert info["layers"] == 20 and info["images"] == 6
    after = state(m)
    for k in before:
        if not k.startswith("global_branch"):
            assert torch.equal(before[k], after[k]), k
    assert not torch.equal(
        before["global_branch.features.1.running_mean"],
        after["global_branch.features.1.running_mean"],
    )


def test_layer_settings_are_restored() -> None:
    m = model()
    bn = m.global_branch.features[1]
    bn.momentum, bn.track_running_stats = 0.3, False
    adapt_batchnorm(m, images(4), ("global",), batch_size=4)
    assert (bn.momentum, bn.track_running_stats) == (0.3, False)
    assert bn.running_mean is not None  # it was adapted all the same


def test_a_last_batch_of_one_is_left_out_and_too_few_images_refused() -> None:
    info = adapt_batchnorm(model(), images(5), ("global",), batch_size=4)
    assert (info["images"], info["batches"], info["left_out"]) == (4, 1, 1)
    with pytest.raises(ValueError, match="at least 2 images"):
        adapt_batchnorm(model(), images(1), ("global",))


def test_adaptation_undoes_a_contrast_shift_at_the_first_layer() -> None:
    """The point of AdaBN: a lab with half the contrast gives first-layer features whose
    normalised statistics match the training lab's again."""
    src, dst = model(), model()
    adapt_batchnorm(src, images(16, seed=1, gain=1.0), ("global",), batch_size=8)
    shifted = images(16, seed=1, gain=0.5)
    x = torch.from_numpy(shifted.global_images).float()[:, None] / 255.0

    def normalised_std(m) -> float:
        b = m.global_branch
        with torch.no_grad():
            return float(b.features[1](b.features[0](b.stem(x))).std())

    unadapted = normalised_std(src)  # the source statistics on low-contrast images
    adapt_batchnorm(dst, shifted, ("global",), batch_size=8)
    assert unadapted < 0.75  # the shift shrinks the normalised features
    assert normalised_std(dst) == pytest.approx(1.0, abs=0.15)  # adaptation restores them


@pytest.fixture(scope="module")
def new_lab(tmp_path_factory):
    """An untrained base run (input 40) and a new lab's slides: 2 slides x 2 crop cells,
    plus one cell holding a single whole image (left out with a note)."""
    import cv2

    from edge_iapp.data.synth import synth_cell
    from edge_iapp.preprocess import PreprocessConfig
    from edge_iapp.train.run import RunConfig

    root = tmp_path_factory.mktemp("adapt")
    for s in range(2):
        for c in range(2):
            cell = synth_cell(np.random.default_rng([s, c]), classes=["1", "2", "X"])
            folder = root / "slides" / f"slide{s}" / f"cell{c}"
            folder.mkdir(parents=True)
            for i, (_name, image) in enumerate(cell):
                cv2.imwrite(str(folder / f"obj{i:02d}.png"), image)
    whole = root / "slides" / "slide1" / "spread"
    whole.mkdir()
    cv2.imwrite(str(whole / "metaphase.png"), np.full((64, 64), 200, np.uint8))
    run = root / "base"
    run.mkdir()
    RunConfig(preprocess=PreprocessConfig(input_size=40, canvas=128)).save(run)
    torch.save({"model": model(7).state_dict(), "epoch": 3}, run / "last.pt")
    (run / "split.json").write_text('{"version": 1, "groups": {"train": ["S0"]}}\n')
    return run, root / "slides"


def _adapt(*args: str):
    from typer.testing import CliRunner

    from edge_iapp.cli.main import app

    return CliRunner().invoke(app, ["adapt", *args, "--device", "cpu", "--threads", "1"])


def test_adapt_command_makes_a_run_from_unlabelled_slides(new_lab, tmp_path) -> None:
    import json

    from edge_iapp.train.run import load_model

    run, slides = new_lab
    out = tmp_path / "adapted"
    result = _adapt(str(run), "--slides", str(slides), "--out", str(out), "--cells", "3")
    assert result.exit_code == 0, result.output
    text = "".join(result.output.split())
    assert "slide1/spread:leftout" in text
    assert f"edge-iappexport{out}--outBUNDLE" in text and "--calib-data" in text
    assert "reviewflag:outofdistributionnowmeansunlikethesecells" in text
    # export's INT8 calibration reads RUN's split from the adapted run
    assert (out / "split.json").read_text() == (run / "split.json").read_text()
    # the bundle says it was adapted, and to what (score's advice reads it)
    from edge_iapp.export.build import export_bundle

    bundle = export_bundle(out, tmp_path / "bundle", ("fp32",), log=lambda _m: None)
    adapted_cells = json.loads((out / "adapt.json").read_text())["cells"]
    assert bundle.manifest["source"]["adapted"]["cells"] == adapted_cells
    record = json.loads((out / "adapt.json").read_text())
    assert len(record["cells"]) == 3 and "slide1/spread" not in record["cells"]
    assert record["labels_used"] is False and record["images"] == record["adaptation"]["images"]
    ood = json.loads((out / "ood.json").read_text())  # for the new lab, from the same cells
    assert ood["score"] == "energy" and ood["n"] == record["images"]
    assert ood["source"]["part"].startswith("adaptation cells")
    m, cfg = load_model(out)  # what `edge-iapp export` reads
    assert cfg.epochs == 0 and cfg.extra["adapted"]["cells"] == record["cells"]
    base = torch.load(run / "last.pt", weights_only=False)["model"]
    new = m.state_dict()
    running = [k for k in base if k.endswith(("running_mean", "running_var"))]
    assert not any(torch.equal(base[k], new[k]) for k in running)
    assert all(torch.equal(base[k], new[k]) for k in base if "running" not in k and "num_" not in k)
    again = _adapt(str(run), "--slides", str(slides), "--out", str(out))
    assert again.exit_code == 2 and "alreadyholdsarun" in "".join(again.output.split())


def test_adapt_command_refusals(new_lab, tmp_path) -> None:
    run, slides = new_lab
    too_many = _adapt(
        str(run), "--slides", str(slides), "--out", str(tmp_path / "a"), "--cells", "5"
    )
    assert too_many.exit_code == 2 and "has4cellfolder(s)" in "".join(too_many.output.split())
    inside = _adapt(str(run), "--slides", str(slides), "--out", str(slides / "slide0" / "x"))
    assert inside.exit_code == 2 and "overlap" in inside.output
    nowhere = _adapt(str(run), "--slides", str(tmp_path / "none"), "--out", str(tmp_path / "b"))
    assert nowhere.exit_code == 2 and "isnotafolder" in "".join(nowhere.output.split())
    assert not (tmp_path / "a").exists() and not (slides / "slide0" / "x").exists()
