"""Bearer tokens: what ``auth.verify`` accepts and refuses, with HS256 and with JWKS keys."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from imagepipe import auth

SECRET = "s" * 40
OTHER_SECRET = "o" * 40
POLICY = auth.Policy(issuer="https://issuer.example", audience="imagepipe", max_ttl_s=3600)


def claims(**changes) -> dict:
    now = int(time.time())
    body = {"iss": POLICY.issuer, "aud": POLICY.audience, "sub": "alice", "iat": now,
            "exp": now + 600, "jti": "token-1"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def hs256(secret=SECRET, headers=None, **changes) -> str:
    return jwt.encode(claims(**changes), secret, algorithm="HS256", headers=headers)


def verify(token: str, keys=None, policy=POLICY) -> auth.Caller:
    return auth.verify(token, policy, keys or auth.SharedSecret(SECRET))


def test_a_good_token_names_its_caller_and_bounds():
    caller = verify(hs256(imagepipe={"max_uploads": 3, "max_bytes": 1000}))

    assert caller.sub == "alice"
    assert caller.jti == "token-1"
    assert (caller.max_uploads, caller.max_bytes) == (3, 1000)
    assert len(caller.token_id) == 32
    assert caller.token_id != verify(hs256(sub="bob")).token_id  # same jti, other subject


def test_the_minted_token_verifies():
    token = auth.mint(SECRET, sub="alice", issuer=POLICY.issuer, audience=POLICY.audience,
                      ttl_s=900, max_uploads=2, max_bytes=10)
    caller = verify(token)
    assert (caller.sub, caller.max_uploads, caller.max_bytes) == ("alice", 2, 10)
    assert caller.jti


@pytest.mark.parametrize("token, says", [
    (hs256(secret=OTHER_SECRET), "signature"),
    (hs256(exp=int(time.time()) - 120, iat=int(time.time()) - 600), "expired"),
    (hs256(aud="someone-else"), "aud"),
    (hs256(iss="https://evil.example"), "issuer"),
    (hs256(sub=None), "'sub'"),
    (hs256(exp=None), "'exp'"),
    (hs256(aud=None), "'aud'"),
    (hs256(iss=None), "'iss'"),
    (hs256(iat=None), "'iat'"),
    (hs256(iat=int(time.time()), exp=int(time.time()) + 7200), "longer"),
    (hs256(iat=int(time.time()) + 600, exp=int(time.time()) + 1200), "not valid yet"),
    (hs256(sub=""), "'sub'"),
    (hs256(sub="x" * 300), "'sub'"),
    (hs256(imagepipe=[1]), "object"),
    (hs256(imagepipe={"max_uploads": "3"}), "whole number"),
    (hs256(imagepipe={"max_bytes": True}), "whole number"),
    (hs256(imagepipe={"max_uploads": 3}, jti=None), "jti"),
    (hs256(exp="9999999999"), "'exp'"),
    ("not-a-jwt", "not a JWT"),
    ("a.b.c", "not a JWT"),
    ("x" * 9000, "too long"),
    (jwt.encode(claims(), key=None, algorithm="none"), "HS256"),
])
def test_bad_tokens_are_refused_with_a_reason(token, says):
    with pytest.raises(auth.Unauthorized) as refused:
        verify(token)
    assert says in refused.value.message
    assert refused.value.error == "invalid_token"
    assert refused.value.challenge.startswith('Bearer error="invalid_token"')


def test_a_deeply_nested_header_is_refused_not_a_crash():
    import base64
    header = base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).rstrip(b"=").decode()
    with pytest.raises(auth.Unauthorized):
        verify(f"{header}.e30.c2ln")


def test_an_nbf_bounds_the_lifetime_when_there_is_no_iat():
    now = int(time.time())
    assert verify(hs256(iat=None, nbf=now, exp=now + 600)).sub == "alice"
    with pytest.raises(auth.Unauthorized, match="longer"):
        verify(hs256(iat=None, nbf=now, exp=now + 4000))


@pytest.mark.parametrize("header, error", [
    (None, "invalid_request"), ("", "invalid_request"), ("Basic abc", "invalid_request"),
    ("Bearer", "invalid_request"), ("Bearer a b", "invalid_request"),
])
def test_the_authorization_header_must_be_bearer(header, error):
    with pytest.raises(auth.Unauthorized) as refused:
        auth.bearer_token(header)
    assert refused.value.error == error


def test_bearer_is_case_insensitive():
    assert auth.bearer_token("bearer abc.def.ghi") == "abc.def.ghi"


def test_a_short_shared_secret_is_refused():
    with pytest.raises(ValueError, match="32 bytes"):
        auth.SharedSecret("short")
    assert "s" * 10 not in repr(auth.SharedSecret(SECRET))


def test_quota_size_bound():
    caller = auth.Caller(sub="a", max_bytes=10)
    caller.check_size(10)
    with pytest.raises(auth.QuotaExceeded):
        caller.check_size(11)


# --- asymmetric keys, without HTTP (the JWKS over HTTP is an integration test) --------------

class FixedKeys:
    """A key source holding public keys by kid, as JwksKeys would find them."""

    algorithms = auth.PUBLIC_KEY_ALGORITHMS

    def __init__(self, **public_keys):
        self.keys = public_keys

    def key_for(self, token, header):
        try:
            return self.keys[header["kid"]]
        except KeyError:
            raise auth.Unauthorized("the token is signed with an unknown key") from None


@pytest.mark.parametrize("algorithm, private", [
    ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    ("ES256", ec.generate_private_key(ec.SECP256R1())),
])
def test_public_key_tokens_verify(algorithm, private):
    token = jwt.encode(claims(), private, algorithm=algorithm, headers={"kid": "k1"})
    assert verify(token, FixedKeys(k1=private.public_key())).sub == "alice"
    with pytest.raises(auth.Unauthorized, match="unknown key"):
        verify(jwt.encode(claims(), private, algorithm=algorithm, headers={"kid": "k2"}),
               FixedKeys(k1=private.public_key()))


def test_an_hs256_token_is_refused_where_public_keys_sign():
    # The algorithm-confusion attack: an HMAC keyed with the public key's bytes.
    with pytest.raises(auth.Unauthorized, match="RS256 or ES256"):
        verify(hs256(headers={"kid": "k1"}), FixedKeys(k1="whatever"))


def test_a_stage_with_both_sources_checks_each_token_with_its_own_kind_of_key():
    private = ec.generate_private_key(ec.SECP256R1())
    both = auth.EitherKeys(auth.SharedSecret(SECRET), FixedKeys(k1=private.public_key()))
    assert verify(hs256(), both).sub == "alice"
    es256 = jwt.encode(claims(sub="bob"), private, algorithm="ES256", headers={"kid": "k1"})
    assert verify(es256, both).sub == "bob"
    with pytest.raises(auth.Unauthorized, match="signature"):
        verify(hs256(secret=OTHER_SECRET), both)
