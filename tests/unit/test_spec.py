import pytest

from imagepipe.errors import ConfigError
from imagepipe.spec import DEFAULT_VARIANTS, Variant, parse_variants


def test_default_spec():
    assert [(v.name, v.mode, v.width, v.height) for v in DEFAULT_VARIANTS] == [
        ("xl", "fit", 2048, 2048), ("lg", "fit", 1024, 1024), ("md", "fit", 512, 512),
        ("sm", "fit", 256, 256), ("thumb", "cover", 150, 150)]
    assert parse_variants([v.to_dict() for v in DEFAULT_VARIANTS]) == DEFAULT_VARIANTS


def test_height_defaults_to_width_and_format_to_auto():
    assert parse_variants([{"name": "sq", "width": 300}]) == (Variant("sq", "fit", 300, 300),)


@pytest.mark.parametrize("raw, field", [
    ([], "non-empty"),
    ({"name": "x"}, "non-empty"),
    (["x"], r"variants\[0\]"),
    ([{"name": "Bad Name", "width": 10}], "name"),
    ([{"name": "a", "width": 10, "mode": "stretch"}], r"\(a\)\.mode"),
    ([{"name": "a", "width": True}], r"\(a\)\.width"),
    ([{"name": "a", "width": 10, "height": 99999}], r"\(a\)\.height"),
    ([{"name": "a", "width": 10, "format": "gif"}], r"\(a\)\.format"),
    ([{"name": "a", "width": 10, "format": "tiff"}], r"\(a\)\.format"),
    ([{"name": "a", "width": 10, "quality": 0}], r"\(a\)\.quality"),
    ([{"name": "a", "width": 10, "colour": "red"}], "unknown field"),
    ([{"name": "a", "width": 10}, {"name": "a", "width": 20}], "more than once"),
])
def test_invalid_specs_name_the_bad_field(raw, field):
    with pytest.raises(ConfigError, match=field):
        parse_variants(raw)


def test_full_variant_round_trips_through_json():
    raw = [{
        "name": "card", "mode": "cover", "width": 400, "height": 300, "format": "webp",
        "quality": 70, "gravity": "northeast", "background": "#102030", "upscale": True,
        "options": {"webp": {"method": 6, "lossless": False}},
    }]

    (variant,) = parse_variants(raw)

    assert variant.gravity == "northeast" and variant.upscale
    assert variant.options_for("webp") == {"method": 6, "lossless": False}
    assert variant.options_for("jpeg") == {}
    assert variant.background_rgb == (0x10, 0x20, 0x30)
    assert variant.to_dict() == raw[0]
    assert parse_variants([variant.to_dict()]) == (variant,)
    hash(variant)  # frozen, usable as a key


def test_defaults_of_the_newer_fields_and_center_spelling():
    (variant,) = parse_variants([{"name": "c", "mode": "cover", "width": 10, "gravity": "center"}])

    assert variant.gravity == "centre" and variant.background == "#ffffff"
    assert not variant.upscale and variant.options == ()
    assert set(variant.to_dict()) == {"name", "mode", "width", "height", "format", "quality"}


def test_auto_variant_takes_options_for_each_format_it_may_become():
    (variant,) = parse_variants([{"name": "a", "width": 10, "options": {
        "jpeg": {"progressive": True}, "png": {"compress_level": 9}}}])

    assert variant.options_for("jpeg") == {"progressive": True}
    assert variant.options_for("png") == {"compress_level": 9}


@pytest.mark.parametrize("item, field", [
    ({"mode": "exact", "gravity": "north"}, r"\(a\)\.gravity: only a cover"),
    ({"mode": "cover", "gravity": "up"}, r"\(a\)\.gravity: must be one of"),
    ({"background": "white"}, r"\(a\)\.background"),
    ({"background": "#fff"}, r"\(a\)\.background"),
    ({"upscale": "yes"}, r"\(a\)\.upscale"),
    ({"options": []}, r"\(a\)\.options: must be an object"),
    ({"options": {"gif": {}}}, r"\(a\)\.options\.gif: not a format"),
    ({"format": "jpeg", "options": {"webp": {"method": 1}}},
     r"\(a\)\.options\.webp: this variant is always jpeg"),
    ({"options": {"jpeg": {"progresive": True}}}, r"\(a\)\.options\.jpeg\.progresive: unknown option"),
    ({"options": {"jpeg": {"progressive": 1}}}, r"\(a\)\.options\.jpeg\.progressive: must be true or false"),
    ({"options": {"jpeg": {"subsampling": "4:1:1"}}}, r"\(a\)\.options\.jpeg\.subsampling"),
    ({"options": {"webp": {"method": 7}}}, r"\(a\)\.options\.webp\.method: must be a whole number 0..6"),
    ({"options": {"webp": {"method": True}}}, r"\(a\)\.options\.webp\.method"),
    ({"options": {"png": {"compress_level": -1}}}, r"\(a\)\.options\.png\.compress_level"),
    ({"options": {"avif": {"speed": 11}}}, r"\(a\)\.options\.avif\.speed"),
    ({"options": {"jpeg": True}}, r"\(a\)\.options\.jpeg: must be an object"),
])
def test_newer_fields_are_validated_naming_the_field(item, field):
    with pytest.raises(ConfigError, match=field):
        parse_variants([{"name": "a", "width": 10, **item}])


@pytest.mark.parametrize("mode", ["fit", "cover", "exact"])
@pytest.mark.parametrize("fmt", ["auto", "jpeg", "png", "webp", "avif"])
def test_every_mode_and_format_is_accepted(mode, fmt):
    (variant,) = parse_variants([{"name": "a", "width": 10, "mode": mode, "format": fmt}])

    assert (variant.mode, variant.format) == (mode, fmt)
