"""A throwaway real redis-server on a free loopback port, for local runs and tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

START_ATTEMPTS = 5


class RedisServerError(RuntimeError):
    """redis-server is missing or did not come up."""


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers_ping(port: int, pid: int) -> bool:
    """True when the Redis on 127.0.0.1:port answers PING and is process pid (not a stranger)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\nINFO server\r\n")
            reply = b""
            while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    return False
                reply += chunk
    except OSError:
        return False
    return reply.startswith(b"+PONG") and f"process_id:{pid}\r\n".encode() in reply


class RedisServer:
    """A redis-server child process without persistence: start, stop, kill, restart, pause.

    Use as a context manager: ``with RedisServer() as redis: ... redis.url``.
    """

    def __init__(self, port: int | None = None, startup_timeout: float = 10.0, extra_args: Sequence[str] = ()) -> None:
        self._binary = shutil.which("redis-server")
        if self._binary is None:
            raise RedisServerError(
                "redis-server not found on PATH; install it (apt-get install -y redis-server) "
                "or run ./dev, which installs it"
            )
        self._fixed_port = port is not None
        self.port: int = port or 0
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)  # more redis-server options, e.g. "--cluster-enabled", "yes"
        self._process: subprocess.Popen | None = None
        self._dir: str | None = None
        self._starts = 0

    @property
    def url(self) -> str:
        """redis:// URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """True while the child process exists."""
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> RedisServer:
        """Start redis-server and wait until it answers PING; a port taken meanwhile means another try."""
        if self.running:
            return self
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="redis-local-")
        for attempt in range(START_ATTEMPTS):
            if not self._fixed_port:
                self.port = free_port()
            log = self._spawn()
            if self._wait_ready():
                return self
            output = Path(log).read_text(errors="replace")
            self._reap()
            if "Address already in use" in output and attempt + 1 < START_ATTEMPTS:
                time.sleep(0.2 if self._fixed_port else 0)
                continue
            raise RedisServerError(f"redis-server on port {self.port} did not start:\n{output}")
        raise AssertionError("unreachable")

    def _spawn(self) -> str:
        self._starts += 1
        log = os.path.join(self._dir, f"redis-{self._starts}.log")
        args = [
            self._binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir,
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            *self.extra_args,
        ]
        with open(log, "wb") as out:
            self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        return log

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            if _answers_ping(self.port, self._process.pid):
                return True
            time.sleep(0.02)
        return False

    def _reap(self, timeout: float = 5.0) -> None:
        """Make sure the child is gone (SIGCONT first, in case it is paused)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the server (kill after timeout) and remove its directory."""
        self._reap(timeout)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; restart() brings it back empty."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def restart(self) -> RedisServer:
        """Start again on the same port; the data is gone (there is no persistence)."""
        self._reap()
        fixed, self._fixed_port = self._fixed_port, True
        try:
            return self.start()
        finally:
            self._fixed_port = fixed

    def pause(self) -> None:
        """SIGSTOP the server: clients connect but get no answer until resume()."""
        self._running_process().send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        self._running_process().send_signal(signal.SIGCONT)

    def _running_process(self) -> subprocess.Popen:
        if not self.running:
            raise RedisServerError("redis-server is not running")
        return self._process
