"""The imaging bench's own tools: its SSIM and its generated photographs (not timings)."""

from __future__ import annotations

import json

import pytest
from PIL import Image, ImageFilter

from imagepipe import imaging
from imagepipe_dev.bench import BenchContext
from imagepipe_dev.bench import imaging as bench
from imagepipe.spec import DEFAULT_VARIANTS

pytest.importorskip("numpy")


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    return bench.photo(320, 240)


def test_photo_is_deterministic_and_not_flat(picture):
    again = bench.photo(320, 240)

    assert picture.tobytes() == again.tobytes()
    assert bench.photo(320, 240, seed=2).tobytes() != picture.tobytes()
    assert all(high - low > 150 for low, high in picture.getextrema())
    assert len(picture.getcolors(maxcolors=1 << 24)) > 20_000  # photographic, not posterised


def test_ssim_of_identical_images_is_one(picture):
    assert bench.ssim(picture, picture.copy()) == pytest.approx(1.0)


def test_ssim_orders_degradations(picture):
    slight = picture.filter(ImageFilter.GaussianBlur(0.5))
    strong = picture.filter(ImageFilter.GaussianBlur(3))

    assert 1.0 > bench.ssim(picture, slight) > bench.ssim(picture, strong) > 0.0
    assert bench.ssim(picture, slight) == pytest.approx(bench.ssim(slight, picture))


def test_ssim_matches_the_formula_on_one_window():
    # Images smaller than the window are compared as one window: the textbook formula.
    a = Image.new("L", (4, 1))
    a.putdata([10, 20, 30, 40])
    b = Image.new("L", (4, 1))
    b.putdata([12, 18, 33, 41])
    xs, ys = [10, 20, 30, 40], [12, 18, 33, 41]
    mx, my = sum(xs) / 4, sum(ys) / 4
    vx = sum((x - mx) ** 2 for x in xs) / 4
    vy = sum((y - my) ** 2 for y in ys) / 4
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / 4
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))

    assert bench.ssim(a, b) == pytest.approx(expected, rel=1e-9)


def test_ssim_sees_alpha_as_composited():
    # Same visible picture, different colour under full transparency: identical to a viewer.
    a = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    b = Image.new("RGBA", (40, 40), (0, 0, 255, 0))
    a.paste((0, 200, 0, 255), (0, 0, 20, 40))
    b.paste((0, 200, 0, 255), (0, 0, 20, 40))

    assert bench.ssim(a, b) == pytest.approx(1.0)


ENGINES = ["pillow"] + (["vips"] if imaging.vips.available() else [])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("size", [(1600, 1200), (1333, 1000)], ids=["whole-pixel", "subpixel"])
def test_engine_variants_match_the_lanczos_reference(engine, size):
    # The property the bench reports, on small photos: large enough for draft and cascade, and
    # one whose cover crop starts between pixels of the base it is made from.
    data = bench._save(bench.photo(*size), "JPEG", quality=90)

    worst, scores = bench.ssim_min(data, DEFAULT_VARIANTS, engine)

    assert set(scores) == {v.name for v in DEFAULT_VARIANTS}
    assert worst >= bench.SSIM_FLOOR, scores
    sizes = [im.size for im in bench.upright_images(data, DEFAULT_VARIANTS, engine)]
    assert sizes == [(v.width, v.height) for v in imaging.render(
        data, DEFAULT_VARIANTS, max_pixels=10**8, engine=engine).variants]


def test_quick_run_of_the_section_reports_every_metric():
    # Keeps the section from rotting; a smoke run on small images (numbers not compared).
    lines = []
    result = bench.run(BenchContext(quick=True, say=lines.append))

    summary = result["summary"]
    engines = ["pillow"] + (["vips"] if imaging.vips.available() else [])
    for case in ("jpeg_1mp", "jpeg_2mp", "webp_1mp", "png_alpha_1mp"):
        for name in engines:
            prefix = "" if name == "pillow" else f"{name}_"
            assert summary[f"{case}_{prefix}x_naive"] > 0
            assert summary[f"{case}_{prefix}x_naive_cpu"] > 0
            assert summary[f"{case}_{prefix}ssim_min"] >= bench.SSIM_FLOOR
            assert result["details"][case][f"{prefix}output_bytes"]["total"] > 0
    for name in engines:
        prefix = "" if name == "pillow" else f"{name}_"
        assert summary[f"jpeg_1mp_{prefix}images_per_s"] > 0
        # a fresh process with Python and Pillow is already ~25 MB
        assert 20 < summary[f"jpeg_2mp_{prefix}peak_rss_mb"] < 500
        assert summary[f"function_{prefix}cold_start_cpu_ms"] > 0
        assert summary[f"function_jpeg_1mp_{prefix}lambda_ms"] > 0
        assert result["details"]["function"][name]["engine"] == name  # it ran where asked
    assert json.loads(json.dumps(result)) == result
    assert any("peak RSS" in line for line in lines)
    assert any(line.startswith("resize function, ") for line in lines)


def test_lambda_duration_follows_the_cpu_share_of_the_memory_size():
    assert bench.lambda_ms(100.0, 1769) == 100.0
    assert bench.lambda_ms(100.0, 3538) == 100.0  # one thread: a second vCPU does not help
    assert bench.lambda_ms(100.0, 884) == pytest.approx(200.1, abs=0.1)
