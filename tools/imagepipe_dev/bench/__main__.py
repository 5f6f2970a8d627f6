"""``python -m imagepipe_dev.bench [SECTION ...] [--quick] [--out DIR]``; see the package."""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

from imagepipe_dev.bench import SECTIONS, BenchContext

LOGGER = logging.getLogger("imagepipe_dev.bench")
DEFAULT_OUT = Path(".run/bench")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"any of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke run)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    args = parser.parse_args(argv)
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def say(line: str) -> None:
        print(line, flush=True)

    context = BenchContext(quick=args.quick, say=say)
    names = args.sections or list(SECTIONS)
    results: dict[str, dict] = {}
    for name in names:
        say(f"== {name}")
        try:
            module = importlib.import_module(SECTIONS[name])
        except ModuleNotFoundError as exc:
            if exc.name != SECTIONS[name]:
                raise
            say("(this section is not built yet)")
            continue
        results[name] = module.run(context)

    record = {
        "commit": _commit(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "sections": results,
    }
    previous = _load(args.out / "latest.json")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = record["created"].replace(":", "").replace("-", "")
    path = args.out / f"bench-{stamp}-{record['commit'][:12]}.json"
    text = json.dumps(record, indent=2, sort_keys=True)
    path.write_text(text + "\n")
    (args.out / "latest.json").write_text(text + "\n")
    say("")
    _print_comparison(record, previous, say)
    say(f"results: {path}")
    return 0


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True,
                               text=True, check=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _print_comparison(record: dict, previous: dict | None, say) -> None:
    """Every summary metric of this run beside the previous run's, where it had one."""
    before = (previous or {}).get("sections", {})
    label = f"previous ({previous['commit'][:12]})" if previous else "previous"
    say(f"{'metric':<48} {'this run':>12} {label:>22}")
    for section, result in record["sections"].items():
        old = before.get(section, {}).get("summary", {})
        for metric, value in result.get("summary", {}).items():
            was = old.get(metric)
            say(f"{section + '.' + metric:<48} {_fmt(value):>12} {_fmt(was):>22}")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
