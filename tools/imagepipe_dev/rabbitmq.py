"""Make sure a RabbitMQ answers for the local stack.

Order: the broker at ``AMQP_URL`` (default 127.0.0.1:5672) if it answers; else a private node
under ``.run/rabbitmq`` started from the installed ``rabbitmq-server`` package; else install the
Debian package when we are root on Debian; else say exactly what to do.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

LOGGER = logging.getLogger(__name__)

PRIVATE_NODE = "imagepipe@localhost"
INSTALL_HINT = (
    "No RabbitMQ answers and none is installed. Install it (Debian/Ubuntu: "
    "`sudo apt-get install -y rabbitmq-server`; macOS: `brew install rabbitmq`) or point "
    "AMQP_URL at a running broker, then run the command again."
)


class BrokerUnavailable(RuntimeError):
    pass


def answers(amqp_url: str, timeout: float = 3.0) -> bool:
    import pika

    params = pika.URLParameters(amqp_url)
    params.connection_attempts = 1
    params.socket_timeout = timeout
    try:
        pika.BlockingConnection(params).close()
    except Exception:
        return False
    return True


def ensure_broker(amqp_url: str, run_dir: Path) -> tuple[str, bool]:
    """Returns (url of a broker that answers, whether we started a private node)."""
    if answers(amqp_url):
        return amqp_url, False
    LOGGER.info("no broker answers at %s", _redacted(amqp_url))
    home = run_dir / "rabbitmq"
    url_file = home / "url"
    if url_file.exists() and answers(url_file.read_text().strip()):
        # A private node an earlier run started (make test leaves it up for the next run).
        return url_file.read_text().strip(), False
    script = _server_script() or _install()
    port = _free_port()
    _start_private_node(script, home, port)
    url = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
    if not answers(url, timeout=10):
        raise BrokerUnavailable(f"started a private RabbitMQ on port {port} but it does not answer")
    url_file.write_text(url + "\n")
    return url, True


def stop_private_node(run_dir: Path) -> None:
    home = run_dir / "rabbitmq"
    if not (home / "rabbitmq.pid").exists():
        return
    ctl = _ctl_script()
    if ctl:
        subprocess.run([ctl, "-n", PRIVATE_NODE, "stop"], env=_node_env(home, 0),
                       capture_output=True, timeout=60)
    (home / "url").unlink(missing_ok=True)


def _server_script() -> str | None:
    # Debian's /usr/sbin wrapper switches to the rabbitmq user and /var/lib; the real script
    # honours our environment and keeps everything in the private folder.
    found = sorted(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server"))
    if found:
        return found[-1]
    return shutil.which("rabbitmq-server")


def _ctl_script() -> str | None:
    found = sorted(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmqctl"))
    return found[-1] if found else shutil.which("rabbitmqctl")


def _install() -> str:
    if os.geteuid() == 0 and shutil.which("apt-get"):
        LOGGER.info("installing rabbitmq-server with apt-get (about 30 s)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False, capture_output=True)
        done = subprocess.run(["apt-get", "install", "-y", "-q", "rabbitmq-server"], env=env,
                              capture_output=True, text=True)
        script = _server_script()
        if done.returncode == 0 and script:
            return script
        LOGGER.error("apt-get install rabbitmq-server failed: %s", done.stderr[-500:])
    raise BrokerUnavailable(INSTALL_HINT)


def _node_env(home: Path, port: int) -> dict:
    return {
        **os.environ,
        "HOME": str(home),  # the Erlang cookie lives here
        "RABBITMQ_NODENAME": PRIVATE_NODE,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(port + 20000) if port else "",
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(home / "rabbitmq.pid"),
    }


def _start_private_node(script: str, home: Path, port: int) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "enabled_plugins").write_text("[].\n")
    env = _node_env(home, port)
    LOGGER.info("starting a private RabbitMQ node on 127.0.0.1:%d under %s", port, home)
    with open(home / "server.log", "ab") as log:
        subprocess.Popen([script, "-detached"], env=env, stdout=log, stderr=log,
                         start_new_session=True)
    ctl = _ctl_script()
    deadline = time.monotonic() + 120
    if ctl:
        subprocess.run([ctl, "-n", PRIVATE_NODE, "wait", "--timeout", "120", env["RABBITMQ_PID_FILE"]],
                       env=env, capture_output=True, timeout=130)
    while time.monotonic() < deadline and not _port_open(port):
        time.sleep(0.5)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    # The private node wants port and port+20000 (Erlang distribution) both free.
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 45000 and not _port_open(port + 20000):
            return port
    raise BrokerUnavailable("no free port pair for a private RabbitMQ node")


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 5672}"
