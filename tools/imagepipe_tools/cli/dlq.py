"""``imagepipe dlq list|replay|discard``: the dead-letter queue for operators.

Reads the same settings as the bridge (``AMQP_URL``, ``IMAGEPIPE_BUCKET``, queue names...) from
the environment, the same way (``imagepipe.settings.load``: the broker's credentials from
``IMAGEPIPE_AMQP_SECRET_ARN`` when set). When the environment names no bucket, inside a checkout
it uses the running ``make dev`` stack's settings, else the ``local`` stage's
(``imagepipe_tools.stack_env``); ``-v`` says which. See ``imagepipe_tools.dlq`` for what replay
does, in which order, and why it is safe.

    imagepipe dlq list [--limit N] [--json]
    imagepipe dlq replay (--job ID ... | --all) [--limit N] [--dry-run] [--keep-status] [--json]
    imagepipe dlq discard (--job ID ... | --all) [--limit N] [--dry-run] [--json]

``list`` prints one line per dead letter (``--json``: one object per line); a summary goes to
stderr. ``replay`` and ``discard`` print one line per chosen message with what happened to it.
Exit status: 0 when everything asked for was done, 1 when some job was not found or could not
be replayed (or the broker is unreachable), 2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter

from imagepipe_tools.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    one_line,
    operator_settings,
    positive_int,
)
from imagepipe.errors import ConfigError, JobError

NOT_FOUND = "not_found"
_OK_ACTIONS = frozenset({"replayed", "discarded", "duplicate_removed", "would_replay",
                         "would_discard"})


def register(commands) -> None:
    dlq = commands.add_parser(
        "dlq",
        help="inspect, replay or discard dead-lettered jobs",
        description="The dead-letter queue: list its jobs with their cause, send them back to "
                    "the work queue after a fix, or discard them.",
    )
    actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="show dead letters with their cause")
    listing.add_argument("--limit", type=positive_int, metavar="N", help="show at most N")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=run_list)

    for name, verb in (("replay", "send the chosen dead letters back to the work queue"),
                       ("discard", "delete the chosen dead letters for good")):
        action = actions.add_parser(name, help=verb, description=verb[0].upper() + verb[1:] + ".")
        chosen = action.add_mutually_exclusive_group(required=True)
        chosen.add_argument("--job", action="append", metavar="ID", dest="jobs",
                            help="a job id (repeat for more)")
        chosen.add_argument("--all", action="store_true", help="every dead letter")
        action.add_argument("--limit", type=positive_int, metavar="N",
                            help="act on at most N messages")
        action.add_argument("--dry-run", action="store_true",
                            help="show what would happen; change nothing")
        action.add_argument("--json", action="store_true", help="one JSON object per line")
        if name == "replay":
            action.add_argument("--keep-status", action="store_true",
                                help="do not reset the jobs' failed status to queued "
                                     "(when you have no access to the bucket)")
        action.set_defaults(run=run_change, dlq_action=name)


def _queue(args):
    from imagepipe_tools.dlq import DeadLetterQueue

    if not args.verbose:  # pika logs a refused passive declare as a warning; we report it once
        logging.getLogger("pika").setLevel(logging.CRITICAL)
    # As the bridge does: with IMAGEPIPE_AMQP_SECRET_ARN set, the broker's credentials come from
    # its secret (a deployed broker's URL in the environment has none).
    return DeadLetterQueue(operator_settings(args))


def run_list(args: argparse.Namespace) -> int:
    return _guarded(lambda: _list(args))


def run_change(args: argparse.Namespace) -> int:
    return _guarded(lambda: _change(args))


def _guarded(command) -> int:
    try:
        return command()
    except ConfigError as exc:
        print(f"imagepipe dlq: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JobError as exc:  # the broker is unreachable or the queue is missing
        print(f"imagepipe dlq: {exc.message}", file=sys.stderr)
        return EXIT_FAILED


def _list(args: argparse.Namespace) -> int:
    queue = _queue(args)
    letters = queue.list(limit=args.limit)
    for letter in letters:
        print(json.dumps(letter.to_dict()) if args.json else _letter_line(letter), flush=True)
    total = queue.depth()
    print(f"{len(letters)} shown, {total} in {queue.name}", file=sys.stderr)
    return EXIT_OK


def _change(args: argparse.Namespace) -> int:
    from imagepipe_tools.dlq import match_all, match_jobs

    queue = _queue(args)
    select = match_all if args.all else match_jobs(args.jobs)
    if args.dlq_action == "replay":
        outcomes = queue.replay(select, limit=args.limit, dry_run=args.dry_run,
                                reset_status=not args.keep_status)
    else:
        outcomes = queue.discard(select, limit=args.limit, dry_run=args.dry_run)
    ok = True
    for outcome in outcomes:
        ok &= outcome.action in _OK_ACTIONS
        print(json.dumps(outcome.to_dict()) if args.json else _outcome_line(outcome), flush=True)
    found = {o.letter.job_id for o in outcomes} | {o.letter.message_id for o in outcomes}
    for job_id in args.jobs or ():
        if job_id not in found:
            ok = False
            row = {"job_id": job_id, "message_id": None, "action": NOT_FOUND,
                   "reason": "not in the dead-letter queue"}
            print(json.dumps(row) if args.json else one_line(
                f"{job_id}: {NOT_FOUND} (not in the dead-letter queue)"), flush=True)
    counts = Counter(o.action for o in outcomes)
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "nothing chosen"
    print(f"{summary} in {queue.name}", file=sys.stderr)
    return EXIT_OK if ok else EXIT_FAILED


def _letter_line(letter) -> str:
    attempts = "-" if letter.attempts is None else str(letter.attempts)
    replays = f" replays={letter.replays}" if letter.replays else ""
    return one_line(
        f"{letter.job_id or '-'}  {letter.code}  attempts={attempts}  "
        f"by={letter.dead_lettered_by}{replays}  {letter.message}"
    )


def _outcome_line(outcome) -> str:
    reason = f" ({outcome.reason})" if outcome.reason else ""
    return one_line(f"{outcome.letter.job_id or '-'}: {outcome.action}{reason}")
