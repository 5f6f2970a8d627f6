"""TEMPORARY copy of ``imagepipe.backfill.compare`` (issue 14), written against the signature in
the shared design until the worker part (branch ``rerender``) lands on main.

TODO(lead, at merge): delete this module; ``imagepipe_tools.backfill`` already imports
``imagepipe.backfill`` first and only falls back to this copy when that module is missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from imagepipe import fingerprint, spec
from imagepipe.errors import ConfigError
from imagepipe.messages import Manifest


@dataclass(frozen=True)
class Staleness:
    stale: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()


def compare(manifest: Manifest, variants: Iterable[spec.Variant], engine: str) -> Staleness:
    current = fingerprint.spec_fingerprints(variants, engine)
    recorded = {v.name: v for v in manifest.variants}
    made_with = _spec_fingerprints(manifest, engine)
    stale, missing = [], []
    for name, wanted in current.items():
        info = recorded.get(name)
        if info is None:
            missing.append(name)
        elif (info.fingerprint or made_with.get(name)) != wanted:
            stale.append(name)
    extra = tuple(name for name in recorded if name not in current)
    return Staleness(tuple(stale), tuple(missing), extra)


def _spec_fingerprints(manifest: Manifest, engine: str) -> dict[str, str]:
    """Name -> fingerprint of the manifest's own ``spec`` entries (for variants made before
    fingerprints existed); an entry this code cannot parse counts as unknown, hence stale."""
    found = {}
    for entry in manifest.spec:
        try:
            (variant,) = spec.parse_variants([entry])
        except (ConfigError, ValueError, TypeError):
            continue
        found[variant.name] = fingerprint.variant_fingerprint(variant, engine)
    return found
