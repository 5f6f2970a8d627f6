"""``imagepipe token``: an HS256 token the stage's API accepts, from its chalicefile entry."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest

from imagepipe import auth
from imagepipe_tools.cli import main

ROOT = Path(__file__).resolve().parents[2]


def manifest(tmp_path, auth_entry) -> Path:
    body = json.loads((ROOT / "chalicefile.json").read_text())
    body["stages"]["local"]["auth"] = auth_entry
    path = tmp_path / "chalicefile.json"
    path.write_text(json.dumps(body))
    return path


def test_the_minted_token_passes_the_stages_verification(tmp_path, capsys):
    path = manifest(tmp_path, {"mode": "jwt", "issuer": "me", "audience": "imagepipe",
                               "secret": "k" * 40, "max_ttl_s": 1200})

    status = main(["token", "--sub", "alice", "--ttl", "600", "--max-uploads", "3",
                   "--max-bytes", "5000", "--chalicefile", str(path)])

    assert status == 0
    token = capsys.readouterr().out.strip()
    caller = auth.verify(token, auth.Policy("me", "imagepipe", 1200), auth.SharedSecret("k" * 40))
    assert (caller.sub, caller.max_uploads, caller.max_bytes) == ("alice", 3, 5000)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 600


@pytest.mark.parametrize("auth_entry, args, says", [
    ({"mode": "jwt", "issuer": "me", "audience": "a", "jwks_url": "https://idp.example/jwks"},
     [], "identity provider"),
    ({"mode": "none"}, [], "no HS256 auth"),
    ({"mode": "jwt", "issuer": "me", "audience": "a", "secret": "k" * 40},
     ["--ttl", "7200"], "over the stage's limit"),
])
def test_what_cannot_be_minted_is_a_usage_error(tmp_path, capsys, auth_entry, args, says):
    path = manifest(tmp_path, auth_entry)
    status = main(["token", "--sub", "alice", "--chalicefile", str(path), *args])
    captured = capsys.readouterr()
    assert status == 2 and not captured.out
    assert says in captured.err
