"""Status derived from add-only markers in S3, and the documents stored beside them (in-process
moto). The upload record and the manifest are pinned by golden JSON, byte for byte as stored:
a change there is a contract change (old uploads and manifests must still read)."""

import json
from pathlib import Path

import pytest

from imagepipe import keys
from imagepipe.errors import PermanentError
from imagepipe.messages import Manifest, State, VariantInfo
from imagepipe.status import MultipartRecord, Status, StatusStore, UploadRecord

GOLDEN = Path(__file__).parent / "golden"
UID = "0123456789abcdef0123456789abcdef"
CREATED = "2026-11-28T05:00:00.000000Z"


def record(upload_id: str, **fields) -> UploadRecord:
    return UploadRecord(**{"upload_id": upload_id, "filename": "a.jpg",
                           "content_type": "image/jpeg", "size": 10, "method": "PUT", **fields})


def manifest(upload_id: str, **fields) -> Manifest:
    return Manifest(**{"job_id": upload_id, "upload_id": upload_id,
                       "source": {"key": keys.original_key(upload_id)}, "spec": (),
                       "variants": (), **fields})


def stored(s3, bucket, key) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_state_follows_the_highest_marker(s3_mock):
    s3, bucket = s3_mock
    store = StatusStore(s3, bucket)
    uid = keys.new_upload_id()
    assert store.current(uid) is None
    store.put_upload_record(record(uid))
    assert store.current(uid).state == State.PENDING
    assert store.mark(uid, State.QUEUED, exclusive=True)
    assert not store.mark(uid, State.QUEUED, exclusive=True)  # a second enqueue loses
    assert store.current(uid).state == "queued"
    store.mark(uid, State.PROCESSING)
    assert store.current(uid).state == "processing"
    store.mark(uid, State.FAILED, error={"code": "truncated", "message": "m"})
    failed = store.current(uid)
    assert (failed.state, failed.error) == ("failed", {"code": "truncated", "message": "m"})
    store.mark(uid, State.DONE)  # a replay that succeeded outranks the earlier failure
    assert store.current(uid) == Status(uid, State.DONE, None)


def test_pending_has_no_marker_and_terminal_states_are_done_and_failed(s3_mock):
    s3, bucket = s3_mock
    with pytest.raises(ValueError, match="no marker"):
        StatusStore(s3, bucket).mark(keys.new_upload_id(), State.PENDING)
    assert [s for s in State if s.terminal] == [State.DONE, State.FAILED]


def test_unmark_restores_the_previous_state(s3_mock):
    s3, bucket = s3_mock
    store = StatusStore(s3, bucket)
    uid = keys.new_upload_id()
    store.put_upload_record(record(uid))
    store.mark(uid, State.QUEUED, exclusive=True)
    store.unmark(uid, State.QUEUED)
    assert store.current(uid).state == State.PENDING
    assert store.mark(uid, State.QUEUED, exclusive=True)


def test_manifest_is_written_once(s3_mock):
    s3, bucket = s3_mock
    store = StatusStore(s3, bucket)
    uid = keys.new_upload_id()
    first = manifest(uid, notes=("first",))
    assert store.get_manifest(uid) is None
    assert store.put_manifest(first)
    assert not store.put_manifest(manifest(uid, notes=("second",)))
    assert store.get_manifest(uid) == first


# --- golden JSON -------------------------------------------------------------------------------

def test_manifest_is_stored_as_the_golden_json_and_reads_back(s3_mock):
    s3, bucket = s3_mock
    golden = (GOLDEN / "manifest.v1.json").read_bytes().strip()
    variant = dict(format="jpeg", height=48)
    expected = Manifest(
        job_id=UID, upload_id=UID,
        source={"key": keys.original_key(UID), "bytes": 677, "format": "jpeg", "width": 64,
                "height": 48, "mode": "RGB", "orientation": 1, "icc_profile": None,
                "animated": False, "frames": None},
        spec=({"name": "sm", "width": 256, "height": 256, "mode": "fit", "format": "auto",
               "quality": 82},
              {"name": "thumb", "width": 150, "height": 150, "mode": "cover", "format": "auto",
               "quality": 82}),
        variants=(VariantInfo(name="sm", key=keys.variant_key(UID, "sm", "jpeg"), width=64,
                              bytes=305, **variant),
                  VariantInfo(name="thumb", key=keys.variant_key(UID, "thumb", "jpeg"), width=48,
                              bytes=301, **variant)),
        created_at="2026-11-28T05:00:02.000000Z",
        stripped=("exif",), converted=("RGBA->RGB",), colour_converted=False,
        notes=("animated gif: the first frame of 3 was used",),
    )

    assert StatusStore(s3, bucket).put_manifest(expected)

    assert stored(s3, bucket, keys.manifest_key(UID)) == golden
    assert StatusStore(s3, bucket).get_manifest(UID) == expected


def test_a_manifest_from_before_the_optional_fields_still_reads():
    old = json.loads((GOLDEN / "manifest.v1.json").read_bytes())
    for name in ("stripped", "converted", "colour_converted", "notes"):
        del old[name]
    read = Manifest.from_dict(old)
    assert (read.stripped, read.converted, read.colour_converted, read.notes) == ((), (), False, ())
    assert [v.name for v in read.variants] == ["sm", "thumb"]


@pytest.mark.parametrize("change", [{"v": 2}, {"variants": None}, {"upload_id": 7}])
def test_a_malformed_manifest_is_refused(change):
    body = {**json.loads((GOLDEN / "manifest.v1.json").read_bytes()), **change}
    with pytest.raises(PermanentError):
        Manifest.from_dict(body)


@pytest.mark.parametrize("name, expected", [
    ("upload_record.json", UploadRecord(
        upload_id=UID, filename="sunset.jpg", content_type="image/jpeg", size=77, method="PUT",
        created_at=CREATED, callback_url="https://hooks.example.com/imagepipe")),
    ("upload_record_multipart.json", UploadRecord(
        upload_id=UID, filename="big.png", content_type="image/png", size=20971520,
        method="MULTIPART", created_at=CREATED,
        multipart=MultipartRecord("65y31u42CZFbv2wWF1Csn8LpjQzDRP8zCo2XvOnKYAYvtD4Kjp1Zb0S6g",
                                  8388608),
        requeued_at="2026-11-28T05:20:00.000000Z")),
])
def test_upload_record_is_stored_as_the_golden_json_and_reads_back(s3_mock, name, expected):
    s3, bucket = s3_mock
    store = StatusStore(s3, bucket)

    store.put_upload_record(expected)

    assert stored(s3, bucket, keys.upload_record_key(UID)) == (GOLDEN / name).read_bytes().strip()
    assert store.get_upload_record(UID) == expected


def test_unset_optional_fields_are_left_out_of_the_record():
    body = record(UID, created_at=CREATED).to_dict()
    assert set(body) == {"upload_id", "filename", "content_type", "size", "method", "created_at"}
    assert record(UID).requeued().requeued_at.endswith("Z")
