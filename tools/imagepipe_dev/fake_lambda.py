"""A stand-in for AWS Lambda's Invoke REST call, for measuring the bridge's ``lambda`` invoker.

moto cannot run Lambda code here (no Docker engine) and answers at once, so it says nothing
about how many invocations a bridge keeps in flight. This server implements
``POST /2015-03-31/functions/{name}/invocations``: it reads the invocation, waits ``delay_s``
(a resize's duration) and answers ``done`` for that job with a valid ``InvocationResult``. It
counts invocations and the most that were ever in flight at once. Point boto3 at it with
``endpoint_url`` or ``AWS_ENDPOINT_URL_LAMBDA``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from imagepipe.messages import DONE, Invocation, InvocationResult

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/?]+)/invocations(\?.*)?$")


class FakeLambda:
    """``with FakeLambda(delay_s=1.0) as fake: ... fake.url ... fake.max_in_flight``."""

    def __init__(self, delay_s: float = 1.0, host: str = "127.0.0.1", port: int = 0):
        self.delay_s = delay_s
        self.invocations = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.functions: set[str] = set()
        self._lock = threading.Lock()
        self._server = _Server((host, port), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-lambda",
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeLambda":
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> "FakeLambda":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _invoke(self, function: str, body: bytes) -> dict:
        with self._lock:
            self.invocations += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.functions.add(function)
        try:
            invocation = Invocation.from_dict(json.loads(body))
            time.sleep(self.delay_s)
            job = invocation.job
            return InvocationResult(job_id=job.job_id, upload_id=job.upload_id,
                                    status=DONE, duration_ms=round(self.delay_s * 1000)).to_dict()
        finally:
            with self._lock:
                self.in_flight -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A bridge opens its whole connection pool at once; the default backlog of 5 would drop
    # SYNs and add a 1 s retransmit to some of them.
    request_queue_size = 256


def _handler_for(fake: FakeLambda):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pool expects
        # Headers and body go out in two writes: with Nagle's algorithm the body waits for the
        # client's delayed ACK, adding 40 ms to every Invoke.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            match = INVOKE_PATH.match(self.path)
            if not match:
                self._answer(404, {"Type": "User", "message": f"no such path {self.path}"},
                             {"x-amzn-ErrorType": "ResourceNotFoundException"})
                return
            try:
                result = fake._invoke(match["name"], body)
            except Exception as exc:  # an unreadable invocation: what a crashing handler gives
                self._answer(200, {"errorType": type(exc).__name__, "errorMessage": str(exc)},
                             {"X-Amz-Function-Error": "Unhandled"})
                return
            self._answer(200, result, {"X-Amz-Executed-Version": "$LATEST"})

        def _answer(self, status: int, payload: dict, headers: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # one line per request would swamp a benchmark
            pass

    return Handler
