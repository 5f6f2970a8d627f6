"""Fault injection for the fault-tolerance tests, all from the outside of the code under test.

- ``S3FaultProxy``: an HTTP proxy in front of the moto server. Rules answer matching requests
  with real S3 error responses (503 SlowDown, 500 InternalError) or hold them, which gives a
  deterministic point inside a running resize (say, "after the manifest, before the done
  marker") at which a test can SIGKILL the bridge. It also counts what reached S3.
- ``BridgeProcess``: ``python -m bridge`` as a real subprocess in its own process group, so a
  SIGKILL takes its resize worker processes with it, as a container kill or the OOM killer does.
- ``rabbitmqctl`` and a private virtual host, so that ``close_all_connections`` drops every
  connection of the test and nobody else's on a shared broker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ..conftest import ROOT

# --- S3 through a proxy that can fail or hold requests -------------------------------------------

S3_ERRORS = {
    503: ("SlowDown", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


@dataclasses.dataclass
class Rule:
    """Matches ``method`` and a regex on the object key; applies to the first ``times`` hits."""

    method: str
    key: re.Pattern
    times: int
    fail_status: int | None = None  # answer with this S3 error instead of forwarding
    hold: bool = False  # block the request until ``release()``
    forward_after_hold: bool = False  # then forward it; otherwise drop it unanswered
    hits: int = 0
    held: threading.Event = dataclasses.field(default_factory=threading.Event)
    _released: threading.Event = dataclasses.field(default_factory=threading.Event)

    def release(self) -> None:
        self._released.set()


@dataclasses.dataclass(frozen=True)
class Seen:
    method: str
    key: str
    status: int  # what the client got (0: dropped)


class S3FaultProxy:
    def __init__(self, upstream: str):
        parsed = urllib.parse.urlsplit(upstream)
        self._upstream = (parsed.hostname, parsed.port)
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self.seen: list[Seen] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, method: str, key: str, status: int, times: int) -> Rule:
        return self._add(Rule(method, re.compile(key), times, fail_status=status))

    def hold(self, method: str, key: str, *, then_forward: bool = False) -> Rule:
        """Hold the first matching request. On ``release()`` it is dropped unanswered (its
        client is meant to be dead by then) or, with ``then_forward``, passed on."""
        return self._add(Rule(method, re.compile(key), 1, hold=True,
                              forward_after_hold=then_forward))

    def count(self, method: str, key: str, status: int | None = None) -> int:
        """Requests that matched, optionally only those answered with ``status``."""
        pattern = re.compile(key)
        with self._lock:
            return sum(1 for s in self.seen if s.method == method and pattern.search(s.key)
                       and (status is None or s.status == status))

    def close(self) -> None:
        for rule in self._rules:
            rule.release()
        self._server.shutdown()
        self._server.server_close()

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def _match(self, method: str, key: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.method == method and rule.key.search(key) and rule.hits < rule.times:
                    rule.hits += 1
                    return rule
        return None

    def _record(self, method: str, key: str, status: int) -> None:
        with self._lock:
            self.seen.append(Seen(method, key, status))

    def _handler_class(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore expects

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urllib.parse.urlsplit(self.path).path
                # Path-style addressing: /bucket/key
                key = urllib.parse.unquote(path.lstrip("/").partition("/")[2])
                rule = proxy._match(self.command, key)
                if rule is not None and rule.hold:
                    rule.held.set()
                    rule._released.wait(120)
                    if not rule.forward_after_hold:
                        proxy._record(self.command, key, 0)
                        self.close_connection = True
                        return  # dropped unanswered, as if the client died meanwhile
                if rule is not None and rule.fail_status:
                    proxy._record(self.command, key, rule.fail_status)
                    self._s3_error(rule.fail_status)
                    return
                status, headers, payload = proxy._forward(self.command, self.path,
                                                          self.headers, body)
                proxy._record(self.command, key, status)
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                declared = dict((n.lower(), v) for n, v in headers).get("content-length")
                length = declared if self.command == "HEAD" and declared else str(len(payload))
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _s3_error(self, status: int) -> None:
                code, message = S3_ERRORS[status]
                payload = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}"
                           f"</Code><Message>{message}</Message></Error>").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        return Handler

    def _forward(self, method: str, path: str, headers, body: bytes):
        connection = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            outgoing = {n: v for n, v in headers.items() if n.lower() not in HOP_BY_HOP}
            connection.request(method, path, body=body or None, headers=outgoing)
            response = connection.getresponse()
            payload = response.read()
            return response.status, response.getheaders(), payload
        finally:
            connection.close()


# --- rabbitmqctl and a private virtual host -----------------------------------------------------


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    try:
        done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True,
                              timeout=timeout)
    except FileNotFoundError:
        pytest.skip("rabbitmqctl is not installed, so the broker cannot be told to drop "
                    "connections")
    if done.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def vhost_url(amqp_url: str, vhost: str) -> str:
    parsed = urllib.parse.urlsplit(amqp_url)
    return urllib.parse.urlunsplit(parsed._replace(path="/" + urllib.parse.quote(vhost, safe="")))


# --- the bridge as a process --------------------------------------------------------------------


class Lines:
    """Collects a process's stderr lines in a thread, so its pipe never fills up."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def contains(self, text: str) -> bool:
        return self.count(text) > 0

    def text(self) -> str:
        self._thread.join(5)
        return "".join(self.lines)


class BridgeProcess:
    """``python -m bridge`` with the given settings, in its own process group."""

    def __init__(self, settings, **extra_env: str):
        env = {**os.environ, **settings.to_env(), **extra_env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bridge"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        self.log = Lines(self.process.stderr)

    def wait_consuming(self, timeout: float = 30) -> BridgeProcess:
        """Until both consumers (the work queue's and the rerender queue's) consume."""
        deadline = time.monotonic() + timeout
        while not (self.log.contains("bridge: consuming")
                   and self.log.contains("rerender: consuming")):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the bridge did not start consuming:\n{self.log.text()}")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL the bridge and its resize workers at once."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        else:  # the bridge exited; make sure no worker outlived it
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def rss_kib(pid: int) -> int:
    """Resident memory of one process, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# --- a private RabbitMQ node, for broker settings a shared broker must not change ------------------


@contextlib.contextmanager
def private_rabbitmq(home, config: str):
    """A RabbitMQ node of the test's own (its own name, ports and data under ``home``), started
    with ``config`` (rabbitmq.conf syntax); yields its AMQP URL and stops it afterwards."""
    from imagepipe_dev import rabbitmq

    server, ctl = rabbitmq._server_script(), rabbitmq._ctl_script()
    if not server or not ctl:
        pytest.skip("rabbitmq-server is not installed, so no private node can be started")
    home.mkdir(parents=True, exist_ok=True)
    (home / "rabbitmq.conf").write_text(config)
    (home / "enabled_plugins").write_text("[].\n")
    port = rabbitmq._free_port()
    node = f"imagepipe-test-{port}@localhost"
    env = {**rabbitmq._node_env(home, port), "RABBITMQ_NODENAME": node}
    subprocess.Popen([server, "-detached"], env=env, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        subprocess.run([ctl, "-n", node, "wait", "--timeout", "120", env["RABBITMQ_PID_FILE"]],
                       env=env, capture_output=True, timeout=130, check=True)
        yield f"amqp://guest:guest@127.0.0.1:{port}/%2F"
    finally:
        subprocess.run([ctl, "-n", node, "stop"], env=env, capture_output=True, timeout=60)
