"""Variant fingerprints: a change to one variant's definition changes only its fingerprint."""

import dataclasses

import pytest

from imagepipe.fingerprint import (
    ENGINE_OUTPUT_VERSIONS,
    is_fingerprint,
    spec_fingerprints,
    variant_fingerprint,
)
from imagepipe.spec import DEFAULT_VARIANTS, parse_variants

SPEC = [
    {"name": "lg", "width": 1024},
    {"name": "thumb", "mode": "cover", "width": 150, "gravity": "north",
     "options": {"jpeg": {"progressive": True}}},
]


def test_pinned_value_so_a_silent_change_of_the_hash_input_is_caught():
    # Changing what goes into a fingerprint makes every stored variant stale: do it on purpose.
    assert spec_fingerprints(DEFAULT_VARIANTS, "vips")["lg"] == "ce33f96fe8dde43a"


def test_a_change_to_one_variant_marks_only_that_variant():
    before = spec_fingerprints(parse_variants(SPEC), "vips")
    changed = [dict(SPEC[0], quality=90), SPEC[1]]
    after = spec_fingerprints(parse_variants(changed), "vips")
    assert before["lg"] != after["lg"]
    assert before["thumb"] == after["thumb"]


@pytest.mark.parametrize("change", [
    {"width": 1025}, {"height": 500}, {"mode": "exact", "gravity": "centre", "options": {}},
    {"format": "webp", "options": {}}, {"quality": 81}, {"gravity": "south"},
    {"background": "#000000"}, {"upscale": True}, {"options": {"jpeg": {"progressive": False}}},
])
def test_every_output_affecting_field_counts(change):
    base = parse_variants([SPEC[1]])[0]
    changed = parse_variants([{**SPEC[1], **change}])[0]
    assert variant_fingerprint(base, "vips") != variant_fingerprint(changed, "vips")


def test_the_name_does_not_count_and_spelling_does_not_either():
    a = parse_variants([{"name": "a", "width": 300}])[0]
    b = parse_variants([{"name": "b", "mode": "fit", "width": 300, "height": 300,
                         "gravity": "center", "quality": 82}])[0]
    assert variant_fingerprint(a, "pillow") == variant_fingerprint(b, "pillow")


def test_the_engine_and_its_output_version_count(monkeypatch):
    variant = DEFAULT_VARIANTS[0]
    assert variant_fingerprint(variant, "vips") != variant_fingerprint(variant, "pillow")
    before = variant_fingerprint(variant, "vips")
    monkeypatch.setitem(ENGINE_OUTPUT_VERSIONS, "vips", ENGINE_OUTPUT_VERSIONS["vips"] + 1)
    assert variant_fingerprint(variant, "vips") != before
    with pytest.raises(ValueError):
        variant_fingerprint(variant, "magick")


def test_shape():
    fp = variant_fingerprint(dataclasses.replace(DEFAULT_VARIANTS[0]), "vips")
    assert is_fingerprint(fp) and not is_fingerprint(fp.upper()) and not is_fingerprint(fp + "0")
