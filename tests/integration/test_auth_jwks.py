"""RS256/ES256 tokens against a JWKS served over local HTTP: cached, a new kid is fetched at
once (a rotation), a removed kid stops working when the cache expires, made-up kids cannot
make every request a fetch, and an unreachable JWKS is a 503-kind error, not a crash."""

from __future__ import annotations

import time
import uuid

import pytest

from imagepipe import auth

from ..jwks_server import AUDIENCE, ISSUER, JwksServer, SigningKey

POLICY = auth.Policy(ISSUER, AUDIENCE, 3600)
LIFESPAN_S = 1.5
COOLDOWN_S = 0.5


@pytest.fixture
def jwks():
    with JwksServer() as server:
        yield server


def verify(keys, token):
    return auth.verify(token, POLICY, keys)


def test_key_rotation_new_kid_appears_old_kid_is_removed(jwks):
    old, new = SigningKey("2026-11", "RS256"), SigningKey("2026-12", "ES256")
    jwks.keys = [old]
    keys = auth.JwksKeys(jwks.url, lifespan_s=LIFESPAN_S, cooldown_s=COOLDOWN_S)

    assert verify(keys, old.token()).sub == "alice"
    assert verify(keys, old.token(sub="bob")).sub == "bob"
    assert jwks.fetches == 1  # the set is cached

    # The provider publishes the next key and starts signing with it.
    jwks.keys = [old, new]
    time.sleep(COOLDOWN_S + 0.1)
    assert verify(keys, new.token()).sub == "alice"
    assert jwks.fetches == 2  # the unknown kid fetched the set again, at once
    assert verify(keys, old.token()).sub == "alice"  # both work during the overlap

    # The old key is retired: once the cached set expires, its tokens are refused.
    jwks.keys = [new]
    time.sleep(LIFESPAN_S + 0.2)
    with pytest.raises(auth.Unauthorized, match="unknown key"):
        verify(keys, old.token())
    assert verify(keys, new.token()).sub == "alice"


def test_made_up_kids_fetch_the_set_at_most_once_per_cooldown(jwks):
    real = SigningKey("real")
    jwks.keys = [real]
    keys = auth.JwksKeys(jwks.url, lifespan_s=60, cooldown_s=30)
    verify(keys, real.token())

    for _ in range(20):
        forged = SigningKey(uuid.uuid4().hex)
        with pytest.raises(auth.Unauthorized, match="unknown key"):
            verify(keys, forged.token())

    assert jwks.fetches == 1


def test_a_token_signed_by_a_key_not_in_the_set_under_a_known_kid_is_refused(jwks):
    real, impostor = SigningKey("k1"), SigningKey("k1")
    jwks.keys = [real]
    keys = auth.JwksKeys(jwks.url)
    with pytest.raises(auth.Unauthorized, match="signature"):
        verify(keys, impostor.token())


def test_an_unreachable_jwks_is_unavailable_not_unauthorized(jwks):
    key = SigningKey("k1")
    jwks.keys = [key]
    jwks.up = False
    keys = auth.JwksKeys(jwks.url, timeout_s=2)
    with pytest.raises(auth.KeysUnavailable):
        verify(keys, key.token())
    jwks.up = True
    assert verify(keys, key.token()).sub == "alice"
