"""Failovers seen through warm API handlers: a cluster master killed or failed over, a single primary replaced.

Each test owns its Redis (a killed node must not break other tests). Writers are warm containers (one
handler each, as a Lambda instance) that keep appending, reading and editing while the fault happens; the
test checks the status classes, recovery, duplicates and inventions, and prints what a frontend saw.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import redis
from redis.crc import key_slot
from room_model import turn_id

from local.redis_cluster import LocalRedisCluster
from local.redis_server import RedisServer
from room_history.errors import StoreUnavailable
from room_history.history import RoomHistory
from room_history.settings import Settings
from support import Api, room_path

PREFIX = "sg:conversation"
CONTAINERS = 3
ROOMS_PER_MASTER = 2
RECOVERY_REQUESTS = 2  # failed requests a container may see once the new primary is in place
DEADLINE_SECONDS = 30.0  # generous: a loaded 2-core machine; never a timing assertion, only a give-up point
OK = {200, 201, 304}  # 304: a conditional read found the frontend's copy current


@dataclass(frozen=True)
class Call:
    writer: int
    op: str  # append, read, read_if (If-None-Match), edit
    room: str
    message_id: str | None
    content: str | None
    started: float
    ended: float
    status: int
    error: str | None = None  # the message of a 5xx, to tell a refused connection from a timeout


@dataclass
class Writers:
    """Warm containers, one thread each, sending appends, reads and edits until stopped."""

    env: dict[str, str]
    rooms: list[str]
    calls: list[Call] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Writers:
        apis = [Api(self.env) for _ in range(CONTAINERS)]  # cold starts before the clock runs
        self.threads = [threading.Thread(target=self._run, args=(writer, api)) for writer, api in enumerate(apis)]
        for thread in self.threads:
            thread.start()
        return self

    def _run(self, writer: int, api: Api) -> None:
        acknowledged: dict[str, list[str]] = {room: [] for room in self.rooms}
        etags: dict[str, str] = {}
        step = 0
        while not self.stop.is_set():
            room = self.rooms[step % len(self.rooms)]
            # seven steps, prime to the number of rooms: every room gets every operation
            op = ("append", "append", "read", "append", "edit", "read_if", "append")[step % 7]
            if op == "edit" and not acknowledged[room]:
                op = "append"
            message_id = content = None
            started = time.monotonic()
            if op == "append":
                message_id = f"w{writer}-{step}"
                content = f"[Message ID: {message_id}] writer {writer} says {step}"
                reply = api.call("POST", room_path(room, "messages"), {"role": "user", "content": content})
                if reply.status in OK:
                    acknowledged[room].append(message_id)
            elif op == "edit":
                message_id = acknowledged[room][step % len(acknowledged[room])]
                content = f"[Message ID: {message_id}] edited by {writer} at {step}"
                reply = api.call("PATCH", room_path(room, "messages", message_id), {"content": content})
            else:
                headers = {"if-none-match": etags[room]} if op == "read_if" and room in etags else None
                reply = api.call("GET", room_path(room, "messages"), headers=headers)
            if reply.status in OK and "ETag" in reply.headers:
                etags[room] = reply.headers["ETag"]
            error = reply.body.get("message") if reply.status >= 500 and isinstance(reply.body, dict) else None
            self.calls.append(
                Call(writer, op, room, message_id, content, started, time.monotonic(), reply.status, error)
            )
            step += 1
            time.sleep(0.005)

    def wait(self, condition, what: str) -> None:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not condition(list(self.calls)):
            assert time.monotonic() < deadline, f"gave up waiting: {what}"
            assert all(thread.is_alive() for thread in self.threads), "a writer died"
            time.sleep(0.05)

    def warm(self) -> None:
        self.wait(lambda calls: all(_ok_count(calls, w) >= 3 for w in range(CONTAINERS)), "every writer served")

    def run_past(self, moment: float, rooms: list[str]) -> None:
        """Until every writer made two passes over the rooms after moment, with a write stored in each of `rooms`."""

        def done(calls):
            for writer in range(CONTAINERS):
                later = [call for call in calls if call.writer == writer and call.started > moment]
                served = {call.room for call in later if not call.op.startswith("read") and call.status in OK}
                if len(later) < 2 * len(self.rooms) or not set(rooms) <= served:
                    return False
            return True

        self.wait(done, "every writer recovered")

    def finish(self) -> list[Call]:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=DEADLINE_SECONDS)
        return list(self.calls)


def _ok_count(calls: list[Call], writer: int) -> int:
    return sum(1 for call in calls if call.writer == writer and call.status in OK)


@dataclass(frozen=True)
class Episode:
    """What a frontend saw around one failover."""

    kind: str
    fault_at: float
    new_primary_at: float  # when every live node (or the endpoint) served the slot from the new primary
    failed_rooms: list[str]  # rooms whose primary went away

    def report(self, calls: list[Call], stored: dict[str, list[dict]]) -> dict:
        during = [call for call in calls if call.ended >= self.fault_at]
        unavailable = [call for call in during if call.status == 503]
        after = [call for call in calls if call.started > self.new_primary_at]
        first_write = [
            min(
                call.ended
                for call in calls
                if call.writer == w
                and not call.op.startswith("read")
                and call.room in self.failed_rooms
                and call.started >= self.fault_at
                and call.status in OK
            )
            for w in range(CONTAINERS)
        ]
        stored_ids = {turn_id(row["content"]) for rows in stored.values() for row in rows}
        acknowledged = {call.message_id for call in calls if call.op == "append" and call.status in OK}
        figures = {
            "kind": self.kind,
            "new primary after s": round(self.new_primary_at - self.fault_at, 2),
            "503s": len(unavailable),
            "503s per container after the new primary": [
                sum(1 for call in after if call.writer == w and call.status == 503) for w in range(CONTAINERS)
            ],
            "first write stored in the failed primary's rooms after s (per container)": [
                round(ended - self.fault_at, 2) for ended in first_write
            ],
            "acknowledged turns lost": len(acknowledged - stored_ids),
            "requests": len(calls),
            "5xx causes": dict(Counter(_cause(call.error) for call in calls if call.error).most_common(3)),
        }
        print(f"\nfailover[{self.kind}]: {json.dumps(figures)}")
        return figures


def _cause(message: str | None) -> str:
    return (message or "")[:90]


def check_history(calls: list[Call], stored: dict[str, list[dict]]) -> None:
    """Status classes, no turn twice, nothing nobody sent; 404 only for edits of turns a crash lost."""
    sent: dict[str, set[str]] = {}
    for call in calls:
        if call.content is not None:
            sent.setdefault(call.message_id, set()).add(call.content)
    stored_ids = [turn_id(row["content"]) for rows in stored.values() for row in rows]
    assert [message_id for message_id, times in Counter(stored_ids).items() if times > 1] == []
    for rows in stored.values():
        for row in rows:
            assert row["content"] in sent.get(turn_id(row["content"]), set()), row
    statuses = Counter(call.status for call in calls)
    assert set(statuses) <= {200, 201, 304, 404, 409, 503}, statuses
    not_found = {call.message_id for call in calls if call.status == 404}
    assert all(call.op == "edit" for call in calls if call.status == 404)
    assert not_found.isdisjoint(stored_ids), "a 404 for a turn that is stored"


def check_recovery(calls: list[Call], episode: Episode) -> None:
    for writer in range(CONTAINERS):
        after = [call for call in calls if call.writer == writer and call.started > episode.new_primary_at]
        failed = [call for call in after if call.status == 503]
        assert len(failed) <= RECOVERY_REQUESTS, (writer, failed)
        assert after[-1].status in OK, after[-1]


def check_acknowledged_kept(calls: list[Call], stored: dict[str, list[dict]]) -> None:
    """Every acknowledged append is stored; every turn holds its last acknowledged edit or a later-sent one."""
    rows = {turn_id(row["content"]): row["content"] for room_rows in stored.values() for row in room_rows}
    appended = {call.message_id for call in calls if call.op == "append" and call.status in OK}
    assert appended <= set(rows), sorted(appended - set(rows))
    for message_id in appended:
        changes = sorted((call for call in calls if call.message_id == message_id), key=lambda call: call.started)
        last_ok = max(index for index, call in enumerate(changes) if call.status in OK)
        assert rows[message_id] in {call.content for call in changes[last_ok:]}, message_id


def stored_rooms(client, rooms: list[str]) -> dict[str, list[dict]]:
    return {room: [json.loads(row) for row in client.lrange(f"{PREFIX}:{{{room}}}", 0, -1)] for room in rooms}


def rooms_by_master(cluster: LocalRedisCluster) -> dict[int, list[str]]:
    """ROOMS_PER_MASTER room ids per master, from the slot of each candidate's hash tag."""
    views = [view for view in cluster.view() if view.master and view.slots]
    masters = {view.port: [] for view in views}
    for number in range(1000):
        room = f"failover:{number}"
        owner = next(view.port for view in views if view.owns(key_slot(room.encode())))
        if len(masters[owner]) < ROOMS_PER_MASTER:
            masters[owner].append(room)
        if all(len(rooms) == ROOMS_PER_MASTER for rooms in masters.values()):
            return masters
    raise AssertionError("could not spread rooms over every master")


@pytest.fixture
def cluster():
    with LocalRedisCluster(replicas=1, node_timeout_ms=1000) as cluster:
        yield cluster


def cluster_episode(cluster: LocalRedisCluster, kind: str, slot: int, crash: bool) -> tuple[list[Call], dict, dict]:
    masters = rooms_by_master(cluster)
    rooms = [room for port_rooms in masters.values() for room in port_rooms]
    env = {
        "REDIS_URL": cluster.url,
        "REDIS_CLUSTER": "true",
        "REDIS_TIMEOUT_SECONDS": "1",
        "POWERTOOLS_LOG_LEVEL": "CRITICAL",
    }
    writers = Writers(env, rooms).start()
    try:
        writers.warm()
        victim = cluster.master_of(slot)
        fault_at = time.monotonic()
        if crash:
            cluster.node(victim).kill()
        else:
            cluster.failover(cluster.replica_of(victim))
        cluster.wait_master_of(slot, not_port=victim)
        episode = Episode(kind, fault_at, time.monotonic(), masters[victim])
        writers.run_past(episode.new_primary_at, episode.failed_rooms)
    finally:
        calls = writers.finish()
    with redis.RedisCluster.from_url(cluster.url, decode_responses=True) as client:
        stored = stored_rooms(client, rooms)
    return calls, stored, episode.report(calls, stored) | {"episode": episode}


def test_the_default_nodes_master_killed(cluster):
    """Slot 0's master is the client's default node: before the fix every write failed for good."""
    calls, stored, figures = cluster_episode(cluster, "kill of the default node's master", slot=0, crash=True)
    check_history(calls, stored)
    check_recovery(calls, figures["episode"])


def test_another_master_killed(cluster):
    calls, stored, figures = cluster_episode(cluster, "kill of another master", slot=16383, crash=True)
    check_history(calls, stored)
    check_recovery(calls, figures["episode"])


def test_a_coordinated_cluster_failover_loses_nothing(cluster):
    calls, stored, figures = cluster_episode(cluster, "coordinated CLUSTER FAILOVER", slot=0, crash=False)
    check_history(calls, stored)
    check_recovery(calls, figures["episode"])
    check_acknowledged_kept(calls, stored)
    assert figures["acknowledged turns lost"] == 0


def test_the_reaper_recovers_when_the_default_nodes_master_is_killed(cluster):
    """The reaper pipelines its scripts over many rooms: a pipeline must not depend on the default node either."""
    settings = Settings(redis_url=cluster.url, redis_cluster=True, redis_timeout_seconds=1.0)
    rooms = [room for port_rooms in rooms_by_master(cluster).values() for room in port_rooms]
    writer = RoomHistory.open(settings)
    for room in rooms:
        writer.append(room, "user", "hi")
    reaper = RoomHistory.open(settings)
    assert reaper.reap_idle_rooms() == 0  # a warm container: nothing idle yet
    later = RoomHistory(reaper.store, settings, clock=lambda: time.time() + settings.max_idle_seconds + 60)
    cluster.wait_replicated()  # this test is about recovering, not about the writes a crash may lose
    victim = cluster.master_of(0)
    cluster.node(victim).kill()
    cluster.wait_master_of(0, not_port=victim)
    failures = 0
    while True:
        try:
            reaped = later.reap_idle_rooms()
            break
        except StoreUnavailable:
            failures += 1
            assert failures <= RECOVERY_REQUESTS, "the reaper did not recover"
    assert reaped == len(rooms)
    with redis.RedisCluster.from_url(cluster.url, decode_responses=True) as client:
        assert stored_rooms(client, rooms) == {room: [] for room in rooms}


def test_a_cluster_write_whose_reply_timed_out_is_not_sent_again():
    """A master stalls just past the timeout: the write may have run, so the client must not send it again.

    redis-py's cluster pipeline re-sends commands whose reply timed out; a turn without message id was then
    stored twice (and answered 201).
    """
    with LocalRedisCluster() as cluster:
        env = {"REDIS_URL": cluster.url, "REDIS_CLUSTER": "true", "REDIS_TIMEOUT_SECONDS": "0.5"}
        api = Api({**env, "POWERTOOLS_LOG_LEVEL": "CRITICAL"})
        room = "failover:stall"
        assert api.call("POST", room_path(room, "messages"), {"role": "user", "content": "before"}).status == 201
        node = cluster.node(cluster.master_of(key_slot(room.encode())))
        node.pause()
        resume = threading.Timer(0.7, node.resume)
        resume.start()
        try:
            reply = api.call("POST", room_path(room, "messages"), {"role": "user", "content": "sent once"})
        finally:
            resume.join()
        assert reply.status in (201, 503), reply
        with redis.RedisCluster.from_url(cluster.url, decode_responses=True) as client:
            rows = stored_rooms(client, [room])[room]
        assert [row["content"] for row in rows].count("sent once") <= 1, rows


class Endpoint:
    """A loopback name for "the primary", as ElastiCache's primary endpoint: a DNS name that moves on failover.

    New connections go to `target`; open ones stay with the server they reached, as TCP connections do when
    a name starts resolving elsewhere, and close when that server goes away.
    """

    def __init__(self, target: int):
        self.target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client, self.target), daemon=True).start()

    def _relay(self, client: socket.socket, target: int) -> None:
        with client:
            try:
                upstream = socket.create_connection(("127.0.0.1", target), timeout=1.0)
            except OSError:
                return  # nothing listens there: the client sees its connection closed
            with upstream:
                for sock in (client, upstream):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock.settimeout(None)
                while not self._closed.is_set():
                    readable, _, _ = select.select([client, upstream], [], [], 0.2)
                    try:
                        for sock in readable:
                            data = sock.recv(65536)
                            if not data:
                                return
                            (upstream if sock is client else client).sendall(data)
                    except OSError:
                        return

    def close(self) -> None:
        self._closed.set()
        self._server.close()


@pytest.fixture
def primary_and_replica():
    """A primary, its replica (in sync), and the endpoint pointing at the primary."""
    primary, replica = (RedisServer(extra_args=["--repl-diskless-sync-delay", "0"]).start() for _ in range(2))
    endpoint = Endpoint(primary.port)
    try:
        with (
            redis.Redis(port=primary.port, decode_responses=True) as on_primary,
            redis.Redis(port=replica.port, decode_responses=True) as on_replica,
        ):
            on_replica.replicaof("127.0.0.1", primary.port)
            deadline = time.monotonic() + DEADLINE_SECONDS
            # both sides: FAILOVER TO refuses a replica its primary does not see online yet
            while on_replica.info("replication").get("master_link_status") != "up" or "online" not in str(
                on_primary.info("replication").get("slave0")
            ):
                assert time.monotonic() < deadline, "the replica did not sync"
                time.sleep(0.05)
        yield primary, replica, endpoint
    finally:
        endpoint.close()
        for server in (primary, replica):
            server.kill()
            server.stop()


def single_episode(primary, replica, endpoint, kind: str, crash: bool) -> tuple[list[Call], dict, dict]:
    rooms = [f"failover:single-{number}" for number in range(3)]
    env = {"REDIS_URL": endpoint.url, "REDIS_TIMEOUT_SECONDS": "1", "POWERTOOLS_LOG_LEVEL": "CRITICAL"}
    writers = Writers(env, rooms).start()
    try:
        writers.warm()
        fault_at = time.monotonic()
        with redis.Redis(port=replica.port, decode_responses=True) as new_primary:
            if crash:
                primary.kill()
                new_primary.replicaof("NO", "ONE")
            else:  # Redis's own coordinated failover: pause writes, let the replica catch up, swap roles
                with redis.Redis(port=primary.port, decode_responses=True) as old_primary:
                    old_primary.execute_command("FAILOVER", "TO", "127.0.0.1", replica.port)
            deadline = time.monotonic() + DEADLINE_SECONDS
            while new_primary.info("replication")["role"] != "master":
                assert time.monotonic() < deadline, "the replica was not promoted"
                time.sleep(0.05)
        endpoint.target = replica.port  # the name now resolves to the new primary
        episode = Episode(kind, fault_at, time.monotonic(), rooms)
        writers.run_past(episode.new_primary_at, rooms)
    finally:
        calls = writers.finish()
    with redis.Redis(port=replica.port, decode_responses=True) as client:
        stored = stored_rooms(client, rooms)
    return calls, stored, episode.report(calls, stored) | {"episode": episode}


def test_a_single_primary_killed_and_its_replica_promoted_behind_the_endpoint(primary_and_replica):
    calls, stored, figures = single_episode(*primary_and_replica, "single: primary killed", crash=True)
    check_history(calls, stored)
    check_recovery(calls, figures["episode"])


def test_a_single_primary_demoted_by_a_coordinated_failover(primary_and_replica):
    """The old primary lives on as a replica: a warm container's open connection gets READONLY for every write
    unless it drops that connection and connects again through the endpoint."""
    calls, stored, figures = single_episode(*primary_and_replica, "single: coordinated FAILOVER", crash=False)
    check_history(calls, stored)
    check_recovery(calls, figures["episode"])
    check_acknowledged_kept(calls, stored)
    assert figures["acknowledged turns lost"] == 0
