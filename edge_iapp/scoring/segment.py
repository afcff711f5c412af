"""Whole-image segmentation (paper Section 2): binarise, open/close, connected components.

Used for a cell given as one image (a metaphase spread or a karyogram). Each connected
component becomes one object; components that look like several chromosomes touching
or overlapping are reported as *clusters* and are not classified (a classifier trained
on single chromosomes would give one confident-looking wrong call for them).

Cluster criteria (single chromosomes of the gband612 set, measured on 80 cells: area /
cell median area 99.9th percentile 2.66, maximum 2.99):

- ``large_area``: ``area > cluster_area_factor * median_area`` (default 2.8), or
- ``branched``: ``area > bent_area_factor * median_area`` (default 1.5) and at least
  ``min_concavities`` (default 3) deep concavities: convexity defects deeper than
  ``concavity_depth`` (default 0.7) times the object's ribbon width
  (``2 * area / perimeter``). Two chromosomes crossing (X) have 4, a T or Y overlap 3;
  a bent single chromosome has 0-2 (on 60 real cells pasted as spreads, all 373 single
  chromosomes above 1.5x the median area had at most 2). Solidity alone cannot
  tell them apart: bent single chromosomes reach 0.48, an X of thin arms 0.5.

The area conditions need a median over at least ``min_objects_for_area`` objects; below
that only the concavity count applies. Both rules can be wrong
(two chromosomes touching end to end or in a V look like one bent chromosome): a cluster is
a request to look, and every cluster is shown on the karyogram.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..preprocess import normalize_polarity
from ..preprocess.polarity import border_median


@dataclass(frozen=True)
class SegmentConfig:
    """Segmentation parameters.

    Attributes:
        threshold: grey level; pixels darker than it are foreground. None: from
            ``threshold_mode``.
        threshold_mode: ``"midpoint"`` (default): halfway between Otsu's threshold and the
            background level (border median), because G-band pale bands are lighter than
            Otsu's level and would split chromosomes (on 40 real cells pasted as spreads:
            45% exact counts with Otsu, 85% with the midpoint, 3x3 kernels); ``"otsu"``.
        open_kernel, close_kernel: square kernel sides for the opening (removes
            specks) and closing (bridges pale bands); 0 or 1 disables.
        min_area: components smaller than this many pixels are noise (labels, dust).
        min_area_fraction: ... or smaller than this fraction of the median area.
        margin: background pixels kept around each crop.
        cluster_area_factor, bent_area_factor, min_concavities, concavity_depth,
            min_objects_for_area: the cluster rules (module docstring).
        max_objects: more components than this means the image is not a spread.
    """

    threshold: int | None = None
    threshold_mode: str = "midpoint"
    open_kernel: int = 3
    close_kernel: int = 3
    min_area: int = 20
    min_area_fraction: float = 0.08
    margin: int = 3
    cluster_area_factor: float = 2.8
    bent_area_factor: float = 1.5
    min_concavities: int = 3
    concavity_depth: float = 0.7
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
        concavities: convexity defects deeper than ``concavity_depth`` x ribbon width.
        crop: ``(h, w)`` uint8 dark-on-white crop; pixels of other components and
            background outside this component's mask are 255.
        cluster: True when the cluster rules say several chromosomes.
        cluster_reasons: which rules fired (``"large_area"``, ``"branched"``).
    """

    object_id: str
    bbox: tuple[int, int, int, int]
    area: int
    solidity: float
    concavities: int
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
    if config.threshold is not None:
        threshold = int(config.threshold)
    else:
        t, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        if config.threshold_mode == "otsu":
            threshold = int(t)
        elif config.threshold_mode == "midpoint":
            threshold = (int(t) + border_median(grey) + 1) // 2
        else:
            raise ValueError(
                f"threshold_mode must be 'midpoint' or 'otsu', got {config.threshold_mode!r}"
            )
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
        solidity, concavities = shape_measures(own, config.concavity_depth)
        reasons = cluster_reasons(area, concavities, median_area, use_area, config)
        objects.append(
            SegmentedObject(
                object_id=f"obj_{idx:03d}",
                bbox=(x0, y0, x1 - x0, y1 - y0),
                area=area,
                solidity=solidity,
                concavities=concavities,
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


def shape_measures(own: np.ndarray, depth: float = 0.7) -> tuple[float, int]:
    """Solidity and deep-concavity count of one object's ``(h, w)`` bool mask.

    A concavity is deep when it is deeper than ``depth`` x the ribbon width
    ``2 * area / perimeter``.
    """
    contours, _ = cv2.findContours(own.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return 1.0, 0
    contour = max(contours, key=len)
    area = float(own.sum())
    hull_area = float(cv2.contourArea(cv2.convexHull(np.concatenate(contours))))
    # Hull area of a 1-pixel-wide shape is ~0: treat such shapes as convex.
    solidity = 1.0 if hull_area <= 0 else round(min(area / hull_area, 1.0), 4)
    if len(contour) < 4:
        return solidity, 0
    width = 2.0 * area / max(cv2.arcLength(contour, True), 1.0)
    try:
        hull = cv2.convexHull(contour, returnPoints=False)
        defects = cv2.convexityDefects(contour, hull)
    except cv2.error:  # self-intersecting hull indices on degenerate contours
        return solidity, 0
    if defects is None:
        return solidity, 0
    depths = defects.reshape(-1, 4)[:, 3] / 256.0
    return solidity, int((depths > depth * width).sum())


def cluster_reasons(
    area: int, concavities: int, median: float, use_area: bool, config: SegmentConfig
) -> list[str]:
    """Which cluster rules (module docstring) fire for one component; empty: a single object.

    Args:
        area, concavities: the component's.
        median: reference area (median of the other objects).
        use_area: apply the area conditions (enough objects for a median).
        config: thresholds.
    """
    reasons: list[str] = []
    if use_area and area > config.cluster_area_factor * median:
        reasons.append("large_area")
    big = (not use_area) or area > config.bent_area_factor * median
    if big and concavities >= config.min_concavities:
        reasons.append("branched")
    return reasons
