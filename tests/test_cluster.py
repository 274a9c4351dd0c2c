"""The core on a real three-master Redis Cluster: one slot per room, scripts on every node, the reaper."""

from __future__ import annotations

import pytest

from room_history.errors import InvalidInput
from room_history.history import REAP_BATCH, RoomHistory
from room_history.settings import Settings, SettingsError

pytestmark = pytest.mark.parametrize("backend", ["cluster"], indirect=True)

ROOMS = [f"discord:{number}" for number in range(12)]
INDEX = "sg:conversation:activity"


@pytest.fixture
def history(backend) -> RoomHistory:
    return RoomHistory.open(backend.settings)


def node_of(backend, key: str) -> str:
    return backend.client.get_node_from_key(key).name


def room_away_from_the_index(backend) -> str:
    return next(room for room in ROOMS if node_of(backend, f"sg:conversation:{{{room}}}") != node_of(backend, INDEX))


def seen_later(history: RoomHistory, seconds: float) -> RoomHistory:
    """The same store seen from a clock that many seconds ahead."""
    now = history.clock()
    return RoomHistory(history.store, history.settings, clock=lambda: now + seconds)


def test_the_rooms_spread_over_every_master(backend):
    """The premise of the tests below (slots are fixed by the key names and redis-cli's even split)."""
    assert len({node_of(backend, f"sg:conversation:{{{room}}}") for room in ROOMS}) == 3


def test_every_key_of_a_room_lands_in_one_slot(backend, history):
    history.append(ROOMS[0], "user", "[Message ID: 1] hi")
    history.set_limit(ROOMS[0], 60)
    room_keys = backend.keys(f"*{{{ROOMS[0]}}}*")
    assert len(room_keys) == 4
    (slot,) = {backend.client.cluster_keyslot(key) for key in room_keys}  # CLUSTER KEYSLOT, asked of the server
    assert backend.client.cluster_keyslot(INDEX) != slot
    owner = backend.client.get_node_from_key(room_keys[0])
    assert sorted(backend.client.keys(f"*{{{ROOMS[0]}}}*", target_nodes=owner)) == room_keys


def test_writes_reload_the_scripts_on_every_node_after_a_script_flush(backend, history):
    """Each write is one ClusterPipeline over two nodes: the room's script and the index's ZADD."""
    room = room_away_from_the_index(backend)
    history.append(room, "user", "[Message ID: 1] hi")
    for write in [
        lambda: history.append(room, "user", "[Message ID: 2] again"),
        lambda: history.edit(room, "1", "[Message ID: 1] hello"),
        lambda: history.react(room, "2", "👍 x1"),
        lambda: history.set_limit(room, 70),
    ]:
        backend.client.script_flush()  # every primary, as a restart or failover would
        write()
    assert [turn["content"] for turn in history.window(room).turns] == [
        "[Message ID: 1] hello",
        "[Message ID: 2] [Reactions: 👍 x1] again",
    ]
    assert history.state(room).version == 5


def test_the_reaper_reaps_rooms_of_every_master_in_one_batch(backend, history):
    """A script whose keys span slots fails in a cluster (CROSSSLOT, or redis-py refuses it): success is the proof."""
    for room in ROOMS:
        history.append(room, "user", "hi")
    reaper = seen_later(history, 3601)
    cutoff = reaper._now_ms() - reaper.settings.max_idle_seconds * 1000
    picked = reaper.store.idle_rooms(cutoff, REAP_BATCH)
    assert sorted(picked) == sorted(ROOMS)
    assert reaper.store.reap(picked, cutoff) == len(ROOMS)
    assert backend.keys() == []


def test_a_room_written_after_the_reaper_picked_it_survives(backend, history):
    for room in ROOMS:
        history.append(room, "user", "[Message ID: 1] hi")
    survivor = room_away_from_the_index(backend)
    reaper = seen_later(history, 4000)
    cutoff = reaper._now_ms() - reaper.settings.max_idle_seconds * 1000
    picked = reaper.store.idle_rooms(cutoff, REAP_BATCH)
    writer = seen_later(history, 3999)
    writer.append(survivor, "user", "[Message ID: 2] still here")
    assert reaper.store.reap(picked, cutoff) == len(ROOMS) - 1
    assert len(history.window(survivor).turns) == 2
    assert backend.keys("*{discord:*") == backend.keys(f"*{{{survivor}}}*") != []
    assert backend.client.zrange(INDEX, 0, -1, withscores=True) == [(survivor, writer._now_ms())]


def test_braces_are_refused_in_room_ids_and_in_the_key_prefix(backend, history):
    with pytest.raises(InvalidInput):
        history.append("a{b}", "user", "hi")
    with pytest.raises(SettingsError):
        Settings.from_env({**backend.env, "KEY_PREFIX": "bot{7}"})
    assert backend.keys() == []
