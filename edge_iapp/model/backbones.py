"""Backbone factory: torchvision feature extractors by name, pretrained weights from a local file.

Every backbone maps ``(N, 3, H, W)`` to a feature map ``(N, C, H/s, W/s)``; the
branch adds pooling and the classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone: torchvision constructor, feature slicer, channels."""

    build: Callable[[], nn.Module]
    features: Callable[[nn.Module], nn.Module]
    channels: int


def _resnet_features(model: nn.Module) -> nn.Module:
    return nn.Sequential(
        model.conv1,
        model.bn1,
        model.relu,
        model.maxpool,
        model.layer1,
        model.layer2,
        model.layer3,
        model.layer4,
    )


def _densenet_features(model: nn.Module) -> nn.Module:
    return nn.Sequential(model.features, nn.ReLU(inplace=False))


def _features_attr(model: nn.Module) -> nn.Module:
    return model.features


def _specs() -> dict[str, BackboneSpec]:
    from torchvision import models as tvm

    return {
        "resnet18": BackboneSpec(tvm.resnet18, _resnet_features, 512),
        "resnet34": BackboneSpec(tvm.resnet34, _resnet_features, 512),
        "resnet50": BackboneSpec(tvm.resnet50, _resnet_features, 2048),
        "vgg16_bn": BackboneSpec(tvm.vgg16_bn, _features_attr, 512),
        "densenet121": BackboneSpec(tvm.densenet121, _densenet_features, 1024),
        "alexnet": BackboneSpec(tvm.alexnet, _features_attr, 256),
        "mobilenet_v3_large": BackboneSpec(tvm.mobilenet_v3_large, _features_attr, 960),
        "efficientnet_b0": BackboneSpec(tvm.efficientnet_b0, _features_attr, 1280),
    }


BACKBONES: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "vgg16_bn",
    "densenet121",
    "alexnet",
    "mobilenet_v3_large",
    "efficientnet_b0",
)


def create_backbone(name: str, weights: str | Path | None = None) -> tuple[nn.Module, int]:
    """Build a feature extractor.

    Args:
        name: one of :data:`BACKBONES`.
        weights: optional path to a torchvision ImageNet state dict (``.pth``) for the
            whole classification model; the classifier weights are dropped.

    Returns:
        ``(features, channels)``: the module and its output channel count.

    Raises:
        ValueError: unknown backbone name.
        FileNotFoundError: ``weights`` given but missing.
    """
    specs = _specs()
    if name not in specs:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    spec = specs[name]
    model = spec.build()
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"pretrained weights for {name} not found at {path}; download the torchvision "
                f"ImageNet weights on a connected machine and pass the .pth file"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return spec.features(model), spec.channels
