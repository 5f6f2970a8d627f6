"""imaging.render beyond the basics: colour management, GIF and animation, cover gravity, exact
mode, upscaling, per-format encoder options, AVIF, and threads — on real pixels."""

from __future__ import annotations

import random
import warnings

import pytest
from PIL import Image, ImageChops, ImageStat

from imagepipe import imaging
from imagepipe.errors import ConfigError, PermanentError, TransientError
from imagepipe.imaging import vips
from imagepipe.spec import DEFAULT_VARIANTS, GRAVITIES, Variant, parse_variants
from tests import images
from tests.unit.test_imaging import (  # noqa: F401 (engine: every test runs on each engine)
    ENGINE,
    assert_marker_top_left,
    by_name,
    decoded,
    engine,
    is_red,
)

LIMIT = 50_000_000
GREEN = (0, 200, 0)


def render(data, variants=DEFAULT_VARIANTS, max_pixels=LIMIT, **kwargs):
    return imaging.render(data, variants, max_pixels=max_pixels, engine=ENGINE["name"], **kwargs)


def spec(*items: dict) -> tuple[Variant, ...]:
    return parse_variants(list(items))


def centre(image: Image.Image):
    return image.convert("RGB").getpixel((image.width // 2, image.height // 2))


# --- colour -------------------------------------------------------------------------------------


def test_rgba_with_a_profile_keeps_its_alpha_through_the_conversion():
    image = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, 100, 100))  # "red" in the swapped profile: green
    data = images.save(image, "PNG", icc_profile=images.make_swapped_rgb_icc())

    rendered = render(data, spec({"name": "p", "width": 100}))

    out = decoded(rendered.variants[0])
    assert out.mode == "RGBA" and rendered.colour_converted
    r, g, b, a = out.getpixel((20, 25))
    assert g > 200 and r < 60 and a == 255
    assert out.getpixel((80, 25))[3] == 0


def test_grey_profile_is_converted_and_stays_grey():
    data = images.make_jpeg(
        64, 64, mode="L", image=Image.new("L", (64, 64), 128),
        icc_profile=images.make_linear_grey_icc(),
    )

    rendered = render(data)

    assert rendered.colour_converted
    for variant in rendered.variants:
        image = decoded(variant)
        assert image.mode == "L" and "icc_profile" not in image.info
        assert abs(image.getpixel((5, 5)) - 188) <= 3, variant.name  # linear 50 % in sRGB


def test_cmyk_jpeg_goes_through_its_embedded_profile():
    # Paper white, in a profile that prints everything green.
    data = images.save(
        Image.new("CMYK", (64, 64), (0, 0, 0, 0)), "JPEG", icc_profile=images.make_green_cmyk_icc()
    )

    rendered = render(data)

    assert rendered.source.mode == "CMYK" and rendered.colour_converted
    assert rendered.source.icc_profile == "Green Ink"
    for variant in rendered.variants:
        r, g, b = decoded(variant).getpixel((5, 5))
        assert g > 80 and r < 40 and b < 70, (variant.name, (r, g, b))


@pytest.mark.parametrize(
    "cmyk, check",
    [
        ((0, 255, 255, 0), is_red),
        ((255, 0, 0, 0), lambda p: p[0] < 60 and p[1] > 200 and p[2] > 200),  # cyan
        ((0, 0, 0, 0), lambda p: min(p) > 230),  # paper white
    ],
)
def test_ycck_jpeg(cmyk, check):
    rendered = render(images.make_ycck_jpeg(600, 400, cmyk))  # 600 px: drafted for the small ones

    assert rendered.source.mode == "CMYK" and "CMYK->RGB" in rendered.converted
    for variant in rendered.variants:
        image = decoded(variant)
        assert image.mode == "RGB" and check(centre(image)), (variant.name, centre(image))


def test_a_profile_for_other_pixels_is_dropped_not_applied():
    # An RGB profile on a grey JPEG describes nothing in it.
    data = images.make_jpeg(64, 64, mode="L", icc_profile=images.make_swapped_rgb_icc())

    rendered = render(data)

    assert not rendered.colour_converted and "icc_profile" in rendered.stripped
    assert decoded(rendered.variants[0]).mode == "L"


# --- GIF and animation --------------------------------------------------------------------------


def test_gif_with_transparency():
    rendered = render(images.make_transparent_gif(200, 100), spec(
        {"name": "a", "width": 100}, {"name": "j", "width": 100, "format": "jpeg"},
    ))

    assert rendered.source.format == "gif" and rendered.source.mode == "P"
    a, j = (decoded(v) for v in rendered.variants)
    assert rendered.variants[0].format == "png" and a.mode == "RGBA"
    assert a.getpixel((10, 25)) == (255, 0, 0, 255) and a.getpixel((90, 25))[3] == 0
    assert is_red(j.getpixel((10, 25))) and min(j.getpixel((90, 25))) > 245


@pytest.mark.parametrize("fmt, frames", [("GIF", None), ("PNG", 3), ("WEBP", 3)])
def test_animated_sources_give_their_first_frame(fmt, frames):
    data = images.make_animated(fmt, 60, 40, [(255, 0, 0), (0, 255, 0), (0, 0, 255)])

    rendered = render(data)

    assert rendered.source.animated and rendered.source.frames == frames
    assert rendered.notes and "first frame" in rendered.notes[0]
    for variant in rendered.variants:
        assert is_red(centre(decoded(variant))), variant.name


def test_gif_bomb_is_refused_from_the_header():
    with pytest.raises(PermanentError) as caught:
        render(images.make_gif_claiming(60_000, 60_000))

    assert caught.value.code == "too_many_pixels"


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_truncated_gif_and_webp(fmt):
    noisy = images.upright_with_marker(200, 200).effect_spread(20) if fmt else None
    data = images.truncated(images.save(noisy, fmt))

    with pytest.raises(PermanentError) as caught:
        render(data)

    assert caught.value.code in ("truncated", "corrupt")


# --- geometry -----------------------------------------------------------------------------------

def bands(width: int, height: int) -> Image.Image:
    """Three bands along the long axis: red (first quarter), blue (middle half), green."""
    image = Image.new("RGB", (width, height), images.BLUE)
    if width >= height:
        image.paste(images.RED, (0, 0, width // 4, height))
        image.paste(GREEN, (width * 3 // 4, 0, width, height))
    else:
        image.paste(images.RED, (0, 0, width, height // 4))
        image.paste(GREEN, (0, height * 3 // 4, width, height))
    return image


def close(pixel, colour, tolerance=60) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))


def expected_band(gravity: str, wide: bool):
    # A square crop of a 4:1 picture is its first, middle or last quarter along the long axis.
    if wide:
        first, last = gravity.endswith("west"), gravity.endswith("east")
    else:
        first, last = gravity.startswith("north"), gravity.startswith("south")
    return images.RED if first else GREEN if last else images.BLUE


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("wide", [True, False], ids=["wide", "tall"])
@pytest.mark.parametrize("gravity", sorted(GRAVITIES))
def test_cover_gravity_on_the_upright_picture(gravity, wide, orientation):
    # Both paths: a resampled crop (big) and a pixel-for-pixel crop of a source smaller than
    # the box (px), on every orientation.
    size = (800, 200) if wide else (200, 800)
    data = images.make_jpeg(*size, image=bands(*size), orientation=orientation)
    variants = spec(
        {"name": "big", "mode": "cover", "width": 100, "height": 100, "gravity": gravity},
        {"name": "px", "mode": "cover", "width": 1000, "height": 1000, "gravity": gravity},
    )

    rendered = render(data, variants)

    big, px = (decoded(v) for v in rendered.variants)
    assert big.size == (100, 100) and px.size == (200, 200)
    colour = expected_band(gravity, wide)
    for image in (big, px):
        assert close(centre(image), colour), (gravity, centre(image))


def test_exact_stretches_and_never_upscales_unless_asked():
    variants = spec(
        {"name": "e", "mode": "exact", "width": 300, "height": 100},
        {"name": "big", "mode": "exact", "width": 2000, "height": 500},
        {"name": "up", "mode": "exact", "width": 2000, "height": 500, "upscale": True},
    )

    rendered = render(images.make_jpeg(600, 400, orientation=6), variants)

    sizes = {v.name: (v.width, v.height) for v in rendered.variants}
    # big: the largest 4:1 the 600x400 source covers without enlarging.
    assert sizes == {"e": (300, 100), "big": (600, 150), "up": (2000, 500)}
    e = decoded(by_name(rendered)["e"])
    assert e.size == (300, 100)
    assert_marker_top_left(e)  # upright: the whole picture, squeezed


def test_upscale_fit_and_cover():
    variants = spec(
        {"name": "fit", "width": 400, "height": 400, "upscale": True},
        {"name": "cov", "mode": "cover", "width": 300, "height": 300, "upscale": True},
        {"name": "no", "width": 400, "height": 400},
    )

    rendered = render(images.make_jpeg(100, 50), variants)

    sizes = {v.name: (v.width, v.height) for v in rendered.variants}
    assert sizes == {"fit": (400, 200), "cov": (300, 300), "no": (100, 50)}
    assert_marker_top_left(decoded(by_name(rendered)["fit"]))


# --- formats and encoder options ----------------------------------------------------------------


def test_jpeg_options_progressive_and_subsampling():
    variants = spec(
        {"name": "base", "width": 200},
        {"name": "prog", "width": 200, "format": "jpeg",
         "options": {"jpeg": {"progressive": True, "subsampling": "4:4:4"}}},
    )

    base, prog = (decoded(v) for v in render(images.make_jpeg(400, 300), variants).variants)

    assert not base.info.get("progressive") and prog.info.get("progressive")
    assert prog.layer[1][1:3] == (1, 1)  # chroma not subsampled (4:4:4)
    assert base.layer[1][1:3] != (1, 1) or base.layer[0][1:3] == (2, 2)


def test_webp_lossless_option_keeps_pixels_exact():
    source = images.upright_with_marker(64, 64).effect_spread(3)
    variants = spec({"name": "w", "width": 64, "format": "webp",
                     "options": {"webp": {"lossless": True, "method": 0}}})

    rendered = render(images.save(source, "PNG"), variants)

    assert decoded(rendered.variants[0]).convert("RGB").tobytes() == source.tobytes()


def test_auto_options_apply_to_the_format_chosen():
    variants = spec({"name": "a", "width": 100, "options": {
        "jpeg": {"progressive": True}, "png": {"compress_level": 0}}})
    opaque = render(images.make_jpeg(100, 100), variants).variants[0]
    alpha = render(images.make_rgba_png(100, 100), variants).variants[0]

    assert opaque.format == "jpeg" and decoded(opaque).info.get("progressive")
    assert alpha.format == "png"
    # compress_level 0: stored, so at least 4 bytes per pixel
    assert len(alpha.data) >= 100 * 100 * 4


def test_avif_output():
    if not imaging.can_write_avif():
        pytest.skip("this Pillow cannot write AVIF")
    variants = spec(
        {"name": "a", "width": 200, "format": "avif", "quality": 60},
        {"name": "t", "width": 100, "format": "avif"},
    )

    opaque = render(images.make_jpeg(400, 300, orientation=3), variants)
    alpha = render(images.make_rgba_png(200, 100), variants)

    image = decoded(opaque.variants[0])
    assert image.format == "AVIF" and image.size == (200, 150)
    assert_marker_top_left(image)
    assert not image.getexif()
    t = decoded(alpha.variants[1])
    assert t.mode == "RGBA" and t.getpixel((75, 25))[3] < 10 and is_red(t.getpixel((10, 25)))


def test_avif_unsupported_is_a_configuration_error(monkeypatch):
    monkeypatch.setattr(imaging.encode, "can_write_avif", lambda: False)

    with pytest.raises(Exception) as caught:
        render(images.make_jpeg(40, 40), spec({"name": "a", "width": 20, "format": "avif"}))

    assert "AVIF" in str(caught.value)
    assert isinstance(caught.value.__cause__, ConfigError)


def test_flatten_background_is_configurable():
    variants = spec(
        {"name": "j", "width": 100, "format": "jpeg", "background": "#000000"},
        {"name": "g", "width": 100, "format": "jpeg", "background": "#ff8000"},
    )
    rendered = render(images.make_rgba_png(200, 100), variants)
    grey = render(images.save(Image.new("LA", (20, 20), (0, 0)), "PNG"), variants)

    j, g = (decoded(v) for v in rendered.variants)
    assert max(j.getpixel((90, 25))) < 10
    assert close(g.getpixel((90, 25)), (255, 128, 0), 10)
    assert is_red(j.getpixel((10, 25)))
    assert "g: RGBA->RGB on #ff8000" in rendered.converted
    assert abs(decoded(grey.variants[1]).getpixel((5, 5)) - 151) <= 3  # luma of #ff8000


# --- threads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", [1, 6])
def test_threads_give_the_same_variants(orientation):
    # Seeded texture, not effect_spread (C rand(), a new image every run): the JPEG encoder
    # amplifies the strips' rounding differently for each image, so the bound held 11 runs in 12.
    marker = images.upright_with_marker(1600, 1200)
    noise = Image.frombytes("RGB", marker.size, random.Random(7).randbytes(1600 * 1200 * 3))
    data = images.make_jpeg(1600, 1200, image=Image.blend(marker, noise, 0.15),
                            orientation=orientation)

    one = render(data)
    two = render(data, threads=2)

    for a, b in zip(one.variants, two.variants):
        assert (a.name, a.width, a.height, a.format) == (b.name, b.width, b.height, b.format)
        difference = ImageChops.difference(decoded(a), decoded(b))
        worst = max(high for _, high in difference.getextrema())
        mean = sum(ImageStat.Stat(difference).mean) / 3
        # Strips round their box differently (~1 level), which re-encoding spreads a little.
        assert worst <= 20 and mean <= 1.5, (a.name, worst, mean)
        assert_marker_top_left(decoded(b))


# --- the corpus ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(images.corpus()))
def test_corpus_file_is_made_or_refused_with_its_code(name):
    data, codes = images.corpus()[name]
    try:
        rendered = render(data)
    except PermanentError as error:
        assert codes is not None, f"{name}: {error}"
        assert error.code in codes, f"{name}: {error}"
        return
    assert codes is None, f"{name} should have failed with {sorted(codes)}"
    for variant in rendered.variants:
        image = decoded(variant)
        assert image.size == (variant.width, variant.height)
        assert image.mode in ("L", "LA", "RGB", "RGBA")
        assert not image.getexif() and "icc_profile" not in image.info


def test_unknown_or_missing_engine_is_a_configuration_error(monkeypatch):
    with pytest.raises(ConfigError, match="engine"):
        imaging.render(images.make_jpeg(20, 20), DEFAULT_VARIANTS, max_pixels=LIMIT, engine="magick")
    monkeypatch.setattr(vips, "available", lambda: False)
    with pytest.raises(ConfigError, match="pyvips"):
        imaging.render(images.make_jpeg(20, 20), DEFAULT_VARIANTS, max_pixels=LIMIT, engine="vips")


# Found by fuzzing: a GIF whose header makes Pillow's plugin raise IndexError (not OSError).
FUZZED_GIF = bytes.fromhex(
    "47494638396128001e00810000ff000000000000000000ba0021ff0b4e45545343415045322e30030100000021f90400"
    "0a0000002c0000000028001e0000083a0001081c48b0a0c18308132a5cc8b0a1c38710234a9c48b1a2c58b18336adcc8"
    "b1a3c78f20438a1c49b2a4c9932853aa5cc9b2a5cb97303106040021"
)


def test_a_header_that_trips_pillow_with_an_index_error_is_corrupt_not_internal():
    with pytest.raises(PermanentError) as caught:
        render(FUZZED_GIF)

    assert caught.value.code == "corrupt"


def test_an_encoder_fault_is_a_retryable_internal_error_not_a_corrupt_upload(monkeypatch):
    # Pillow's JPEG encoder raises ValueError (a type its decoders raise on bad data) for an
    # option it cannot use: the upload decoded fine, so it must not be reported as corrupt.
    monkeypatch.setitem(imaging.encode._DEFAULTS, "jpeg", {"qtables": "no such preset"})
    with pytest.raises(TransientError) as caught:
        render(images.make_jpeg(64, 48), spec({"name": "j", "width": 32, "format": "jpeg"}))

    assert caught.value.code == "internal_error"


def test_broken_exif_is_no_failure_and_no_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rendered = render(images.make_broken_exif_jpeg(64, 48))

    assert [str(w.message) for w in caught] == []
    assert rendered.source.orientation == 1 and len(rendered.variants) == len(DEFAULT_VARIANTS)


@pytest.mark.parametrize("size, box", [
    ((4000, 3000), 256), ((4000, 3000), 150), ((1200, 800), 100), ((6000, 4000), 512),
    ((4000, 3000), 2048), ((640, 480), 40),
])
def test_both_engines_decode_a_jpeg_at_the_same_reduced_size(size, box):
    scale = box / max(size)
    opened = imaging.load.open_upload(images.make_jpeg(*size, quality=40), LIMIT)

    pillow_reduction = imaging.load.decode(opened, scale, 2.0)

    assert vips._jpeg_shrink(size, scale) == pillow_reduction


def test_jpeg_huffman_optimisation_by_default_only_where_it_pays():
    photo = images.upright_with_marker(1600, 1200).effect_spread(5)
    data = images.make_jpeg(1600, 1200, image=photo)
    variants = spec(
        {"name": "big", "width": 1200},
        {"name": "small", "width": 256},
        {"name": "forced", "width": 1200, "options": {"jpeg": {"optimize": True}}},
    )

    rendered = render(data, variants)
    resampled = imaging.resample(data, variants, max_pixels=LIMIT, engine=ENGINE["name"])
    pixels = [image for _, image in sorted(resampled.images, key=lambda made: made[0])]
    assert resampled.opened.orientation == 1  # so these are the pixels the encoder gets

    def jpeg(image, optimize):
        return images.save(image, "JPEG", quality=82, optimize=optimize)

    big, small, forced = rendered.variants
    assert big.data == jpeg(pixels[0], False)
    assert small.data == jpeg(pixels[1], True)
    assert forced.data == jpeg(pixels[2], True)


def test_webp_effort_by_default_lower_only_above_a_megapixel():
    photo = images.upright_with_marker(1200, 900).effect_spread(5)
    data = images.make_jpeg(1200, 900, image=photo)
    variants = spec(
        {"name": "big", "width": 1200, "format": "webp"},
        {"name": "small", "width": 600, "format": "webp"},
        {"name": "asked", "width": 1200, "format": "webp", "options": {"webp": {"method": 4}}},
    )

    rendered = render(data, variants)
    resampled = imaging.resample(data, variants, max_pixels=LIMIT, engine=ENGINE["name"])
    pixels = [image for _, image in sorted(resampled.images, key=lambda made: made[0])]

    def webp(image, method):
        return images.save(image, "WEBP", quality=82, method=method)

    big, small, asked = rendered.variants
    assert big.data == webp(pixels[0], 2)
    assert small.data == webp(pixels[1], 4)
    assert asked.data == webp(pixels[2], 4)
