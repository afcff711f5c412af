"""The reference preprocessing: the specification every other implementation matches.

NumPy/OpenCV only. Data flows one way::

    crop --polarity--> dark-on-white crop --global_canvas--> global image
         --object_zoom--> object image --(object branch: part maps)--> part_zoom --> part image

Training (torch), the CUDA kernels and every runtime must produce the same arrays:
masks bit-exact, pixels within 1/255.
"""

from .config import BACKGROUND, THRESHOLD_MODES, PreprocessConfig
from .global_canvas import GlobalBatch, global_canvas
from .grey import UnsupportedImageError, to_grey_u8
from .network_input import network_input
from .object_aware import ObjectBatch, object_zoom
from .part_aware import PartBatch, part_mask, part_zoom
from .polarity import Polarity, normalize_polarity

__all__ = [
    "BACKGROUND",
    "THRESHOLD_MODES",
    "GlobalBatch",
    "ObjectBatch",
    "PartBatch",
    "Polarity",
    "PreprocessConfig",
    "UnsupportedImageError",
    "global_canvas",
    "network_input",
    "normalize_polarity",
    "object_zoom",
    "part_mask",
    "part_zoom",
    "to_grey_u8",
]
