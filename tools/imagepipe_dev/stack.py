"""The local stack: moto's S3 server, the upload API under ``chalice local``, and bridges.

Each component is its own process (pid in ``<run_dir>/NAME.pid``, log in ``<run_dir>/NAME.log``)
started with the environment of one ``Settings`` — the ``local`` stage of ``chalicefile.json``
with this machine's ports — and stopped in reverse order.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from imagepipe import bucket_cors
from imagepipe_tools import chalicefile, stack_env
from imagepipe.aws import s3_client
from imagepipe_dev import rabbitmq
from imagepipe.settings import Settings

LOGGER = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
STACK_ENV = stack_env.STACK_ENV
# moto needs credentials to sign with; they are never real ones.
FAKE_AWS = dict(stack_env.LOCAL_AWS_CREDENTIALS)


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def moto_command(port: int) -> list[str]:
    """moto's server on 127.0.0.1:``port`` (the venv's, else the one on PATH)."""
    moto = Path(sys.executable).with_name("moto_server")
    return [str(moto) if moto.exists() else "moto_server", "-H", "127.0.0.1", "-p", str(port)]


def wait_for_moto(port: int, check=None, timeout: float = 30) -> None:
    """Wait until moto answers on ``port``; ``check`` raises if its process died."""
    _wait_until(lambda: _http_ok(f"http://127.0.0.1:{port}/moto-api/"), "moto S3", timeout, check)


def page_origins(api_port: int) -> tuple[str, ...]:
    """The origins a browser sees the API's demo page under on this machine."""
    return (f"http://127.0.0.1:{api_port}", f"http://localhost:{api_port}")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


class LocalStack:
    def __init__(self, run_dir: Path, api_port: int = 8000, s3_port: int | None = None,
                 settings_overrides: dict | None = None, stage: str = "local",
                 allow_page_origin: bool = False):
        self.run_dir = Path(run_dir)
        # The demo page is served by the API itself: with this, its origin on this stack's port
        # joins the stage's allowed origins (`make dev` on another API_PORT).
        self.allow_page_origin = allow_page_origin
        self.api_port = api_port
        self.s3_port = s3_port
        self.stage = stage
        self._overrides = dict(settings_overrides or {})
        self._processes: list[tuple[str, subprocess.Popen]] = []
        self._started_broker = False
        self.settings: Settings | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self, bridges: int = 1) -> "LocalStack":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not port_free(self.api_port):
            raise StackError(f"port {self.api_port} is in use; set API_PORT to another port")
        manifest = chalicefile.load(ROOT / chalicefile.FILENAME)
        base = chalicefile.stage_settings(manifest, self.stage, self._overrides)
        amqp_url, self._started_broker = rabbitmq.ensure_broker(base.amqp_url, self.run_dir)
        if self.s3_port is None:
            self.s3_port = _port_of(base.s3_endpoint_url) or free_port()
            if not port_free(self.s3_port):
                self.s3_port = free_port()
        self.settings = self._with_this_stack(base, amqp_url)
        try:
            self._start_moto()
            self._create_bucket()
            self._write_stack_env()
            for _ in range(bridges):
                self.start_bridge()
            self._start_api(manifest)
        except BaseException:
            self.stop()
            raise
        return self

    def _with_this_stack(self, base: Settings, amqp_url: str) -> Settings:
        """The stage's settings pointed at this stack's broker, S3 server and API port."""
        origins = base.allowed_origins
        if self.allow_page_origin:
            origins = tuple(dict.fromkeys(origins + page_origins(self.api_port)))
        # The stable variant URLs point at this stack's API, wherever its port is.
        public_api_url = self._overrides.get("public_api_url") or self.api_url
        return replace(base, amqp_url=amqp_url, allowed_origins=origins,
                       s3_endpoint_url=f"http://127.0.0.1:{self.s3_port}",
                       public_api_url=public_api_url)

    def reload(self, settings_overrides: dict | None = None) -> None:
        """Read ``chalicefile.json`` again and restart the API and the bridges with it (a new
        variant spec, for one), with ``settings_overrides`` added to the stack's own. The S3
        server keeps running, since moto holds every object in its memory, and so does the
        broker. A spec that does not load raises ``ConfigError`` before anything is stopped."""
        if self.settings is None:
            raise StackError("the stack is not running")
        self._overrides.update(settings_overrides or {})
        manifest = chalicefile.load(ROOT / chalicefile.FILENAME)
        settings = self._with_this_stack(
            chalicefile.stage_settings(manifest, self.stage, self._overrides),
            self.settings.amqp_url)
        bridges = sum(1 for name, _ in self._processes if name.startswith("bridge"))
        for name, process in reversed(self._processes):
            if name != "s3":
                _terminate(name, process)
                (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        self._processes = [(name, p) for name, p in self._processes if name == "s3"]
        self.settings = settings
        try:
            self._create_bucket()  # the edit may name another bucket, or other origins
            self._write_stack_env()
            for _ in range(max(1, bridges)):
                self.start_bridge()
            self._start_api(manifest)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for name, process in reversed(self._processes):
            _terminate(name, process)
            (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        self._processes.clear()
        (self.run_dir / STACK_ENV).unlink(missing_ok=True)
        if self._started_broker:
            rabbitmq.stop_private_node(self.run_dir)
            self._started_broker = False

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def environment(self) -> dict[str, str]:
        return {**os.environ, **FAKE_AWS, **self.settings.to_env(),
                "PYTHONPATH": _pythonpath(), "PYTHONUNBUFFERED": "1"}

    def check_alive(self) -> None:
        for name, process in self._processes:
            if process.poll() is not None:
                raise StackError(f"{name} exited with {process.returncode}; see {self._log(name)}")

    # --- components ---------------------------------------------------------------------------
    def _start_moto(self) -> None:
        self._spawn("s3", moto_command(self.s3_port), env={**os.environ, **FAKE_AWS})
        wait_for_moto(self.s3_port, self.check_alive)

    def _create_bucket(self) -> None:
        s3 = s3_client(self.settings)
        try:
            s3.create_bucket(Bucket=self.settings.bucket)
        except s3.exceptions.BucketAlreadyOwnedByYou:  # a reload: it is there already
            pass
        configuration = bucket_cors.s3_cors_configuration(self.settings.allowed_origins)
        if configuration:
            # Real rules on the local bucket too: moto then applies them to preflights and PUT
            # uploads (and refuses other origins), as S3 does.
            s3.put_bucket_cors(Bucket=self.settings.bucket, CORSConfiguration=configuration)

    def demo_link(self, sub: str = "demo") -> str | None:
        """The demo page's URL with a token for ``sub`` in its fragment, when the stack runs
        with HS256 auth: a fragment never reaches a server (nor its logs); the page reads it
        and sends the Authorization header."""
        if not (self.settings and self.settings.auth_on and self.settings.auth_secret):
            return None
        return f"{self.api_url}/#token={self._token(sub, self.settings.auth_max_ttl_s)}"

    def _token(self, sub: str, ttl_s: int) -> str:
        from imagepipe import auth

        return auth.mint(self.settings.auth_secret, sub=sub, ttl_s=ttl_s,
                         issuer=self.settings.auth_issuer, audience=self.settings.auth_audience)

    def _start_api(self, manifest: dict) -> None:
        project = self._project_dir(manifest, "upload")
        chalice = Path(sys.executable).with_name("chalice")
        command = [str(chalice) if chalice.exists() else "chalice", "--project-dir", str(project),
                   "local", "--no-autoreload", "--host", "127.0.0.1",
                   "--port", str(self.api_port), "--stage", self.stage]
        self._spawn("api", command, env=self.environment())
        # An unknown upload's 404 proves the API reads S3; with auth on, only with a token.
        headers = {}
        if self.settings.auth_on and self.settings.auth_secret:
            headers["Authorization"] = f"Bearer {self._token('stack-check', 120)}"
        _wait_until(lambda: _http_status(f"{self.api_url}/uploads/{'0' * 32}", headers) == 404,
                    "the upload API", 60, self.check_alive)

    def start_bridge(self) -> str:
        count = sum(1 for name, _ in self._processes if name.startswith("bridge"))
        name = "bridge" if count == 0 else f"bridge-{count + 1}"
        self._spawn(name, [sys.executable, "-m", "bridge"], env=self.environment())
        _wait_until(lambda: self._consumers() > count, f"{name} to consume", 60, self.check_alive)
        return name

    def _project_dir(self, manifest: dict, function: str) -> Path:
        """A private Chalice project: the function's code, this stack's rendered config.

        Rendering into functions/*/.chalice would clash with another stack (a test run beside
        ``make dev``); app.py is linked, never copied.
        """
        source = ROOT / manifest["functions"][function]["project_dir"]
        project = self.run_dir / "projects" / function
        (project / ".chalice").mkdir(parents=True, exist_ok=True)
        link = project / "app.py"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source / "app.py")
        # chalicelib/ ships with the function (the demo page's files live there).
        library = project / "chalicelib"
        if library.is_symlink() or library.exists():
            library.unlink()
        if (source / "chalicelib").is_dir():
            library.symlink_to(source / "chalicelib", target_is_directory=True)
        config = chalicefile.chalice_config(manifest, function, self.settings)
        (project / ".chalice" / "config.json").write_text(json.dumps(config, indent=2))
        return project

    def _consumers(self) -> int:
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(self.settings.amqp_url))
        try:
            channel = connection.channel()
            try:
                declared = channel.queue_declare(self.settings.resize_queue, passive=True)
            except Exception:
                return 0
            return declared.method.consumer_count
        finally:
            if connection.is_open:
                connection.close()

    # --- plumbing -----------------------------------------------------------------------------
    def _spawn(self, name: str, command: list[str], env: dict) -> None:
        log = open(self._log(name), "ab")
        cwd = ROOT
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self._processes.append((name, process))
        (self.run_dir / f"{name}.pid").write_text(f"{process.pid}\n")
        LOGGER.info("started %s (pid %d), log %s", name, process.pid, self._log(name))

    def _log(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def _write_stack_env(self) -> None:
        # `make bridge` and the operator commands (imagepipe dlq) read it back.
        stack_env.write_stack_env(self.run_dir, self.settings.to_env())


def load_stack_env(run_dir: Path) -> dict[str, str]:
    recorded = stack_env.read_stack_env(run_dir)
    if recorded is None:
        path = Path(run_dir) / STACK_ENV
        raise StackError(f"no running stack found ({path} is missing); start one with `make dev`")
    return recorded


def _pythonpath() -> str:
    """This checkout's core and tools first, for every process of the stack."""
    existing = os.environ.get("PYTHONPATH")
    ours = os.pathsep.join([str(ROOT), str(ROOT / "tools")])
    return f"{ours}{os.pathsep}{existing}" if existing else ours


def _port_of(url: str | None) -> int | None:
    from urllib.parse import urlsplit

    return urlsplit(url).port if url else None


def _terminate(name: str, process: subprocess.Popen, grace: float = 15.0) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        LOGGER.warning("%s did not stop within %.0f s; killing it", name, grace)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def _http_status(url: str, headers: dict | None = None) -> int:
    import urllib.error
    import urllib.request

    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _http_ok(url: str) -> bool:
    return 200 <= _http_status(url) < 500


def _wait_until(predicate, what: str, timeout: float, check=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check:
            check()
        if predicate():
            return
        time.sleep(0.2)
    raise StackError(f"timed out after {timeout:.0f} s waiting for {what}")
