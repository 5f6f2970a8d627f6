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
    ([{"name": "a", "width": 10, "quality": 0}], r"\(a\)\.quality"),
    ([{"name": "a", "width": 10, "colour": "red"}], "unknown field"),
    ([{"name": "a", "width": 10}, {"name": "a", "width": 20}], "more than once"),
])
def test_invalid_specs_name_the_bad_field(raw, field):
    with pytest.raises(ConfigError, match=field):
        parse_variants(raw)
