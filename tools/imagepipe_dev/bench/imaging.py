"""``make bench BENCH_ARGS=imaging``: the resize engine against naive Pillow, in one process.

Naive is what the issue names: open, ``exif_transpose``, ``convert``, resize every variant from
the full image with LANCZOS, save. Each case runs both, interleaved, and reports the ratio of
medians (so a busy machine slows both alike), plus:

- ``ssim_min``: the lowest SSIM (luma, 11x11 Gaussian window) of any variant's pixels, taken
  just before encoding, against naive's LANCZOS-from-full pixels. The engine's shortcuts (DCT
  scaling, resampling from a larger variant) must keep it at or above 0.998.
- threads: the same render with one thread per core (strips + overlapping encodes).
- each engine that runs here: Pillow's, and libvips' (``engine="vips"``, the default).
- images/second with one worker process per core, for both.
- peak RSS of a fresh process that renders one 24 MP JPEG (and of naive, for scale).
- the resize function's cold start (importing app.py, starting the engine) and its time per
  12 MP photo, in a fresh process, as CPU time and as Lambda duration at the configured memory
  size (``chalicefile.json``: CPU in proportion to memory, a full vCPU at 1,769 MB).
- ``x_naive_cpu``: the one-thread ratio in CPU time, which other work on the machine inflates
  less than wall-clock time; and each engine's output bytes beside naive's.

Bench images are made at run time from a fixed seed: 1/f ("pink") noise in colour, like the
statistics of natural photographs, with sharp-edged shapes and sensor grain, saved as JPEG q90
(~3.2 MB for 12 MP) — flat colour would compress and resample unrealistically fast.

``--quick`` is a smoke run (what the test suite does): images a ninth the size, named by their
size (``jpeg_1mp``...), one repetition.

numpy is used here only (SSIM, image generation); the engine and the Lambda package never
import it.
"""

from __future__ import annotations

import functools
import io
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image, ImageDraw, ImageOps

from imagepipe import imaging
from imagepipe.imaging import geometry, vips
from imagepipe.spec import DEFAULT_VARIANTS, Variant, parse_variants

MAX_PIXELS = 200_000_000
SSIM_FLOOR = 0.998
SEED = 20261128


# --- images -------------------------------------------------------------------------------------


def photo(width: int, height: int, seed: int = SEED) -> Image.Image:
    """A deterministic photograph-like RGB image (see the module doc)."""
    import numpy as np  # here, not at the top: the RSS probe imports this module without it

    rng = np.random.default_rng(seed)
    h, w = max(8, height // 4), max(8, width // 4)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    channels = []
    for _ in range(3):
        spectrum = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) / f
        spectrum[0, 0] = 0
        plane = np.fft.irfft2(spectrum, s=(h, w)).astype(np.float32)
        channels.append((plane - plane.mean()) / (plane.std() + 1e-9))
    mix = np.array([[0.8, 0.5, 0.3], [0.2, 0.7, 0.4], [0.1, 0.3, 0.9]], np.float32)
    base = np.clip(128 + 40 * (np.stack(channels, -1) @ mix), 0, 255).astype(np.uint8)
    image = Image.fromarray(base, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(40):  # objects: hard edges at every scale
        x, y = rng.integers(0, width), rng.integers(0, height)
        size = int(rng.integers(max(2, width // 200), max(3, width // 6)))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x, y, x + size, y + int(size * rng.uniform(0.3, 2))), fill=colour)
    pixels = np.asarray(image).astype(np.int16)
    pixels += rng.integers(-6, 7, size=pixels.shape, dtype=np.int16)  # grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def photo_jpeg(width: int, height: int, seed: int = SEED) -> bytes:
    return _save(photo(width, height, seed), "JPEG", quality=90)


def photo_png_with_alpha(width: int, height: int, seed: int = SEED) -> bytes:
    """The photo cut out with a soft-edged mask: a product shot on transparency."""
    image = photo(width, height, seed).convert("RGBA")
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).ellipse((width // 8, height // 8, width * 7 // 8, height * 7 // 8), 255)
    mask = mask.resize((width // 16, height // 16), Image.Resampling.BOX).resize(
        (width, height), Image.Resampling.BICUBIC)
    image.putalpha(mask)
    return _save(image, "PNG", compress_level=6)


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


# --- SSIM ---------------------------------------------------------------------------------------


def _gaussian_blur(plane, kernel):
    import numpy as np

    r = len(kernel) // 2
    padded = np.pad(plane, ((r, r), (0, 0)), mode="reflect")
    out = sum(kernel[i] * padded[i : i + plane.shape[0]] for i in range(len(kernel)))
    padded = np.pad(out, ((0, 0), (r, r)), mode="reflect")
    return sum(kernel[i] * padded[:, i : i + plane.shape[1]] for i in range(len(kernel)))


def ssim(a: Image.Image, b: Image.Image) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) of the
    luma of two images of the same size. Images with alpha are compared as they are seen: the
    lower of their SSIMs composited on black and on white (colour under alpha 0 is invisible,
    and under low alpha quantised to nearly nothing)."""
    if a.size != b.size:
        raise ValueError(f"sizes differ: {a.size} and {b.size}")
    if "A" in a.getbands() or "A" in b.getbands():
        return min(ssim(_on(a, colour), _on(b, colour)) for colour in ("black", "white"))
    return _ssim_luma(a, b)


def _on(image: Image.Image, colour: str) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", image.size, colour)
    return Image.alpha_composite(background, rgba).convert("RGB")


def _ssim_luma(a: Image.Image, b: Image.Image) -> float:
    import numpy as np

    x = np.asarray(a.convert("L"), np.float64)
    y = np.asarray(b.convert("L"), np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    if min(x.shape) < 11:  # smaller than the window: the whole image is one window
        mx, my = x.mean(), y.mean()
        sxx, syy = x.var(), y.var()
        sxy = ((x - mx) * (y - my)).mean()
    else:
        offsets = np.arange(11) - 5
        kernel = np.exp(-(offsets**2) / (2 * 1.5**2))
        kernel /= kernel.sum()
        mx, my = _gaussian_blur(x, kernel), _gaussian_blur(y, kernel)
        sxx = _gaussian_blur(x * x, kernel) - mx * mx
        syy = _gaussian_blur(y * y, kernel) - my * my
        sxy = _gaussian_blur(x * y, kernel) - mx * my
    index = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(index.mean())


# --- the baseline -------------------------------------------------------------------------------


def naive_images(data: bytes, variants: Sequence[Variant]) -> list[Image.Image]:
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    out = []
    for v in variants:
        if v.mode == "fit":
            scale = min(1.0, v.width / image.width, v.height / image.height)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            out.append(image.resize(size, Image.Resampling.LANCZOS))
        else:
            out.append(ImageOps.fit(image, (v.width, v.height), Image.Resampling.LANCZOS))
    return out


def naive(data: bytes, variants: Sequence[Variant]) -> list[bytes]:
    outputs = []
    for v, image in zip(variants, naive_images(data, variants)):
        fmt = v.format if v.format != "auto" else ("png" if image.mode == "RGBA" else "jpeg")
        options = {} if fmt == "png" else {"quality": v.quality}
        outputs.append(_save(image, fmt.upper(), **options))
    return outputs


def engine(data: bytes, variants: Sequence[Variant], threads: int = 1, name: str = "pillow"):
    return imaging.render(data, variants, max_pixels=MAX_PIXELS, threads=threads, engine=name)


# --- measuring ----------------------------------------------------------------------------------


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def compare(
    runs: dict[str, Callable[[], object]], reps: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms of each callable, run interleaved (one warm-up each): wall-clock time, and the
    process's CPU time (all its threads), which a machine shared with other work inflates
    less - what a one-thread render costs where it has a core to itself (a Lambda)."""
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()
    for _ in range(reps):
        for name, fn in runs.items():
            started, used = time.perf_counter(), time.process_time()
            fn()
            cpu[name].append(time.process_time() - used)
            wall[name].append(time.perf_counter() - started)
    return ({name: _median_ms(v) for name, v in wall.items()},
            {name: _median_ms(v) for name, v in cpu.items()})


def upright_images(data: bytes, variants: Sequence[Variant], name: str = "pillow",
                   max_pixels: int = MAX_PIXELS) -> list:
    """The upright pixels of every variant, in spec order, as render makes them before encoding
    (and before any flattening for a format without alpha): render's own path, so what SSIM
    compares with the reference is what ships."""
    resampled = imaging.resample(data, variants, max_pixels=max_pixels, engine=name)
    made = dict(resampled.images)
    return [geometry.turn_upright(made[index], resampled.opened.orientation)
            for index in range(len(variants))]


def ssim_min(
    data: bytes, variants: Sequence[Variant], name: str = "pillow"
) -> tuple[float, dict[str, float]]:
    ours = upright_images(data, variants, name)
    reference = naive_images(data, variants)
    scores = {}
    for v, a, b in zip(variants, ours, reference):
        if a.size != b.size:  # rounding of a cover crop: compare what both show
            b = b.resize(a.size, Image.Resampling.LANCZOS)
        scores[v.name] = round(ssim(a, b), 5)
    return min(scores.values()), scores


def output_bytes(data: bytes, variants: Sequence[Variant], name: str) -> dict[str, int]:
    """Each variant's file size, and naive's: what the encoder settings trade for time."""
    ours = engine(data, variants, name=name).variants
    return {"total": sum(len(v.data) for v in ours),
            "naive_total": sum(len(b) for b in naive(data, variants)),
            **{v.name: len(v.data) for v in ours}}


_WORKER_DATA: bytes = b""


def _init_worker(data: bytes) -> None:
    global _WORKER_DATA
    _WORKER_DATA = data


def _worker(kind: str) -> int:
    if kind == "naive":
        return len(naive(_WORKER_DATA, DEFAULT_VARIANTS))
    return len(engine(_WORKER_DATA, DEFAULT_VARIANTS, name=kind).variants)


def images_per_second(data: bytes, kind: str, jobs: int, workers: int) -> float:
    # spawn, not fork: libvips' and Pillow's thread pools in this process do not survive a fork
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(data,)) as pool:
        list(pool.map(_worker, [kind] * workers))  # warm every worker
        started = time.perf_counter()
        list(pool.map(_worker, [kind] * jobs))
        return round(jobs / (time.perf_counter() - started), 2)


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child forked from this big
# process would report this process's peak.
_RSS_SCRIPT = """
import sys
from imagepipe_dev.bench import imaging as bench
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
data = open(sys.argv[2], "rb").read()
before = hwm()
if sys.argv[1] == "naive":
    bench.naive(data, bench.DEFAULT_VARIANTS)
elif sys.argv[1] != "none":
    bench.engine(data, bench.DEFAULT_VARIANTS, name=sys.argv[1])
print(before, hwm())
"""


def peak_rss_mb(path: str, kind: str) -> tuple[float, float]:
    """(peak RSS of the whole process, its peak before rendering — Python, Pillow and the file
    read) in MB, for a fresh process."""
    result = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, kind, path],
        capture_output=True, text=True, check=True, cwd=os.getcwd(),
    )
    before, after = (int(v) / 1024 for v in result.stdout.split())
    return round(after, 1), round(before, 1)


# The resize function as Lambda starts it, in a fresh process: import app.py (Chalice, the core,
# Pillow; the init phase), make its Runtime on the first invocation (the engine: pyvips loads
# and starts libvips here), then resize the photo once cold and REPS times warm. Prints, per
# step, wall-clock and CPU seconds.
_FUNCTION_SCRIPT = """
import importlib.util, json, os, sys, time
marks = [(time.perf_counter(), time.process_time())]
def mark():
    marks.append((time.perf_counter(), time.process_time()))
spec = importlib.util.spec_from_file_location("resize_app", sys.argv[1])
app = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app)
mark()
runtime = app.runtime()
mark()
from imagepipe import imaging
data = open(sys.argv[2], "rb").read()
for _ in range(1 + int(sys.argv[3])):
    imaging.render(data, runtime.settings.variants, max_pixels=runtime.settings.max_pixels,
                   engine=runtime.engine)
    mark()
print(json.dumps({"engine": runtime.engine, "marks": marks}))
"""
FUNCTION_APP = Path(__file__).resolve().parents[3] / "functions" / "resize" / "app.py"
CHALICEFILE = FUNCTION_APP.parents[2] / "chalicefile.json"
# Lambda gives a function CPU in proportion to its memory: one full vCPU at 1,769 MB.
LAMBDA_MB_PER_VCPU = 1769


def function_start(path: str, engine_name: str, reps: int) -> dict:
    """Cold start and per-photo times of the resize function (see _FUNCTION_SCRIPT), in ms."""
    env = {**os.environ, "IMAGEPIPE_BUCKET": "bench", "IMAGEPIPE_IMAGING_ENGINE": engine_name}
    result = subprocess.run(
        [sys.executable, "-c", _FUNCTION_SCRIPT, str(FUNCTION_APP), path, str(reps)],
        capture_output=True, text=True, check=True, cwd=os.getcwd(), env=env,
    )
    record = json.loads(result.stdout)
    marks = record["marks"]

    def step(i: int, kind: int) -> float:
        return round((marks[i + 1][kind] - marks[i][kind]) * 1000, 1)

    warm = range(3, len(marks) - 1)
    return {
        "engine": record["engine"],
        "import_app_ms": step(0, 0), "import_app_cpu_ms": step(0, 1),
        "start_engine_ms": step(1, 0), "start_engine_cpu_ms": step(1, 1),
        "first_photo_ms": step(2, 0), "first_photo_cpu_ms": step(2, 1),
        "photo_cpu_ms": round(statistics.median(step(i, 1) for i in warm), 1) if reps else None,
    }


def lambda_ms(cpu_ms: float, memory_mb: int) -> float:
    """One thread's CPU time as Lambda duration at ``memory_mb``: stretched below a full vCPU,
    not shortened above it (one thread uses one vCPU at most)."""
    return round(cpu_ms * max(1.0, LAMBDA_MB_PER_VCPU / memory_mb), 1)


def configured_memory_mb() -> int:
    return int(json.loads(CHALICEFILE.read_text())["functions"]["resize"]["memory_mb"])


# --- the section --------------------------------------------------------------------------------


def run(ctx) -> dict:
    reps = 1 if ctx.quick else 7
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    engines = ["pillow"] + (["vips"] if vips.available() else [])
    ctx.say(f"{cores} cores, load average {load:.2f} at the start; medians of {reps} "
            f"interleaved runs; engines: {', '.join(engines)}")
    webp = parse_variants([{**v.to_dict(), "format": "webp"} for v in DEFAULT_VARIANTS])
    # --quick: a smoke run on images a ninth the size, named by their own size.
    side = 3 if ctx.quick else 1
    twelve_mp = photo_jpeg(4000 // side, 3000 // side)  # the JPEG and the WebP cases' source
    cases = {
        f"jpeg_{12 // side ** 2 or 1}mp": (twelve_mp, DEFAULT_VARIANTS),
        f"jpeg_{24 // side ** 2}mp": (photo_jpeg(6000 // side, 4000 // side, SEED + 1), DEFAULT_VARIANTS),
        f"webp_{12 // side ** 2 or 1}mp": (twelve_mp, webp),
        f"png_alpha_{6 // side ** 2 or 1}mp": (
            photo_png_with_alpha(3000 // side, 2000 // side, SEED + 2), DEFAULT_VARIANTS),
    }
    small, large = list(cases)[:2]
    summary: dict[str, float] = {}
    details: dict[str, dict] = {"load_average_start": load, "cores": cores, "engines": engines}
    for case, (data, variants) in cases.items():
        runs: dict[str, Callable[[], object]] = {"naive": lambda: naive(data, variants)}
        for name in engines:
            prefix = "" if name == "pillow" else f"{name}_"
            runs[f"{prefix}engine"] = functools.partial(engine, data, variants, 1, name)
            runs[f"{prefix}engine_threads"] = functools.partial(engine, data, variants, cores, name)
        times, cpu = compare(runs, reps)
        details[case] = {"ms": times, "cpu_ms": cpu, "bytes": len(data)}
        for name in engines:
            prefix = "" if name == "pillow" else f"{name}_"
            worst, scores = ssim_min(data, variants, name)
            one = round(times["naive"] / times[f"{prefix}engine"], 2)
            one_cpu = round(cpu["naive"] / cpu[f"{prefix}engine"], 2)
            threaded = round(times["naive"] / times[f"{prefix}engine_threads"], 2)
            summary[f"{case}_{prefix}x_naive"] = one
            summary[f"{case}_{prefix}x_naive_cpu"] = one_cpu
            summary[f"{case}_{prefix}x_naive_threads"] = threaded
            summary[f"{case}_{prefix}ssim_min"] = worst
            details[case][f"{prefix}ssim"] = scores
            details[case][f"{prefix}output_bytes"] = output_bytes(data, variants, name)
            ctx.say(
                f"{case:14} {name:6} naive {times['naive']:6.0f} ms  1 thread "
                f"{times[f'{prefix}engine']:5.0f} ms ({one:.2f}x; CPU time {one_cpu:.2f}x)  "
                f"{cores} threads {times[f'{prefix}engine_threads']:5.0f} ms ({threaded:.2f}x)  "
                f"SSIM min {worst:.4f}" + ("" if worst >= SSIM_FLOOR else f"  BELOW {SSIM_FLOOR}")
            )

    data = cases[small][0]
    jobs = cores * (2 if ctx.quick else 4)
    throughput = {kind: images_per_second(data, kind, jobs, cores) for kind in ["naive", *engines]}
    details["throughput"] = {**throughput, "workers": cores, "jobs": jobs}
    for name in engines:
        prefix = "" if name == "pillow" else f"{name}_"
        summary[f"{small}_{prefix}images_per_s"] = throughput[name]
        summary[f"{small}_{prefix}images_per_s_x_naive"] = round(
            throughput[name] / throughput["naive"], 2)
    ctx.say(f"{small}, {cores} worker processes, images/s: "
            + ", ".join(f"{k} {v}" for k, v in throughput.items()))

    path = os.path.join(tempfile.gettempdir(), f"imagepipe-bench-{large}-{os.getpid()}.jpg")
    with open(path, "wb") as file:
        file.write(cases[large][0])
    try:
        rss = {kind: peak_rss_mb(path, kind) for kind in ["naive", *engines]}
    finally:
        os.unlink(path)
    for name in engines:
        prefix = "" if name == "pillow" else f"{name}_"
        summary[f"{large}_{prefix}peak_rss_mb"] = rss[name][0]
    details["peak_rss_mb"] = {k: {"peak": v[0], "before_render": v[1]} for k, v in rss.items()}
    ctx.say(f"{large} peak RSS (MB): " + ", ".join(f"{k} {v[0]}" for k, v in rss.items())
            + f" (the process before rendering: {rss['naive'][1]})")

    path = os.path.join(tempfile.gettempdir(), f"imagepipe-bench-{small}-{os.getpid()}.jpg")
    with open(path, "wb") as file:
        file.write(cases[small][0])
    try:
        started = {name: function_start(path, name, 1 if ctx.quick else 5) for name in engines}
    finally:
        os.unlink(path)
    memory = configured_memory_mb()
    for name, times in started.items():
        prefix = "" if name == "pillow" else f"{name}_"
        times["lambda_photo_ms"] = lambda_ms(times["photo_cpu_ms"], memory)
        times["lambda_first_invocation_ms"] = lambda_ms(
            times["start_engine_cpu_ms"] + times["first_photo_cpu_ms"], memory)
        summary[f"function_{prefix}cold_start_cpu_ms"] = round(
            times["import_app_cpu_ms"] + times["start_engine_cpu_ms"], 1)
        summary[f"function_{small}_{prefix}lambda_ms"] = times["lambda_photo_ms"]
        ctx.say(f"resize function, {name}: import app.py {times['import_app_ms']:.0f} ms "
                f"(CPU {times['import_app_cpu_ms']:.0f}), engine start {times['start_engine_ms']:.0f} "
                f"ms (CPU {times['start_engine_cpu_ms']:.0f}), first {small} "
                f"{times['first_photo_cpu_ms']:.0f} ms CPU, then {times['photo_cpu_ms']:.0f} ms CPU: "
                f"about {times['lambda_photo_ms']:.0f} ms a photo at {memory} MB "
                f"({min(1.0, memory / LAMBDA_MB_PER_VCPU):.2f} vCPU for one thread)")
    details["function"] = {"memory_mb": memory, **started}
    details["load_average_end"] = os.getloadavg()[0]
    ctx.say(f"load average at the end {details['load_average_end']:.2f}")
    return {"summary": summary, "details": json.loads(json.dumps(details))}
