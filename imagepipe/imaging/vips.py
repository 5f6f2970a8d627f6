"""The libvips engine: libvips resamples, and decodes JPEG photographs itself; all else is shared.

Where ``pyvips`` with the ``pyvips-binary`` wheel's libvips is installed: the resize Lambda
package, ``requirements.txt``. The allow-list, limits, orientation, colour plans and encoding
(but PNG's, see ``save_png``) stay the Pillow engine's, so both give the same variants, bytes
aside. What libvips does better is the work in between:

- a JPEG in RGB or grey without a profile to convert (``decodes``) streams through its decoder
  into a SIMD lanczos3 resampler without the full-size image ever being held (the peak RSS of
  a 24 MP JPEG is a fraction of Pillow's), several times faster than Pillow's resample;
- whatever else Pillow decoded and made 8-bit L, LA, RGB or RGBA (``resamples``: PNG, WebP,
  GIF, a JPEG that needed a transform) is handed over once and resampled the same way.

CMYK and images whose profile converts per variant stay on Pillow's path.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterator

from PIL import Image

from imagepipe.errors import PermanentError, data_error
from imagepipe.imaging.colour import ColourPlan
from imagepipe.imaging.geometry import Plan
from imagepipe.imaging.load import Opened, draft_target
# (Not ``from imagepipe.imaging import resample``: the package's own ``resample`` function
# shadows that module once the package has loaded.)
from imagepipe.imaging.resample import REDUCING_GAP, Base, pick_base
from imagepipe.imaging.resample import resample as pillow_resample

_PILLOW_MODES = ("L", "LA", "RGB", "RGBA")
_PREMULTIPLIED = {"LA": "La", "RGBA": "RGBa"}  # Pillow's modes for alpha-premultiplied pixels


def available() -> bool:
    return _load() is None


def unavailable_reason() -> str | None:
    """Why libvips cannot run here (None when it can)."""
    return _load()


@functools.lru_cache(maxsize=1)
def _load() -> str | None:
    try:
        import pyvips
    # No module, no libvips for it to load (OSError), or libvips failed to start (pyvips raises
    # a bare Exception): whatever it is, this engine cannot run and Pillow's must.
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    pyvips.cache_set_max(0)  # no operation cache: it would pin decoded images in memory
    return None


def decodes(opened: Opened, colours: ColourPlan) -> bool:
    """libvips decodes it itself: a JPEG in RGB or grey, without a profile to convert."""
    return (
        opened.is_jpeg
        and opened.image.mode in ("RGB", "L")
        and not colours.converts
        and not opened.animated
    )


def resamples(image: Image.Image, colours: ColourPlan) -> bool:
    """libvips resamples what Pillow decoded (and ``colour.normalise`` made 8-bit): grey or RGB,
    with or without alpha, with no colour conversion left to do."""
    return image.mode in _PILLOW_MODES and not colours.converts


def jpeg_source(data: bytes, stored_size: tuple[int, int], plans: list[Plan]) -> Callable[[], Base]:
    """A fresh sequential decode of the JPEG each time it is called (a streamed image is read
    once), at the DCT scaling the largest variant allows (``_jpeg_shrink``)."""
    import pyvips

    width, height = stored_size
    shrink = _jpeg_shrink(stored_size, max((p.largest_scale for p in plans), default=1.0))

    def source() -> Base:
        image = pyvips.Image.new_from_buffer(
            data, "", shrink=shrink, access="sequential", fail_on="truncated"
        )
        return Base(image, image.width / width, image.height / height)

    return source


def memory_source(image: Image.Image, stored_size: tuple[int, int]) -> Callable[[], Base]:
    """Pillow's decoded pixels, handed to libvips once. Alpha is premultiplied first, in 8 bits
    as Pillow's own resize does it, so the colour of transparent pixels never bleeds into the
    edges (libvips' premultiply works in float: 4x the time of the resample it protects)."""
    import pyvips

    if image.mode in _PREMULTIPLIED:
        image = image.convert(_PREMULTIPLIED[image.mode])
    made = pyvips.Image.new_from_memory(
        image.tobytes(), image.width, image.height, len(image.getbands()), "uchar"
    )
    base = Base(made, image.width / stored_size[0], image.height / stored_size[1])
    return lambda: base


def resample_all(
    source: Callable[[], Base], stored_size: tuple[int, int], mode: str, plans: list[Plan],
    threads: int = 1,
) -> Iterator[tuple[int, Image.Image]]:
    """As ``resample.resample_all``: (plan index, Pillow image in ``mode`` on the stored axes),
    largest first, each from the smallest made image still REDUCING_GAP times its size, else
    from ``source()``."""
    import pyvips

    pyvips.concurrency_set(max(1, threads))
    width, height = stored_size
    bases: list[Base] = []
    for index in sorted(range(len(plans)), key=lambda i: plans[i].largest_scale, reverse=True):
        plan = plans[index]
        try:
            base = pick_base(bases, plan) or source()
            if _is_subpixel(base.box(plan)):
                # A crop that starts between pixels (a cover variant): libvips resizes whole
                # pixels only, and half a pixel off shows (SSIM 0.90 on a grainy thumbnail).
                # Pillow resamples exactly that box, from this base made into a Pillow image.
                pillow_base = Base(_to_pillow(base.image.copy_memory(), mode), base.sx, base.sy)
                yield index, pillow_resample(pillow_base, plan)
                continue
            made = _resample(base, plan).copy_memory()  # a JPEG's decode happens here
        except pyvips.Error as exc:
            raise _bad_data(exc) from None
        if plan.variant.mode == "fit":
            bases.append(Base(made, made.width / width, made.height / height))
        yield index, _to_pillow(made, mode)


def _bad_data(exc) -> PermanentError:
    # The header was read (by Pillow) and the steps are sound: what fails is the data.
    return data_error(f"{exc.message} {exc.detail}".strip())


def _jpeg_shrink(size: tuple[int, int], scale: float) -> int:
    """The DCT scaling the Pillow engine's draft() chooses for the same target (Pillow's rule:
    the largest of 8, 4, 2 that the whole-number ratio allows)."""
    target = draft_target(size, scale, REDUCING_GAP)
    if target is None:
        return 1
    ratio = min(size[0] // target[0], size[1] // target[1])
    return next(n for n in (8, 4, 2, 1) if ratio >= n)


def _is_subpixel(box) -> bool:
    return any(v != int(v) for v in box)


def _resample(base: Base, plan: Plan):
    image = base.image
    box = base.box(plan)
    w, h = plan.size
    if box != (0.0, 0.0, float(image.width), float(image.height)):  # whole pixels: see above
        x0, y0, x1, y1 = (int(v) for v in box)
        image = image.crop(x0, y0, x1 - x0, y1 - y0)
        if (x1 - x0, y1 - y0) == (w, h):
            return image  # pixel for pixel
    elif (image.width, image.height) == (w, h):
        return image
    hscale, vscale = w / (box[2] - box[0]), h / (box[3] - box[1])
    resized = image.resize(hscale, vscale=vscale, kernel="lanczos3")
    if (resized.width, resized.height) != (w, h):  # libvips rounds the size its own way
        resized = resized.embed(0, 0, w, h, extend="copy")
    return resized


def _to_pillow(image, mode: str) -> Image.Image:
    if image.format != "uchar":
        image = image.cast("uchar")
    stored = _PREMULTIPLIED.get(mode, mode)
    made = Image.frombytes(stored, (image.width, image.height), image.write_to_memory())
    return made.convert(mode) if stored != mode else made


def save_png(image: Image.Image, compress_level: int) -> bytes:
    """An 8-bit L, LA, RGB or RGBA Pillow image as PNG, written by libvips: libspng with the
    zlib-ng built into pyvips-binary, where Pillow's wheels deflate with the system's zlib.
    Every row Paeth-filtered: on a 2048 px RGBA photo and on flat graphics it came within
    0.4 % of the bytes of adaptive filtering (which tries all five per row, as Pillow does) in
    60-75 % of its time. Nothing but the pixels: the pHYs chunk libvips always writes (25.4 dpi
    for an image made from memory) is taken out."""
    import pyvips

    bands = len(image.getbands())
    made = pyvips.Image.new_from_memory(image.tobytes(), image.width, image.height, bands, "uchar")
    data = made.pngsave_buffer(compression=compress_level, filter="paeth", keep="none")
    return _without_chunk(data, b"pHYs")


def _without_chunk(png: bytes, kind: bytes) -> bytes:
    parts, offset = [png[:8]], 8  # the signature
    while offset < len(png):
        length = int.from_bytes(png[offset:offset + 4], "big")
        end = offset + 12 + length  # length, type, data, CRC
        if png[offset + 4:offset + 8] != kind:
            parts.append(png[offset:end])
        offset = end
    return b"".join(parts)
