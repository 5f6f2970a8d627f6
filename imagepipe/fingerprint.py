"""Variant fingerprints: which definition made a stored variant, so a spec change marks exactly
the variants it affects stale (``python -m imagepipe backfill``).

A fingerprint hashes everything that decides a variant's pixels and bytes: its definition (mode,
size, gravity, format, quality, background, upscale, encoder options; not its name, which only
says where it is stored) and the engine that renders it, with that engine's output version.

``ENGINE_OUTPUT_VERSIONS`` is ours, not the libraries': bump an engine's number when a change of
our rendering code (or a pinned library upgrade) changes what it writes. Pillow- and libvips-
free, so the upload function and the operator tools compute the same value as the resize.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping

from imagepipe.spec import Variant

# Bump on any change to an engine's output (pixels or encoder settings).
ENGINE_OUTPUT_VERSIONS: Mapping[str, int] = {"pillow": 1, "vips": 1}
# 64 bits of SHA-256, hex: short in manifests and keys, no accidental collisions within a spec.
FINGERPRINT_CHARS = 16


def engine_output_version(engine: str) -> str:
    """``vips/1``: the engine and the version of what it writes."""
    try:
        return f"{engine}/{ENGINE_OUTPUT_VERSIONS[engine]}"
    except KeyError:
        raise ValueError(f"no output version for imaging engine {engine!r}") from None


def variant_fingerprint(variant: Variant, engine: str) -> str:
    """The fingerprint of ``variant`` as rendered by ``engine``: every field (defaults included,
    so a changed default is a changed definition) except the name."""
    definition = dataclasses.asdict(variant)
    definition.pop("name")
    definition["options"] = {fmt: dict(values) for fmt, values in variant.options}
    canonical = json.dumps({"variant": definition, "engine": engine_output_version(engine)},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:FINGERPRINT_CHARS]


def spec_fingerprints(variants: Iterable[Variant], engine: str) -> dict[str, str]:
    """Variant name -> fingerprint, for a whole spec."""
    return {variant.name: variant_fingerprint(variant, engine) for variant in variants}


def is_fingerprint(value: object) -> bool:
    return (isinstance(value, str) and len(value) == FINGERPRINT_CHARS
            and all(c in "0123456789abcdef" for c in value))
