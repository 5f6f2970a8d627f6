"""``imagepipe token --sub ID [--ttl S] [--max-uploads N] [--max-bytes M] [--stage NAME]``.

Mints an HS256 bearer token the way an app backend would, from a stage's shared secret: the
stage's ``auth`` in ``chalicefile.json`` (``--chalicefile``, default ``./chalicefile.json``) gives
the issuer, the audience and the secret (or the ARN of the Secrets Manager secret holding it,
read with the AWS credentials of the environment). The token goes to stdout alone, so
``IMAGEPIPE_TOKEN=$(imagepipe token --sub alice)`` works. For development, tests and backends
without a JWT library; a stage whose tokens come only from an identity provider (``jwks_url``,
no secret) is refused: mint them there.

Exit status: 0 with a token on stdout, 2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imagepipe import auth, settings as settings_module
from imagepipe.errors import ConfigError
from imagepipe_tools.cli import EXIT_OK, EXIT_USAGE, non_negative_int, positive_int

DEFAULT_TTL_S = 900


def register(commands) -> None:
    token = commands.add_parser(
        "token",
        help="mint an HS256 bearer token from a stage's shared secret",
        description="Print a bearer token for --sub, signed with the stage's HS256 secret.",
    )
    token.add_argument("--sub", required=True, metavar="ID",
                       help="the subject: who the token speaks for (the uploads' owner)")
    token.add_argument("--ttl", type=positive_int, default=DEFAULT_TTL_S, metavar="S",
                       help=f"lifetime in seconds (default {DEFAULT_TTL_S}; at most the "
                            "stage's max_ttl_s)")
    token.add_argument("--max-uploads", type=non_negative_int, metavar="N",
                       help="at most N uploads may be made with this token")
    token.add_argument("--max-bytes", type=positive_int, metavar="M",
                       help="each file at most M bytes")
    token.add_argument("--jti", metavar="ID", help="the token's id (default: random)")
    token.add_argument("--stage", default="local", help="the stage whose secret signs "
                                                        "(default local)")
    token.add_argument("--chalicefile", type=Path, default=Path("chalicefile.json"),
                       metavar="PATH", help="the deploy manifest (default ./chalicefile.json)")
    token.set_defaults(run=run_token)




def run_token(args: argparse.Namespace) -> int:
    try:
        stage = stage_auth(args.chalicefile, args.stage)
        if args.ttl > stage.auth_max_ttl_s:
            raise ConfigError(f"--ttl {args.ttl} is over the stage's limit of "
                              f"{stage.auth_max_ttl_s} s: the API would refuse the token")
        token = auth.mint(stage.auth_secret, sub=args.sub, issuer=stage.auth_issuer,
                          audience=stage.auth_audience, ttl_s=args.ttl,
                          max_uploads=args.max_uploads, max_bytes=args.max_bytes, jti=args.jti)
    except ConfigError as exc:
        print(f"imagepipe token: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(token)
    return EXIT_OK


def stage_auth(chalicefile_path: Path, stage: str) -> settings_module.Settings:
    """The stage's settings, with its HS256 secret in hand (read from Secrets Manager if need
    be); a ``ConfigError`` saying why not otherwise."""
    from imagepipe_tools import chalicefile

    settings = chalicefile.stage_settings(chalicefile.load(chalicefile_path), stage)
    if not settings.auth_secret and settings.auth_secret_arn:
        settings = settings_module.load_auth_secret(settings)
    if settings.auth_jwks_url and not settings.auth_secret:
        raise ConfigError(f"stage {stage!r} takes tokens from an identity provider "
                          f"({settings.auth_jwks_url}) only; mint them there")
    if not (settings.auth_secret and settings.auth_issuer and settings.auth_audience):
        raise ConfigError(f"stage {stage!r} has no HS256 auth (issuer, audience and secret) "
                          f"in {chalicefile_path}")
    return settings
