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


def make_png_16bit_grey_keyed(width: int, height: int, key: int) -> bytes:
    """A 16-bit grey PNG with a tRNS key, like Pillow's Tests/images/i_trns.png: the left third
    is ``key`` (transparent), the middle third ``key + 1`` (opaque, though it scales to the same
    8-bit value) and the rest ``key + 40000``."""
    image = Image.new("I", (width, height), key + 40000)  # paste() on I;16 mangles the value
    image.paste(key + 1, (width // 3, 0, 2 * width // 3, height))
    image.paste(key, (0, 0, width // 3, height))
    data = save(image.convert("I;16"), "PNG", transparency=key)
    assert data[24] == 16 and b"tRNS" in data, "expected a 16-bit PNG with a tRNS key"
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


# --- ICC profiles, written by hand: ImageCms can make only sRGB, Lab and XYZ ones -------------

_D50 = (0.9642, 1.0, 0.8249)
# sRGB's colorants adapted to D50 (what its profile's rXYZ/gXYZ/bXYZ tags hold)
SRGB_RED_XYZ = (0.4361, 0.2225, 0.0139)
SRGB_GREEN_XYZ = (0.3851, 0.7169, 0.0971)
SRGB_BLUE_XYZ = (0.1431, 0.0606, 0.7141)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(xyz) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in xyz)


def _curve_tag(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"


def _desc_tag(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    return (
        b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text
        + struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + b"\0" * 67
    )


def _lut8_tag(in_channels: int, out_channels: int, grid: list[tuple[int, ...]]) -> bytes:
    """An mft1 lut with identity curves, a 2-point-per-axis CLUT ``grid`` and identity matrix."""
    identity = [1, 0, 0, 0, 1, 0, 0, 0, 1]
    ramp = bytes(range(256))
    return (
        b"mft1\0\0\0\0" + bytes([in_channels, out_channels, 2, 0])
        + b"".join(_s15(v) for v in identity)
        + ramp * in_channels + b"".join(bytes(node) for node in grid) + ramp * out_channels
    )


def make_icc(space: bytes, pcs: bytes, device_class: bytes, description: str, tags: dict) -> bytes:
    tags = {b"desc": _desc_tag(description), b"wtpt": _xyz_tag(_D50), **tags}
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    entries, blobs = [], b""
    for signature, body in tags.items():
        body += b"\0" * (-len(body) % 4)
        entries.append(struct.pack(">4sII", signature, offset + len(blobs), len(body)))
        blobs += body
    size = offset + len(blobs)
    header = (
        struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + device_class
        + space + pcs + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0)
        + b"".join(_s15(v) for v in _D50) + b"\0" * 48
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + b"".join(entries) + blobs


def make_swapped_rgb_icc() -> bytes:
    """An RGB profile whose red channel is sRGB's green and whose green is sRGB's red: a source
    pixel (255, 0, 0) tagged with it is green. Converting is the only way to get that right."""
    return make_icc(b"RGB ", b"XYZ ", b"mntr", "Swapped RGB", {
        b"rXYZ": _xyz_tag(SRGB_GREEN_XYZ), b"gXYZ": _xyz_tag(SRGB_RED_XYZ),
        b"bXYZ": _xyz_tag(SRGB_BLUE_XYZ),
        b"rTRC": _curve_tag(2.2), b"gTRC": _curve_tag(2.2), b"bTRC": _curve_tag(2.2),
    })


def make_linear_grey_icc() -> bytes:
    """A grey profile with gamma 1.0: a stored 128 means 50 % light, which sRGB writes as ~188."""
    return make_icc(b"GRAY", b"XYZ ", b"mntr", "Linear Grey", {b"kTRC": _curve_tag(1.0)})


def make_green_cmyk_icc() -> bytes:
    """A CMYK profile that maps every ink combination to one green (Lab 60, -60, 50): a CMYK
    image tagged with it is green through the profile, and anything but green without it."""
    lab = (round(60 * 255 / 100), 128 - 60, 128 + 50)
    return make_icc(b"CMYK", b"Lab ", b"prtr", "Green Ink", {b"A2B0": _lut8_tag(4, 3, [lab] * 16)})


def make_ycck_jpeg(width: int, height: int, cmyk: tuple[int, int, int, int]) -> bytes:
    """A YCCK JPEG (Adobe APP14 transform 2, what Photoshop writes for CMYK) whose pixels decode
    to ``cmyk``. Pillow writes only plain CMYK, so the samples are made YCCK by hand: YCbCr of
    (C, M, Y) and K, stored inverted as Adobe does, then the transform flag is set."""
    c, m, y, k = cmyk
    ycc = Image.new("RGB", (1, 1), (c, m, y)).convert("YCbCr").getpixel((0, 0))
    stored = Image.new("CMYK", (width, height), tuple(255 - v for v in ycc) + (k,))
    data = bytearray(save(stored, "JPEG", quality=95))
    adobe = data.index(b"\xff\xee")
    # APP14: marker(2) length(2) "Adobe"(5) version(2) flags0(2) flags1(2) transform(1)
    assert data[adobe + 4 : adobe + 9] == b"Adobe" and data[adobe + 15] == 0
    data[adobe + 15] = 2
    return bytes(data)


# --- animated and other containers -------------------------------------------------------------


def make_animated(fmt: str, width: int, height: int, colours: list[tuple[int, int, int]]) -> bytes:
    """An animated GIF, PNG (APNG) or WebP, one flat frame per colour."""
    frames = [Image.new("RGB", (width, height), c) for c in colours]
    options = {"lossless": True} if fmt == "WEBP" else {}
    return save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0,
                **options)


def make_transparent_gif(width: int, height: int) -> bytes:
    """Left half red, right half transparent (palette index 1)."""
    image = Image.new("P", (width, height), 1)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    image.paste(0, (0, 0, width // 2, height))
    return save(image, "GIF", transparency=1)


def make_gif_claiming(width: int, height: int) -> bytes:
    """A 4x4 GIF whose logical screen claims width x height."""
    data = bytearray(make_gif(4, 4))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def make_broken_exif_jpeg(width: int, height: int) -> bytes:
    """A JPEG whose EXIF IFD0 claims 255 entries (it has 1): Pillow warns as it parses it."""
    data = bytearray(make_jpeg(width, height, orientation=1))
    tiff = data.index(b"Exif\x00\x00") + 6
    byte_order = "<" if data[tiff : tiff + 2] == b"II" else ">"
    (ifd,) = struct.unpack(byte_order + "I", data[tiff + 4 : tiff + 8])
    data[tiff + ifd : tiff + ifd + 2] = struct.pack(byte_order + "H", 255)
    return bytes(data)


def make_heic_header() -> bytes:
    """The start of an HEIC file (an ISO-BMFF ftyp box, brand heic): enough to be recognised."""
    ftyp = b"ftypheic" + b"\0\0\0\0" + b"mif1heic"
    return struct.pack(">I", len(ftyp) + 4) + ftyp + b"\0" * 64


# --- the corpus: every kind of file the imaging engine must survive ----------------------------

DONE = None  # expected outcome: variants made
BAD_DATA = frozenset({"truncated", "corrupt"})


def corpus() -> dict[str, tuple[bytes, frozenset[str] | None]]:
    """File name -> (bytes, the failure codes it may get, or DONE). Small: ~1 MB in all."""
    import random

    one = lambda code: frozenset({code})  # noqa: E731
    items: dict[str, tuple[bytes, frozenset[str] | None]] = {}
    for orientation in range(1, 9):
        items[f"orientation-{orientation}.jpg"] = (make_jpeg(300, 200, orientation=orientation), DONE)
    green_ink = make_green_cmyk_icc()
    noisy = upright_with_marker(120, 90).effect_spread(6)
    items.update({
        "cmyk.jpg": (make_cmyk_jpeg(64, 48, (0, 255, 255, 0)), DONE),
        "ycck.jpg": (make_ycck_jpeg(64, 48, (255, 0, 0, 0)), DONE),
        "cmyk-profile.jpg": (save(Image.new("CMYK", (40, 30)), "JPEG", icc_profile=green_ink), DONE),
        "grey16.png": (make_png_16bit_grey(40, 30, 40000), DONE),
        "rgb16.png": (_rgb16_png(40, 30), DONE),
        "icc-swapped.jpg": (make_jpeg(80, 60, icc_profile=make_swapped_rgb_icc()), DONE),
        "icc-grey.jpg": (make_jpeg(80, 60, mode="L", icc_profile=make_linear_grey_icc()), DONE),
        "icc-broken.jpg": (make_jpeg(80, 60, icc_profile=b"junk" * 40), DONE),
        "palette-trns.png": (make_palette_png(60, 40, transparent=True), DONE),
        "transparent.gif": (make_transparent_gif(60, 40), DONE),
        "rgba.png": (make_rgba_png(60, 40), DONE),
        "la.png": (save(Image.new("LA", (30, 20), (90, 128)), "PNG"), DONE),
        "bilevel.png": (save(Image.new("1", (30, 20), 1), "PNG"), DONE),
        "webp-alpha.webp": (save(Image.new("RGBA", (30, 20), (1, 2, 3, 100)), "WEBP"), DONE),
        "animated.gif": (make_animated("GIF", 40, 30, [RED, BLUE, WHITE]), DONE),
        "animated.png": (make_animated("PNG", 40, 30, [RED, BLUE]), DONE),
        "animated.webp": (make_animated("WEBP", 40, 30, [RED, BLUE]), DONE),
        "gps-xmp.jpg": (make_jpeg(64, 48, gps=True, xmp=b"<x/>", comment=b"hi"), DONE),
        "broken-exif.jpg": (make_broken_exif_jpeg(64, 48), DONE),
        "one-pixel.png": (make_png(1, 1), DONE),
        "line-10000x1.png": (make_png(10000, 1), DONE),
        "line-1x10000.png": (make_png(1, 10000), DONE),
        "bomb.png": (make_png_header(30_000, 30_000), one("too_many_pixels")),
        "bomb.jpg": (make_jpeg_claiming(20_000, 20_000), one("too_many_pixels")),
        "bomb.gif": (make_gif_claiming(60_000, 60_000), one("too_many_pixels")),
        "huge-pillow.png": (make_png_header(100_000, 100_000), one("too_many_pixels")),
        "page.jpg": (make_html_polyglot(), one("unsupported_format")),
        "photo.heic": (make_heic_header(), one("unsupported_format")),
        "image.bmp": (make_bmp(10, 10), one("unsupported_format")),
        "text.jpg": (b"hello, I am not a picture\n", one("unsupported_format")),
        "empty.png": (b"", one("empty_upload")),
        "corrupt-header.png": (make_corrupt_png(40, 30), BAD_DATA),
        "corrupt-huffman.jpg": (make_corrupt_jpeg(40, 30), BAD_DATA),
        "corrupt-pixels.png": (make_png_bad_pixels(64, 64), BAD_DATA),
        "header-only.png": (make_png_header(100, 100), BAD_DATA),
    })
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"), ("WEBP", "webp")):
        whole = save(noisy, fmt)
        items[f"cut-head.{ext}"] = (whole[:10], BAD_DATA | {"unsupported_format"})
        for fraction in (0.3, 0.6, 0.9):
            items[f"cut-{int(fraction * 100)}.{ext}"] = (truncated(whole, fraction), BAD_DATA)
        # A valid signature followed by noise: whatever the noise says, a clean refusal
        rng = random.Random(fmt)
        junk = bytes(rng.randrange(256) for _ in range(2000))
        anything = BAD_DATA | {"unsupported_format", "too_many_pixels"}
        items[f"junk-after-signature.{ext}"] = (whole[:16] + junk, anything)
    rng = random.Random(7)
    items["random.jpg"] = (bytes(rng.randrange(256) for _ in range(5000)), one("unsupported_format"))
    return items


def _rgb16_png(width: int, height: int) -> bytes:
    """A 48-bit RGB PNG (Pillow reads it as 8-bit RGB), written by hand: Pillow cannot write it."""
    row = b"\0" + struct.pack(">HHH", 65535, 32768, 0) * width
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(row * height)) + png_chunk(b"IEND", b""))
