"""A throwaway Redis Cluster of three masters on free loopback ports, for local runs and tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import redis

from local.redis_server import RedisServer, RedisServerError, free_port

MASTERS = 3
BUS_PORT_OFFSET = 10000  # a node's cluster bus listens on its port + 10000
START_ATTEMPTS = 5


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_node_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free and valid too."""
    while True:
        port = free_port()
        if port + BUS_PORT_OFFSET < 65536 and _bindable(port + BUS_PORT_OFFSET):
            return port


class LocalRedisCluster:
    """Three redis-server masters joined with `redis-cli --cluster create`, no replicas, no persistence.

    Use as a context manager: ``with LocalRedisCluster() as cluster: ... cluster.url``.
    """

    def __init__(self, startup_timeout: float = 10.0) -> None:
        self._cli = shutil.which("redis-cli")
        if self._cli is None:
            raise RedisServerError("redis-cli not found on PATH; it comes with redis-server (see RedisServer)")
        self.startup_timeout = startup_timeout
        self.nodes: list[RedisServer] = []

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """redis:// URL of the first master (a cluster has database 0 only)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> LocalRedisCluster:
        """Start the masters, assign the slots, and wait until every node says cluster_state:ok."""
        try:
            while len(self.nodes) < MASTERS:
                self.nodes.append(self._start_node())
            self._create()
            self._wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self) -> RedisServer:
        """One cluster-enabled node; a port (or its bus port) taken meanwhile means other ports."""
        for attempt in range(START_ATTEMPTS):
            port = _free_node_port()
            node = RedisServer(
                port=port,
                startup_timeout=self.startup_timeout,
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",  # inside the node's own directory
                    "--cluster-node-timeout",
                    "2000",
                ],
            )
            try:
                return node.start()
            except RedisServerError:
                node.stop()
                if attempt + 1 == START_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _create(self) -> None:
        args = [self._cli, "--cluster", "create", *[f"127.0.0.1:{port}" for port in self.ports]]
        args += ["--cluster-replicas", "0", "--cluster-yes"]
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=self.startup_timeout, stdin=subprocess.DEVNULL
        )
        if result.returncode != 0 or "[OK] All 16384 slots covered" not in result.stdout:
            raise RedisServerError(f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}")

    def _wait_ok(self) -> None:
        clients = [redis.Redis(port=port, decode_responses=True, socket_timeout=1.0) for port in self.ports]
        deadline = time.monotonic() + self.startup_timeout
        try:
            while time.monotonic() < deadline:
                if all(client.cluster("INFO")["cluster_state"] == "ok" for client in clients):
                    return
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()
        raise RedisServerError(f"the cluster on ports {self.ports} did not reach cluster_state:ok")

    def stop(self) -> None:
        """Terminate every node and remove their directories."""
        nodes, self.nodes = self.nodes, []
        for node in nodes:
            node.stop()
