"""formats.sniff: what the first bytes of a file say it is (Pillow-free)."""

import pytest
from PIL import Image

from imagepipe.formats import FORMAT_TO_MIME, SNIFF_BYTES, sniff
from tests import images


@pytest.mark.parametrize("data, mime", [
    (images.make_jpeg(8, 8), "image/jpeg"),
    (images.make_png(8, 8), "image/png"),
    (images.save(Image.new("RGB", (8, 8)), "WEBP"), "image/webp"),
    (images.make_gif(8, 8), "image/gif"),
    (images.save(Image.new("RGB", (8, 8)), "AVIF"), "image/avif"),
    (images.make_heic_header(), "image/heic"),
    (images.make_html_polyglot(), None),
    (images.make_bmp(8, 8), None),
    (b"RIFF\0\0\0\0WAVEfmt ", None),
    (b"\0\0\0\x18ftypmp42\0\0\0\0", None),  # an MP4 video
    (b"", None),
])
def test_sniff(data, mime):
    assert sniff(data[:SNIFF_BYTES]) == mime


def test_every_output_format_has_a_mime_type():
    assert {FORMAT_TO_MIME[f] for f in ("jpeg", "png", "webp", "avif")} == {
        "image/jpeg", "image/png", "image/webp", "image/avif"}
