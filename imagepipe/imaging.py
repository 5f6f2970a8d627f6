"""Imaging: decode an upload once, make every variant of the spec, encode them.

Pure functions over bytes (no S3, no broker), so the resize job, the CLI and tests share them.
Bad input raises ``PermanentError`` with a reason code.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

from PIL import Image, ImageOps

from imagepipe.errors import TOO_MANY_PIXELS, UNSUPPORTED_FORMAT, PermanentError, classify
from imagepipe.spec import Variant

ALLOWED_DECODERS = ("JPEG", "PNG", "WEBP")


@dataclass(frozen=True)
class SourceInfo:
    format: str
    width: int
    height: int
    mode: str
    orientation: int

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "mode": self.mode,
            "orientation": self.orientation,
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


def render(data: bytes, variants: Sequence[Variant], *, max_pixels: int) -> Rendered:
    try:
        return _render(data, variants, max_pixels)
    except PermanentError:
        raise
    except Exception as exc:
        raise classify(exc) from exc


def _render(data: bytes, variants: Sequence[Variant], max_pixels: int) -> Rendered:
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_DECODERS)
    except Image.UnidentifiedImageError:
        raise PermanentError(UNSUPPORTED_FORMAT, "not a JPEG, PNG or WebP image") from None
    if image.width * image.height > max_pixels:
        raise PermanentError(
            TOO_MANY_PIXELS,
            f"{image.width}x{image.height} is over the limit of {max_pixels} pixels",
        )
    source_format = image.format.lower()
    orientation = image.getexif().get(0x0112, 1)
    stripped = _metadata_names(image)
    image.load()
    upright = ImageOps.exif_transpose(image)
    has_alpha = upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info
    working = upright.convert("RGBA" if has_alpha else "RGB")
    converted = () if working.mode == image.mode else (f"{image.mode}->{working.mode}",)
    rendered = tuple(_make_variant(working, v, has_alpha) for v in variants)
    return Rendered(
        source=SourceInfo(source_format, upright.width, upright.height, image.mode, orientation),
        variants=rendered,
        stripped=stripped,
        converted=converted,
    )


def _make_variant(image: Image.Image, variant: Variant, has_alpha: bool) -> RenderedVariant:
    if variant.mode == "cover":
        scale = max(variant.width / image.width, variant.height / image.height)
        if scale >= 1:  # never upscale: crop the largest box of the wanted aspect instead
            ratio = variant.width / variant.height
            w = min(image.width, round(image.height * ratio))
            h = min(image.height, round(w / ratio))
            out = ImageOps.fit(image, (w, h), Image.Resampling.LANCZOS)
        else:
            out = ImageOps.fit(image, (variant.width, variant.height), Image.Resampling.LANCZOS)
    else:
        out = image.copy()
        out.thumbnail((variant.width, variant.height), Image.Resampling.LANCZOS)
    fmt = variant.format
    if fmt == "auto":
        fmt = "png" if has_alpha else "jpeg"
    if fmt == "jpeg" and out.mode != "RGB":
        out = _flatten(out)
    buffer = io.BytesIO()
    options = {"quality": variant.quality} if fmt in ("jpeg", "webp") else {"optimize": True}
    out.save(buffer, format=fmt.upper(), **options)
    return RenderedVariant(variant.name, buffer.getvalue(), out.width, out.height, fmt)


def _flatten(image: Image.Image) -> Image.Image:
    background = Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image, mask=image.getchannel("A") if "A" in image.getbands() else None)
    return background


def _metadata_names(image: Image.Image) -> tuple[str, ...]:
    names = []
    if image.getexif():
        names.append("exif")
    for key in ("icc_profile", "xmp", "comment"):
        if image.info.get(key):
            names.append(key)
    return tuple(names)
