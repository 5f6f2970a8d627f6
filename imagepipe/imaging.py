"""Imaging: decode an upload once, make every variant of the spec, encode them.

Pure functions over bytes (no S3, no broker), so the resize job, the CLI and tests share them.
Bad input raises ``PermanentError`` with a reason code.

What comes out, whatever went in (JPEG, PNG or WebP, in any mode Pillow opens them as):

- upright pixels (EXIF orientation 1-8 applied) and no metadata at all: no EXIF, XMP, IPTC,
  comments or PNG text. ``Rendered.stripped`` names what the source had.
- 8-bit L, LA, RGB or RGBA. ``Rendered.converted`` names each mode change (``P->RGB``,
  ``I;16->L``, ``CMYK->RGB``, ``RGBA->RGB`` for an alpha channel that is fully opaque, and
  ``thumb: RGBA->RGB on white`` where a variant's format cannot hold alpha).
- colour: an sRGB profile is dropped (untagged means sRGB); another RGB or grey profile is kept
  and embedded in every variant (converting it costs ~0.4 s for 12 MP); a CMYK profile goes with
  the naive CMYK->RGB conversion. ``stripped`` lists ``icc_profile`` when the variants carry none.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Sequence

from PIL import Image, ImageCms

from imagepipe.errors import (
    CORRUPT,
    EMPTY_UPLOAD,
    TOO_MANY_PIXELS,
    UNSUPPORTED_FORMAT,
    JobError,
    PermanentError,
    classify,
)
from imagepipe.formats import FORMAT_TO_MIME, SNIFF_BYTES, sniff
from imagepipe.spec import Variant

LOGGER = logging.getLogger(__name__)

ALLOWED_DECODERS = ("JPEG", "PNG", "WEBP")
# Pillow's decoder name -> the format name of manifests. MPO is a JPEG with extra frames (phones
# write it); Pillow's JPEG decoder hands it over as MPO and we use its first frame.
_SOURCE_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp"}
_ALLOWED_MIME = tuple(FORMAT_TO_MIME[name.lower()] for name in ALLOWED_DECODERS)

# Resample from an image at least this many times larger than the target (a JPEG draft or a
# bigger variant), never closer: Pillow's own thumbnail() default, which it documents as
# indistinguishable from resampling the full image.
REDUCING_GAP = 2.0
_EPSILON = 1e-9

ORIENTATION_TAG = 0x0112
# The transpose that makes a stored image upright, per EXIF orientation (as exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})

# Image.info keys that carry metadata -> the name reported in ``stripped``.
_METADATA_KEYS = {
    "exif": "exif",
    "xmp": "xmp",
    "XML:com.adobe.xmp": "xmp",  # PNG's iTXt spelling
    "comment": "comment",
    "photoshop": "iptc",  # JPEG APP13: IPTC captions, bylines, locations
}
_ALPHA_MODES = ("LA", "RGBA")
_SIXTEEN_BIT_GREY = ("I", "I;16", "I;16L", "I;16B", "I;16N")


@dataclass(frozen=True)
class SourceInfo:
    format: str
    width: int  # upright
    height: int
    mode: str  # as stored, before any conversion
    orientation: int
    icc_profile: str | None = None  # the source profile's description, if it had one

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "mode": self.mode,
            "orientation": self.orientation,
            "icc_profile": self.icc_profile,
        }


@dataclass(frozen=True)
class RenderedVariant:
    name: str
    data: bytes
    width: int
    height: int
    format: str  # jpeg | png | webp


@dataclass(frozen=True)
class Rendered:
    source: SourceInfo
    variants: tuple[RenderedVariant, ...]
    stripped: tuple[str, ...]
    converted: tuple[str, ...]


@dataclass(frozen=True)
class _Plan:
    """One variant in the upright source's pixel coordinates."""

    variant: Variant
    size: tuple[int, int]  # of the output
    box: tuple[float, float, float, float]  # the region of the source it shows
    scale: float  # output pixels per source pixel, at most 1


@dataclass(frozen=True)
class _Base:
    """An image to resample variants from, and how its pixels map to the source's."""

    image: Image.Image
    sx: float
    sy: float

    @property
    def scale(self) -> float:
        return min(self.sx, self.sy)


@dataclass(frozen=True)
class _Encoded:
    variant: RenderedVariant
    note: str | None  # for ``converted``: how it was flattened on white, if it was
    profiled: bool  # it carries the source's ICC profile


@dataclass(frozen=True)
class _Profile:
    data: bytes | None  # what every variant embeds
    description: str | None
    space: str | None  # "RGB" or "GRAY": the modes data may be embedded in


def render(data: bytes, variants: Sequence[Variant], *, max_pixels: int) -> Rendered:
    try:
        return _render(data, variants, max_pixels)
    except JobError:
        raise
    except Exception as exc:
        raise classify(exc) from exc


def _render(data: bytes, variants: Sequence[Variant], max_pixels: int) -> Rendered:
    image = _open(data)
    _check_pixels(image, max_pixels)
    stored_mode = image.mode
    orientation = _orientation(image)
    width, height = _upright_size(image.size, orientation)
    plans = [_plan(v, width, height) for v in variants]
    reduction = _decode(image, max((p.scale for p in plans), default=1.0))

    stripped = _metadata_names(image)
    icc = image.info.get("icc_profile")
    profile = _profile(icc, stored_mode)
    upright = _normalise(_upright(image, orientation))
    upright.info = {}  # nothing of the source's metadata may reach an encoder
    converted = () if upright.mode == stored_mode else (f"{stored_mode}->{upright.mode}",)

    images = _resample_all(_Base(upright, 1 / reduction, 1 / reduction), plans, width, height)
    encoded = [_encode(resized, plan.variant, profile) for plan, resized in zip(plans, images)]
    if icc and not all(e.profiled for e in encoded):
        stripped += ("icc_profile",)
    fmt = _SOURCE_FORMATS[image.format]
    return Rendered(
        source=SourceInfo(fmt, width, height, stored_mode, orientation, profile.description),
        variants=tuple(e.variant for e in encoded),
        stripped=stripped,
        converted=converted + tuple(e.note for e in encoded if e.note),
    )


# --- opening and checking ---------------------------------------------------------------------


def _open(data: bytes) -> Image.Image:
    if not data:
        raise PermanentError(EMPTY_UPLOAD, "the upload is empty")
    try:
        # Pillow warns over MAX_IMAGE_PIXELS and raises over twice that, in open(), from the
        # header. Make the warning an error too. catch_warnings swaps a process-wide filter list
        # (not thread-safe before Python 3.14); a lost race only turns the error back into a
        # warning, and _check_pixels still applies our own limit (lower, by default).
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=ALLOWED_DECODERS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PermanentError(TOO_MANY_PIXELS, str(exc)) from None
    except Image.UnidentifiedImageError:
        # Pillow says "unidentified" both for other formats and for a broken header of ours.
        if sniff(data[:SNIFF_BYTES]) in _ALLOWED_MIME:
            raise PermanentError(CORRUPT, "image header is unreadable") from None
        raise PermanentError(UNSUPPORTED_FORMAT, "not a JPEG, PNG or WebP image") from None


def _check_pixels(image: Image.Image, max_pixels: int) -> None:
    """Refuse from the header alone, before a single pixel is decoded."""
    if image.width * image.height > max_pixels:
        raise PermanentError(
            TOO_MANY_PIXELS,
            f"{image.width}x{image.height} is over the limit of {max_pixels} pixels",
        )


def _is_jpeg(image: Image.Image) -> bool:
    return image.format in ("JPEG", "MPO")


def _orientation(image: Image.Image) -> int:
    if not _is_jpeg(image):
        # JPEG EXIF comes with the header; a PNG may keep it after the pixels, and Pillow
        # decodes to find it. Either way this is after the pixel check.
        image.load()
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block must not fail an image that decodes fine
        LOGGER.debug("unreadable EXIF, taking orientation 1", exc_info=True)
        return 1
    return value if value in _UPRIGHT else 1


def _upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in _SWAPS_AXES else size


def _metadata_names(image: Image.Image) -> tuple[str, ...]:
    names = [name for key, name in _METADATA_KEYS.items() if image.info.get(key)]
    if getattr(image, "text", None):  # PNG tEXt/iTXt/zTXt chunks
        names.append("text")
    return tuple(dict.fromkeys(names))


# --- planning and decoding --------------------------------------------------------------------


def _plan(variant: Variant, width: int, height: int) -> _Plan:
    if variant.mode == "cover":
        return _plan_cover(variant, width, height)
    scale = min(1.0, variant.width / width, variant.height / height)
    # Clamp: a 10000x1 source in a 2048 box would round its height to 0.
    size = (
        min(variant.width, max(1, round(width * scale))),
        min(variant.height, max(1, round(height * scale))),
    )
    return _Plan(variant, size, (0.0, 0.0, float(width), float(height)), scale)


def _plan_cover(variant: Variant, width: int, height: int) -> _Plan:
    scale = max(variant.width / width, variant.height / height)
    if scale < 1:
        crop_w, crop_h = variant.width / scale, variant.height / scale
        left, top = (width - crop_w) / 2, (height - crop_h) / 2
        box = (left, top, left + crop_w, top + crop_h)
        return _Plan(variant, (variant.width, variant.height), box, scale)
    # Never upscale: the largest centred crop of the box's aspect ratio, pixel for pixel.
    ratio = variant.width / variant.height
    crop_w = max(1, min(width, round(height * ratio)))
    crop_h = max(1, min(height, round(crop_w / ratio)))
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return _Plan(variant, (crop_w, crop_h), (left, top, left + crop_w, top + crop_h), 1.0)


def _decode(image: Image.Image, scale: float) -> float:
    """Decode the pixels; returns by how much the decoded image is smaller than the original.

    A JPEG is decoded at 1/2, 1/4 or 1/8 size (libjpeg's draft mode: much less work) when the
    largest variant is still REDUCING_GAP times smaller than that. The factor is the same on
    both axes, so it does not matter that draft() works on the stored axes, before the transpose.
    """
    wanted = REDUCING_GAP * scale
    reduction = 1.0
    if _is_jpeg(image) and wanted <= 0.5:
        size = (max(1, math.ceil(image.width * wanted)), max(1, math.ceil(image.height * wanted)))
        stored_width = image.width
        result = image.draft(None, size)
        if result:
            _, box = result  # the whole original, in the reduced image's pixels
            reduction = stored_width / box[2]
    image.load()
    return reduction


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    if orientation not in _UPRIGHT:
        return image
    return image.transpose(_UPRIGHT[orientation])


def _normalise(image: Image.Image) -> Image.Image:
    """The image in L, LA, RGB or RGBA: what LANCZOS resizes and every encoder takes."""
    if image.mode in _SIXTEEN_BIT_GREY:
        # Scale 16 bits down to 8; convert("L") would clip everything above 255 to white. A tRNS
        # grey key is 16-bit and no longer matches after scaling, so it is dropped.
        scaled = image.convert("I").point(lambda v: v / 256).convert("L")
        scaled.info.pop("transparency", None)
        image = scaled
    grey = image.mode in ("1", "L", "LA")
    if image.has_transparency_data:
        return _drop_opaque_alpha(_convert(image, "LA" if grey else "RGBA"))
    return _convert(image, "L" if grey else "RGB")


def _convert(image: Image.Image, mode: str) -> Image.Image:
    return image if image.mode == mode else image.convert(mode)  # convert() copies even then


def _drop_opaque_alpha(image: Image.Image) -> Image.Image:
    """An alpha channel that is 255 everywhere carries nothing: the variants can be JPEG."""
    if image.getchannel("A").getextrema() == (255, 255):
        return image.convert(image.mode[:-1])
    return image


# --- colour profile ---------------------------------------------------------------------------


def _profile(icc: bytes | None, stored_mode: str) -> _Profile:
    """Keep a profile the variants can carry unless it is sRGB, which untagged already means."""
    if not icc:
        return _Profile(None, None, None)
    try:
        description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        LOGGER.debug("unreadable ICC profile dropped", exc_info=True)
        return _Profile(None, "(unreadable)", None)
    description = description.strip() or "(unnamed)"
    space = icc[16:20].decode("latin-1").strip()  # ICC header: data colour space signature
    if "srgb" in description.lower() or space not in ("RGB", "GRAY") or stored_mode == "CMYK":
        return _Profile(None, description, None)
    return _Profile(icc, description, space)


# --- resampling and encoding ------------------------------------------------------------------


def _resample_all(source: _Base, plans: list[_Plan], width: int, height: int) -> list[Image.Image]:
    """Every plan's image, largest first, each from the smallest image already made that is
    still REDUCING_GAP times its size (a fit variant shows the whole source), else the source."""
    bases = [source]
    made: dict[int, Image.Image] = {}
    for index in sorted(range(len(plans)), key=lambda i: plans[i].scale, reverse=True):
        plan = plans[index]
        base = _pick_base(bases, plan.scale)
        made[index] = _resample(base, plan)
        if plan.variant.mode == "fit":
            image = made[index]
            bases.append(_Base(image, image.width / width, image.height / height))
    return [made[i] for i in range(len(plans))]


def _pick_base(bases: list[_Base], scale: float) -> _Base:
    enough = [b for b in bases if b.scale >= REDUCING_GAP * scale - _EPSILON]
    return min(enough, key=lambda b: b.scale) if enough else bases[0]


def _resample(base: _Base, plan: _Plan) -> Image.Image:
    image = base.image
    left, top, right, bottom = plan.box
    box = (
        max(0.0, left * base.sx),
        max(0.0, top * base.sy),
        min(float(image.width), right * base.sx),
        min(float(image.height), bottom * base.sy),
    )
    whole = box == (0.0, 0.0, float(image.width), float(image.height))
    if whole and plan.size == image.size:
        return image
    if all(v == int(v) for v in box) and (box[2] - box[0], box[3] - box[1]) == plan.size:
        return image.crop(tuple(int(v) for v in box))  # a pixel-for-pixel crop: no resampling
    return image.resize(plan.size, Image.Resampling.LANCZOS, box=box)


def _encode(image: Image.Image, variant: Variant, profile: _Profile) -> _Encoded:
    has_alpha = image.mode in _ALPHA_MODES
    fmt = variant.format if variant.format != "auto" else ("png" if has_alpha else "jpeg")
    note = None
    if fmt == "jpeg" and has_alpha:
        note = f"{variant.name}: {image.mode}->{image.mode[:-1]} on white"
        image = _flatten(image)
    elif fmt == "webp" and image.mode in ("L", "LA"):
        image = image.convert("RGBA" if has_alpha else "RGB")  # WebP has no grey
    options: dict = {}
    if fmt == "jpeg":
        options = {"quality": variant.quality, "optimize": True}  # +5 ms, about 9 % smaller
    elif fmt == "webp":
        options = {"quality": variant.quality}
    # PNG: no optimize=True, which took 3x as long (8 s for a 2048 px RGBA) for 3 % less.
    profiled = bool(profile.data) and (profile.space == "GRAY") == (image.mode in ("L", "LA"))
    if profiled:
        options["icc_profile"] = profile.data
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.upper(), **options)
    rendered = RenderedVariant(variant.name, buffer.getvalue(), image.width, image.height, fmt)
    return _Encoded(rendered, note, profiled)


def _flatten(image: Image.Image) -> Image.Image:
    background = Image.new(image.mode[:-1], image.size, "white")
    background.paste(image, mask=image.getchannel("A"))
    return background
