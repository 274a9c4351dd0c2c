"""The Redis store against a real redis-server: key layout, scripts, round trips, reaping."""

from __future__ import annotations

import json
import re
import socket
import threading
from dataclasses import replace

import pytest
from redis.crc import key_slot

from room_history.errors import StoreUnavailable, VersionMismatch
from room_history.history import RoomHistory
from room_history.store import RoomKeys
from support import counting_round_trips as round_trips

ROOM = "discord:1234"


def test_keys_use_the_classic_layout_in_one_slot(history, redis_client):
    history.append(ROOM, "user", "[Message ID: 1] hi")
    history.set_limit(ROOM, 60)
    room_keys = {
        "sg:conversation:{discord:1234}",
        "sg:conversation:{discord:1234}:ver",
        "sg:conversation:{discord:1234}:meta",
        "sg:conversation:{discord:1234}:ids",
    }
    assert set(redis_client.keys("*")) == room_keys | {"sg:conversation:activity"}
    assert len({key_slot(key.encode()) for key in room_keys}) == 1
    assert redis_client.get("sg:conversation:{discord:1234}:ver") == "2"


def test_rows_stay_plain_json(history, redis_client):
    content = [{"type": "text", "text": "[Message ID: 1] see"}, {"type": "image_url", "image_url": {"url": "u"}}]
    history.append(ROOM, "user", content)
    rows = redis_client.lrange("sg:conversation:{discord:1234}", 0, -1)
    assert [json.loads(row) for row in rows] == [{"role": "user", "content": content}]


def test_key_prefix_is_configurable(settings, redis_client):
    from dataclasses import replace

    history = RoomHistory.open(replace(settings, key_prefix="bot7:history"))
    history.append(ROOM, "user", "hi")
    assert sorted(redis_client.keys("*")) == [
        "bot7:history:activity",
        "bot7:history:{discord:1234}",
        "bot7:history:{discord:1234}:ids",
        "bot7:history:{discord:1234}:meta",
        "bot7:history:{discord:1234}:ver",
    ]


def test_round_trips_per_operation(history):
    operations = {
        "append": lambda: history.append(ROOM, "assistant", "[Message ID: 2] hello"),
        "append duplicate": lambda: history.append(ROOM, "assistant", "[Message ID: 2] hello"),
        "window": lambda: history.window(ROOM),
        "state": lambda: history.state(ROOM),
        "edit": lambda: history.edit(ROOM, "1", "[Message ID: 1] hey"),
        "delete": lambda: history.delete(ROOM, "1"),
        "react": lambda: history.react(ROOM, "2", "👍 x1"),
        "batch": lambda: history.append_batch(ROOM, [{"role": "user", "content": "[Message ID: 3] b"}]),
        "batch start": lambda: history.append_batch(ROOM, [{"role": "user", "content": "x"}], "start"),
        "compact": lambda: history.compact(ROOM, "3", "summary"),
        "set_limit": lambda: history.set_limit(ROOM, 200),
        "discard_rebackfill": lambda: history.discard_rebackfill(ROOM),
        "clear": lambda: history.clear(ROOM),
    }
    history.append(ROOM, "user", "[Message ID: 1] hi")
    for operation in operations.values():  # first use loads each script into Redis (NOSCRIPT, LOAD, retry)
        operation()
    history.append(ROOM, "user", "[Message ID: 1] hi")
    counts = {}
    for name, operation in operations.items():
        with round_trips() as counter:
            operation()
        counts[name] = counter["n"]
    assert counts == {
        "append": 1,
        "append duplicate": 1,
        "window": 1,
        "state": 1,
        "batch": 1,
        "batch start": 1,
        "compact": 1,
        "edit": 2,
        "delete": 2,
        "react": 2,
        "set_limit": 1,
        "discard_rebackfill": 1,
        "clear": 1,
    }


def test_a_conditional_read_of_a_current_room_is_one_round_trip_without_the_turns(history, redis_client):
    for number in range(20):
        history.append(ROOM, "user", f"[Message ID: {number}] turn")
    version = history.state(ROOM).version
    history.window(ROOM, unless_version=version)  # the script is loaded
    redis_client.config_resetstat()
    with round_trips() as counter:
        assert history.window(ROOM, unless_version=version) is None
        assert history.state(ROOM, unless_version=version) is None
    assert counter["n"] == 2
    assert "cmdstat_lrange" not in redis_client.info("commandstats")  # the turns were not read
    changed = history.window(ROOM, unless_version=version - 1)
    assert changed.version == version and len(changed.turns) == 20


def test_scripts_reload_after_the_script_cache_is_flushed(history, redis_client):
    history.append(ROOM, "user", "[Message ID: 1] hi")
    redis_client.script_flush()  # what a restart or failover does to the script cache
    history.append(ROOM, "user", "[Message ID: 2] again")
    redis_client.script_flush()
    history.react(ROOM, "1", "👍 x1")
    redis_client.script_flush()
    assert [turn["content"] for turn in history.window(ROOM).turns] == [
        "[Message ID: 1] [Reactions: 👍 x1] hi",
        "[Message ID: 2] again",
    ]


def test_replace_refuses_a_changed_version(history):
    history.append(ROOM, "user", "[Message ID: 1] hi")
    snapshot = history.store.read(ROOM)
    history.append(ROOM, "user", "[Message ID: 2] moved on")
    result = history.store.replace_turn(
        ROOM, snapshot.version, -1, snapshot.rows[0], '{"role":"user","content":"x"}', 1
    )
    assert (result.status, result.version) == (0, 2)


def test_replace_refuses_a_changed_row_at_the_same_version(history, redis_client):
    """A room reaped and refilled can reach the version a slow writer read: the row check catches it."""
    history.append(ROOM, "user", "[Message ID: 1] hi")
    snapshot = history.store.read(ROOM)
    redis_client.delete(*RoomKeys.of("sg:conversation", ROOM))
    history.append(ROOM, "user", "[Message ID: 9] another life")
    result = history.store.replace_turn(
        ROOM, snapshot.version, -1, snapshot.rows[0], '{"role":"user","content":"x"}', 1
    )
    assert result.status == 0
    assert history.window(ROOM).turns == [{"role": "user", "content": "[Message ID: 9] another life"}]


def test_if_match_on_append_is_checked_inside_the_script(history, redis_client):
    history.append(ROOM, "user", "[Message ID: 1] hi")
    with pytest.raises(VersionMismatch) as error:
        history.append(ROOM, "user", "[Message ID: 2] late", expected_version=0)
    assert error.value.version == 1
    assert redis_client.llen("sg:conversation:{discord:1234}") == 1


class TestReaper:
    def idle_history(self, history, seconds_later: float) -> RoomHistory:
        """The same store seen from a clock that many seconds ahead."""
        now = history.clock()
        return RoomHistory(history.store, history.settings, clock=lambda: now + seconds_later)

    def test_idle_rooms_lose_every_key_and_fresh_rooms_stay(self, history, redis_client):
        history.append("room:old", "user", "hi")
        history.set_limit("room:old", 70)
        later = self.idle_history(history, 3000)
        later.append("room:new", "user", "hello")
        assert self.idle_history(history, 3601).reap_idle_rooms() == 1
        assert sorted(redis_client.keys("*")) == [
            "sg:conversation:activity",
            "sg:conversation:{room:new}",
            "sg:conversation:{room:new}:ids",
            "sg:conversation:{room:new}:meta",
            "sg:conversation:{room:new}:ver",
        ]
        assert redis_client.zrange("sg:conversation:activity", 0, -1) == ["room:new"]

    def test_idle_rooms_are_found_through_the_index_without_keys_or_scan(self, history, redis_client):
        for number in range(5):
            history.append(f"room:{number}", "user", "hi")
        redis_client.config_resetstat()
        assert self.idle_history(history, 3601).reap_idle_rooms() == 5
        commands = set(redis_client.info("commandstats"))
        assert "cmdstat_zrange" in commands or "cmdstat_zrangebyscore" in commands  # the activity index
        assert not commands & {"cmdstat_keys", "cmdstat_scan"}
        assert redis_client.keys("*") == []

    def test_a_room_written_after_the_reaper_picked_it_survives(self, history, redis_client):
        history.append(ROOM, "user", "[Message ID: 1] hi")
        reaper = self.idle_history(history, 4000)
        cutoff = reaper._now_ms() - reaper.settings.max_idle_seconds * 1000
        picked = reaper.store.idle_rooms(cutoff, 100)
        assert picked == [ROOM]
        writer = self.idle_history(history, 3999)
        writer.append(ROOM, "user", "[Message ID: 2] still here")
        assert reaper.store.reap(picked, cutoff) == 0
        assert len(history.window(ROOM).turns) == 2
        assert redis_client.zscore("sg:conversation:activity", ROOM) == writer._now_ms()

    def test_a_stale_index_entry_is_rescored_from_the_room(self, history, redis_client):
        history.append(ROOM, "user", "hi")
        redis_client.zadd("sg:conversation:activity", {ROOM: 1})  # the index missed a write
        assert self.idle_history(history, 10).reap_idle_rooms() == 0
        assert redis_client.zscore("sg:conversation:activity", ROOM) > 1
        assert history.state(ROOM).message_count == 1

    def test_a_reaped_room_starts_over(self, history):
        history.append(ROOM, "user", "hi")
        self.idle_history(history, 7200).reap_idle_rooms()
        state = history.state(ROOM)
        assert (state.version, state.message_count, state.last_activity) == (0, 0, None)
        assert history.append(ROOM, "user", "again")[0].version == 1

    def test_reaps_in_batches(self, history, redis_client):
        for number in range(250):
            history.append(f"room:{number}", "user", "hi")
        assert self.idle_history(history, 3601).reap_idle_rooms() == 250
        assert redis_client.keys("*") == []

    def test_stops_when_time_runs_out(self, history):
        history.append(ROOM, "user", "hi")
        assert self.idle_history(history, 3601).reap_idle_rooms(has_time_left=lambda: False) == 0
        assert history.state(ROOM).message_count == 1


def test_a_failed_index_touch_does_not_fail_the_write(history, redis_client, caplog):
    """The room's write happened: answering an error would invite the client to write again."""
    redis_client.set("sg:conversation:activity", "not a sorted set")  # every ZADD on it now fails
    window, stored = history.append(ROOM, "user", "[Message ID: 1] hi")
    assert stored and window.version == 1
    assert history.react(ROOM, "1", "👍 x1").version == 2
    assert redis_client.llen("sg:conversation:{discord:1234}") == 1
    assert "activity index not updated" in caplog.text


class DroppingProxy:
    """A TCP proxy to Redis; once armed, Redis runs the next transaction and the client is dropped, not answered."""

    def __init__(self, upstream_port: int):
        self.armed = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.upstream_port = upstream_port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            client, _ = self.listener.accept()
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client):
        with client, socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            while request := client.recv(1 << 20):
                upstream.sendall(request)
                reply = upstream.recv(1 << 20)
                if self.armed.is_set() and b"EXEC" in request:
                    self.armed.clear()
                    return  # Redis ran it; the client never hears back
                client.sendall(reply)


def test_a_write_whose_connection_dropped_is_not_sent_again(settings, redis_server, redis_client):
    proxy = DroppingProxy(redis_server.port)
    history = RoomHistory.open(replace(settings, redis_url=proxy.url))
    history.append(ROOM, "user", "[Message ID: 1] warm")  # scripts loaded, connection pooled
    proxy.armed.set()
    with pytest.raises(StoreUnavailable):  # the outcome is unknown to the client: a 503
        history.append(ROOM, "assistant", "no marker: a second run would store it twice")
    assert redis_client.lrange("sg:conversation:{discord:1234}", 0, -1) == [
        '{"role":"user","content":"[Message ID: 1] warm"}',
        '{"role":"assistant","content":"no marker: a second run would store it twice"}',
    ]
    assert redis_client.get("sg:conversation:{discord:1234}:ver") == "2"
    assert history.append(ROOM, "user", "[Message ID: 2] next")[0].version == 3  # the pool recovers
    proxy.armed.set()
    assert history.state(ROOM).version == 3  # a read can run twice: it is retried once


def test_a_connection_closed_by_redis_is_replaced_before_use(history, redis_client):
    history.append(ROOM, "user", "[Message ID: 1] hi")
    redis_client.client_kill_filter(_type="normal", skipme=True)  # e.g. a failover closed the pooled connection
    assert history.state(ROOM).version == 1
    redis_client.client_kill_filter(_type="normal", skipme=True)
    assert history.append(ROOM, "user", "[Message ID: 2] next")[0].version == 2


def test_reads_keep_working_while_writes_are_paused(history, redis_client):
    """A failover pauses writes (CLIENT PAUSE WRITE): reads run no write script, so they still run."""
    history.append(ROOM, "user", "[Message ID: 1] hi")
    history.window(ROOM, unless_version=0)  # the conditional read's script is loaded (SCRIPT LOAD would wait)
    redis_client.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
    try:
        assert history.window(ROOM, unless_version=1) is None
        assert history.window(ROOM, unless_version=0).version == 1
        assert history.state(ROOM).version == 1
        assert history.window(ROOM).turns == [{"role": "user", "content": "[Message ID: 1] hi"}]
    finally:
        redis_client.execute_command("CLIENT", "UNPAUSE")


class TestDedupeIndex:
    IDS = "sg:conversation:{discord:1234}:ids"

    def test_a_room_from_before_the_index_gets_it_on_its_next_write(self, history, redis_client):
        history.append(ROOM, "user", "[Message ID: 1] hi")
        redis_client.delete(self.IDS)  # as a room written by an older release
        assert history.append(ROOM, "user", "[Message ID: 1] hi")[1] is False  # found in the rows themselves
        assert not redis_client.exists(self.IDS)  # a request that stores nothing writes no index
        assert history.append(ROOM, "user", "[Message ID: 2] there")[1] is True
        assert redis_client.hgetall(self.IDS) == {"": "1", "id:1": "1", "id:2": "1"}

    def test_ids_leave_the_index_with_their_rows(self, history, redis_client):
        history.set_limit(ROOM, 50)
        for number in range(51):
            history.append(ROOM, "user", f"[Message ID: {number}] n")
        assert not redis_client.hexists(self.IDS, "id:0") and redis_client.hexists(self.IDS, "id:50")
        assert history.append(ROOM, "user", "[Message ID: 0] back again")[1] is True  # it slid out: stored again
        history.edit(ROOM, "50", "marker edited away")
        assert not redis_client.hexists(self.IDS, "id:50")
        history.compact(ROOM, "10", "summary")
        assert not redis_client.hexists(self.IDS, "id:10") and redis_client.hexists(self.IDS, "id:11")
        history.clear(ROOM)
        assert not redis_client.exists(self.IDS)

    def test_the_index_matches_the_rows_after_any_mix(self, history, redis_client):
        history.set_limit(ROOM, 50)
        history.append_batch(ROOM, [{"role": "user", "content": f"[Message ID: {n}] n"} for n in range(40)])
        history.append_batch(ROOM, [{"role": "user", "content": f"[Message ID: b{n}] n"} for n in range(20)], "start")
        history.react(ROOM, "5", "👍")
        history.set_limit(ROOM, 50)
        history.compact(ROOM, "3", "s")
        rows = redis_client.lrange("sg:conversation:{discord:1234}", 0, -1)
        expected = {"": "1"} | {key: "1" for turn in map(json.loads, rows) for key in _dedupe_keys(turn)}
        assert redis_client.hgetall(self.IDS) == expected


def _dedupe_keys(turn: dict) -> list[str]:
    from room_history import rows

    return rows.indexed_keys(turn)


def test_the_activity_index_is_touched_at_most_once_a_minute(history, redis_client):
    now = history.clock()
    at = lambda seconds: RoomHistory(history.store, history.settings, clock=lambda: now + seconds)  # noqa: E731
    at(0).append(ROOM, "user", "a")
    first = redis_client.zscore("sg:conversation:activity", ROOM)
    with round_trips() as counter:
        at(30).append(ROOM, "user", "b")
    assert counter["n"] == 1 and redis_client.zscore("sg:conversation:activity", ROOM) == first
    at(61).append(ROOM, "user", "c")
    assert redis_client.zscore("sg:conversation:activity", ROOM) == int((now + 61) * 1000)
    assert redis_client.hget("sg:conversation:{discord:1234}:meta", "active_at") == str(int((now + 61) * 1000))


def test_no_key_expires_by_itself(history, redis_client):
    """Keys carry no TTL (the reaper frees memory), so an eviction policy limited to volatile keys spares them."""
    history.append(ROOM, "user", "[Message ID: 1] hi")
    history.append_batch(ROOM, [{"role": "user", "content": "[Message ID: 2] more"}])
    history.set_limit(ROOM, 200)
    history.compact(ROOM, "1", "a summary")
    keys = redis_client.keys("*")
    assert len(keys) >= 4 and all(redis_client.ttl(key) == -1 for key in keys)


def test_every_script_states_its_contract_and_takes_its_keys_through_keys():
    """README: each script has its KEYS/ARGV/return header, and no script names a key itself (cluster-safe)."""
    from room_history import scripts

    found = {
        name: source
        for name, source in vars(scripts).items()
        if name.isupper() and not name.startswith("_") and isinstance(source, str) and "redis.call" in source
    }
    assert len(found) >= 8
    for name, source in found.items():
        shared_keys = source.startswith(scripts._ROOM)  # the room scripts: KEYS stated once, above _ROOM
        assert (shared_keys or "-- KEYS[1]" in source) and "-- ARGV[1]" in source and "-- Returns" in source, name
        calls = re.findall(r"redis\.p?call\(\s*'(\w+)'\s*,\s*([^,)]*)", source)
        assert calls, name
        assert all(key.startswith("KEYS[") for _, key in calls), (name, calls)


def test_a_lost_script_cache_costs_two_more_round_trips_once(history, redis_client):
    """README's round-trip table: NOSCRIPT, then the load, then the write as usual."""
    for number in range(3):
        history.append(ROOM, "user", f"[Message ID: {number}] hi")
    redis_client.script_flush()  # what a restart or failover does to the script cache
    counts = []
    for number in range(3, 5):
        with round_trips() as counter:
            history.append(ROOM, "user", f"[Message ID: {number}] hi")
        counts.append(counter["n"])
    assert counts == [3, 1]
