"""Redis faults seen through the API handler: gone, paused, busy, refusing writes, restarted empty, killed mid-run.

Every test owns its redis-server (the session one is shared), and its handler stays warm across the fault,
as a Lambda container would.
"""

from __future__ import annotations

import random
import re
import shutil
import threading
import time
from dataclasses import dataclass, field

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from local.redis_server import RedisServer, free_port
from support import Api, Reply, room_path, turns, unknown_room_state

ROOM = "discord:1"
PROMPT = {"role": "system", "content": f"Room {ROOM}"}
TURN_1 = {"role": "user", "content": "[Message ID: 1] hi"}
BOUND_SECONDS = 3  # a fault must be answered well before the function's 10 s timeout
MARKER = re.compile(r"\[Message ID: ([^\]]+)\]")

# Keeps Redis's one thread busy for ARGV[1] ms, as DEBUG SLEEP would (DEBUG is disabled by default since 7.0).
SPIN = """
local function now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end
local stop = now_ms() + tonumber(ARGV[1])
while now_ms() < stop do end
return 1
"""


@pytest.fixture
def server():
    server = RedisServer().start()
    yield server
    server.kill()  # no shutdown save, even where a test configured one
    server.stop()


@pytest.fixture
def raw(server):
    """A plain client, to stage faults and nothing else."""
    client = redis.Redis.from_url(server.url, decode_responses=True)
    yield client
    client.close()


def make_api(server, timeout: str = "0.5", **env) -> Api:
    env = {
        "REDIS_URL": server.url,
        "REDIS_TIMEOUT_SECONDS": timeout,
        "SYSTEM_PROMPT_TEMPLATE": "Room {{ room_id }}",
        **env,
    }
    return Api(env)


@pytest.fixture
def api(server):
    """A warm container: its client holds a pooled connection, and the room holds message 1."""
    api = make_api(server)
    assert post(api, 1).status == 201
    return api


def post(api, message_id, room=ROOM) -> Reply:
    return api.call("POST", room_path(room, "messages"), {"role": "user", "content": f"[Message ID: {message_id}] hi"})


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + 10  # a guard against hanging, not a timing
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def every_route(room=ROOM) -> list[tuple]:
    """The routes of docs/API.md, in an order where each succeeds on a room holding message 1."""
    return [
        ("POST", room_path(room, "messages"), {"role": "user", "content": "[Message ID: 2] hi"}),
        ("GET", room_path(room, "messages"), None),
        ("PATCH", room_path(room, "messages", "1"), {"content": "[Message ID: 1] edited"}),
        ("PUT", room_path(room, "messages", "1", "reactions"), {"reactions": "👍 x1"}),
        ("DELETE", room_path(room, "messages", "1"), None),
        ("GET", room_path(room), None),
        ("PUT", room_path(room, "limit"), {"limit": 60}),
        ("DELETE", room_path(room, "rebackfill"), None),
        ("DELETE", room_path(room), None),
    ]


def assert_unavailable(api, method, path, body=None) -> None:
    started = time.monotonic()
    reply = api.call(method, path, body)
    assert time.monotonic() - started < BOUND_SECONDS, f"{method} {path} took too long"
    assert reply.status == 503, (method, path, reply.body)
    assert reply.body.keys() == {"error", "message"} and reply.body["error"] == "redis_unavailable"


def assert_every_route_unavailable(api) -> None:
    for method, path, body in every_route():
        assert_unavailable(api, method, path, body)


def assert_every_route_works(api, room=ROOM) -> None:
    assert post(api, 1, room).status in (200, 201)
    for method, path, body in every_route(room):
        reply = api.call(method, path, body)
        assert reply.status in (200, 201, 204), (method, path, reply.body)


@pytest.mark.parametrize("go_away", ["stop", "kill"])
def test_redis_gone_under_a_warm_container_is_503_then_served_again(server, api, go_away):
    getattr(server, go_away)()  # the pooled connection is now dead
    assert_every_route_unavailable(api)
    server.restart()
    assert api.call("GET", room_path(ROOM)).body["version"] == 0  # nothing sent during the outage landed later
    assert_every_route_works(api)


def test_paused_redis_times_out_into_503_on_every_route_then_serves_again(server, api):
    server.pause()
    try:
        assert_every_route_unavailable(api)
    finally:
        server.resume()
    # The writes that timed out may still land in ROOM now (Redis reads them on resume): use another room.
    assert_every_route_works(api, room="discord:2")


def test_writes_timed_out_on_a_paused_redis_land_at_most_once(server, api):
    before = turns(post(api, 2))
    server.pause()
    try:
        assert_unavailable(api, "POST", room_path(ROOM, "messages"), {"role": "user", "content": "[Message ID: 3] hi"})
        assert_unavailable(api, "PATCH", room_path(ROOM, "messages", "1"), {"content": "[Message ID: 1] edited"})
        assert_unavailable(api, "PUT", room_path(ROOM, "messages", "2", "reactions"), {"reactions": "👍 x1"})
        assert_unavailable(api, "DELETE", room_path(ROOM, "messages", "1"))
    finally:
        server.resume()
    third = {"role": "user", "content": "[Message ID: 3] hi"}
    listed = api.call("GET", room_path(ROOM, "messages"))
    # The changes of turns timed out on their read and never sent a write; the append was sent, and may run.
    assert turns(listed) in (before, before + [third])
    assert listed.body["version"] == len(turns(listed))
    assert post(api, 3).status in (200, 201)  # the client's retry
    final = api.call("GET", room_path(ROOM, "messages"))
    assert turns(final) == before + [third] and final.body["version"] == 3


def keep_busy(server, milliseconds: int) -> redis.Connection:
    """Start a script that blocks Redis; returns its connection once Redis stops answering others."""
    connection = redis.Connection(host="127.0.0.1", port=server.port)
    connection.send_command("EVAL", SPIN, 0, milliseconds)
    probe = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=0.1, retry=Retry(NoBackoff(), 0))
    deadline = time.monotonic() + BOUND_SECONDS
    try:
        while time.monotonic() < deadline:
            probe.ping()
    except (redis.TimeoutError, redis.ResponseError):  # blocked, or BUSY past the busy-reply threshold
        return connection
    finally:
        probe.close()
    raise AssertionError("Redis never got busy")


def test_slow_redis_times_out_into_503_rather_than_waiting(server, api):
    script = keep_busy(server, 2000)
    assert_unavailable(api, "GET", room_path(ROOM, "messages"))  # a 200 would mean it waited the script out
    assert script.read_response() == 1
    script.disconnect()
    assert api.call("GET", room_path(ROOM, "messages")).status == 200


def test_busy_script_reply_is_503_on_every_route_then_served_again(server, api, raw):
    raw.config_set("busy-reply-threshold", 50)  # Redis answers BUSY instead of blocking
    script = keep_busy(server, 10_000)
    assert_every_route_unavailable(api)
    raw.script_kill()
    with pytest.raises(redis.ResponseError):  # the killed script's own reply
        script.read_response()
    script.disconnect()
    assert_every_route_works(api)


def _fail_snapshots(raw) -> None:
    raw.config_set("save", "3600 1")
    shutil.rmtree(raw.config_get("dir")["dir"])
    raw.bgsave()
    _wait(lambda: raw.info("persistence")["rdb_last_bgsave_status"] == "err", "the snapshot to fail")


REFUSE_WRITES = {
    "READONLY": lambda raw: raw.replicaof("127.0.0.1", free_port()),  # demoted in a failover
    "NOREPLICAS": lambda raw: raw.config_set("min-replicas-to-write", 1),
    "MISCONF": _fail_snapshots,  # stop-writes-on-bgsave-error
}


@pytest.mark.parametrize("refusal", REFUSE_WRITES)
def test_redis_refusing_writes_is_503_on_writes_and_reads_still_work(server, api, raw, refusal):
    REFUSE_WRITES[refusal](raw)
    for method, path, body in every_route():
        if method == "GET":
            assert api.call(method, path).status == 200
        else:
            assert_unavailable(api, method, path, body)
    listed = api.call("GET", room_path(ROOM, "messages"))
    assert listed.body == {"room_id": ROOM, "version": 1, "messages": [PROMPT, TURN_1]}  # nothing changed


def test_redis_restarted_empty_serves_every_route_and_the_room_starts_over(server, api):
    assert_every_route_works(api)  # every script has run on the old server
    post(api, 1)
    api.call("PUT", room_path(ROOM, "limit"), {"limit": 500})  # asks for a rebackfill
    server.restart()  # a replaced cache node: no data, no scripts
    assert api.call("GET", room_path(ROOM, "messages")).body == {"room_id": ROOM, "version": 0, "messages": [PROMPT]}
    assert api.call("GET", room_path(ROOM)).body == unknown_room_state(ROOM)
    for method, path, body in every_route()[2:5]:  # changes of message 1, gone with the old server
        assert api.call(method, path, body).status == 404
    first = post(api, 1)
    assert first.status == 201
    assert first.body == {"room_id": ROOM, "version": 1, "messages": [PROMPT, TURN_1]}
    assert_every_route_works(api)
    state = api.call("GET", room_path(ROOM)).body
    assert (state["version"], state["limit"], state["message_count"]) == (8, 60, 0)


# ---- Redis killed in the middle of a run of writers, then restarted empty ----
# The writers are threads with a warm container each; their requests interleave (support.Api runs one
# invocation at a time per process), so the kill lands between requests or in the middle of one.

BEFORE_KILL, DOWN, RESTARTED = 0, 1, 2


@dataclass
class Outcome:
    epoch: int  # when the request started
    op: str
    message_id: str
    was_alive: bool  # the writer had seen this id stored on the server this request talks to
    status: int
    body: dict | None


@dataclass
class Phase:
    epoch: int = BEFORE_KILL
    stop: threading.Event = field(default_factory=threading.Event)


def life(epoch: int) -> int:
    """Which redis-server a request could have reached: the killed one (0) or the restarted one (1)."""
    return 0 if epoch == BEFORE_KILL else 1


class Writer(threading.Thread):
    """A client with its own warm container, appending new turns and changing its own on ROOM, its requests
    interleaved with the other writers'."""

    def __init__(self, name: str, server: RedisServer, phase: Phase):
        super().__init__(name=name)
        # 2 s: no timeout on a live server, so a 503 here always means "refused", never "maybe applied".
        self.api = make_api(server, timeout="2", MAX_HISTORY="1000")
        self.phase = phase
        self.outcomes: list[Outcome] = []
        self.stored: dict[str, int] = {}  # id -> life of the server that acknowledged it
        self.unacknowledged: str | None = None  # an append that answered 503, retried next
        self.error: BaseException | None = None

    def run(self):
        try:
            rng = random.Random(self.name)
            for n in range(10_000):
                if self.phase.stop.is_set():
                    return
                self.step(rng, n)
        except BaseException as error:  # reported by the test
            self.error = error

    def step(self, rng: random.Random, n: int) -> None:
        epoch = self.phase.epoch
        if self.unacknowledged or not self.stored or rng.random() < 0.4:
            op, message_id = "append", self.unacknowledged or f"{self.name}-{n}"
        else:
            op, message_id = rng.choice(["edit", "react", "delete"]), rng.choice(list(self.stored))
        was_alive = self.stored.get(message_id) == life(epoch)
        path = room_path(ROOM, "messages", message_id)
        if op == "append":
            reply = post(self.api, message_id)
        elif op == "edit":
            reply = self.api.call("PATCH", path, {"content": f"[Message ID: {message_id}] edit {n}"})
        elif op == "react":
            reply = self.api.call("PUT", f"{path}/reactions", {"reactions": f"👍 x{n}"})
        else:
            reply = self.api.call("DELETE", path, {"deleted_at": "2026-01-01T00:00:00Z"})
        self.outcomes.append(Outcome(epoch, op, message_id, was_alive, reply.status, reply.body))
        if op == "append":
            self.unacknowledged = message_id if reply.status == 503 else None
            if reply.status in (200, 201):
                self.stored[message_id] = life(epoch)


def test_redis_killed_mid_run_and_restarted_empty_leaves_a_consistent_room(server):
    phase = Phase()
    writers = [Writer(f"w{i}", server, phase) for i in range(3)]

    def wait_for_each(done, what):
        _wait(lambda: any(w.error for w in writers) or all(done(w.outcomes) for w in writers), what)

    for writer in writers:
        writer.start()
    try:
        wait_for_each(lambda outcomes: len(outcomes) >= 20, "the writers to get going")
        server.kill()
        phase.epoch = DOWN
        # Once each writer has failed a request begun after the kill, none still talks to the old server.
        wait_for_each(lambda outcomes: any(o.epoch == DOWN for o in outcomes), "each writer to fail")
        server.restart()
        phase.epoch = RESTARTED
        wait_for_each(lambda outcomes: sum(o.epoch == RESTARTED for o in outcomes) >= 60, "the writers to go on")
    finally:
        phase.stop.set()
        for writer in writers:
            writer.join()
    assert [writer.error for writer in writers] == [None] * len(writers)
    outcomes = [outcome for writer in writers for outcome in writer.outcomes]

    assert {o.status for o in outcomes} <= {200, 201, 404, 503}
    assert all(next(o for o in w.outcomes if o.epoch == DOWN).status == 503 for w in writers)
    assert {o.status for o in outcomes if o.epoch == RESTARTED} <= {200, 201, 404}
    assert not [o for o in outcomes if o.status == 404 and o.was_alive]  # only turns lost with the old server
    after = [o for o in outcomes if life(o.epoch) == 1]
    assert not [o for o in after if o.op == "append" and o.status == 200]  # no refused append ever landed

    # Only what the restarted server acknowledged is in the room: each once, each change whole.
    changes = [o for o in after if o.status in (200, 201)]
    assert sorted(o.body["version"] for o in changes) == list(range(1, len(changes) + 1))
    final = make_api(server, MAX_HISTORY="1000").call("GET", room_path(ROOM, "messages"))
    assert final.body["version"] == len(changes)
    assert final.body["messages"] == max(changes, key=lambda o: o.body["version"]).body["messages"]
    ids = [MARKER.search(turn["content"]).group(1) for turn in turns(final)]
    assert sorted(ids) == sorted(o.message_id for o in changes if o.op == "append")
    for turn in turns(final):
        assert turn["content"].count("[Message ID: ") == 1
        assert turn["content"].count("[Reactions: ") <= 1 and turn["content"].count("[deleted at ") <= 1
