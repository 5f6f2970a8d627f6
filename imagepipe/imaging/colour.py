"""Colour: every mode Pillow opens our formats in, brought to 8-bit L, LA, RGB or RGBA in sRGB.

Two steps, so the expensive one runs on few pixels:

- ``normalise`` runs on the decoded source, before resampling: what LANCZOS cannot resample
  (palette, 1-bit, 16-bit grey) becomes 8-bit; an alpha channel that is opaque everywhere is
  dropped. CMYK stays CMYK: it resamples fine and converts faster once smaller.
- ``ColourPlan.apply`` runs on each image resampled from the source (the variants made from
  other variants are already converted): an ICC-profiled source is converted to sRGB with
  LittleCMS (ImageCms); CMYK goes through its profile if it has one, else through Pillow's
  plain formula. An sRGB profile needs no conversion: untagged means sRGB, and no variant
  embeds a profile.
"""

from __future__ import annotations

import functools
import io
import logging
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageMath

LOGGER = logging.getLogger(__name__)

ALPHA_MODES = ("LA", "RGBA")
_SIXTEEN_BIT_GREY = ("I", "I;16", "I;16L", "I;16B", "I;16N")
# ICC header colour space signature -> the modes whose pixels it describes
_PROFILE_MODES = {"RGB": ("RGB", "RGBA"), "GRAY": ("L", "LA"), "CMYK": ("CMYK",)}


@dataclass(frozen=True)
class ColourPlan:
    description: str | None  # the source profile's, if it had one
    transform_bytes: bytes | None  # the profile to convert from, when it is not sRGB
    space: str | None  # its colour space: RGB, GRAY or CMYK

    @property
    def converts(self) -> bool:
        return self.transform_bytes is not None

    def apply(self, image: Image.Image) -> Image.Image:
        if self.transform_bytes is not None and image.mode in _PROFILE_MODES.get(self.space or "", ()):
            return _to_srgb(image, self.transform_bytes)
        if image.mode == "CMYK":
            return image.convert("RGB")
        return image


def plan(icc: bytes | None, mode: str) -> ColourPlan:
    """How to bring pixels in ``mode`` tagged with ``icc`` (or not) to sRGB."""
    if not icc:
        return ColourPlan(None, None, None)
    try:
        description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        LOGGER.debug("unreadable ICC profile dropped", exc_info=True)
        return ColourPlan("(unreadable)", None, None)
    description = description.strip() or "(unnamed)"
    space = icc[16:20].decode("latin-1").strip()  # ICC header: data colour space signature
    if "srgb" in description.lower() or mode not in _PROFILE_MODES.get(space, ()):
        # sRGB already, or a profile that does not describe these pixels (an RGB profile on a
        # grey JPEG): there is nothing right to convert with.
        return ColourPlan(description, None, space or None)
    if mode == "LA":  # LittleCMS has no grey+alpha; gamma 2.2 grey is close to sRGB's curve
        return ColourPlan(description, None, space)
    try:
        _transform(icc, mode)  # fail here, with the profile dropped, rather than per variant
    except (ImageCms.PyCMSError, OSError, ValueError):
        LOGGER.debug("unusable ICC profile dropped", exc_info=True)
        return ColourPlan(description, None, space)
    return ColourPlan(description, icc, space)


@functools.lru_cache(maxsize=16)  # a profile per camera or app: few, and ~1 ms each to build
def _transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform:
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    out_mode = {"L": "RGB", "CMYK": "RGB"}.get(mode, mode)
    return ImageCms.buildTransform(
        source, _srgb(), mode, out_mode, renderingIntent=ImageCms.Intent.PERCEPTUAL
    )


@functools.lru_cache(maxsize=1)
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    converted = ImageCms.applyTransform(image, _transform(icc, image.mode))
    if converted is None:  # only an in-place transform returns nothing
        raise RuntimeError("ImageCms returned no image")
    if image.mode == "L":  # a grey profile: neutral in, neutral out
        converted = converted.convert("L")
    return converted


def normalise(image: Image.Image) -> Image.Image:
    """The decoded source in L, LA, RGB, RGBA or CMYK: what LANCZOS resamples."""
    if image.mode in _SIXTEEN_BIT_GREY:
        image = _eight_bit_grey(image)
    if image.mode == "CMYK":
        return image
    grey = image.mode in ("1", "L", "LA")
    if image.has_transparency_data:
        return _drop_opaque_alpha(_convert(image, "LA" if grey else "RGBA"))
    return _convert(image, "L" if grey else "RGB")


def _eight_bit_grey(image: Image.Image) -> Image.Image:
    """16-bit grey scaled to 8 bits (convert("L") would clip everything above 255 to white),
    as LA where a tRNS key makes samples transparent. The key names one 16-bit value: it is
    matched before scaling, which merges 256 values into each 8-bit one."""
    wide = image.convert("I")
    grey = wide.point(lambda v: v / 256).convert("L")
    key = image.info.get("transparency")
    if isinstance(key, int):
        alpha = ImageMath.lambda_eval(lambda args: (args["wide"] != key) * 255, wide=wide)
        grey.putalpha(alpha.convert("L"))
    return grey


def _convert(image: Image.Image, mode: str) -> Image.Image:
    return image if image.mode == mode else image.convert(mode)  # convert() copies even then


def _drop_opaque_alpha(image: Image.Image) -> Image.Image:
    """An alpha channel that is 255 everywhere carries nothing: the variants can be JPEG."""
    if image.getchannel("A").getextrema() == (255, 255):
        return image.convert(image.mode[:-1])
    return image
