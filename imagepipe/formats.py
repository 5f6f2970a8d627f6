"""Image formats by content: magic-byte sniffing and the MIME type <-> format names.

Pillow-free on purpose: the upload function verifies uploads with this and carries no Pillow.
"""

from __future__ import annotations

# MIME type -> the format name used in variant specs, manifests and Pillow (upper-cased).
MIME_TO_FORMAT = {
    "image/jpeg": "jpeg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/avif": "avif",
    "image/heic": "heic",
}
# ISO-BMFF major brands (the ``ftyp`` box that starts the file) -> MIME type
_FTYP_BRANDS = {
    b"avif": "image/avif",
    b"avis": "image/avif",
    **{brand: "image/heic" for brand in (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1")},
}
FORMAT_TO_MIME = {v: k for k, v in MIME_TO_FORMAT.items()}

# Enough of the head of a file to recognise every format below.
SNIFF_BYTES = 16


def sniff(head: bytes) -> str | None:
    """The MIME type that the first bytes of a file announce, or None if none we know."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12])
    return None
