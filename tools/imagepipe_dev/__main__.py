"""``python -m imagepipe_dev render|render-docs|vendor|dev|demo|bridge`` (the Makefile's targets)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from imagepipe_tools import chalicefile
from imagepipe_dev import demo, docs, rabbitmq, stack
from infra.deploy import vendoring
from imagepipe.errors import ConfigError
from imagepipe.settings import DEFAULT_AMQP_URL, ENV_AMQP_URL

ROOT = stack.ROOT
RUN_DIR = ROOT / ".run"


def render(args) -> int:
    settings = chalicefile.render(ROOT, args.stage)
    print(f"rendered .chalice/config.json for stage {settings.stage!r}")
    return 0


def render_docs(args) -> int:
    """Rewrite the generated parts of docs/ (the settings table) from the code."""
    changed = docs.render(ROOT)
    for path in changed:
        print(f"rewrote {path.relative_to(ROOT)}")
    if not changed:
        print("docs are in step with the code")
    return 0


def vendor(args) -> int:
    """Copy the core package into each function's vendor/ (Chalice packages only its project)."""
    manifest = chalicefile.load(ROOT / chalicefile.FILENAME)
    for spec in manifest["functions"].values():
        target = vendoring.copy_core(ROOT, ROOT / spec["project_dir"] / "vendor")
        print(f"vendored imagepipe into {target.relative_to(ROOT)}")
    return 0


def dev(args) -> int:
    local = stack.LocalStack(RUN_DIR, api_port=args.api_port, allow_page_origin=True)
    stopping = []
    # Explicit handlers: a shell may start a background job with SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.append(True))
    try:
        local.start()
        print(f"imagepipe is up: API {local.api_url}  S3 {local.settings.s3_endpoint_url}  "
              f"queue {local.settings.resize_queue}\nlogs and pids in {RUN_DIR}/; Ctrl-C stops all")
        link = local.demo_link()
        if link:
            print(f"auth is on: open the demo page as user 'demo' (the token lasts "
                  f"{local.settings.auth_max_ttl_s // 60} min; `python -m imagepipe token "
                  f"--sub demo` mints another):\n  {link}")
        spec_file = ROOT / chalicefile.FILENAME
        seen = spec_file.stat().st_mtime_ns
        while not stopping:
            local.check_alive()
            time.sleep(0.5)
            if spec_file.stat().st_mtime_ns != seen:
                seen = spec_file.stat().st_mtime_ns
                _reload(local, spec_file)
    finally:
        print("stopping ...")
        local.stop()
    return 0


def _reload(local: stack.LocalStack, spec_file: Path) -> None:
    """``chalicefile.json`` changed under ``make dev``: restart the API and the bridge with it,
    keeping S3's objects (moto's are in memory: a restart of ``make dev`` would lose them)."""
    try:
        local.reload()
    except ConfigError as exc:
        print(f"{spec_file.name} changed but does not load, still running the previous one: "
              f"{exc}", file=sys.stderr, flush=True)
        return
    print(f"{spec_file.name} changed: restarted the API and the bridge with it (S3 kept); "
          "bridges started with `make bridge` still run the previous one. "
          "`python -m imagepipe backfill --dry-run` shows which photos it leaves stale",
          flush=True)


def bridge(args) -> int:
    """One more bridge against the stack that `make dev` runs, in the foreground."""
    env = {**os.environ, **stack.FAKE_AWS, **stack.load_stack_env(RUN_DIR),
           "PYTHONPATH": stack._pythonpath()}
    os.chdir(ROOT)
    # Become the bridge, so Ctrl-C and SIGTERM reach it directly and it drains its jobs.
    os.execve(sys.executable, [sys.executable, "-m", "bridge"], env)


def broker_url(args) -> int:
    """Print the URL of a RabbitMQ that answers, starting a private node if none does."""
    url, _ = rabbitmq.ensure_broker(args.amqp_url, RUN_DIR)
    print(url)
    return 0


def run_demo(args) -> int:
    return demo.run(RUN_DIR / "demo", Path(args.out).resolve(), args.api_port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imagepipe_dev")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("render", help="render functions/*/.chalice/config.json")
    p.add_argument("--stage", default="local")
    p.set_defaults(func=render)
    commands.add_parser("render-docs", help="regenerate docs/configuration.md's settings table"
                        ).set_defaults(func=render_docs)
    commands.add_parser("vendor", help="copy imagepipe/ into functions/*/vendor/").set_defaults(func=vendor)
    api_port = int(os.environ.get("API_PORT", "8000"))
    p = commands.add_parser("dev", help="run the local stack in the foreground")
    p.add_argument("--api-port", type=int, default=api_port)
    p.set_defaults(func=dev)
    p = commands.add_parser("demo", help="run the stack, upload the samples, save the variants")
    p.add_argument("--api-port", type=int, default=api_port)
    p.add_argument("--out", default=str(ROOT / "demo-out"))
    p.set_defaults(func=run_demo)
    commands.add_parser("bridge", help="one more bridge against `make dev`'s stack").set_defaults(func=bridge)
    p = commands.add_parser("broker-url", help="print a broker URL that answers (start one if needed)")
    p.add_argument("--amqp-url", default=os.environ.get(ENV_AMQP_URL, DEFAULT_AMQP_URL))
    p.set_defaults(func=broker_url)
    args = parser.parse_args(argv)
    # The local stack's S3 is moto: any credentials sign, but some must exist.
    for name, value in stack.FAKE_AWS.items():
        os.environ.setdefault(name, value)
    # Logs go to stderr so `broker-url` can print just the URL on stdout.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    # pika logs every refused probe with a traceback; the probes' outcome is logged by us.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    try:
        return args.func(args)
    except (ConfigError, stack.StackError, rabbitmq.BrokerUnavailable, docs.DocsError,
            OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
