"""The built-in default behind `edge-iapp bench` with no bundle (edge_iapp/demo.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_iapp.demo import demo_steps, ensure_demo


def test_steps_are_the_readme_pipeline(tmp_path: Path) -> None:
    commands = [args[0] for _, args in demo_steps(tmp_path)]
    assert commands == ["synth", "data", "train", "export"]
    export_args = demo_steps(tmp_path)[-1][1]
    assert "fp32,fp16,int8" in export_args


def test_cached_products_are_reused_without_running_anything(tmp_path: Path) -> None:
    for product, _ in demo_steps(tmp_path):
        product.parent.mkdir(parents=True, exist_ok=True)
        product.write_text("made earlier")
    bundle, data, split = ensure_demo(tmp_path, log=lambda m: pytest.fail(f"ran: {m}"))
    assert bundle == tmp_path / "bundle" and data == tmp_path / "data"
    assert split == tmp_path / "split.json"


def test_a_failing_step_names_its_command(tmp_path: Path) -> None:
    steps = demo_steps(tmp_path)
    for product, _ in steps[:2]:  # a "data set" and "split" that are not real
        product.parent.mkdir(parents=True, exist_ok=True)
        product.write_text("not a split")
    with pytest.raises(RuntimeError, match="edge-iapp train"):
        ensure_demo(tmp_path, log=lambda _m: None)
    assert not (tmp_path / "bundle" / "manifest.json").exists()
