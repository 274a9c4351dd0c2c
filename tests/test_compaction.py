"""Compaction against real Redis: the summary replaces old turns atomically and later turns always survive."""

from __future__ import annotations

import threading

import pytest

from room_history.history import RoomHistory
from support import Api, room_path, turns

ROOM = "discord:88"
ROOM_KEYS = f"*{{{ROOM}}}*"


@pytest.fixture
def api(backend):
    return Api(backend.env)  # the shipped template, which shows the summary


def append(api, number: int):
    return api.call(
        "POST", room_path(ROOM, "messages"), {"role": "user", "content": f"[Message ID: {number}] n{number}"}
    )


def compact(api, through, summary="They said hello.", headers=None):
    return api.call("POST", room_path(ROOM, "compact"), {"through": through, "summary": summary}, headers)


def test_turns_through_the_named_one_give_way_to_the_summary(api):
    for number in range(1, 6):
        append(api, number)
    reply = compact(api, "3")
    assert reply.status == 200 and reply.body["version"] == 6
    assert [message["content"] for message in turns(reply)] == ["[Message ID: 4] n4", "[Message ID: 5] n5"]
    assert "They said hello." in reply.body["messages"][0]["content"]  # the shipped template shows it
    state = api.call("GET", room_path(ROOM)).body
    assert state["summary"] == "They said hello." and state["message_count"] == 2
    listed = api.call("GET", room_path(ROOM, "messages"))
    assert "They said hello." in listed.body["messages"][0]["content"]


def test_a_later_summary_replaces_the_earlier_one(api):
    for number in range(1, 4):
        append(api, number)
    compact(api, "1", "first")
    assert api.call("GET", room_path(ROOM)).body["summary"] == "first"
    compact(api, "2", "second")
    assert api.call("GET", room_path(ROOM)).body["summary"] == "second"


def test_turns_appended_while_the_summary_was_written_are_kept(api):
    for number in range(1, 4):
        append(api, number)
    seen = api.call("GET", room_path(ROOM, "messages")).body["version"]  # the frontend asks a model now…
    append(api, 4)
    append(api, 5)
    reply = compact(api, "3")  # …and sends the summary of what it saw, without If-Match
    assert reply.status == 200 and reply.body["version"] == seen + 3
    assert [message["content"] for message in turns(reply)] == ["[Message ID: 4] n4", "[Message ID: 5] n5"]


def test_an_unknown_through_is_404_and_changes_nothing(api, backend):
    append(api, 1)
    before = backend.dump(ROOM_KEYS)
    reply = compact(api, "9")
    assert reply.status == 404 and reply.body["message"].startswith("through: ")
    assert backend.dump(ROOM_KEYS) == before


@pytest.mark.parametrize(
    "body, field",
    [
        ({"through": "1", "summary": ""}, "summary"),
        ({"through": "1", "summary": "   "}, "summary"),
        ({"through": "1", "summary": 7}, "summary"),
        ({"summary": "x"}, "through"),
        ({"through": "a b", "summary": "x"}, "through"),
    ],
)
def test_bad_bodies_are_400_and_change_nothing(api, backend, body, field):
    append(api, 1)
    before = backend.dump(ROOM_KEYS)
    reply = api.call("POST", room_path(ROOM, "compact"), body)
    assert reply.status == 400 and reply.body["message"].startswith(f"{field}: ")
    assert backend.dump(ROOM_KEYS) == before


def test_if_match_applies(api, backend):
    append(api, 1)
    append(api, 2)
    before = backend.dump(ROOM_KEYS)
    stale = compact(api, "1", headers={"if-match": "1"})
    assert stale.status == 412 and stale.body["version"] == 2 and backend.dump(ROOM_KEYS) == before
    assert compact(api, "1", headers={"if-match": "2"}).status == 200


def test_clear_and_the_reaper_remove_the_summary(api, backend, settings):
    append(api, 1)
    append(api, 2)
    compact(api, "1")
    assert api.call("DELETE", room_path(ROOM)).status == 204
    assert api.call("GET", room_path(ROOM)).body["summary"] is None
    append(api, 3)
    compact(api, "3", "again")
    history = RoomHistory.open(backend.settings)
    later = RoomHistory(history.store, history.settings, clock=lambda: history.clock() + 7200)
    assert later.reap_idle_rooms() == 1
    assert backend.keys(ROOM_KEYS) == []


def test_compactions_racing_appends_never_lose_a_later_turn(backend):
    """Two writers: one appends 1..N, one keeps compacting through a turn it just saw. Every turn appended
    after the last compaction's `through` is in the window, once, in order."""
    appender, compactor = RoomHistory.open(backend.settings), RoomHistory.open(backend.settings)
    appender.set_limit(ROOM, 1000)
    total, compacted = 300, []
    done = threading.Event()

    def append_all():
        for number in range(1, total + 1):
            appender.append(ROOM, "user", f"[Message ID: {number}] n{number}")
        done.set()

    def compact_repeatedly():  # through the middle of what it sees, until two thirds are appended
        while not done.is_set() and (not compacted or compacted[-1] < total * 2 // 3):
            window = compactor.window(ROOM)
            if len(window.turns) >= 2:
                through = window.turns[len(window.turns) // 2]["content"].split("]")[0].split(": ")[1]
                compactor.compact(ROOM, through, f"up to {through}")
                compacted.append(int(through))

    threads = [threading.Thread(target=append_all), threading.Thread(target=compact_repeatedly)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert compacted, "the compactor never ran"
    last = max(compacted)
    assert compacted == sorted(compacted)
    kept = [int(turn["content"].split("]")[0].split(": ")[1]) for turn in appender.window(ROOM).turns]
    assert kept == list(range(last + 1, total + 1))
    print(f"\ncompaction race: {len(compacted)} compactions during {total} appends, window kept {len(kept)} turns")
