"""Data layer: image reading, labelled folders and their groups, group-aware splits.

No torch here: the runtime reads images through :mod:`edge_iapp.data.imread`.
"""

from .dataset import FolderScan, GroupRule, Sample, cell_key, scan_folder, summarize
from .imread import ChromosomeImage, ImageReadError, from_array, read_header, read_image
from .split import SplitError, apply_split, load_split, make_split, scan_for_split, write_split

__all__ = [
    "ChromosomeImage",
    "FolderScan",
    "GroupRule",
    "ImageReadError",
    "Sample",
    "SplitError",
    "apply_split",
    "cell_key",
    "from_array",
    "load_split",
    "make_split",
    "read_header",
    "read_image",
    "scan_folder",
    "scan_for_split",
    "summarize",
    "write_split",
]
