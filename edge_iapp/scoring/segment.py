"""Whole-image segmentation (paper Section 2): binarise, open/close, connected components.

Used for a cell given as one image (a metaphase spread or a karyogram). Each connected
component becomes one object; components that look like several chromosomes touching
or overlapping are reported as *clusters* and are not classified (a classifier trained
on single chromosomes would give one confident-looking wrong call for them).

Cluster criteria (single chromosomes of the gband612 set, measured on 80 cells with
this exact binarisation: area / cell median area 99.9th percentile 2.66, maximum 2.99;
solidity (area / convex-hull area) 1st percentile 0.53):

- ``area > cluster_area_factor * median_area`` (default 2.8), or
- ``area > bent_area_factor * median_area`` (default 1.5) and
  ``solidity < cluster_min_solidity`` (default 0.55): a large, non-convex shape such as
  two chromosomes crossing.

The area rules need a median over at least ``min_objects_for_area`` objects; below that
only the solidity rule applies (without the area condition). Both rules can be wrong
(a strongly bent chromosome 1, two small chromosomes touching end to end): a cluster is
a request to look, and every cluster is shown on the karyogram.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..preprocess import normalize_polarity


@dataclass(frozen=True)
class SegmentConfig:
    """Segmentation parameters.

    Attributes:
        threshold: grey level; pixels darker than it are foreground. None: Otsu.
        open_kernel, close_kernel: square kernel sides for the opening (removes
            specks) and closing (bridges pale bands); 0 or 1 disables.
        min_area: components smaller than this many pixels are noise (labels, dust).
        min_area_fraction: ... or smaller than this fraction of the median area.
        margin: background pixels kept around each crop.
        cluster_area_factor, bent_area_factor, cluster_min_solidity,
            min_objects_for_area: the cluster rules (module docstring).
        max_objects: more components than this means the image is not a spread.
    """

    threshold: int | None = None
    open_kernel: int = 3
    close_kernel: int = 3
    min_area: int = 20
    min_area_fraction: float = 0.08
    margin: int = 3
    cluster_area_factor: float = 2.8
    bent_area_factor: float = 1.5
    cluster_min_solidity: float = 0.55
    min_objects_for_area: int = 5
    max_objects: int = 400


@dataclass
class SegmentedObject:
    """One connected component.

    Attributes:
        object_id: ``"obj_001"``... in raster order of the component's top-left corner.
        bbox: ``(x, y, w, h)`` in image pixels, margin included.
        area: foreground pixels.
        solidity: area / convex-hull area, 0..1.
        crop: ``(h, w)`` uint8 dark-on-white crop; pixels of other components and
            background outside this component's mask are 255.
        cluster: True when the cluster rules say several chromosomes.
        cluster_reasons: which rules fired (``"large_area"``, ``"non_convex"``).
    """

    object_id: str
    bbox: tuple[int, int, int, int]
    area: int
    solidity: float
    crop: np.ndarray
    cluster: bool = False
    cluster_reasons: list[str] = field(default_factory=list)


@dataclass
class Segmentation:
    """All objects of one image and what was done to find them.

    Attributes:
        objects: kept components, in ``object_id`` order.
        threshold: the grey level used.
        inverted: the image was bright-on-dark and was inverted first.
        median_area: median area of the kept components (0 when none).
        dropped: components discarded as noise.
        warnings: e.g. ``"too_many_objects"``.
    """

    objects: list[SegmentedObject]
    threshold: int
    inverted: bool
    median_area: float
    dropped: int
    warnings: list[str] = field(default_factory=list)

    @property
    def clusters(self) -> list[SegmentedObject]:
        return [o for o in self.objects if o.cluster]


def foreground_mask(grey: np.ndarray, config: SegmentConfig) -> tuple[np.ndarray, int]:
    """Binarise and clean a dark-on-white image.

    Args:
        grey: ``(H, W)`` uint8, dark objects on a light background.
        config: parameters.

    Returns:
        ``(mask (H, W) uint8 0/1, threshold)``.
    """
    if config.threshold is None:
        t, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        threshold = int(t)
    else:
        threshold = int(config.threshold)
    mask = (grey < threshold).astype(np.uint8)
    if config.open_kernel > 1:
        k = np.ones((config.open_kernel, config.open_kernel), np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, k)
    if config.close_kernel > 1:
        k = np.ones((config.close_kernel, config.close_kernel), np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, k)
    return mask, threshold


def segment(grey: np.ndarray, config: SegmentConfig | None = None) -> Segmentation:
    """Cut a whole image into single-object crops.

    Args:
        grey: ``(H, W)`` uint8 grey image, either polarity (normalised here).
        config: parameters (defaults: :class:`SegmentConfig`).

    Returns:
        The :class:`Segmentation`.
    """
    config = config or SegmentConfig()
    image, polarity = normalize_polarity(grey)
    mask, threshold = foreground_mask(image, config)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    median_all = float(np.median(areas)) if len(areas) else 0.0
    min_area = max(config.min_area, config.min_area_fraction * median_all)
    keep = [i + 1 for i in range(n - 1) if areas[i] >= min_area]
    # Raster order of the top-left corner: stable ids whatever OpenCV's label order.
    keep.sort(key=lambda k: (stats[k, cv2.CC_STAT_TOP], stats[k, cv2.CC_STAT_LEFT]))
    kept_areas = np.array([stats[k, cv2.CC_STAT_AREA] for k in keep], dtype=np.float64)
    median_area = float(np.median(kept_areas)) if len(keep) else 0.0
    use_area = len(keep) >= config.min_objects_for_area
    h_img, w_img = image.shape
    objects: list[SegmentedObject] = []
    for idx, k in enumerate(keep, start=1):
        x, y, w, h, area = (int(v) for v in stats[k])
        x0, y0 = max(x - config.margin, 0), max(y - config.margin, 0)
        x1, y1 = min(x + w + config.margin, w_img), min(y + h + config.margin, h_img)
        own = labels[y0:y1, x0:x1] == k
        crop = np.where(own, image[y0:y1, x0:x1], np.uint8(255)).astype(np.uint8)
        solidity = _solidity(own)
        reasons = cluster_reasons(area, solidity, median_area, use_area, config)
        objects.append(
            SegmentedObject(
                object_id=f"obj_{idx:03d}",
                bbox=(x0, y0, x1 - x0, y1 - y0),
                area=area,
                solidity=solidity,
                crop=crop,
                cluster=bool(reasons),
                cluster_reasons=reasons,
            )
        )
    warnings = ["too_many_objects"] if len(objects) > config.max_objects else []
    if not objects:
        warnings.append("no_objects")
    return Segmentation(
        objects=objects,
        threshold=threshold,
        inverted=polarity.inverted,
        median_area=median_area,
        dropped=(n - 1) - len(keep),
        warnings=warnings,
    )


def _solidity(own: np.ndarray) -> float:
    contours, _ = cv2.findContours(own.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 1.0
    points = np.concatenate(contours)
    hull = float(cv2.contourArea(cv2.convexHull(points)))
    area = float(own.sum())
    # Hull area of a 1-pixel-wide shape is ~0: treat such shapes as convex.
    return 1.0 if hull <= 0 else round(min(area / hull, 1.0), 4)


def cluster_reasons(
    area: int, solidity: float, median: float, use_area: bool, config: SegmentConfig
) -> list[str]:
    """Which cluster rules (module docstring) fire for one component; empty: a single object.

    Args:
        area, solidity: the component's.
        median: reference area (median of the other objects).
        use_area: apply the area rules (enough objects for a median).
        config: thresholds.
    """
    reasons: list[str] = []
    if use_area and area > config.cluster_area_factor * median:
        reasons.append("large_area")
    bent_big = (not use_area) or area > config.bent_area_factor * median
    if bent_big and solidity < config.cluster_min_solidity:
        reasons.append("non_convex")
    return reasons
