"""A rerender job (``python -m imagepipe backfill``): make some of a done upload's variants
again with the current spec, and move the manifest to the new set in one step.

- It never writes the upload's status: a job for an upload that is not ``done`` with a
  manifest (its own job still running, or failed) is refused for good, status untouched.
- What to make is decided here again, with ``backfill.compare`` against this worker's spec and
  engine: the names the job asks for that are stale or missing now. When nothing is left (a
  redelivery, or another job got there first) it is done without a write.
- The original is read once and only those variants are rendered. They go under their
  fingerprint's folder, so readers of the current manifest keep loading whole, unchanged
  objects; the new manifest (revision + 1) is written with If-Match on the ETag of the one read,
  so the old set or the new one is visible, never a mix. Only then are the objects it no longer
  names deleted (re-rendered variants' old keys, pruned variants).
- Lost race: another writer replaced the manifest between the read and the write. The job is
  judged again against the manifest that won: done from it when nothing the job asks for is
  left to do (the usual case: a duplicate job, same spec, same keys), else a transient error,
  so the job runs again on that manifest. The objects written for the lost revision are left
  alone: another worker with the same spec writes and references the very same keys.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imagepipe import backfill, imaging, status, variant_store
from imagepipe.errors import BAD_MESSAGE, INTERNAL, PermanentError, TransientError
from imagepipe.imaging import Rendered
from imagepipe.messages import Manifest, ResizeJob, State, VariantInfo, utc_now

if TYPE_CHECKING:
    from imagepipe.resize import Runtime

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    make: tuple[str, ...]  # spec order
    prune: tuple[str, ...]

    @property
    def is_empty(self) -> bool:
        return not (self.make or self.prune)


def run(job: ResizeJob, runtime: Runtime) -> Manifest:
    """The upload's manifest once the job is done (the new revision, or the current one when
    there was nothing to do). Raises a ``JobError`` (or anything ``classify`` maps) otherwise."""
    store = runtime.status
    manifest, etag = _done_manifest(job, store)
    plan = make_plan(job, manifest, runtime)
    if plan.is_empty:
        LOGGER.info("rerender of %s: nothing to do (revision %d is current)",
                    job.upload_id, manifest.revision)
        return manifest
    settings = runtime.settings
    data = variant_store.read_original(runtime.s3, settings, job)
    subset = [v for v in settings.variants if v.name in plan.make]
    rendered = imaging.render(data, subset, max_pixels=settings.max_pixels,
                              engine=runtime.engine)
    updated_at = utc_now()  # re-rendered variants' URL lifetime counts from it
    made = variant_store.store_variants(runtime.s3, settings, job, rendered.variants,
                                        runtime.fingerprints, updated_at, under_fingerprint=True)
    new = _next_revision(manifest, made, plan.prune, rendered, runtime, updated_at)
    if not store.replace_manifest(new, etag):
        return _after_lost_race(job, runtime)
    superseded = {v.key for v in manifest.variants} - {v.key for v in new.variants}
    variant_store.delete_objects(runtime.s3, job.bucket, sorted(superseded))
    LOGGER.info("rerender of %s: revision %d made %s, pruned %s", job.upload_id, new.revision,
                ",".join(plan.make) or "-", ",".join(plan.prune) or "-")
    return new


def make_plan(job: ResizeJob, manifest: Manifest, runtime: Runtime) -> Plan:
    """What of ``job`` is still to do on ``manifest``; a job naming variants this worker's spec
    does not make, or asking to prune ones it does, is refused (it can never be right here)."""
    asked = job.rerender or ()
    unknown = [name for name in asked if name not in runtime.fingerprints]
    if unknown:
        raise PermanentError(BAD_MESSAGE, f"rerender names variants not in the spec: {unknown}")
    kept = [name for name in job.prune if name in runtime.fingerprints]
    if kept:
        raise PermanentError(BAD_MESSAGE, f"prune names variants still in the spec: {kept}")
    found = backfill.compare(manifest, runtime.settings.variants, runtime.engine)
    due = set(found.names_to_make) & set(asked)
    return Plan(make=tuple(v.name for v in runtime.settings.variants if v.name in due),
                prune=tuple(name for name in found.extra if name in job.prune))


def _done_manifest(job: ResizeJob, store: status.StatusStore) -> tuple[Manifest, str]:
    found = store.get_manifest_with_etag(job.upload_id)
    if found is None:
        raise PermanentError(BAD_MESSAGE, "the upload has no manifest: only a done upload "
                                          "is re-rendered")
    if State.DONE not in store.states(job.upload_id):
        raise PermanentError(BAD_MESSAGE, "the upload is not done: only a done upload is "
                                          "re-rendered")
    return found


def _next_revision(manifest: Manifest, made: tuple[VariantInfo, ...], prune: tuple[str, ...],
                   rendered: Rendered, runtime: Runtime, updated_at: str) -> Manifest:
    """The manifest with ``made`` in place of the variants of those names (new names last, in
    spec order) and ``prune`` left out. Its ``spec`` stays what made each variant it lists: the
    current definition for ``made``, the one it had for the rest (a variant made before
    fingerprints is judged by that entry, so it must not pass for fresh when it was not made)."""
    new = {v.name: v for v in made}
    variants = [new.pop(v.name, v) for v in manifest.variants if v.name not in prune]
    variants += new.values()
    current = {v.name: v.to_dict() for v in runtime.settings.variants}
    earlier = {entry.get("name"): entry for entry in manifest.spec if isinstance(entry, dict)}
    made_names = {v.name for v in made}
    entries = [current[v.name] if v.name in made_names else earlier.get(v.name)
               for v in variants]
    return dataclasses.replace(
        manifest,
        spec=tuple(entry for entry in entries if entry is not None),
        variants=tuple(variants),
        stripped=_union(manifest.stripped, rendered.stripped),
        converted=_union(manifest.converted, rendered.converted),
        colour_converted=manifest.colour_converted or rendered.colour_converted,
        notes=_union(manifest.notes, rendered.notes),
        revision=manifest.revision + 1,
        updated_at=updated_at,
    )


def _after_lost_race(job: ResizeJob, runtime: Runtime) -> Manifest:
    manifest, _ = _done_manifest(job, runtime.status)
    if make_plan(job, manifest, runtime).is_empty:
        LOGGER.info("rerender of %s: revision %d was written meanwhile and is current",
                    job.upload_id, manifest.revision)
        return manifest
    raise TransientError(INTERNAL, "the manifest changed while re-rendering: the job runs "
                                   "again on the new one")


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))
