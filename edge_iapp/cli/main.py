"""Entry point of the ``edge-iapp`` command.

Each command module has ``register(app)``; heavy imports (torch, onnx, TensorRT)
happen inside the commands, so ``edge-iapp --help`` stays fast.
"""

from __future__ import annotations

import typer

from . import (
    bench_cmd,
    data_cmd,
    deploy_cmd,
    export_cmd,
    finetune_cmd,
    ood_cmd,
    score_cmd,
    synth_cmd,
    train_cmd,
    watch_cmd,
)

app = typer.Typer(
    name="edge-iapp",
    help="IAPP-CNN chromosome classification: data, training, export, TensorRT, scoring.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (
    data_cmd,
    synth_cmd,
    train_cmd,
    finetune_cmd,
    ood_cmd,
    export_cmd,
    bench_cmd,
    score_cmd,
    deploy_cmd,
    watch_cmd,
):
    _module.register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
