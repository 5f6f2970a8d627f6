"""``backfill.compare``: which variants of a stored upload the current spec makes differently."""

from imagepipe.backfill import Staleness, compare
from imagepipe.fingerprint import spec_fingerprints
from imagepipe.messages import Manifest, VariantInfo
from imagepipe.spec import parse_variants

UPLOAD_ID = "0" * 32
SPEC = [
    {"name": "lg", "width": 1024},
    {"name": "md", "width": 512},
    {"name": "thumb", "mode": "cover", "width": 150},
]
VARIANTS = parse_variants(SPEC)


def _manifest(infos, spec=SPEC) -> Manifest:
    return Manifest(job_id=UPLOAD_ID, upload_id=UPLOAD_ID, source={"key": "k", "bytes": 1},
                    spec=tuple(spec), variants=tuple(infos))


def _info(name: str, fingerprint: str | None) -> VariantInfo:
    return VariantInfo(name=name, key=f"variants/{UPLOAD_ID}/{name}.jpg", width=10, height=10,
                       format="jpeg", bytes=1, fingerprint=fingerprint)


def _made_with(variants, engine="pillow"):
    return [_info(name, fp) for name, fp in spec_fingerprints(variants, engine).items()]


def test_a_manifest_made_with_the_current_spec_is_fresh():
    found = compare(_manifest(_made_with(VARIANTS)), VARIANTS, "pillow")
    assert found == Staleness((), (), ())
    assert found.is_fresh and found.names_to_make == ()


def test_a_changed_quality_makes_only_that_variant_stale():
    now = parse_variants([SPEC[0], dict(SPEC[1], quality=90), SPEC[2]])
    found = compare(_manifest(_made_with(VARIANTS)), now, "pillow")
    assert found == Staleness(stale=("md",), missing=(), extra=())
    assert not found.is_fresh and found.names_to_make == ("md",)


def test_another_engine_makes_every_variant_stale():
    found = compare(_manifest(_made_with(VARIANTS, "pillow")), VARIANTS, "vips")
    assert found.stale == ("lg", "md", "thumb")


def test_added_and_removed_variants_are_missing_and_extra():
    now = parse_variants([SPEC[0], SPEC[2], {"name": "webp", "width": 800, "format": "webp"}])
    found = compare(_manifest(_made_with(VARIANTS)), now, "pillow")
    assert found == Staleness(stale=(), missing=("webp",), extra=("md",))
    assert found.names_to_make == ("webp",)


def test_extra_variants_alone_leave_the_upload_fresh():
    found = compare(_manifest(_made_with(VARIANTS)), VARIANTS[:2], "pillow")
    assert found.extra == ("thumb",) and found.is_fresh


def test_a_legacy_variant_is_judged_by_the_spec_it_was_made_with():
    legacy = [_info(v.name, None) for v in VARIANTS]
    assert compare(_manifest(legacy), VARIANTS, "pillow").is_fresh
    # The manifest's spec said quality 70 for md: the current 82 makes md (only) stale.
    old_spec = [SPEC[0], dict(SPEC[1], quality=70), SPEC[2]]
    found = compare(_manifest(legacy, old_spec), VARIANTS, "pillow")
    assert found == Staleness(stale=("md",), missing=(), extra=())


def test_a_legacy_variant_without_a_readable_spec_entry_is_stale():
    legacy = [_info(v.name, None) for v in VARIANTS]
    old_spec = [SPEC[0], {"name": "md", "width": 512, "sharpen": 3}, "garbage"]  # thumb: none
    found = compare(_manifest(legacy, old_spec), VARIANTS, "pillow")
    assert found.stale == ("md", "thumb")


def test_a_recorded_fingerprint_wins_over_the_spec_entry():
    infos = _made_with(VARIANTS)
    infos[0] = _info("lg", "0123456789abcdef")  # made by some other definition
    found = compare(_manifest(infos), VARIANTS, "pillow")
    assert found.stale == ("lg",)
