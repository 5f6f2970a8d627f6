"""Imaging: decode an upload once, make every variant of the spec, encode them.

Pure functions over bytes (no S3, no broker), so the resize job, the CLI and tests share them.
Bad input raises ``PermanentError`` with a reason code (``unsupported_format``,
``too_many_pixels``, ``truncated``, ``corrupt``, ``empty_upload``).

What comes out, whatever went in (JPEG, PNG, WebP or GIF — HEIC too with the optional
pillow-heif plugin — checked on content, in any mode Pillow opens them as):

- upright pixels (EXIF orientation 1-8 applied) and no metadata at all: no EXIF, XMP, IPTC,
  comments, PNG text or ICC profile. ``Rendered.stripped`` names what the source had.
- sRGB: an ICC-profiled source is converted (LittleCMS), CMYK and YCCK JPEGs through their
  profile or else Pillow's formula; ``Rendered.colour_converted`` says whether it happened.
- 8-bit L, LA, RGB or RGBA. ``Rendered.converted`` names each mode change (``P->RGB``,
  ``I;16->L``, ``CMYK->RGB``, ``RGBA->RGB`` for an alpha channel that is fully opaque, and
  ``thumb: RGBA->RGB on #ffffff`` where a variant's format cannot hold alpha).
- an animated source gives its first frame (``Rendered.notes`` says so).

Speed (see ``make bench BENCH_ARGS=imaging``): one decode for all variants, JPEG DCT scaling
(draft) when every variant is much smaller, each variant resampled from the previous one when
that is big enough, resampling on the stored axes so only small results are turned upright,
colour conversion after the first resample, and — with ``threads`` > 1 — large resamples cut
into strips and variants encoded while the next is made (Pillow releases the GIL for both).
``engine="vips"`` (the pipeline's default, where pyvips and its libvips load) has libvips
resample every image that needs no per-variant colour transform, decode JPEG photos itself
(streaming) and write PNG; everything else is shared, so both engines pass the same tests.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

from imagepipe.errors import ConfigError, JobError, classify
from imagepipe.imaging import colour, encode, geometry, vips
from imagepipe.imaging.colour import ColourPlan
from imagepipe.imaging.encode import Encoded, can_write_avif
from imagepipe.imaging.load import Opened, allowed_decoders, decode, open_upload
from imagepipe.imaging.resample import REDUCING_GAP, Base, resample_all
from imagepipe.settings import IMAGING_ENGINES
from imagepipe.spec import Variant

LOGGER = logging.getLogger(__name__)

__all__ = [
    "Rendered", "RenderedVariant", "Resampled", "SourceInfo", "render", "resample",
    "allowed_decoders", "can_write_avif", "check_engine", "check_variants", "start_engine",
]

RenderedVariant = Encoded


@dataclass(frozen=True)
class SourceInfo:
    format: str
    width: int  # upright
    height: int
    mode: str  # as stored, before any conversion
    orientation: int
    icc_profile: str | None = None  # the source profile's description, if it had one
    animated: bool = False
    frames: int | None = None  # of an animated source, where its header says

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "mode": self.mode,
            "orientation": self.orientation,
            "icc_profile": self.icc_profile,
            "animated": self.animated,
            "frames": self.frames,
        }


@dataclass(frozen=True)
class Rendered:
    source: SourceInfo
    variants: tuple[RenderedVariant, ...]
    stripped: tuple[str, ...]
    converted: tuple[str, ...]
    colour_converted: bool = False  # pixels went through a profile or CMYK to reach sRGB
    notes: tuple[str, ...] = ()  # what a person should know about how the variants were made


ENGINES = IMAGING_ENGINES


def start_engine(requested: str) -> str:
    """The engine a process uses, decided once at start and logged: ``requested``, but Pillow's
    where libvips cannot run (the Lambda package and ``pip install -r requirements.txt`` carry
    it, so that is a broken install or an unsupported platform: a warning, not a failed start,
    since Pillow's engine makes the same variants, only slower)."""
    if requested not in ENGINES:
        raise ConfigError(f"imaging engine must be one of {', '.join(ENGINES)}, got {requested!r}")
    if requested == "vips" and not vips.available():
        LOGGER.warning("imaging engine: pillow, because libvips cannot run here (%s)",
                       vips.unavailable_reason() or "unavailable")
        return "pillow"
    LOGGER.info("imaging engine: %s", requested)
    return requested


def check_engine(engine: str) -> None:
    """A ``ConfigError`` unless ``engine`` is known and can run here."""
    if engine not in ENGINES:
        raise ConfigError(f"imaging engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "vips" and not vips.available():
        raise ConfigError("imaging engine vips needs pyvips and libvips (pip install pyvips-binary pyvips)")


def check_variants(variants: Sequence[Variant]) -> None:
    """A ``ConfigError`` unless every variant's output format can be written here (AVIF needs a
    Pillow built with it): found at start, not as every job's failure after its decode."""
    for variant in variants:
        if variant.format == "avif" and not encode.can_write_avif():
            raise ConfigError(f"variant {variant.name}: this Pillow cannot write AVIF")


def render(
    data: bytes,
    variants: Sequence[Variant],
    *,
    max_pixels: int,
    threads: int = 1,
    engine: str = "pillow",
) -> Rendered:
    """Every variant of ``data``. ``threads`` > 1 uses that many threads for one image: for a
    worker that has the cores to itself (the CLI, one Lambda invocation with several vCPUs).
    ``engine="vips"`` has libvips do the resampling (see ``imaging.vips``), where it can run."""
    check_engine(engine)
    try:
        # Pillow warns (UserWarning) about broken EXIF in hostile files as it parses them; the
        # outcome is ours to report, not a warning to print to a CLI user or a Lambda log.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if threads > 1:
                with ThreadPoolExecutor(threads, thread_name_prefix="imaging") as pool:
                    return _render(data, variants, max_pixels, pool, threads, engine=engine)
            return _render(data, variants, max_pixels, None, 1, engine=engine)
    except JobError:
        raise
    except Exception as exc:
        raise classify(exc) from exc


@dataclass(frozen=True)
class Resampled:
    """An upload decoded and resampled to each variant's size: not yet upright or encoded."""

    opened: Opened
    # As stored, before decode() (whose draft may scale and convert the image) changes them.
    upright_size: tuple[int, int]
    stored_mode: str
    icc: bytes | None  # the source's profile
    colours: ColourPlan
    images: Iterator  # (variant index, image on the stored axes), as each is made


def resample(data: bytes, variants: Sequence[Variant], *, max_pixels: int,
             pool: Executor | None = None, threads: int = 1,
             engine: str = "pillow") -> Resampled:
    """The first half of ``render``: one decode, every variant's pixels in sRGB at its size."""
    opened = open_upload(data, max_pixels)
    image = opened.image
    stored_mode = image.mode
    upright = opened.upright_size
    plans = [geometry.plan(v, upright, opened.orientation) for v in variants]
    icc = image.info.get("icc_profile")
    colours = colour.plan(icc, image.mode)
    if engine == "vips" and vips.decodes(opened, colours):
        source = vips.jpeg_source(data, image.size, plans)
        made = vips.resample_all(source, image.size, image.mode, plans, threads)
    else:
        largest = max((p.largest_scale for p in plans), default=1.0)
        reduction = decode(opened, largest, REDUCING_GAP)
        working = colour.normalise(image)
        working.info = {}  # nothing of the source's metadata may reach an encoder
        if engine == "vips" and vips.resamples(working, colours):
            vips_source = vips.memory_source(working, image.size)
            made = vips.resample_all(vips_source, image.size, working.mode, plans, threads)
        else:
            pillow_base = Base(working, 1 / reduction, 1 / reduction)
            made = resample_all(pillow_base, plans, image.size, colours.apply, pool, threads)
    return Resampled(opened, upright, stored_mode, icc, colours, iter(made))


def _render(data, variants, max_pixels, pool: Executor | None, threads: int,
            engine: str = "pillow"):
    resampled = resample(data, variants, max_pixels=max_pixels, pool=pool, threads=threads,
                         engine=engine)
    opened, upright, stored_mode, icc, colours = (
        resampled.opened, resampled.upright_size, resampled.stored_mode, resampled.icc,
        resampled.colours)
    pending: dict[int, Future | Encoded] = {}
    final_mode = None
    for index, resized in resampled.images:
        final_mode = final_mode or resized.mode
        variant = variants[index]
        if pool is None:
            pending[index] = _finish(resized, variant, opened.orientation, engine)
        else:
            pending[index] = pool.submit(_finish, resized, variant, opened.orientation, engine)
    encoded = [
        p.result() if isinstance(p, Future) else p for _, p in sorted(pending.items())
    ]

    stripped = opened.metadata + (("icc_profile",) if icc else ())
    converted: tuple[str, ...] = ()
    if final_mode and final_mode != stored_mode:
        converted = (f"{stored_mode}->{final_mode}",)
    if colours.converts:
        converted += (f"{colours.description} -> sRGB",)
    notes: tuple[str, ...] = ()
    if opened.animated:
        frames = f" of {opened.frames}" if opened.frames else ""
        notes = (f"animated {opened.format}: the first frame{frames} was used",)
    return Rendered(
        source=_source_info(opened, upright, stored_mode, colours.description),
        variants=tuple(encoded),
        stripped=stripped,
        converted=converted + tuple(e.note for e in encoded if isinstance(e, Encoded) and e.note),
        colour_converted=colours.converts or stored_mode == "CMYK",
        notes=notes,
    )


def _finish(image, variant: Variant, orientation: int, engine: str = "pillow") -> Encoded:
    return encode.encode(geometry.turn_upright(image, orientation), variant, engine)


def _source_info(opened, upright, stored_mode: str, profile: str | None) -> SourceInfo:
    return SourceInfo(
        format=opened.format,
        width=upright[0],
        height=upright[1],
        mode=stored_mode,
        orientation=opened.orientation,
        icc_profile=profile,
        animated=opened.animated,
        frames=opened.frames,
    )
