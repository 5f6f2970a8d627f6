"""The variant spec: which resized images a job makes.

Owned here and nowhere else. It is loaded from the deploy manifest (``chalicefile.json``) or the
``IMAGEPIPE_VARIANTS`` setting and validated when loaded, with errors that name the bad field.

A variant is ``{"name", "mode", "width", "height", "format", "quality"}``:

- ``mode``: ``fit`` (scale down to fit inside width×height, keep the aspect ratio, never upscale)
  or ``cover`` (scale and centre-crop to exactly width×height; never upscale, so a source smaller
  than the box gives the largest centred crop of the box's aspect ratio).
- ``format``: ``auto`` (JPEG for opaque sources, PNG where there is alpha), ``jpeg``, ``png`` or
  ``webp``.
- ``quality``: 1–100 for lossy formats (default 82).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from imagepipe.errors import ConfigError

MODES = ("fit", "cover")
FORMATS = ("auto", "jpeg", "png", "webp")
DEFAULT_QUALITY = 82
MAX_DIMENSION = 16384
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_FIELDS = {"name", "mode", "width", "height", "format", "quality"}


@dataclass(frozen=True)
class Variant:
    name: str
    mode: str
    width: int
    height: int
    format: str = "auto"
    quality: int = DEFAULT_QUALITY

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_VARIANTS: tuple[Variant, ...] = (
    Variant("xl", "fit", 2048, 2048),
    Variant("lg", "fit", 1024, 1024),
    Variant("md", "fit", 512, 512),
    Variant("sm", "fit", 256, 256),
    Variant("thumb", "cover", 150, 150),
)


def parse_variants(raw: object) -> tuple[Variant, ...]:
    """Validate a JSON-shaped spec (a list of variant objects) into ``Variant``s."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError("variants: must be a non-empty list of variant objects")
    variants = tuple(_parse_one(i, item) for i, item in enumerate(raw))
    names = [v.name for v in variants]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"variants: name {name!r} is used more than once")
    return variants


def _parse_one(index: int, item: object) -> Variant:
    where = f"variants[{index}]"
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: must be an object")
    unknown = set(item) - _FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}.name: must match {_NAME.pattern}, got {name!r}")
    where = f"variants[{index}] ({name})"
    mode = item.get("mode", "fit")
    if mode not in MODES:
        raise ConfigError(f"{where}.mode: must be one of {', '.join(MODES)}, got {mode!r}")
    width = _dimension(where, "width", item.get("width"))
    height = _dimension(where, "height", item.get("height", width))
    fmt = item.get("format", "auto")
    if fmt not in FORMATS:
        raise ConfigError(f"{where}.format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    quality = item.get("quality", DEFAULT_QUALITY)
    if not _is_int(quality) or not 1 <= quality <= 100:
        raise ConfigError(f"{where}.quality: must be a whole number 1..100, got {quality!r}")
    return Variant(name, mode, width, height, fmt, quality)


def _dimension(where: str, field: str, value: object) -> int:
    if not _is_int(value) or not 1 <= value <= MAX_DIMENSION:
        raise ConfigError(f"{where}.{field}: must be a whole number 1..{MAX_DIMENSION}, got {value!r}")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
