"""IAPP-CNN in PyTorch (training and the reference backend). Imports torch."""

from .backbones import BACKBONES, create_backbone
from .iapp import IAPPCNN, Branch, InputStem, ObjectBranch, create_model
from .part_aware_se import PartAwareSE, SqueezeExcitation

__all__ = [
    "BACKBONES",
    "IAPPCNN",
    "Branch",
    "InputStem",
    "ObjectBranch",
    "PartAwareSE",
    "SqueezeExcitation",
    "create_backbone",
    "create_model",
]
