"""``make demo``: start the local stack, upload the bundled samples as a browser would, wait for
``done``, save the variants under ``demo-out/`` and print a table; stop what was started."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from imagepipe_tools.client import UploadClient, UploadFailed
from imagepipe_dev.stack import LocalStack
from imagepipe.messages import State

LOGGER = logging.getLogger(__name__)

SAMPLES = Path(__file__).resolve().parent / "samples"


@dataclass
class UploadOutcome:
    path: Path
    upload_id: str | None = None
    status: str = "not started"
    variants: list[dict] = field(default_factory=list)
    error: dict | None = None
    seconds: float = 0.0


def upload_and_wait(client: UploadClient, path: Path, out_dir: Path) -> UploadOutcome:
    outcome = UploadOutcome(path)
    started = time.monotonic()
    try:
        outcome.upload_id = client.upload_file(path)
        final = client.wait(outcome.upload_id)
        outcome.status, outcome.error = final["status"], final["error"]
        outcome.variants = final["variants"]
        client.save_variants(outcome.variants, out_dir / path.stem)
    except UploadFailed as exc:
        outcome.status, outcome.error = State.FAILED, exc.to_dict()
    outcome.seconds = time.monotonic() - started
    return outcome


def print_table(outcomes: list[UploadOutcome]) -> None:
    print(f"\n{'file':<24} {'variant':<8} {'size':>11} {'bytes':>9} {'time':>7}")
    for outcome in outcomes:
        if outcome.status != State.DONE:
            print(f"{outcome.path.name:<24} {outcome.status}: {outcome.error}")
            continue
        for variant in outcome.variants:
            size = f"{variant['width']}x{variant['height']}"
            print(f"{outcome.path.name:<24} {variant['name']:<8} {size:>11} {variant['bytes']:>9} "
                  f"{outcome.seconds:>6.2f}s")


def run(run_dir: Path, out_dir: Path, api_port: int) -> int:
    samples = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png", ".webp"))
    with LocalStack(run_dir, api_port=api_port) as stack:
        LOGGER.info("stack up: API %s, S3 %s", stack.api_url, stack.settings.s3_endpoint_url)
        client = UploadClient(stack.api_url)
        with ThreadPoolExecutor(max_workers=len(samples)) as pool:
            outcomes = list(pool.map(lambda p: upload_and_wait(client, p, out_dir), samples))
    print_table(outcomes)
    failed = [o for o in outcomes if o.status != State.DONE]
    print(f"\n{len(outcomes) - len(failed)} of {len(outcomes)} done; variants in {out_dir}/")
    return 1 if failed else 0
