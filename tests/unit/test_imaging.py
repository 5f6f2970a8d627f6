"""imaging.render: pixels, dimensions and reason codes, on images made in code (tests/images.py)."""

from __future__ import annotations

import io
import sys
import time
import warnings

import pytest
from PIL import Image, ImageCms, PngImagePlugin

from imagepipe import imaging
from imagepipe.imaging import load, vips
from imagepipe.errors import PermanentError
from imagepipe.spec import DEFAULT_VARIANTS, Variant
from tests import images

LIMIT = 50_000_000
ORIENTATION = images.ORIENTATION
# Small boxes only: a 600x400 JPEG is then decoded in draft mode, at 1/2 size.
SMALL_SPEC = (Variant("s", "fit", 100, 100), Variant("c", "cover", 80, 80))


# Every test here runs on each engine installed: Pillow always, libvips where pyvips is.
ENGINES = ["pillow"] + (["vips"] if vips.available() else [])
ENGINE = {"name": "pillow"}


@pytest.fixture(autouse=True, params=ENGINES)
def engine(request):
    ENGINE["name"] = request.param
    yield request.param
    ENGINE["name"] = "pillow"


def render(data, variants=DEFAULT_VARIANTS, max_pixels=LIMIT, **kwargs):
    return imaging.render(data, variants, max_pixels=max_pixels, engine=ENGINE["name"], **kwargs)


def decoded(variant) -> Image.Image:
    image = Image.open(io.BytesIO(variant.data))
    image.load()
    return image


def by_name(rendered) -> dict:
    return {v.name: v for v in rendered.variants}


def is_red(pixel) -> bool:
    r, g, b = pixel[:3]
    return r > 200 and g < 70 and b < 70


def is_blue(pixel) -> bool:  # images.BLUE, give or take JPEG
    r, g, b = pixel[:3]
    return r < 70 and 90 < g < 150 and b > 170


def assert_marker_top_left(image: Image.Image) -> None:
    rgb = image.convert("RGB")
    w, h = rgb.size
    inset = 2
    assert is_red(rgb.getpixel((inset, inset))), "top-left should hold the red marker"
    for corner in ((w - 1 - inset, inset), (inset, h - 1 - inset), (w - 1 - inset, h - 1 - inset)):
        assert is_blue(rgb.getpixel(corner)), f"corner {corner} should be background"


# --- orientation ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [DEFAULT_VARIANTS, SMALL_SPEC], ids=["default", "draft"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(orientation, spec):
    # Upright 600x400 with a red top-left marker, stored so that the tag restores it.
    data = images.make_jpeg(600, 400, orientation=orientation)

    rendered = render(data, spec)

    assert (rendered.source.width, rendered.source.height) == (600, 400)
    assert rendered.source.orientation == orientation
    for variant in rendered.variants:
        image = decoded(variant)
        assert image.size == (variant.width, variant.height)
        assert ORIENTATION not in image.getexif()
        if variant.name in ("xl", "s"):
            assert image.width > image.height, "upright is landscape"
        assert_marker_top_left(image)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_orientation_is_applied_for_png_and_webp_too(fmt):
    upright = images.upright_with_marker(300, 200)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6 undoes this
    lossless = {"lossless": True} if fmt == "WEBP" else {}
    data = images.save(stored, fmt, exif=images.exif(6), **lossless)

    rendered = render(data)

    xl = decoded(by_name(rendered)["xl"])
    assert xl.size == (300, 200)
    assert_marker_top_left(xl)
    assert not xl.getexif()


def test_draft_decodes_a_large_jpeg_at_reduced_size():
    opened = load.open_upload(images.make_jpeg(1200, 800, orientation=6), LIMIT)  # stored 800x1200

    assert load.decode(opened, 100 / 1200, 2.0) == 4  # 100 px is 2x smaller than 1200/4
    assert opened.image.size == (200, 300)  # still on the stored axes


def test_draft_is_skipped_when_a_variant_needs_most_of_the_pixels():
    opened = load.open_upload(images.make_jpeg(1200, 800), LIMIT)

    assert load.decode(opened, 2048 / 4000, 2.0) == 1
    assert opened.image.size == (1200, 800)


def test_a_variant_a_rounded_pixel_short_of_twice_the_next_is_still_its_base(monkeypatch, engine):
    # As a 6000x4000 photo's 2048x1365 and 1024x683 variants (1365 < 2 x 683): the smaller must
    # be made from the larger, not from the full-size source again (a second decode with vips).
    spec = (Variant("big", "fit", 205, 205), Variant("small", "fit", 103, 103))  # 205x137, 103x69
    bases = []
    if engine == "vips":
        made = vips._resample
        monkeypatch.setattr(vips, "_resample",
                            lambda base, plan: bases.append(base.image.width) or made(base, plan))
    else:
        resample = sys.modules["imagepipe.imaging.resample"]  # imaging.resample is a function

        made = resample.resample
        monkeypatch.setattr(resample, "resample",
                            lambda base, plan, *a: bases.append(base.image.width) or made(base, plan, *a))

    rendered = render(images.make_jpeg(600, 400), spec)

    assert [(v.width, v.height) for v in rendered.variants] == [(205, 137), (103, 69)]
    assert bases == [600, 205]


# --- metadata ---------------------------------------------------------------------------------


def test_no_metadata_survives():
    data = images.make_jpeg(
        400, 300, orientation=6, gps=True, xmp=b"<x:xmpmeta>secret-xmp</x:xmpmeta>",
        comment=b"<script>alert(1)</script>",
    )
    assert b"CameraMaker" in data and b"secret-xmp" in data and b"<script>" in data

    rendered = render(data)

    assert set(rendered.stripped) >= {"exif", "xmp", "comment"}
    for variant in rendered.variants:
        image = decoded(variant)
        assert not image.getexif(), variant.name
        assert not {"exif", "xmp", "comment", "icc_profile"} & set(image.info), image.info.keys()
        for secret in (b"Exif\x00\x00", b"CameraMaker", b"secret-xmp", b"<script>", b"GPS"):
            assert secret not in variant.data, (variant.name, secret)


def test_png_text_chunks_are_stripped():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "a secret prompt")
    rendered = render(images.make_png(64, 64, pnginfo=info), (Variant("p", "fit", 32, 32, "png"),))

    assert "text" in rendered.stripped
    assert b"a secret prompt" not in rendered.variants[0].data


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_png_variants_hold_pixels_and_nothing_else(mode):
    # Only the critical chunks: no pHYs (libvips writes one, 25.4 dpi, for pixels from memory),
    # no text, time or profile, whichever engine wrote the file.
    source = Image.new(mode, (90, 60), (40, 90, 200, 128)[:len(mode)])
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "secret")
    data = images.save(source, "PNG", pnginfo=info, dpi=(300, 300), icc_profile=_srgb_profile())

    rendered = render(data, (Variant("p", "fit", 60, 60, "png"),))

    png = rendered.variants[0].data
    assert _png_chunks(png)[0] == b"IHDR" and _png_chunks(png)[-1] == b"IEND"
    assert set(_png_chunks(png)) == {b"IHDR", b"IDAT", b"IEND"}
    image = decoded(rendered.variants[0])
    assert image.mode == mode and image.size == (60, 40) and image.info == {}
    got = image.convert("RGBA").getpixel((30, 20))
    expected = source.convert("RGBA").getpixel((0, 0))
    assert all(abs(a - b) <= 1 for a, b in zip(got, expected)), (got, expected)  # premultiplied


def _png_chunks(png: bytes) -> list[bytes]:
    kinds, offset = [], 8
    while offset < len(png):
        length = int.from_bytes(png[offset:offset + 4], "big")
        kinds.append(png[offset + 4:offset + 8])
        offset += 12 + length
    return kinds


def _srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_srgb_profile_is_dropped_because_untagged_means_srgb():
    rendered = render(images.make_jpeg(64, 64, icc_profile=_srgb_profile()))

    assert "icc_profile" in rendered.stripped
    assert rendered.source.icc_profile == "sRGB built-in"
    assert not rendered.colour_converted
    for variant in rendered.variants:
        assert "icc_profile" not in decoded(variant).info


def test_other_rgb_profile_is_converted_to_srgb_and_not_embedded():
    # Red in a profile whose red primary is sRGB's green: right only if converted.
    icc = images.make_swapped_rgb_icc()
    image = Image.new("RGB", (300, 200), images.RED)
    extra = (Variant("w", "fit", 64, 64, "webp"), Variant("p", "fit", 64, 64, "png"))

    rendered = render(images.make_jpeg(300, 200, image=image, icc_profile=icc), DEFAULT_VARIANTS + extra)

    assert rendered.colour_converted
    assert rendered.source.icc_profile == "Swapped RGB"
    assert "icc_profile" in rendered.stripped and "Swapped RGB -> sRGB" in rendered.converted
    for variant in rendered.variants:
        image = decoded(variant)
        assert "icc_profile" not in image.info, variant.name
        r, g, b = image.convert("RGB").getpixel((image.width // 2, image.height // 2))
        assert g > 200 and r < 60 and b < 60, (variant.name, (r, g, b))


# --- dimensions -------------------------------------------------------------------------------


def sizes(xl, lg, md, sm, thumb) -> dict:
    return {"xl": xl, "lg": lg, "md": md, "sm": sm, "thumb": thumb}


@pytest.mark.parametrize(
    "size, expected",
    [
        ((3000, 2000), sizes((2048, 1365), (1024, 683), (512, 341), (256, 171), (150, 150))),
        ((2000, 3000), sizes((1365, 2048), (683, 1024), (341, 512), (171, 256), (150, 150))),
        ((1000, 200), sizes((1000, 200), (1000, 200), (512, 102), (256, 51), (150, 150))),
        # Never upscaled: the thumb is the largest centred square instead.
        ((200, 100), sizes((200, 100), (200, 100), (200, 100), (200, 100), (100, 100))),
        ((100, 300), sizes((100, 300), (100, 300), (100, 300), (85, 256), (100, 100))),
        ((1, 1), sizes((1, 1), (1, 1), (1, 1), (1, 1), (1, 1))),
        # Clamped to 1 px, not rounded to 0.
        ((10000, 1), sizes((2048, 1), (1024, 1), (512, 1), (256, 1), (1, 1))),
        ((1, 10000), sizes((1, 2048), (1, 1024), (1, 512), (1, 256), (1, 1))),
    ],
    ids=["landscape", "portrait", "wide", "small", "tall-small", "1x1", "10000x1", "1x10000"],
)
def test_default_variant_dimensions(size, expected):
    data = images.make_png(*size) if 1 in size else images.make_jpeg(*size, quality=70)

    rendered = render(data)

    got = {v.name: (v.width, v.height) for v in rendered.variants}
    assert got == expected
    for variant in rendered.variants:
        assert decoded(variant).size == (variant.width, variant.height)


def test_cover_crops_the_centre():
    image = Image.new("RGB", (400, 100), images.RED)
    image.paste((0, 200, 0), (100, 0, 300, 100))  # green middle half
    rendered = render(images.make_jpeg(400, 100, image=image), (Variant("c", "cover", 50, 50),))

    thumb = decoded(rendered.variants[0])
    assert thumb.size == (50, 50)
    for x in (1, 25, 48):
        r, g, b = thumb.getpixel((x, 25))
        assert g > 150 and r < 60, (x, (r, g, b))


def test_variants_keep_spec_order_and_names():
    spec = (
        Variant("small", "fit", 50, 50),
        Variant("big", "fit", 500, 500),
        Variant("c", "cover", 80, 20),
    )

    rendered = render(images.make_jpeg(1000, 800), spec)

    assert [(v.name, v.width, v.height) for v in rendered.variants] == [
        ("small", 50, 40), ("big", 500, 400), ("c", 80, 20)
    ]


# --- modes and output formats -----------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [(0, 0), (32768, 128), (65535, 255)])
def test_16_bit_grey_png_is_scaled_not_saturated(value, expected):
    rendered = render(images.make_png_16bit_grey(64, 48, value))

    assert rendered.source.mode == "I;16"
    assert "I;16->L" in rendered.converted
    for variant in rendered.variants:
        image = decoded(variant)
        assert variant.format == "jpeg" and image.mode == "L"
        assert abs(image.getpixel((5, 5)) - expected) <= 2, variant.name


def test_16_bit_grey_png_keeps_the_transparency_of_its_trns_key():
    # As Pillow's i_trns.png (16-bit grey, tRNS key 255): the key's pixels are transparent, and
    # only they - key + 1 scales to the same 8-bit value but is opaque.
    data = images.make_png_16bit_grey_keyed(66, 64, key=255)
    spec = (Variant("same", "fit", 66, 66), Variant("half", "fit", 33, 33))

    rendered = render(data, spec)

    same, half = (decoded(v) for v in rendered.variants)
    assert [v.format for v in rendered.variants] == ["png", "png"]
    assert same.mode == half.mode == "LA"
    assert "I;16->LA" in rendered.converted
    alpha = same.getchannel("A")
    assert alpha.histogram()[0] == 22 * 64 and alpha.histogram()[255] == 44 * 64
    assert same.getpixel((5, 5))[1] == 0
    assert same.getpixel((30, 5)) == (1, 255)  # key + 1 = 256 of 65535
    assert same.getpixel((60, 5)) == ((255 + 40000) // 256, 255)
    assert half.getpixel((3, 10))[1] == 0 and half.getpixel((16, 10))[1] == 255


def test_16_bit_grey_png_whose_key_is_unused_is_opaque_grey():
    data = images.make_png_16bit_grey_keyed(66, 64, key=255)
    data = images.save(Image.open(io.BytesIO(data)).crop((22, 0, 66, 64)), "PNG", transparency=255)

    rendered = render(data, (Variant("all", "fit", 44, 64),))

    assert rendered.variants[0].format == "jpeg" and decoded(rendered.variants[0]).mode == "L"


def test_rgba_keeps_alpha_in_png_and_is_flattened_on_white_for_jpeg():
    spec = (
        Variant("auto", "fit", 100, 100),
        Variant("jpg", "fit", 100, 100, "jpeg"),
        Variant("web", "fit", 100, 100, "webp"),
    )
    rendered = render(images.make_rgba_png(200, 100), spec)
    out = by_name(rendered)

    png = decoded(out["auto"])
    assert out["auto"].format == "png" and png.mode == "RGBA"
    assert png.getpixel((10, 25)) == (255, 0, 0, 255)
    assert png.getpixel((90, 25))[3] == 0
    jpg = decoded(out["jpg"])
    assert out["jpg"].format == "jpeg" and jpg.mode == "RGB"
    assert is_red(jpg.getpixel((10, 25)))
    assert min(jpg.getpixel((90, 25))) > 245, "transparent goes to white"
    web = decoded(out["web"])
    assert web.mode == "RGBA" and web.getpixel((90, 25))[3] == 0
    assert "jpg: RGBA->RGB on #ffffff" in rendered.converted


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_the_colour_under_full_transparency_never_bleeds_into_the_edge(mode):
    # Opaque green (grey 150) beside fully transparent red (grey 30): resampled with the alpha
    # premultiplied, the edge pixels are green with partial alpha, never a red-brown blend.
    opaque, hidden = ((0, 200, 0, 255), (255, 0, 0, 0)) if mode == "RGBA" else ((150, 255), (30, 0))
    image = Image.new(mode, (301, 200), hidden)
    image.paste(opaque, (0, 0, 150, 200))
    spec = (Variant("p", "fit", 100, 100, "png"),)

    edge = [decoded(v) for v in render(images.save(image, "PNG"), spec).variants][0]

    assert edge.size == (100, 66)
    # (Below alpha 32 an 8-bit premultiplied colour is too coarse to say anything.)
    partial = [edge.getpixel((x, 33)) for x in range(100) if 32 <= edge.getpixel((x, 33))[-1] < 255]
    assert partial, "the edge has pixels of partial alpha"
    for pixel in partial:
        if mode == "RGBA":
            assert pixel[0] <= 2 and abs(pixel[1] - 200) <= 8, pixel
        else:
            assert abs(pixel[0] - 150) <= 8, pixel


def test_fully_opaque_alpha_gives_jpeg():
    rendered = render(images.make_png(64, 64, mode="RGBA", color=(*images.BLUE, 255)))

    assert {v.format for v in rendered.variants} == {"jpeg"}
    assert "RGBA->RGB" in rendered.converted


def test_palette_png_without_transparency():
    rendered = render(images.make_palette_png(200, 100, transparent=False))

    sm = decoded(by_name(rendered)["sm"])
    assert by_name(rendered)["sm"].format == "jpeg" and sm.mode == "RGB"
    assert is_red(sm.getpixel((10, 50))) and is_blue(sm.getpixel((190, 50)))
    assert rendered.source.mode == "P" and "P->RGB" in rendered.converted


def test_palette_png_with_transparency():
    rendered = render(images.make_palette_png(200, 100, transparent=True))

    sm = decoded(by_name(rendered)["sm"])
    assert by_name(rendered)["sm"].format == "png" and sm.mode == "RGBA"
    assert sm.getpixel((10, 50)) == (255, 0, 0, 255)
    assert sm.getpixel((190, 50))[3] == 0


def test_grey_stays_grey():
    rendered = render(images.make_png(300, 200, mode="L", color=90))

    for variant in rendered.variants:
        image = decoded(variant)
        assert variant.format == "jpeg" and image.mode == "L"
        assert abs(image.getpixel((3, 3)) - 90) <= 2
    assert rendered.converted == ()


def test_grey_with_alpha():
    image = Image.new("LA", (100, 100), (90, 0))
    image.paste((90, 255), (0, 0, 50, 100))
    spec = (Variant("a", "fit", 50, 50), Variant("j", "fit", 50, 50, "jpeg"))
    rendered = render(images.save(image, "PNG"), spec)

    a, j = (decoded(v) for v in rendered.variants)
    assert a.mode == "LA" and a.getpixel((5, 25)) == (90, 255) and a.getpixel((45, 25))[1] == 0
    assert j.mode == "L" and abs(j.getpixel((5, 25)) - 90) <= 2 and j.getpixel((45, 25)) > 245


def test_grey_jpeg_and_rgb_source_in_webp_and_png():
    spec = (Variant("w", "fit", 50, 50, "webp"), Variant("p", "fit", 50, 50, "png"))
    rendered = render(images.make_jpeg(100, 100, mode="L"), spec)

    w, p = rendered.variants
    assert (w.format, decoded(w).mode) == ("webp", "RGB")
    assert (p.format, decoded(p).mode) == ("png", "L")


@pytest.mark.parametrize(
    "cmyk, check",
    [
        ((0, 255, 255, 0), is_red),
        ((255, 0, 0, 0), lambda p: p[0] < 60 and p[1] > 200 and p[2] > 200),  # cyan
        ((0, 0, 0, 255), lambda p: max(p) < 40),  # black
        ((0, 0, 0, 0), lambda p: min(p) > 230),  # paper white
    ],
)
def test_cmyk_jpeg_colours_are_roughly_right(cmyk, check):
    rendered = render(images.make_cmyk_jpeg(64, 64, cmyk))

    assert rendered.source.mode == "CMYK" and "CMYK->RGB" in rendered.converted
    for variant in rendered.variants:
        image = decoded(variant)
        assert variant.format == "jpeg" and image.mode == "RGB"
        assert check(image.getpixel((5, 5))), (variant.name, image.getpixel((5, 5)))


def test_webp_source():
    data = images.save(Image.new("RGB", (300, 200), images.BLUE), "WEBP", quality=90)

    rendered = render(data)

    assert rendered.source.format == "webp"
    assert by_name(rendered)["xl"].format == "jpeg"
    assert is_blue(decoded(by_name(rendered)["sm"]).getpixel((5, 5)))


def test_mpo_from_a_phone_is_its_first_frame_as_jpeg():
    first = images.upright_with_marker(600, 400).transpose(Image.Transpose.ROTATE_90)
    second = Image.new("RGB", (400, 600), (0, 255, 0))
    data = images.save(first, "MPO", save_all=True, append_images=[second], exif=images.exif(6))
    assert Image.open(io.BytesIO(data)).format == "MPO"

    for spec in (DEFAULT_VARIANTS, SMALL_SPEC):
        rendered = render(data, spec)

        assert rendered.source.format == "jpeg"
        assert_marker_top_left(decoded(rendered.variants[0]))


def test_unreadable_icc_profile_is_dropped_not_fatal():
    rendered = render(images.make_jpeg(64, 64, icc_profile=b"not a profile" * 20))

    assert "icc_profile" in rendered.stripped
    assert rendered.source.icc_profile == "(unreadable)"
    assert all("icc_profile" not in decoded(v).info for v in rendered.variants)


def test_source_info_in_the_manifest_shape():
    rendered = render(images.make_jpeg(640, 480, orientation=8))  # stored 480x640

    assert rendered.source.to_dict() == {
        "format": "jpeg", "width": 640, "height": 480, "mode": "RGB", "orientation": 8,
        "icc_profile": None, "animated": False, "frames": None,
    }


# --- failures ---------------------------------------------------------------------------------


def _failure(data, max_pixels=LIMIT) -> PermanentError:
    with pytest.raises(PermanentError) as caught:
        render(data, max_pixels=max_pixels)
    return caught.value


@pytest.mark.parametrize(
    "data",
    [
        images.truncated(images.make_jpeg(400, 300)),
        images.truncated(images.make_png(400, 300, color=(1, 2, 3))),
    ],
    ids=["jpeg", "png"],
)
def test_truncated(data):
    assert _failure(data).code == "truncated"


@pytest.mark.parametrize(
    "data",
    [
        images.make_corrupt_png(40, 30),
        images.make_corrupt_jpeg(40, 30),
        images.make_png_bad_pixels(64, 64),
    ],
    ids=["png-header", "jpeg-header", "png-pixels"],
)
def test_corrupt(data):
    assert _failure(data).code == "corrupt"


@pytest.mark.parametrize(
    "data",
    [
        images.make_html_polyglot(),
        images.make_bmp(10, 10),
        images.save(Image.new("RGB", (10, 10)), "TIFF"),
        images.save(Image.new("RGB", (10, 10)), "AVIF"),  # Pillow reads it, the allow-list not
        images.make_heic_header(),  # no pillow-heif plugin here
        b"just text",
    ],
    ids=["html-polyglot", "bmp", "tiff", "avif", "heic", "text"],
)
def test_unsupported_format(data):
    assert _failure(data).code == "unsupported_format"


@pytest.mark.parametrize("data", [b"GIF89a\x01", b"RIFF\x04\x00\x00\x00WEBPVP8 "],
                         ids=["gif", "webp"])
def test_an_unreadable_header_of_an_allowed_format_is_corrupt(data):
    assert _failure(data).code == "corrupt"


def test_the_mime_types_that_count_as_ours_follow_the_decoders():
    assert load.allowed_mime_types(load.BASE_DECODERS) == {
        "image/jpeg", "image/png", "image/webp", "image/gif"}
    assert "image/heic" in load.allowed_mime_types(load.BASE_DECODERS + ("HEIF",))


def test_empty():
    assert _failure(b"").code == "empty_upload"


@pytest.mark.parametrize(
    "data, max_pixels",
    [
        (images.make_png_header(10_000, 6_000), LIMIT),  # our limit, Pillow is silent
        (images.make_jpeg_claiming(9_000, 9_000), LIMIT),  # ditto, through the JPEG decoder
        (images.make_png_header(10_000, 10_000), 10**9),  # Pillow's DecompressionBombWarning
        (images.make_png_header(100_000, 100_000), 10**12),  # Pillow's DecompressionBombError
    ],
    ids=["png-over-limit", "jpeg-over-limit", "pillow-warning", "pillow-error"],
)
def test_too_many_pixels_is_refused_from_the_header(data, max_pixels):
    # The files hold no pixel data: decoding them could only fail with another code. So the
    # refusal comes from the header, before any decoding (and any allocation for the pixels).
    filters = list(warnings.filters)
    started = time.perf_counter()

    error = _failure(data, max_pixels)

    assert error.code == "too_many_pixels"
    assert time.perf_counter() - started < 0.5
    assert warnings.filters == filters, "the warnings filter must be restored"


def test_within_limit_header_only_file_is_not_too_many_pixels():
    assert _failure(images.make_png_header(100, 100)).code == "corrupt"
