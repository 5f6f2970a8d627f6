"""An identity provider's JWKS endpoint on local HTTP (http.server in a thread): keys can be
added and removed while it runs, and it counts the fetches."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://idp.test/"
AUDIENCE = "imagepipe"


class SigningKey:
    """A private key with its kid: signs tokens; its public half goes into the JWKS."""

    def __init__(self, kid: str, algorithm: str = "RS256"):
        self.kid = kid
        self.algorithm = algorithm
        if algorithm == "RS256":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self._jwk_algorithm = jwt.algorithms.RSAAlgorithm
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self._jwk_algorithm = jwt.algorithms.ECAlgorithm

    def public_jwk(self) -> dict:
        jwk = self._jwk_algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def token(self, sub="alice", ttl=600, **changes) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + ttl,
                  **changes}
        return jwt.encode(claims, self.private, algorithm=self.algorithm,
                          headers={"kid": self.kid})


class JwksServer:
    def __init__(self):
        self.keys: list[SigningKey] = []
        self.fetches = 0
        self.up = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if not server.up or self.path != "/.well-known/jwks.json":
                    self.send_error(503 if not server.up else 404)
                    return
                server.fetches += 1
                body = json.dumps({"keys": [k.public_jwk() for k in server.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/.well-known/jwks.json"

    def __enter__(self) -> "JwksServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
