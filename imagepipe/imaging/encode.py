"""Encoding one variant: the output format, alpha where the format has none, encoder options.

Nothing of the source's metadata reaches an encoder: images carry an empty ``info`` and no
``exif``, ``icc_profile``, ``xmp`` or ``comment`` is passed.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

from PIL import Image, features

from imagepipe.errors import ConfigError
from imagepipe.imaging import vips
from imagepipe.imaging.colour import ALPHA_MODES
from imagepipe.spec import Variant

# Our defaults where they differ from Pillow's (a variant's ``options`` override them):
_DEFAULTS = {
    "jpeg": {},  # optimize: see _OPTIMIZE_JPEG_UP_TO
    # PNG: no optimize=True, which took 3x as long (8 s for a 2048 px RGBA) for 3 % less.
    # Level 4, not Pillow's 6: Pillow's wheels deflate with the system's zlib (1.2 here and in
    # the Lambda runtime), whose level 6 took 1.6x as long on a 2048 px RGBA photo for 0.6 %
    # more bytes, and 0.4 % fewer on flat graphics.
    "png": {"compress_level": 4},
    "webp": {"method": 4},  # method: see _WEBP_FAST_ABOVE
    "avif": {"speed": 8},  # Pillow's 6 took 3x as long for ~3 % less
}
_NO_GREY = ("webp", "avif")
# JPEG Huffman tables fitted to the image (optimize), by default only up to this many pixels.
# Measured on a 12 MP photo's default variants at q82: 5 % smaller at 150x150 and 3 % at 256 px
# for under 0.3 ms, but 1 % at 1024 px (+3 ms) and 0.9 % at 2048 px for +14 ms (16 % of a
# render with the vips engine).
_OPTIMIZE_JPEG_UP_TO = 512 * 512
# libvips' PNG writer deflates with zlib-ng, whose level 7 gave the bytes of Pillow's level 6
# (+0.2 % on a 2048 px RGBA photo) in 42 % of its time; levels 2-6 took 30 % but wrote 10 % more.
_VIPS_PNG_LEVEL = 7
# WebP method 2 (not 4) above this many pixels. Measured at q82 on a 12 MP photo's variants:
# at 2048x1536 method 4 took 2.1x as long as method 2 for 4.5 % fewer bytes (the largest
# variant was then most of a WebP render); at 1024x768 2.1x for 2.8 %, at 512x384 2x for 2.3 %.
_WEBP_FAST_ABOVE = 1024 * 1024


@dataclass(frozen=True)
class Encoded:
    name: str
    data: bytes
    width: int
    height: int
    format: str  # jpeg | png | webp | avif
    note: str | None  # for ``converted``: how it was flattened, if it was


def output_format(variant: Variant, has_alpha: bool) -> str:
    if variant.format != "auto":
        return variant.format
    return "png" if has_alpha else "jpeg"


@functools.lru_cache(maxsize=1)
def can_write_avif() -> bool:
    return bool(features.check("avif"))


def encode(image: Image.Image, variant: Variant, engine: str = "pillow") -> Encoded:
    """One variant's file. With the vips engine PNG is written by libvips (see
    ``vips.save_png``); the pixels are the same either way."""
    has_alpha = image.mode in ALPHA_MODES
    fmt = output_format(variant, has_alpha)
    if fmt == "avif" and not can_write_avif():  # a backstop: Runtime checks the spec at start
        raise ConfigError(f"variant {variant.name}: this Pillow cannot write AVIF")
    note = None
    if fmt == "jpeg" and has_alpha:
        note = f"{variant.name}: {image.mode}->{image.mode[:-1]} on {variant.background}"
        image = _flatten(image, variant.background_rgb)
    elif fmt in _NO_GREY and image.mode in ("L", "LA"):
        image = image.convert("RGBA" if has_alpha else "RGB")
    options = {**_DEFAULTS[fmt], **variant.options_for(fmt)}
    pixels = image.width * image.height
    if fmt == "jpeg":
        options.setdefault("optimize", pixels <= _OPTIMIZE_JPEG_UP_TO)
    if fmt == "webp" and pixels > _WEBP_FAST_ABOVE and "method" not in variant.options_for(fmt):
        options["method"] = 2
    if fmt != "png":
        options["quality"] = variant.quality
    if fmt == "png" and engine == "vips":
        asked = variant.options_for("png")
        level = 9 if asked.get("optimize") else asked.get("compress_level", _VIPS_PNG_LEVEL)
        return Encoded(variant.name, vips.save_png(image, level), image.width, image.height,
                       fmt, note)
    image.info = {}  # an encoder may look there for metadata to write
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.upper(), **options)
    return Encoded(variant.name, buffer.getvalue(), image.width, image.height, fmt, note)


def _flatten(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    mode = image.mode[:-1]
    r, g, b = background
    colour = background if mode == "RGB" else round(0.299 * r + 0.587 * g + 0.114 * b)  # luma
    flat = Image.new(mode, image.size, colour)
    flat.paste(image, mask=image.getchannel("A"))
    return flat
