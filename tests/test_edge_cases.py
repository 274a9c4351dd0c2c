"""Edge cases a review found in the store and the operations, each against real Redis: failed writes leave no
key, dedupe looks at the window only, every idle room gets reaped, tool-call retries, errors name their field."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import redis
from redis.crc import key_slot
from test_store import DroppingProxy

from local.redis_cluster import LocalRedisCluster
from room_history.errors import StoreUnavailable, TurnTooLarge
from room_history.history import RoomHistory
from room_history.settings import Settings
from support import Api, room_path

ROOM = "discord:4242"
ROOM_KEYS = f"*{{{ROOM}}}*"


@pytest.fixture
def api(backend):
    return Api({**backend.env, "SYSTEM_PROMPT_TEMPLATE": "Room {{ room_id }}"})


def turn(number: int) -> dict:
    return {"role": "user", "content": f"[Message ID: {number}] turn {number}"}


class TestAFailedWriteChangesNothing:
    """docs/API.md: a request that fails changes nothing in Redis. APPEND_TURN and APPEND_BATCH call
    ensure_index() before they check If-Match, so a 412 still writes the room's `:ids` hash."""

    def test_a_412_append_to_an_unknown_room_leaves_no_key(self, api, backend):
        stale = api.call("POST", room_path(ROOM, "messages"), turn(1), {"if-match": "5"})
        assert stale.status == 412 and stale.body["version"] == 0
        # the orphan `…:ids` key has no meta and no activity entry: the reaper never removes it
        assert backend.keys() == []

    def test_a_412_batch_to_an_unknown_room_leaves_no_key(self, api, backend):
        stale = api.call("POST", room_path(ROOM, "batch"), {"turns": [turn(1), turn(2)]}, {"if-match": "5"})
        assert stale.status == 412
        assert backend.keys() == []

    def test_a_412_append_to_a_room_without_the_index_changes_nothing(self, api, backend):
        api.call("POST", room_path(ROOM, "messages"), turn(1))
        backend.client.delete(f"sg:conversation:{{{ROOM}}}:ids")  # a room written by the previous release
        before = backend.dump(ROOM_KEYS)
        stale = api.call("POST", room_path(ROOM, "messages"), turn(2), {"if-match": "0"})
        assert stale.status == 412
        assert backend.dump(ROOM_KEYS) == before


class TestDedupeIsOverTheWindow:
    """docs/API.md: 200 only when the same turn is already *in the window*. The index counts every row of the
    list, and the list is longer than the window when the operator lowers MAX_HISTORY (rooms on the default
    limit keep their rows until their next write): a fresh turn whose id only sits beyond the window is
    refused as a duplicate and lost."""

    @pytest.fixture
    def lowered(self, history, settings) -> RoomHistory:
        for number in range(100):  # the default window of 100, full
            history.append(ROOM, "user", f"[Message ID: {number}] old {number}")
        return RoomHistory.open(Settings(**{**vars(settings), "max_history": 50}))

    def test_a_turn_beyond_the_window_is_not_a_duplicate(self, lowered):
        window = lowered.window(ROOM)
        assert "[Message ID: 0]" not in str(window.turns)  # only 50..99 are in the window
        window, stored = lowered.append(ROOM, "user", "[Message ID: 0] posted again")
        assert stored is True
        assert window.turns[-1]["content"] == "[Message ID: 0] posted again"

    def test_a_batch_turn_beyond_the_window_is_not_a_duplicate(self, lowered):
        window, counts = lowered.append_batch(ROOM, [{"role": "user", "content": "[Message ID: 1] again"}])
        assert (counts.stored, counts.duplicates) == (1, 0)
        assert window.turns[-1]["content"] == "[Message ID: 1] again"


def later(history: RoomHistory, seconds: float) -> RoomHistory:
    """The same store seen from a clock that many seconds ahead."""
    now = history.clock()
    return RoomHistory(history.store, history.settings, clock=lambda: now + seconds)


class TestEveryIdleRoomIsReaped:
    """docs/API.md: the reaper removes every room idle longer than MAX_IDLE_SECONDS. A write now touches the
    activity index only when the script says it is due, and the script marks it done (`indexed_at`) before the
    store has touched it. When that one ZADD does not happen (it failed, or the reply of the write was lost
    and the retry is a duplicate, which never bumps), the room is in no index and is never reaped."""

    def test_a_room_whose_index_touch_failed_is_still_reaped(self, history, redis_client):
        redis_client.set("sg:conversation:activity", "not a sorted set")  # this one ZADD fails (logged)
        history.append(ROOM, "user", "[Message ID: 1] hi")
        redis_client.delete("sg:conversation:activity")  # the index works again
        later(history, 30).append(ROOM, "user", "[Message ID: 2] a second turn, 30 s later")
        assert later(history, 30 + 3601).reap_idle_rooms() == 1
        assert redis_client.keys(ROOM_KEYS) == []

    def test_a_room_whose_write_reply_was_lost_is_still_reaped(self, settings, redis_server, redis_client):
        proxy = DroppingProxy(redis_server.port)
        history = RoomHistory.open(replace(settings, redis_url=proxy.url))
        history.append("discord:warm", "user", "warm")  # scripts loaded, connection pooled
        proxy.armed.set()
        with pytest.raises(StoreUnavailable):  # Redis ran the append; the client got no answer (a 503)
            history.append(ROOM, "user", "[Message ID: 1] hi")
        assert history.append(ROOM, "user", "[Message ID: 1] hi")[1] is False  # the client's retry: 200
        later(history, 3601).reap_idle_rooms()
        assert redis_client.keys(ROOM_KEYS) == []


CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}


class TestToolCallDedupe:
    """docs/API.md, Stored once: an assistant tool-call turn without a marker is already stored when "a turn
    whose first tool call has the same id is in the window". The index holds `call:<id>` only for stored turns
    *without* a marker, so a turn with a marker and that first call does not count, and the turn is stored twice
    (two assistant turns calling call_1: most chat APIs refuse the repeated tool call id)."""

    def test_a_markerless_retry_of_a_marked_tool_call_turn_is_a_duplicate(self, history):
        history.append(ROOM, "assistant", "[Message ID: 7] let me look", tool_calls=[CALL])
        window, stored = history.append(ROOM, "assistant", None, tool_calls=[CALL])
        assert stored is False
        assert len(window.turns) == 1

    def test_the_same_within_a_batch(self, history):
        marked = {"role": "assistant", "content": "[Message ID: 7] let me look", "tool_calls": [CALL]}
        bare = {"role": "assistant", "content": None, "tool_calls": [CALL]}
        window, counts = history.append_batch(ROOM, [marked, bare])
        assert (counts.stored, counts.duplicates) == (1, 1)


class TestErrorsNameTheField:
    """docs/API.md: every error message reads "<field>: …", naming the request field at fault. A reaction (or a
    deleted-at stamp) that makes a stored turn larger than MAX_TURN_BYTES is a 413 naming `content`, a field
    these requests do not have."""

    @pytest.fixture
    def small(self, settings) -> RoomHistory:
        return RoomHistory.open(Settings(**{**vars(settings), "max_turn_bytes": 200}))

    def test_reactions_that_overflow_the_turn_name_reactions(self, small):
        small.append(ROOM, "user", "[Message ID: 1] " + "x" * 140)
        with pytest.raises(TurnTooLarge) as error:
            small.react(ROOM, "1", "👍 x1, ❤️ x2, 😂 x3, 🎉 x4")
        assert str(error.value).startswith("reactions: ")

    def test_reactions_too_large_alone_name_reactions(self, small):
        small.append(ROOM, "user", "[Message ID: 1] hi")
        with pytest.raises(TurnTooLarge) as error:
            small.react(ROOM, "1", "👍 x1, " * 40)
        assert str(error.value).startswith("reactions: ")

    def test_a_deleted_at_stamp_that_overflows_the_turn_names_deleted_at(self, small):
        small.append(ROOM, "user", "[Message ID: 1] " + "x" * 150)
        with pytest.raises(TurnTooLarge) as error:
            small.delete(ROOM, "1", "2026-11-29T09:00:00.000000+00:00")
        assert str(error.value).startswith("deleted_at: ")


def test_a_cluster_write_whose_index_touch_cannot_find_its_slot_still_succeeds():
    """store._write: "a failed touch is logged, not raised: the room's write happened, and answering an error
    would invite a second one". It catches redis.RedisError only; in a cluster whose activity-index slot is
    not covered (its master lost, slot map being rebuilt) the ZADD raises RedisClusterException, which is not
    a RedisError: the turn is stored and the API answers 500 "nothing was changed" (a retry of a turn without
    an id then stores it twice). Its own cluster: the test takes a slot away."""
    with LocalRedisCluster() as cluster:
        client = redis.RedisCluster.from_url(cluster.url, decode_responses=True)
        history = RoomHistory.open(Settings(redis_url=cluster.url, redis_cluster=True, redis_timeout_seconds=1.0))
        index_slot = key_slot(b"sg:conversation:activity")
        index_node = client.get_node_from_key("sg:conversation:activity").name
        rooms = [
            f"room:{n}"
            for n in range(60)
            if client.get_node_from_key(f"sg:conversation:{{room:{n}}}").name != index_node
        ]
        history.append(rooms[0], "user", "warm")  # scripts loaded
        for node in client.get_primaries():
            client.execute_command("CONFIG SET", "cluster-require-full-coverage", "no", target_nodes=node)
            client.execute_command("CLUSTER DELSLOTS", index_slot, target_nodes=node)
        time.sleep(0.5)
        window, stored = history.append(rooms[1], "user", "no id: a retry would store it twice")
        assert stored and client.llen(f"sg:conversation:{{{rooms[1]}}}") == 1
        client.close()
