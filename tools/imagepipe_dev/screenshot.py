"""The README's picture of the demo page: ``python -m imagepipe_dev.screenshot --api URL``.

Run by hand against a running ``make dev`` (never part of ``make test``): it opens the page in
Debian's chromium through Playwright, uploads the sample photos and a file the page refuses,
waits until every variant shows, and saves the page as a palette PNG small enough for the
repository (``docs/demo-page.png`` by default).

    API_PORT=8765 make dev &
    .venv/bin/python -m imagepipe_dev.screenshot --api http://127.0.0.1:8765
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = Path(__file__).resolve().parent / "samples"
DEFAULT_OUT = ROOT / "docs" / "demo-page.png"
CHROMIUM = "/usr/bin/chromium"  # Playwright's own browser download does not work here
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 900, "height": 700}
MAX_BYTES = 300 * 1024  # what the repository takes for one picture
WAIT_MS = 120_000
REFUSED = "notes.txt"  # refused by the page before any URL is asked for: shows an error line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imagepipe_dev.screenshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", default="http://127.0.0.1:8000", help="the running stack's API")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to save the PNG")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"error: {CHROMIUM} is missing: apt-get install -y chromium", file=sys.stderr)
        return 1
    png = capture(args.api.rstrip("/"))
    small = shrink(png)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(small)
    print(f"saved {args.out} ({len(small) // 1024} KiB)")
    return 0


def capture(api: str) -> bytes:
    """The page after the samples and one refused file went through it, as PNG bytes."""
    from playwright.sync_api import sync_playwright

    samples = sorted(SAMPLES.iterdir())
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as pw:
        refused = Path(folder) / REFUSED
        refused.write_text("not a photo\n")
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
            page.goto(f"{api}/")
            page.locator("#limits").filter(has_text="up to").wait_for(timeout=WAIT_MS)
            page.get_by_label("Choose images to upload").set_input_files(
                [*map(str, samples), str(refused)])
            for path in samples:
                item = page.locator(f'li.upload[data-filename="{path.name}"][data-state="done"]')
                item.wait_for(timeout=WAIT_MS)
            page.wait_for_function(
                "() => [...document.querySelectorAll('li.upload img')]"
                ".every(i => i.complete && i.naturalWidth > 0)", timeout=WAIT_MS)
            return page.screenshot(full_page=True)
        finally:
            browser.close()


def shrink(png: bytes, max_bytes: int = MAX_BYTES) -> bytes:
    """The screenshot as a palette PNG (a page is mostly flat colour), narrowed until it fits."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    for colours in (256, 128, 64):
        out = io.BytesIO()
        image.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) \
            .save(out, "PNG", optimize=True)
        if out.tell() <= max_bytes:
            return out.getvalue()
    raise SystemExit(f"error: the screenshot is {out.tell() // 1024} KiB even with 64 colours "
                     f"(at most {max_bytes // 1024} KiB)")


if __name__ == "__main__":
    sys.exit(main())
