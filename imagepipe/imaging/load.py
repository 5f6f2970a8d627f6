"""Opening an upload: the format allow-list (on content), the pixel limit, orientation,
animation and metadata — all from the header where possible, before any pixel is decoded."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Iterator

from PIL import Image

from imagepipe.errors import (
    CORRUPT,
    EMPTY_UPLOAD,
    TOO_MANY_PIXELS,
    UNSUPPORTED_FORMAT,
    PermanentError,
    decode_error,
)
from imagepipe.formats import FORMAT_TO_MIME, SNIFF_BYTES, sniff
from imagepipe.imaging import geometry

LOGGER = logging.getLogger(__name__)

# Pillow's decoder name -> the format name of manifests. MPO is a JPEG with extra frames (phones
# write it); Pillow's JPEG decoder hands it over as MPO and we use its first frame.
SOURCE_FORMATS = {
    "JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "HEIF": "heic",
}
BASE_DECODERS = ("JPEG", "PNG", "WEBP", "GIF")
_HEIF = "HEIF"  # the decoder name pillow-heif registers, when it is installed

ORIENTATION_TAG = 0x0112
ORIENTATIONS = range(1, 9)

# Image.info keys that carry metadata -> the name reported in ``stripped``.
_METADATA_KEYS = {
    "exif": "exif",
    "xmp": "xmp",
    "XML:com.adobe.xmp": "xmp",  # PNG's iTXt spelling
    "comment": "comment",
    "photoshop": "iptc",  # JPEG APP13: IPTC captions, bylines, locations
}


@dataclass(frozen=True)
class Opened:
    image: Image.Image  # not yet decoded (but for formats that keep EXIF after the pixels)
    format: str  # as in manifests: jpeg, png, webp, gif, heic
    orientation: int  # EXIF 1-8
    animated: bool
    frames: int | None  # when the container says so cheaply (not for GIF: that means a scan)
    metadata: tuple[str, ...]  # what the source carries and no variant will

    @property
    def is_jpeg(self) -> bool:
        return self.image.format in ("JPEG", "MPO")

    @property
    def upright_size(self) -> tuple[int, int]:
        return geometry.upright_size(self.image.size, self.orientation)


def allowed_decoders() -> tuple[str, ...]:
    """JPEG, PNG, WebP and GIF; HEIC too where the optional pillow-heif plugin is installed."""
    return BASE_DECODERS + ((_HEIF,) if _heif_available() else ())


def allowed_mime_types(decoders: tuple[str, ...]) -> frozenset[str]:
    """The MIME types (as ``formats.sniff`` names them) of the formats ``decoders`` read."""
    return frozenset(FORMAT_TO_MIME[SOURCE_FORMATS[decoder]] for decoder in decoders)


def _heif_available() -> bool:
    if _HEIF in Image.OPEN:
        return True
    try:
        import pillow_heif  # optional: not in the Lambda package
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return _HEIF in Image.OPEN


@contextlib.contextmanager
def _decoding() -> Iterator[None]:
    """Pillow's complaints while it reads the header or pixels are about the file: a
    permanent ``truncated`` or ``corrupt`` (``errors.decode_error``). Only here: the same
    exception types from an encoder are not the upload's fault."""
    try:
        yield
    except Exception as exc:
        error = decode_error(exc)
        if error is None:
            raise
        raise error from exc


def open_upload(data: bytes, max_pixels: int) -> Opened:
    with _decoding():
        return _open_upload(data, max_pixels)


def _open_upload(data: bytes, max_pixels: int) -> Opened:
    image = _open(data)
    if image.width * image.height > max_pixels:
        raise PermanentError(
            TOO_MANY_PIXELS,
            f"{image.width}x{image.height} is over the limit of {max_pixels} pixels",
        )
    animated = bool(getattr(image, "is_animated", False))
    frames = None
    if animated:
        if image.format != "GIF":  # APNG (acTL) and WebP (ANIM) state it in the header
            frames = getattr(image, "n_frames", None)
        image.seek(0)
    if image.format not in ("JPEG", "MPO"):
        # JPEG EXIF comes with the header; a PNG may keep it after the pixels, and Pillow
        # decodes to find it. Either way this is after the pixel check.
        image.load()
    return Opened(
        image=image,
        format=SOURCE_FORMATS.get(image.format or "", (image.format or "").lower()),
        orientation=_orientation(image),
        animated=animated,
        frames=frames,
        metadata=_metadata_names(image),
    )


def _open(data: bytes) -> Image.Image:
    if not data:
        raise PermanentError(EMPTY_UPLOAD, "the upload is empty")
    try:
        # Pillow warns over MAX_IMAGE_PIXELS and raises over twice that, in open(), from the
        # header. Make the warning an error too. catch_warnings swaps a process-wide filter list
        # (not thread-safe before Python 3.14); a lost race only turns the error back into a
        # warning, and open_upload still applies our own limit (lower, by default).
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=allowed_decoders())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PermanentError(TOO_MANY_PIXELS, str(exc)) from None
    except Image.UnidentifiedImageError:
        # Pillow says "unidentified" both for other formats and for a broken header of ours.
        decoders = allowed_decoders()
        if sniff(data[:SNIFF_BYTES]) in allowed_mime_types(decoders):
            raise PermanentError(CORRUPT, "image header is unreadable") from None
        names = "JPEG, PNG, WebP, GIF" + (" or HEIC" if _HEIF in decoders else "")
        raise PermanentError(UNSUPPORTED_FORMAT, f"not a {names} image") from None


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block must not fail an image that decodes fine
        LOGGER.debug("unreadable EXIF, taking orientation 1", exc_info=True)
        return 1
    return value if value in ORIENTATIONS else 1


def _metadata_names(image: Image.Image) -> tuple[str, ...]:
    names = [name for key, name in _METADATA_KEYS.items() if image.info.get(key)]
    if getattr(image, "text", None):  # PNG tEXt/iTXt/zTXt chunks
        names.append("text")
    return tuple(dict.fromkeys(names))


def decode(opened: Opened, scale: float, gap: float) -> float:
    """Decode the pixels; returns by how much the decoded image is smaller than the original.

    A JPEG is decoded at 1/2, 1/4 or 1/8 size (libjpeg's DCT scaling: much less work) when the
    largest variant (``scale``: its output pixels per source pixel) is still ``gap`` times
    smaller than that. The factor is the same on both axes, so it does not matter that draft()
    works on the stored axes, before any transpose.
    """
    image = opened.image
    reduction = 1.0
    size = draft_target(image.size, scale, gap) if opened.is_jpeg else None
    with _decoding():
        if size is not None:
            stored_width = image.width
            result = image.draft(None, size)
            if result:
                _, box = result  # the whole original, in the reduced image's pixels
                reduction = stored_width / box[2]
        image.load()
    return reduction


def draft_target(size: tuple[int, int], scale: float, gap: float) -> tuple[int, int] | None:
    """The smallest size a JPEG may be decoded at (DCT scaling halves at least), or None."""
    wanted = gap * scale
    if wanted > 0.5:
        return None
    return (max(1, math.ceil(size[0] * wanted)), max(1, math.ceil(size[1] * wanted)))
