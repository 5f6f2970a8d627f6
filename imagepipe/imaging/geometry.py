"""Where each variant's pixels come from: its output size and the region of the source it shows.

Plans are made in the upright picture's coordinates (what the spec means), then moved onto the
stored axes: resampling the stored pixels and turning only the small result upright saves a
full-size transpose (~45 ms for 12 MP) on every rotated phone photo.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from imagepipe.spec import Variant

# The transpose that makes a stored image upright, per EXIF orientation (as exif_transpose).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})
# How far along each axis a crop sits, by gravity: 0 left/top, 0.5 centre, 1 right/bottom.
_GRAVITY = {
    "centre": (0.5, 0.5),
    "north": (0.5, 0.0),
    "south": (0.5, 1.0),
    "east": (1.0, 0.5),
    "west": (0.0, 0.5),
    "northeast": (1.0, 0.0),
    "northwest": (0.0, 0.0),
    "southeast": (1.0, 1.0),
    "southwest": (0.0, 1.0),
}

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Plan:
    """One variant, on the stored axes."""

    variant: Variant
    size: tuple[int, int]  # of the output, before it is turned upright
    box: Box  # the region of the stored source it shows
    scale: tuple[float, float]  # output pixels per source pixel, per axis

    @property
    def largest_scale(self) -> float:
        return max(self.scale)


def plan(variant: Variant, upright: tuple[int, int], orientation: int) -> Plan:
    size, box = _upright_plan(variant, *upright)
    scale = (size[0] / (box[2] - box[0]), size[1] / (box[3] - box[1]))
    if orientation in _SWAPS_AXES:
        size, scale = (size[1], size[0]), (scale[1], scale[0])
    return Plan(variant, size, _to_stored(box, upright, orientation), scale)


def upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in _SWAPS_AXES else size


def turn_upright(image: Image.Image, orientation: int) -> Image.Image:
    return image.transpose(UPRIGHT[orientation]) if orientation in UPRIGHT else image


def _upright_plan(variant: Variant, width: int, height: int) -> tuple[tuple[int, int], Box]:
    whole = (0.0, 0.0, float(width), float(height))
    if variant.mode == "fit":
        scale = min(variant.width / width, variant.height / height)
        scale = scale if variant.upscale else min(1.0, scale)
        return _clamped(width * scale, height * scale, variant), whole
    if variant.mode == "exact":
        shrink = 1.0 if variant.upscale else min(1.0, width / variant.width, height / variant.height)
        return _clamped(variant.width * shrink, variant.height * shrink, variant), whole
    return _cover(variant, width, height)


def _clamped(w: float, h: float, variant: Variant) -> tuple[int, int]:
    # At least 1 px (a 10000x1 source in a 2048 box would round its height to 0), at most the box.
    return (min(variant.width, max(1, round(w))), min(variant.height, max(1, round(h))))


def _cover(variant: Variant, width: int, height: int) -> tuple[tuple[int, int], Box]:
    gx, gy = _GRAVITY[variant.gravity]
    scale = max(variant.width / width, variant.height / height)
    if scale < 1 or variant.upscale:
        crop_w, crop_h = variant.width / scale, variant.height / scale
        left, top = (width - crop_w) * gx, (height - crop_h) * gy
        return (variant.width, variant.height), (left, top, left + crop_w, top + crop_h)
    # Never upscale: the largest crop of the box's aspect ratio, pixel for pixel.
    ratio = variant.width / variant.height
    crop_w = max(1, min(width, round(height * ratio)))
    crop_h = max(1, min(height, round(crop_w / ratio)))
    left, top = round((width - crop_w) * gx), round((height - crop_h) * gy)
    return (crop_w, crop_h), (left, top, left + crop_w, top + crop_h)


def _to_stored(box: Box, upright: tuple[int, int], orientation: int) -> Box:
    """The same region on the stored axes: where ``turn_upright`` takes each corner from."""
    w, h = upright
    corners = [_stored_point(x, y, w, h, orientation) for x in box[0::2] for y in box[1::2]]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return (min(xs), min(ys), max(xs), max(ys))


def _stored_point(x: float, y: float, w: int, h: int, orientation: int) -> tuple[float, float]:
    # (x, y) in the upright picture of size w x h -> the same point in the stored pixels
    return {
        1: (x, y),
        2: (w - x, y),
        3: (w - x, h - y),
        4: (x, h - y),
        5: (y, x),
        6: (y, w - x),
        7: (h - y, w - x),
        8: (h - y, x),
    }.get(orientation, (x, y))
