import pytest

from imagepipe import keys


def test_upload_ids_are_32_hex_and_unique():
    ids = {keys.new_upload_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(keys.is_upload_id(i) for i in ids)


@pytest.mark.parametrize("bad", ["", "../etc/passwd", "A" * 32, "0" * 31, "0" * 33, "photo.jpg",
                                 "0" * 31 + "/", None])
def test_malformed_ids_are_refused_everywhere(bad):
    assert not keys.is_upload_id(bad)
    with pytest.raises(keys.InvalidKey):
        keys.original_key(bad)


def test_key_layout_is_the_documented_grammar():
    uid = "0123456789abcdef0123456789abcdef"
    assert keys.upload_record_key(uid) == f"uploads/{uid}.json"
    assert keys.original_key(uid) == f"originals/{uid}"
    assert keys.status_marker_key(uid, "done") == f"status/{uid}/done.json"
    assert keys.manifest_key(uid) == f"manifests/{uid}.json"
    assert keys.variant_key(uid, "thumb", "jpeg") == f"variants/{uid}/thumb.jpg"
    assert keys.variant_key(uid, "xl", "png") == f"variants/{uid}/xl.png"
    assert keys.variant_key(uid, "xl", "webp") == f"variants/{uid}/xl.webp"


def test_keys_parse_back():
    uid = keys.new_upload_id()
    assert keys.upload_id_from_original_key(keys.original_key(uid)) == uid
    assert keys.state_from_marker_key(keys.status_marker_key(uid, "queued")) == "queued"
    with pytest.raises(keys.InvalidKey):
        keys.upload_id_from_original_key(f"variants/{uid}/xl.jpg")
    with pytest.raises(keys.InvalidKey):
        keys.variant_key(uid, "xl", "bmp")


def test_a_rerendered_variant_lives_under_its_fingerprint():
    uid = "0123456789abcdef0123456789abcdef"
    assert keys.variant_key(uid, "lg", "webp", "00ff00ff00ff00ff") == \
        f"variants/{uid}/00ff00ff00ff00ff/lg.webp"
    assert keys.filename_of_variant_key(f"variants/{uid}/00ff00ff00ff00ff/lg.webp") == (uid, "lg.webp")
    assert keys.filename_of_variant_key(f"variants/{uid}/lg.webp") == (uid, "lg.webp")
    for bad in ("00FF00FF00FF00FF", "../../x", "00ff00ff00ff00f", ""):
        with pytest.raises(keys.InvalidKey):
            keys.variant_key(uid, "lg", "webp", bad)
    for bad in (f"variants/{uid}/../lg.webp", f"variants/{uid}/x/y/lg.webp", f"originals/{uid}",
                f"variants/{uid}/zz/lg.webp", f"variants/{uid}/lg.exe"):
        with pytest.raises(keys.InvalidKey):
            keys.filename_of_variant_key(bad)
