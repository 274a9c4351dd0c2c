"""A throwaway Redis Cluster of three masters, with replicas if asked, on free loopback ports, for tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass

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


@dataclass(frozen=True)
class NodeView:
    """One line of CLUSTER NODES, as a live node sees its peers."""

    node_id: str
    port: int
    master: bool
    failed: bool
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    def owns(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


def cluster_nodes(client: redis.Redis) -> list[NodeView]:
    """CLUSTER NODES as one node sees it (redis-py parses the lines into a dict keyed by address)."""
    views = []
    for address, node in client.cluster("NODES").items():
        flags = node["flags"].split(",")
        views.append(
            NodeView(
                node_id=node["node_id"],
                port=int(address.rsplit(":", 1)[1]),
                master="master" in flags,
                failed="fail" in flags or "fail?" in flags,
                master_id=None if node["master_id"] == "-" else node["master_id"],
                slots=tuple((int(pair[0]), int(pair[-1])) for pair in node["slots"]),
            )
        )
    return views


class LocalRedisCluster:
    """Three redis-server masters joined with `redis-cli --cluster create`, `replicas` each, no persistence.

    Use as a context manager: ``with LocalRedisCluster() as cluster: ... cluster.url``. With replicas, a
    master can be killed (`node(port).kill()`) or failed over (`failover(port)`) and the promotion
    awaited (`wait_master_of(slot, not_port=...)`).
    """

    def __init__(self, startup_timeout: float = 10.0, replicas: int = 0, node_timeout_ms: int = 2000) -> None:
        self._cli = shutil.which("redis-cli")
        if self._cli is None:
            raise RedisServerError("redis-cli not found on PATH; it comes with redis-server (see RedisServer)")
        self.startup_timeout = startup_timeout
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[RedisServer] = []

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """redis:// URL of the first running node (a cluster has database 0 only)."""
        return f"redis://127.0.0.1:{next(node.port for node in self.nodes if node.running)}/0"

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> LocalRedisCluster:
        """Start the nodes, assign the slots, and wait until every node says cluster_state:ok (and replicas synced)."""
        try:
            while len(self.nodes) < MASTERS * (1 + self.replicas):
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
                    str(self.node_timeout_ms),
                    "--repl-diskless-sync-delay",
                    "0",  # replicas sync at once, not after the default 5 s wait for more replicas
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
        args += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=self.startup_timeout, stdin=subprocess.DEVNULL
        )
        if result.returncode != 0 or "[OK] All 16384 slots covered" not in result.stdout:
            raise RedisServerError(f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}")

    def _wait_ok(self) -> None:
        """Every node sees the whole cluster healthy, and every replica has its master's data."""
        clients = [redis.Redis(port=port, decode_responses=True, socket_timeout=1.0) for port in self.ports]
        deadline = time.monotonic() + self.startup_timeout
        expected = len(self.nodes)
        try:
            while time.monotonic() < deadline:
                if all(self._healthy(client, expected) for client in clients):
                    return
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()
        raise RedisServerError(f"the cluster on ports {self.ports} did not reach cluster_state:ok")

    @staticmethod
    def _healthy(client: redis.Redis, expected_nodes: int) -> bool:
        if client.cluster("INFO")["cluster_state"] != "ok":
            return False
        views = cluster_nodes(client)
        if len(views) != expected_nodes or any(view.failed for view in views):
            return False
        if sum(1 for view in views if view.master) != MASTERS:  # a replica not yet known as one
            return False
        replication = client.info("replication")
        return replication["role"] == "master" or replication.get("master_link_status") == "up"

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def view(self) -> list[NodeView]:
        """CLUSTER NODES as the first live node sees it."""
        for node in self.nodes:
            if node.running:
                with redis.Redis(port=node.port, decode_responses=True, socket_timeout=1.0) as client:
                    return cluster_nodes(client)
        raise RedisServerError("no node of the cluster is running")

    def master_of(self, slot: int) -> int:
        """Port of the master that owns slot, as the cluster sees it now."""
        return next(view.port for view in self.view() if view.master and view.owns(slot))

    def replica_of(self, master_port: int) -> int:
        """Port of one replica of that master."""
        views = self.view()
        master_id = next(view.node_id for view in views if view.port == master_port)
        return next(view.port for view in views if view.master_id == master_id)

    def wait_replicated(self, timeout: float = 30.0) -> None:
        """Wait until every replica has all its master's writes (replication is asynchronous)."""
        deadline = time.monotonic() + timeout
        for view in self.view():
            if not view.master:
                continue
            with redis.Redis(port=view.port, decode_responses=True, socket_timeout=1.0) as client:
                while True:
                    info = client.info("replication")
                    offsets = [info[key]["offset"] for key in info if key.startswith("slave")]
                    if len(offsets) == self.replicas and all(o == info["master_repl_offset"] for o in offsets):
                        break
                    if time.monotonic() > deadline:
                        raise RedisServerError(f"the replicas of {view.port} did not catch up within {timeout} s")
                    time.sleep(0.02)

    def failover(self, replica_port: int) -> None:
        """A coordinated CLUSTER FAILOVER: the replica catches up with its master, then takes over."""
        with redis.Redis(port=replica_port, decode_responses=True, socket_timeout=1.0) as client:
            client.execute_command("CLUSTER FAILOVER")

    def wait_master_of(self, slot: int, not_port: int, timeout: float = 30.0) -> int:
        """Wait until every live node sees a master other than not_port serving slot; returns its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = set()
            for node in self.nodes:
                if not node.running:
                    continue
                try:
                    with redis.Redis(port=node.port, decode_responses=True, socket_timeout=1.0) as client:
                        views = cluster_nodes(client)
                        if client.cluster("INFO")["cluster_state"] != "ok":
                            seen.add(None)
                            continue
                except redis.RedisError:
                    seen.add(None)
                    continue
                seen.add(next((view.port for view in views if view.master and view.owns(slot)), None))
            if len(seen) == 1 and None not in seen and not_port not in seen:
                return seen.pop()
            time.sleep(0.05)
        raise RedisServerError(f"no new master for slot {slot} within {timeout} s")

    def stop(self) -> None:
        """Terminate every node and remove their directories."""
        nodes, self.nodes = self.nodes, []
        for node in nodes:
            node.stop()
