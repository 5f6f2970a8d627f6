"""Fail before anything changes when there are no AWS credentials or no region.

botocore's own resolution (environment, profile, SSO, container or instance role) decides; no
AWS call is made. The message is one line, for a terminal.
"""

from __future__ import annotations

import os

from imagepipe.settings import ENV_REGION


class MissingCredentials(Exception):
    pass


def check(session=None, environ=None) -> str:
    """The region to deploy to; raises ``MissingCredentials`` with a one-line reason.

    The region is botocore's (``AWS_DEFAULT_REGION``, the profile), else ``AWS_REGION`` — the
    variable the stages and the Lambda runtime use.
    """
    import botocore.session

    environ = os.environ if environ is None else environ
    session = session or botocore.session.get_session()
    region = session.get_config_variable("region") or environ.get(ENV_REGION)
    if not region:
        raise MissingCredentials(
            "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region)")
    try:
        credentials = session.get_credentials()
    except Exception as exc:  # a broken profile or SSO cache says why
        raise MissingCredentials(f"AWS credentials could not be loaded: {exc}") from None
    if credentials is None:
        raise MissingCredentials(
            "no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or run `aws sso login`)")
    return region
