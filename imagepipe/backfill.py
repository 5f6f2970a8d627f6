"""Which of an upload's variants the current spec would make differently (issue 14).

``compare`` is the one place that decides it, for the operator's ``backfill`` command (what to
publish) and for the resize worker (what a rerender job still has to make when it runs, so a
redelivered or overtaken job does no work twice). Pillow-free: the tools carry no imaging.

A variant is judged by the fingerprint it was made with (``fingerprint.variant_fingerprint``)
against the current definition's, both with the engine the workers run. A variant made before
fingerprints existed has none; it is judged by its entry in the manifest's ``spec`` list (the
definitions it was made with) instead, so an upgrade alone does not re-render every photo.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from imagepipe import fingerprint, spec
from imagepipe.errors import ConfigError
from imagepipe.messages import Manifest


@dataclass(frozen=True)
class Staleness:
    """Variant names, each tuple in spec order (``extra`` in manifest order)."""

    stale: tuple[str, ...] = ()  # in the spec and the manifest, made from another definition
    missing: tuple[str, ...] = ()  # in the spec, not in the manifest
    extra: tuple[str, ...] = ()  # in the manifest, no longer in the spec (deleted by a prune)

    @property
    def names_to_make(self) -> tuple[str, ...]:
        return self.stale + self.missing

    @property
    def is_fresh(self) -> bool:
        """Nothing to make. Extra variants do not count: they are only removed on request."""
        return not self.names_to_make


def compare(manifest: Manifest, variants: Iterable[spec.Variant], engine: str) -> Staleness:
    """How ``manifest`` stands against the spec ``variants`` rendered by ``engine``."""
    current = fingerprint.spec_fingerprints(variants, engine)
    # Only a manifest older than fingerprints pays for parsing its spec (a scan reads thousands).
    legacy = any(v.fingerprint is None for v in manifest.variants)
    made_with = _legacy_fingerprints(manifest, engine) if legacy else {}
    stale, missing = [], []
    for name, wanted in current.items():
        info = manifest.variant(name)
        if info is None:
            missing.append(name)
        elif (info.fingerprint if info.fingerprint is not None else made_with.get(name)) != wanted:
            stale.append(name)
    extra = tuple(v.name for v in manifest.variants if v.name not in current)
    return Staleness(tuple(stale), tuple(missing), extra)


def _legacy_fingerprints(manifest: Manifest, engine: str) -> dict[str, str]:
    """Name -> fingerprint of the manifest's own ``spec`` entries. An entry this code cannot
    parse (a field since removed, a hand-edited manifest) is left out: its variant is stale."""
    found = {}
    for entry in manifest.spec:
        try:
            (variant,) = spec.parse_variants([entry])
        except (ConfigError, TypeError, ValueError):
            continue
        found[variant.name] = fingerprint.variant_fingerprint(variant, engine)
    return found
