"""The variant spec: which resized images a job makes.

Owned here and nowhere else. It is loaded from the deploy manifest (``chalicefile.json``) or the
``IMAGEPIPE_VARIANTS`` setting and validated when loaded, with errors that name the bad field.
Pillow-free: the upload function validates the spec too and carries no Pillow.

A variant is ``{"name", "mode", "width", "height", "format", "quality", "gravity", "background",
"upscale", "options"}``; only ``name`` and ``width`` are required:

- ``mode``: ``fit`` (scale to fit inside width×height, keep the aspect ratio), ``cover`` (scale
  and crop to fill width×height, the crop placed by ``gravity``) or ``exact`` (scale each axis to
  width×height, the aspect ratio is not kept).
- ``upscale`` (default false): whether a source smaller than the box is enlarged. Without it a
  variant never has more pixels than the source: ``fit`` keeps the source size, ``cover`` gives
  the largest crop of the box's aspect ratio and ``exact`` the largest size of the box's aspect
  ratio that the source covers.
- ``gravity`` (``cover`` only, default ``centre``): which part a crop keeps: ``centre``,
  ``north``, ``south``, ``east``, ``west``, ``northeast``, ``northwest``, ``southeast``,
  ``southwest``.
- ``format``: ``auto`` (JPEG for opaque sources, PNG where there is alpha), ``jpeg``, ``png``,
  ``webp`` or ``avif`` (where the installed Pillow can write it).
- ``quality``: 1–100 for lossy formats (default 82).
- ``background`` (default ``#ffffff``): the colour alpha is flattened on, only where the output
  format has no alpha (JPEG).
- ``options``: encoder options per output format, e.g. ``{"jpeg": {"progressive": true},
  "webp": {"method": 6}}`` (see ``FORMAT_OPTIONS``). Keyed by format, so ``auto`` variants can
  say how to write either of the formats they may become.
"""

from __future__ import annotations

import re
from typing import TypeGuard
from dataclasses import dataclass

from imagepipe.errors import ConfigError

MODES = ("fit", "cover", "exact")
OUTPUT_FORMATS = ("jpeg", "png", "webp", "avif")
FORMATS = ("auto", *OUTPUT_FORMATS)
GRAVITIES = (
    "centre", "north", "south", "east", "west", "northeast", "northwest", "southeast", "southwest",
)
_GRAVITY_ALIASES = {"center": "centre"}
DEFAULT_QUALITY = 82
DEFAULT_BACKGROUND = "#ffffff"
MAX_DIMENSION = 16384
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
_FIELDS = {
    "name", "mode", "width", "height", "format", "quality", "gravity", "background", "upscale",
    "options",
}


@dataclass(frozen=True)
class _Option:
    kind: type | tuple  # bool, or an int range as (low, high), or a tuple of allowed strings
    help: str

    def check(self, value: object) -> bool:
        if self.kind is bool:
            return isinstance(value, bool)
        if isinstance(self.kind, tuple) and len(self.kind) == 2 and all(map(_is_int, self.kind)):
            return _is_int(value) and self.kind[0] <= value <= self.kind[1]
        return isinstance(self.kind, tuple) and value in self.kind


# Output format -> option -> what it takes. These are passed to Pillow's encoder as they are.
FORMAT_OPTIONS: dict[str, dict[str, _Option]] = {
    "jpeg": {
        "progressive": _Option(bool, "true or false"),
        "optimize": _Option(bool, "true or false"),
        "subsampling": _Option(("4:4:4", "4:2:2", "4:2:0"), "one of 4:4:4, 4:2:2, 4:2:0"),
    },
    "png": {
        "compress_level": _Option((0, 9), "a whole number 0..9"),
        "optimize": _Option(bool, "true or false"),
    },
    "webp": {
        "method": _Option((0, 6), "a whole number 0..6"),
        "lossless": _Option(bool, "true or false"),
    },
    "avif": {
        "speed": _Option((0, 10), "a whole number 0..10"),
    },
}


@dataclass(frozen=True)
class Variant:
    name: str
    mode: str
    width: int
    height: int
    format: str = "auto"
    quality: int = DEFAULT_QUALITY
    gravity: str = "centre"
    background: str = DEFAULT_BACKGROUND
    upscale: bool = False
    # ((format, ((option, value), ...)), ...): frozen and hashable, sorted by name
    options: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()

    def options_for(self, fmt: str) -> dict:
        return dict(dict(self.options).get(fmt, ()))

    @property
    def background_rgb(self) -> tuple[int, int, int]:
        value = self.background.lstrip("#")
        return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))

    def to_dict(self) -> dict:
        data = {
            "name": self.name,
            "mode": self.mode,
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "quality": self.quality,
        }
        # The newer fields only when set, so a default spec reads (and is stored) as before.
        if self.mode == "cover" and self.gravity != "centre":
            data["gravity"] = self.gravity
        if self.background != DEFAULT_BACKGROUND:
            data["background"] = self.background
        if self.upscale:
            data["upscale"] = True
        if self.options:
            data["options"] = {fmt: dict(values) for fmt, values in self.options}
        return data


DEFAULT_VARIANTS: tuple[Variant, ...] = (
    Variant("xl", "fit", 2048, 2048),
    Variant("lg", "fit", 1024, 1024),
    Variant("md", "fit", 512, 512),
    Variant("sm", "fit", 256, 256),
    Variant("thumb", "cover", 150, 150),
)


def is_variant_name(value: object) -> bool:
    return isinstance(value, str) and bool(_NAME.fullmatch(value))


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
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
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
    gravity = _gravity(where, mode, item)
    background = item.get("background", DEFAULT_BACKGROUND)
    if not isinstance(background, str) or not _COLOUR.fullmatch(background):
        raise ConfigError(f"{where}.background: must be a colour like #ffffff, got {background!r}")
    upscale = item.get("upscale", False)
    if not isinstance(upscale, bool):
        raise ConfigError(f"{where}.upscale: must be true or false, got {upscale!r}")
    options = _options(where, fmt, item.get("options", {}))
    return Variant(
        name, mode, width, height, fmt, quality, gravity, background.lower(), upscale, options
    )


def _gravity(where: str, mode: str, item: dict) -> str:
    if "gravity" not in item:
        return "centre"
    gravity = item["gravity"]
    gravity = _GRAVITY_ALIASES.get(gravity, gravity) if isinstance(gravity, str) else gravity
    if gravity not in GRAVITIES:
        raise ConfigError(
            f"{where}.gravity: must be one of {', '.join(GRAVITIES)}, got {item['gravity']!r}"
        )
    if mode != "cover" and gravity != "centre":
        raise ConfigError(f"{where}.gravity: only a cover variant crops, this one is {mode!r}")
    return gravity


def _options(where: str, fmt: str, raw: object) -> tuple:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}.options: must be an object keyed by format")
    parsed = []
    for out_format in sorted(raw):
        if out_format not in OUTPUT_FORMATS:
            raise ConfigError(
                f"{where}.options.{out_format}: not a format; use {', '.join(OUTPUT_FORMATS)}"
            )
        if fmt not in ("auto", out_format):
            raise ConfigError(f"{where}.options.{out_format}: this variant is always {fmt}")
        values = raw[out_format]
        if not isinstance(values, dict):
            raise ConfigError(f"{where}.options.{out_format}: must be an object")
        known = FORMAT_OPTIONS[out_format]
        for option in sorted(values):
            field = f"{where}.options.{out_format}.{option}"
            if option not in known:
                raise ConfigError(f"{field}: unknown option; {out_format} takes {', '.join(known)}")
            if not known[option].check(values[option]):
                raise ConfigError(f"{field}: must be {known[option].help}, got {values[option]!r}")
        parsed.append((out_format, tuple(sorted(values.items()))))
    return tuple(parsed)


def _dimension(where: str, field: str, value: object) -> int:
    if not _is_int(value) or not 1 <= value <= MAX_DIMENSION:
        raise ConfigError(f"{where}.{field}: must be a whole number 1..{MAX_DIMENSION}, got {value!r}")
    return value


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
