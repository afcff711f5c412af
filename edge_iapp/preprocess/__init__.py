"""The reference preprocessing: the specification every other implementation matches.

NumPy/OpenCV only. Data flows one way::

    crop --polarity--> dark-on-white crop --global_canvas--> global image
         --object_zoom--> object image --(object branch: part maps)--> part_zoom --> part image

Training (torch), the CUDA kernels and every runtime must produce the same arrays:
masks bit-exact, pixels within 1/255.
"""

from .config import BACKGROUND, SIZE_MODES, THRESHOLD_MODES, PreprocessConfig
from .global_canvas import GlobalBatch, global_canvas
from .grey import UnsupportedImageError, to_grey_u8
from .network_input import network_input
from .object_aware import ObjectBatch, object_zoom
from .part_aware import PartBatch, part_mask, part_zoom
from .polarity import Polarity, normalize_polarity
from .size_reference import SizeReference, chromosome_length, rescale_to_reference

__all__ = [
    "BACKGROUND",
    "SIZE_MODES",
    "THRESHOLD_MODES",
    "GlobalBatch",
    "ObjectBatch",
    "PartBatch",
    "Polarity",
    "PreprocessConfig",
    "SizeReference",
    "UnsupportedImageError",
    "chromosome_length",
    "global_canvas",
    "network_input",
    "normalize_polarity",
    "object_zoom",
    "part_mask",
    "part_zoom",
    "rescale_to_reference",
    "to_grey_u8",
]
