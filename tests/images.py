"""Test images made in code: every file the imaging tests need, in a few milliseconds, no downloads.

Colours are flat on purpose, so a test can read a pixel and know what it should be even after
JPEG compression and resampling.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import ExifTags, Image

RED = (255, 0, 0)
BLUE = (30, 120, 200)
WHITE = (255, 255, 255)
ORIENTATION = 0x0112

# The transpose that stores an upright image so that applying EXIF orientation N restores it:
# the inverse of what the orientation asks a viewer to do.
_STORE_FOR = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # the viewer rotates 90° clockwise (ROTATE_270)
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def upright_with_marker(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A blue image with a red block in its top-left quarter."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, max(1, width // 4), max(1, height // 4)))
    return image.convert(mode)


def exif(orientation: int | None = None, gps: bool = False) -> Image.Exif:
    data = Image.Exif()
    if orientation is not None:
        data[ORIENTATION] = orientation
    if gps:
        data[0x010F] = "CameraMaker"  # Make
        info = data.get_ifd(ExifTags.IFD.GPSInfo)
        info[1] = "N"
        info[2] = (52.0, 31.0, 12.0)
        info[3] = "E"
        info[4] = (13.0, 24.0, 36.0)
    return data


def make_jpeg(
    width: int,
    height: int,
    *,
    orientation: int | None = None,
    mode: str = "RGB",
    gps: bool = False,
    xmp: bytes | None = None,
    comment: bytes | None = None,
    icc_profile: bytes | None = None,
    image: Image.Image | None = None,
    quality: int = 95,
) -> bytes:
    """A JPEG whose *upright* picture is ``image`` (default: blue with a red top-left marker),
    stored transformed so that applying ``orientation`` restores it."""
    upright = image if image is not None else upright_with_marker(width, height)
    store = _STORE_FOR.get(orientation)  # not `if store`: FLIP_LEFT_RIGHT is 0
    stored = upright if store is None else upright.transpose(store)
    stored = stored if stored.mode == mode else stored.convert(mode)
    options: dict = {"quality": quality}
    if orientation is not None or gps:
        options["exif"] = exif(orientation, gps)
    if xmp:
        options["xmp"] = xmp
    if comment:
        options["comment"] = comment
    if icc_profile:
        options["icc_profile"] = icc_profile
    return save(stored, "JPEG", **options)


def make_cmyk_jpeg(width: int, height: int, cmyk: tuple[int, int, int, int]) -> bytes:
    return save(Image.new("CMYK", (width, height), cmyk), "JPEG", quality=95)


def make_png(width: int, height: int, *, mode: str = "RGB", color=BLUE, **options) -> bytes:
    """A flat PNG in ``mode``: RGB, RGBA (give a 4-tuple colour), L, LA, ..."""
    return save(Image.new(mode, (width, height), color), "PNG", **options)


def make_rgba_png(width: int, height: int) -> bytes:
    """Left half opaque red, right half fully transparent."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, width // 2, height))
    return save(image, "PNG")


def make_palette_png(width: int, height: int, *, transparent: bool) -> bytes:
    """A P-mode PNG: left half red, right half blue (palette index 1), which a tRNS chunk makes
    fully transparent when ``transparent``."""
    image = Image.new("P", (width, height), 1)
    image.putpalette([255, 0, 0, *BLUE] + [0] * (256 * 3 - 6))
    image.paste(0, (0, 0, width // 2, height))
    return save(image, "PNG", **({"transparency": 1} if transparent else {}))


def make_png_16bit_grey(width: int, height: int, value: int) -> bytes:
    """A 16-bit greyscale PNG (Pillow opens it as I;16); ``value`` is 0..65535."""
    data = save(Image.new("I;16", (width, height), value), "PNG")
    assert data[24] == 16, "expected a 16-bit PNG"  # IHDR bit depth
    return data


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def make_png_header(width: int, height: int) -> bytes:
    """Only a PNG signature, an IHDR claiming width x height RGB and IEND: no pixel data at all,
    so decoding it could only fail. A decompression bomb in 57 bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def make_jpeg_claiming(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose frame header (SOF0) is patched to claim width x height."""
    data = bytearray(save(Image.new("RGB", (16, 16), BLUE), "JPEG"))
    sof = data.index(b"\xff\xc0")
    # SOF0: marker(2) length(2) precision(1) height(2) width(2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def make_corrupt_png(width: int, height: int) -> bytes:
    """A PNG whose IHDR checksum does not match: recognisable as PNG, unreadable."""
    data = bytearray(make_png(width, height))
    data[29] ^= 0xFF  # the IHDR CRC
    return bytes(data)


def make_corrupt_jpeg(width: int, height: int) -> bytes:
    """A JPEG whose Huffman table segment is garbage: its header cannot be read."""
    data = bytearray(save(upright_with_marker(width, height), "JPEG"))
    dht = data.index(b"\xff\xc4")
    data[dht + 4 : dht + 40] = b"\xff" * 36
    return bytes(data)


def make_png_bad_pixels(width: int, height: int) -> bytes:
    """A PNG with a sound header and a scrambled (but checksummed) IDAT: fails while decoding."""
    data = make_png(width, height, color=(1, 2, 3))
    start = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[start : start + 4])
    body = bytes(b ^ 0x5A for b in data[start + 8 : start + 8 + length])
    return data[:start] + png_chunk(b"IDAT", body) + data[start + 12 + length :]


def truncated(data: bytes, fraction: float = 0.5) -> bytes:
    return data[: int(len(data) * fraction)]


def make_gif(width: int, height: int) -> bytes:
    return save(Image.new("P", (width, height), 0), "GIF")


def make_bmp(width: int, height: int) -> bytes:
    return save(Image.new("RGB", (width, height), BLUE), "BMP")


def make_html_polyglot() -> bytes:
    """An HTML page (what a browser sniffing content would run) with a real JPEG inside it,
    meant to be uploaded as ``photo.jpg``."""
    return (
        b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script><!--"
        + make_jpeg(32, 32)
        + b"--></body></html>"
    )


def save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()
