"""Room operations against a real Redis: the rules as stored, versions, retries, If-Match."""

from __future__ import annotations

from dataclasses import replace

import pytest

from room_history.errors import InvalidInput, MessageNotFound, TurnTooLarge, VersionMismatch, WriteConflict
from room_history.history import BACKOFF_CAP_SECONDS, WRITE_ATTEMPTS, RoomHistory
from support import IMAGE, InterleavingStore
from support import counting_round_trips as round_trips

ROOM = "matrix:!abc:example.org"


def contents(history: RoomHistory) -> list:
    return [turn["content"] for turn in history.window(ROOM).turns]


class TestAppend:
    def test_append_returns_the_window_and_bumps_the_version(self, history):
        window, stored = history.append(ROOM, "user", "[Message ID: 1] hi")
        assert stored and window.version == 1
        window, stored = history.append(ROOM, "assistant", [{"type": "text", "text": "[Message ID: 2] hello"}, IMAGE])
        assert stored and window.version == 2
        assert [turn["role"] for turn in window.turns] == ["user", "assistant"]

    def test_a_retried_append_is_stored_once(self, history):
        history.append(ROOM, "user", "[Message ID: 1] hi")
        window, stored = history.append(ROOM, "user", "[Message ID: 1] hi", "1")
        assert not stored and window.version == 1
        assert contents(history) == ["[Message ID: 1] hi"]

    def test_an_edited_or_deleted_turn_still_counts_as_stored(self, history):
        history.append(ROOM, "user", "[Message ID: 1] hi")
        history.delete(ROOM, "1", "2026-01-01T00:00:00Z")
        assert history.append(ROOM, "user", "[Message ID: 1] hi")[1] is False

    def test_a_prefix_id_is_not_a_duplicate(self, history):
        history.append(ROOM, "user", "[Message ID: 123] a")
        assert history.append(ROOM, "user", "[Message ID: 12] b")[1] is True

    def test_a_marker_outside_the_first_text_part_is_not_a_duplicate(self, history):
        history.append(ROOM, "user", [{"type": "text", "text": "quote"}, {"type": "text", "text": "[Message ID: 5] x"}])
        assert history.append(ROOM, "user", "[Message ID: 5] real")[1] is True

    def test_turns_without_marker_are_all_stored(self, history):
        history.append(ROOM, "user", "same")
        history.append(ROOM, "user", "same")
        assert contents(history) == ["same", "same"]

    def test_the_window_slides(self, history, settings):
        small = RoomHistory(history.store.__class__(history.store.client, "sg:conversation", 3), settings)
        for number in range(5):
            small.append(ROOM, "user", f"[Message ID: {number}] n")
        assert contents(small) == ["[Message ID: 2] n", "[Message ID: 3] n", "[Message ID: 4] n"]
        # a turn that slid out of the window is no longer a duplicate
        assert small.append(ROOM, "user", "[Message ID: 0] n")[1] is True

    def test_oversize_turn_changes_nothing(self, settings, single_backend):
        history = RoomHistory.open(replace(settings, max_turn_bytes=100))
        history.append(ROOM, "user", "short")
        before = single_backend.dump()
        with pytest.raises(TurnTooLarge):
            history.append(ROOM, "user", "x" * 200)
        assert single_backend.dump() == before


class TestChangeTurn:
    def test_edit_keeps_media_on_a_string_edit(self, history):
        history.append(ROOM, "user", [{"type": "text", "text": "[Message ID: 1] cat"}, IMAGE])
        window = history.edit(ROOM, "1", "[Message ID: 1] a cat")
        assert window.version == 2
        assert contents(history) == [[{"type": "text", "text": "[Message ID: 1] a cat"}, IMAGE]]

    def test_edit_changes_only_the_newest_matching_turn(self, history):
        history.append(ROOM, "user", "[Message ID: 1] first")
        history.append(ROOM, "assistant", "[Message ID: 2] reply")
        history.edit(ROOM, "1", "[Message ID: 1] fixed")
        assert contents(history) == ["[Message ID: 1] fixed", "[Message ID: 2] reply"]

    def test_edit_with_another_marker_is_refused(self, history):
        history.append(ROOM, "user", "[Message ID: 1] first")
        with pytest.raises(InvalidInput, match="content"):
            history.edit(ROOM, "1", "[Message ID: 2] hijack")

    def test_edit_that_grows_past_the_limit_changes_nothing(self, settings, single_backend):
        history = RoomHistory.open(replace(settings, max_turn_bytes=200))
        history.append(ROOM, "user", "[Message ID: 1] hi")
        before = single_backend.dump()
        with pytest.raises(TurnTooLarge):
            history.edit(ROOM, "1", "[Message ID: 1] " + "x" * 300)
        assert single_backend.dump() == before

    def test_unknown_message_is_not_found_and_changes_nothing(self, history, single_backend):
        history.append(ROOM, "user", "[Message ID: 1] hi")
        before = single_backend.dump()
        for operation in (
            lambda: history.edit(ROOM, "2", "x"),
            lambda: history.delete(ROOM, "2"),
            lambda: history.react(ROOM, "2", "👍"),
        ):
            with pytest.raises(MessageNotFound):
                operation()
        assert single_backend.dump() == before

    def test_delete_defaults_to_now_in_utc(self, history):
        history.append(ROOM, "user", "[Message ID: 1] hi")
        history.delete(ROOM, "1")
        (text,) = contents(history)
        assert text.startswith("[Message ID: 1] [deleted at 20") and text.endswith("Z] hi")

    def test_delete_keeps_the_given_stamp_verbatim_and_once(self, history):
        history.append(ROOM, "user", [{"type": "text", "text": "[Message ID: 1] pic"}, IMAGE])
        history.delete(ROOM, "1", "2026-11-25T10:00:00+01:00")
        window = history.delete(ROOM, "1", "2026-11-26T10:00:00+01:00")
        assert window.version == 3  # every successful mutation bumps the version
        assert contents(history) == [
            [{"type": "text", "text": "[Message ID: 1] [deleted at 2026-11-25T10:00:00+01:00] pic"}, IMAGE]
        ]

    def test_if_match_mismatch_changes_nothing_and_names_the_version(self, history, single_backend):
        history.append(ROOM, "user", "[Message ID: 1] hi")
        before = single_backend.dump()
        with pytest.raises(VersionMismatch) as error:
            history.react(ROOM, "1", "👍", expected_version=7)
        assert error.value.version == 1
        assert single_backend.dump() == before
        assert history.react(ROOM, "1", "👍", expected_version=1).version == 2


class TestConflicts:
    def test_a_lost_race_is_retried_and_both_writes_survive(self, history, settings):
        history.append(ROOM, "user", "[Message ID: 1] hi")
        history.append(ROOM, "user", "[Message ID: 2] there")
        other = InterleavingStore(history.store, lambda: history.react(ROOM, "2", "❤️ x1"), times=1)
        racing = RoomHistory(other, settings, sleep=lambda _: None)
        window = racing.edit(ROOM, "1", "[Message ID: 1] hello")
        assert racing.conflicts == 1
        assert window.version == 4
        assert contents(history) == ["[Message ID: 1] hello", "[Message ID: 2] [Reactions: ❤️ x1] there"]

    def test_a_lost_race_costs_two_more_round_trips(self, history, settings):
        history.append(ROOM, "user", "[Message ID: 1] hi")
        history.append(ROOM, "user", "[Message ID: 2] there")
        history.react(ROOM, "1", "")  # the compare-and-set script is loaded (its first use costs a NOSCRIPT and a load)
        other = InterleavingStore(history.store, lambda: history.react(ROOM, "2", "❤️ x1"), times=1)
        racing = RoomHistory(other, settings, sleep=lambda _: None)
        with round_trips() as counter:
            racing.edit(ROOM, "1", "[Message ID: 1] hello")
        assert racing.conflicts == 1
        assert counter["n"] == 2 + 2 + 2  # read + compare-and-set, the same again after the lost race, the rival's two

    def test_bounded_retries_end_in_a_conflict_error(self, history, settings):
        history.append(ROOM, "user", "[Message ID: 1] hi")
        counter = iter(range(100))
        busy = InterleavingStore(history.store, lambda: history.append(ROOM, "user", f"n{next(counter)}"), times=100)
        sleeps = []
        racing = RoomHistory(busy, settings, sleep=sleeps.append)
        with pytest.raises(WriteConflict):
            racing.edit(ROOM, "1", "[Message ID: 1] never")
        assert racing.conflicts == WRITE_ATTEMPTS and len(sleeps) == WRITE_ATTEMPTS - 1
        assert all(0 <= pause <= BACKOFF_CAP_SECONDS for pause in sleeps)
        assert contents(history)[0] == "[Message ID: 1] hi"

    def test_all_the_backoff_of_a_conflict_stays_under_three_seconds(self, history, settings, monkeypatch):
        monkeypatch.setattr("random.uniform", lambda low, high: high)  # every pause as long as it can be
        history.append(ROOM, "user", "[Message ID: 1] hi")
        counter = iter(range(100))
        busy = InterleavingStore(history.store, lambda: history.append(ROOM, "user", f"n{next(counter)}"), times=100)
        sleeps = []
        with pytest.raises(WriteConflict):
            RoomHistory(busy, settings, sleep=sleeps.append).edit(ROOM, "1", "[Message ID: 1] never")
        assert len(sleeps) == WRITE_ATTEMPTS - 1 == 15 and 0 < sum(sleeps) < 3

    def test_with_if_match_a_lost_race_is_a_mismatch_not_a_retry(self, history, settings):
        history.append(ROOM, "user", "[Message ID: 1] hi")
        other = InterleavingStore(history.store, lambda: history.append(ROOM, "user", "x"), times=1)
        racing = RoomHistory(other, settings, sleep=lambda _: None)
        with pytest.raises(VersionMismatch) as error:
            racing.delete(ROOM, "1", expected_version=1)
        assert error.value.version == 2
        assert contents(history) == ["[Message ID: 1] hi", "x"]


class TestRoomState:
    def test_unknown_room(self, history):
        state = history.state("discord:404")
        assert (state.version, state.message_count, state.last_role, state.limit) == (0, 0, None, 100)
        assert (state.rebackfill_requested, state.last_activity) == (False, None)

    def test_state_follows_the_room(self, history):
        history.append(ROOM, "user", "a")
        history.append(ROOM, "assistant", "b")
        state = history.state(ROOM)
        assert (state.version, state.message_count, state.last_role) == (2, 2, "assistant")
        assert state.last_activity.endswith("Z")

    def test_raising_the_limit_asks_for_rebackfill_and_lowering_trims(self, history):
        for number in range(80):
            history.append(ROOM, "user", f"n{number}")
        assert history.set_limit(ROOM, 100) == (81, 100, False)  # the default is 100: not a raise
        assert history.set_limit(ROOM, 5000) == (82, 1000, True)
        assert history.set_limit(ROOM, 10) == (83, 50, True)  # clamped, trimmed, flag kept
        assert len(history.window(ROOM).turns) == 50
        assert history.discard_rebackfill(ROOM) == 84
        state = history.state(ROOM)
        assert (state.limit, state.rebackfill_requested, state.message_count) == (50, False, 50)

    def test_clear_keeps_the_limit_and_the_version_grows(self, history):
        history.append(ROOM, "user", "a")
        history.set_limit(ROOM, 60)
        assert history.clear(ROOM) == 3
        state = history.state(ROOM)
        assert (state.version, state.message_count, state.limit) == (3, 0, 60)
        assert history.append(ROOM, "user", "b")[0].version == 4

    def test_garbage_rows_from_another_writer_are_skipped(self, history, redis_client):
        history.append(ROOM, "user", "[Message ID: 1] a")
        redis_client.rpush("sg:conversation:{" + ROOM + "}", "not json", '{"role":"tool","content":"x"}')
        history.append(ROOM, "user", "[Message ID: 2] b")
        assert contents(history) == ["[Message ID: 1] a", "[Message ID: 2] b"]
        history.edit(ROOM, "2", "[Message ID: 2] c")
        assert contents(history) == ["[Message ID: 1] a", "[Message ID: 2] c"]
