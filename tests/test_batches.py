"""Batches through the API function against real Redis: one atomic step, both positions, counts, If-Match."""

from __future__ import annotations

import pytest

from support import Api, room_path, turns

ROOM = "discord:77"
ROOM_KEYS = f"*{{{ROOM}}}*"


@pytest.fixture
def api(backend):
    return Api({**backend.env, "SYSTEM_PROMPT_TEMPLATE": "Room {{ room_id }}"})


def turn(number: int, role: str = "user") -> dict:
    return {"role": role, "content": f"[Message ID: {number}] turn {number}"}


def batch(api, numbers, position=None, headers=None, **extra):
    body = {"turns": [turn(number) for number in numbers], **extra}
    if position:
        body["position"] = position
    return api.call("POST", room_path(ROOM, "batch"), body, headers)


def numbers_in(reply) -> list[int]:
    return [int(message["content"].split("]")[0].split(": ")[1]) for message in turns(reply)]


def test_appends_in_order_with_one_version_bump(api):
    api.call("POST", room_path(ROOM, "messages"), turn(1))
    reply = batch(api, [2, 3, 4])
    assert reply.status == 201 and reply.body["version"] == 2 and reply.headers["ETag"] == '"2"'
    assert numbers_in(reply) == [1, 2, 3, 4]
    assert (reply.body["stored"], reply.body["duplicates"], reply.body["dropped"]) == (3, 0, 0)
    assert reply.body["messages"][0] == {"role": "system", "content": "Room discord:77"}


def test_duplicates_in_the_window_and_in_the_batch_are_skipped(api):
    batch(api, [1, 2])
    reply = batch(api, [2, 3, 3, 4, 1])
    assert reply.status == 201 and numbers_in(reply) == [1, 2, 3, 4]
    assert (reply.body["stored"], reply.body["duplicates"], reply.body["dropped"]) == (2, 3, 0)


def test_turns_without_an_id_are_never_duplicates(api):
    body = {"turns": [{"role": "user", "content": "same"}, {"role": "user", "content": "same"}]}
    assert api.call("POST", room_path(ROOM, "batch"), body).body["stored"] == 2


def test_a_batch_of_duplicates_changes_nothing_and_answers_200(api, backend):
    batch(api, [1, 2])
    before = backend.dump(ROOM_KEYS)
    reply = batch(api, [1, 2], headers={"if-match": "0"})  # a retry of a batch that succeeded
    assert reply.status == 200 and reply.body["version"] == 1 and reply.body["duplicates"] == 2
    assert backend.dump(ROOM_KEYS) == before


@pytest.mark.parametrize(
    "turns_field, field",
    [
        ([{"role": "user", "content": "[Message ID: 1] a"}, {"role": "user", "content": ""}], "turns[1].content"),
        ([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}], "turns[1].role"),
        ([{"role": "user", "content": "a"}, "not a turn"], "turns[1]"),
        ([{"role": "user", "content": "[Message ID: 1] a", "message_id": "2"}], "turns[0].message_id"),
        ([], "turns"),
        ([{"role": "user", "content": "a"}] * 101, "turns"),
        ("not a list", "turns"),
    ],
)
def test_a_bad_turn_is_a_400_naming_it_and_nothing_is_stored(api, backend, turns_field, field):
    batch(api, [1])
    before = backend.dump(ROOM_KEYS)
    reply = api.call("POST", room_path(ROOM, "batch"), {"turns": turns_field})
    assert reply.status == 400 and reply.body["message"].startswith(f"{field}: ")
    assert backend.dump(ROOM_KEYS) == before


def test_an_oversized_turn_is_a_413_naming_it(backend):
    api = Api({**backend.env, "MAX_TURN_BYTES": "500"})
    reply = api.call("POST", room_path(ROOM, "batch"), {"turns": [turn(1), {"role": "user", "content": "x" * 600}]})
    assert reply.status == 413 and reply.body["message"].startswith("turns[1].content: ")
    assert backend.keys(ROOM_KEYS) == []


def test_bad_position_is_a_400(api, backend):
    reply = batch(api, [1], position="middle")
    assert reply.status == 400 and reply.body["message"].startswith("position: ")
    assert backend.keys(ROOM_KEYS) == []


def test_end_trims_the_oldest_and_counts_what_did_not_fit(api):
    api.call("PUT", room_path(ROOM, "limit"), {"limit": 50})
    reply = batch(api, range(1, 61))
    assert numbers_in(reply) == list(range(11, 61))
    assert (reply.body["stored"], reply.body["duplicates"], reply.body["dropped"]) == (50, 0, 10)
    again = batch(api, range(61, 66))
    assert numbers_in(again) == list(range(16, 66)) and again.body["stored"] == 5


def test_start_pages_fill_the_window_backwards_in_order(api, backend):
    """After a re-backfill request, a frontend sends older and older pages until the window is full."""
    api.call("PUT", room_path(ROOM, "limit"), {"limit": 50})
    batch(api, range(41, 51))  # the newest turns, already there
    first = batch(api, range(21, 41), position="start")
    assert first.status == 201 and numbers_in(first) == list(range(21, 51))
    second = batch(api, range(1, 26), position="start")  # overlaps the first page: 21..25 are duplicates
    assert numbers_in(second) == list(range(1, 51))
    assert (second.body["stored"], second.body["duplicates"], second.body["dropped"]) == (20, 5, 0)
    before = backend.dump(ROOM_KEYS)
    full = api.call("POST", room_path(ROOM, "batch"), {"turns": [turn(-n) for n in range(1, 4)], "position": "start"})
    assert full.status == 200 and (full.body["stored"], full.body["dropped"]) == (0, 3)
    assert full.body["version"] == second.body["version"] and backend.dump(ROOM_KEYS) == before
    assert api.call("GET", room_path(ROOM)).body["rebackfill_requested"] is False  # left as it was


def test_start_keeps_the_newest_of_a_page_that_does_not_fit(api):
    api.call("PUT", room_path(ROOM, "limit"), {"limit": 50})
    batch(api, range(101, 141))  # 40 turns: room for 10 more
    reply = batch(api, range(81, 101), position="start")
    assert numbers_in(reply) == list(range(91, 141))
    assert (reply.body["stored"], reply.body["dropped"]) == (10, 10)


def test_if_match_applies_to_the_whole_batch(api, backend):
    batch(api, [1])
    before = backend.dump(ROOM_KEYS)
    stale = batch(api, [2, 3], headers={"if-match": "0"})
    assert stale.status == 412 and stale.body["version"] == 1 and backend.dump(ROOM_KEYS) == before
    assert batch(api, [2, 3], headers={"if-match": "1"}).status == 201


def test_batched_turns_dedupe_later_single_appends(api):
    batch(api, [1, 2])
    again = api.call("POST", room_path(ROOM, "messages"), turn(2))
    assert again.status == 200 and numbers_in(again) == [1, 2]
