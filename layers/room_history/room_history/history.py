"""Room operations: validate, apply the pure rule, write through the store, retry conflicts."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from . import rows, rules
from .errors import InvalidInput, MessageNotFound, TurnTooLarge, VersionMismatch, WriteConflict
from .settings import Settings
from .store import RoomStore, WriteResult, connect
from .window import whole_pairs

WRITE_ATTEMPTS = 16
BACKOFF_BASE_SECONDS = 0.005
BACKOFF_CAP_SECONDS = 0.25
REAP_BATCH = 100


@dataclass(frozen=True)
class Window:
    """The room's turns (and summary) as of one version.

    `items` are the stored turns as the message list carries them: a plain row of ours as it is (no decoding
    and encoding again on the hot path), any other turn decoded; `turns` decodes them all.
    """

    version: int
    items: list[rows.PlainRow | rules.Turn]
    summary: str | None = None

    @cached_property
    def turns(self) -> list[rules.Turn]:
        return [json.loads(item) if isinstance(item, rows.PlainRow) else item for item in self.items]


@dataclass(frozen=True)
class BatchCounts:
    stored: int
    duplicates: int
    dropped: int


@dataclass(frozen=True)
class RoomState:
    version: int
    message_count: int
    last_role: str | None
    limit: int
    rebackfill_requested: bool
    last_activity: str | None
    summary: str | None


def iso_from_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RoomHistory:
    """The operations of the API and the reaper. Stateless apart from the store it is given."""

    def __init__(
        self,
        store: RoomStore,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.store = store
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.conflicts = 0  # compare-and-set losses seen by this instance (the stress test reports them)

    @classmethod
    def open(cls, settings: Settings) -> RoomHistory:
        return cls(RoomStore(connect(settings), settings.key_prefix, settings.max_history), settings)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def window(self, room_id: str, unless_version: int | None = None) -> Window | None:
        """The window; None when the room is still at `unless_version` (the caller's copy is current)."""
        rules.validate_id("room_id", room_id)
        snapshot = self.store.read(room_id, unless_version)
        if snapshot.rows is None:
            return None
        return Window(snapshot.version, _turns(snapshot.rows), snapshot.summary)

    def state(self, room_id: str, unless_version: int | None = None) -> RoomState | None:
        """The room's state; None when the room is still at `unless_version`."""
        rules.validate_id("room_id", room_id)
        snapshot = self.store.read(room_id, unless_version)
        if snapshot.rows is None:
            return None
        turns = whole_pairs(_turns(snapshot.rows))  # counted as the message list shows them
        return RoomState(
            version=snapshot.version,
            message_count=len(turns),
            last_role=rows.role_of(turns[-1]) if turns else None,
            limit=snapshot.limit,
            rebackfill_requested=snapshot.rebackfill_requested,
            last_activity=iso_from_ms(snapshot.active_at_ms),
            summary=snapshot.summary,
        )

    def append(
        self,
        room_id: str,
        role: Any,
        content: Any,
        message_id: Any = None,
        expected_version: int | None = None,
        *,
        tool_calls: Any = None,
        tool_call_id: Any = None,
    ) -> tuple[Window, bool]:
        """Store a turn once; returns the window and whether it was stored now (False: already there)."""
        rules.validate_id("room_id", room_id)
        fields = {"role": role, "content": content, "message_id": message_id}
        row, dedupe_keys = self._new_row({**fields, "tool_calls": tool_calls, "tool_call_id": tool_call_id})
        result = self.store.append(room_id, row, dedupe_keys, self._now_ms(), expected_version)
        return _window(result), result.status == 1

    def append_batch(
        self, room_id: str, turns: Any, position: Any = None, expected_version: int | None = None
    ) -> tuple[Window, BatchCounts]:
        """Validate every turn, then store them in one step: at the end, or before the oldest turn."""
        rules.validate_id("room_id", room_id)
        at_start = rules.validate_position(position)
        if not isinstance(turns, list) or not 1 <= len(turns) <= rules.MAX_BATCH:
            raise InvalidInput("turns", f"must be a list of 1 to {rules.MAX_BATCH} turns")
        prepared = []
        for index, fields in enumerate(turns):
            try:
                if not isinstance(fields, dict):
                    raise InvalidInput("", "must be an object")
                prepared.append(self._new_row(fields))
            except (InvalidInput, TurnTooLarge) as error:
                field = f"turns[{index}].{error.field}" if error.field else f"turns[{index}]"
                raise type(error)(field, error.reason) from None
        result = self.store.append_batch(room_id, prepared, at_start, self._now_ms(), expected_version)
        return _window(result), BatchCounts(*(int(count) for count in result.details))

    def compact(self, room_id: str, through: Any, summary: Any, expected_version: int | None = None) -> Window:
        """Replace the turns up to and including `through` by the summary, keeping every later turn."""
        rules.validate_id("room_id", room_id)
        rules.validate_id("through", through)
        summary = rules.validate_summary(summary)
        rows.encode_row({"role": "user", "content": summary}, self.settings.max_turn_bytes, field="summary")
        result = self.store.compact(room_id, through, summary, self._now_ms(), expected_version)
        if result.status == -2:
            raise MessageNotFound(through, field="through")
        return _window(result)

    def edit(self, room_id: str, message_id: Any, content: Any, expected_version: int | None = None) -> Window:
        new = self._within_size(rules.validate_content(content))
        found = rules.message_id_in(new)
        if found is not None and found != message_id:
            raise InvalidInput("content", f"holds the marker of message {found!r}, not {message_id!r}")
        edited = lambda old: rules.edit_content(old, new)  # noqa: E731
        return self._change_turn(room_id, message_id, edited, expected_version, "content")

    def delete(
        self, room_id: str, message_id: Any, deleted_at: Any = None, expected_version: int | None = None
    ) -> Window:
        if deleted_at is None:
            deleted_at = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        stamp = rules.validate_deleted_at(deleted_at)
        mark = lambda text: rules.mark_deleted(text, message_id, stamp)  # noqa: E731
        return self._change_text(room_id, message_id, mark, expected_version, "deleted_at")

    def react(self, room_id: str, message_id: Any, reactions: Any, expected_version: int | None = None) -> Window:
        value = self._within_size(rules.validate_reactions(reactions), "reactions")
        tag = lambda text: rules.set_reactions(text, message_id, value)  # noqa: E731
        return self._change_text(room_id, message_id, tag, expected_version, "reactions")

    def set_limit(self, room_id: str, limit: Any, expected_version: int | None = None) -> tuple[int, int, bool]:
        """Returns (version, clamped limit, rebackfill requested)."""
        rules.validate_id("room_id", room_id)
        clamped = rules.clamp_limit(limit)
        version, rebackfill = self.store.set_limit(room_id, clamped, self._now_ms(), expected_version)
        return version, clamped, rebackfill

    def discard_rebackfill(self, room_id: str, expected_version: int | None = None) -> int:
        rules.validate_id("room_id", room_id)
        return self.store.discard_rebackfill(room_id, self._now_ms(), expected_version)

    def clear(self, room_id: str, expected_version: int | None = None) -> int:
        rules.validate_id("room_id", room_id)
        return self.store.clear(room_id, self._now_ms(), expected_version)

    def reap_idle_rooms(self, has_time_left: Callable[[], bool] = lambda: True) -> int:
        """Remove rooms idle longer than MAX_IDLE_SECONDS, a batch at a time while time is left."""
        cutoff = self._now_ms() - self.settings.max_idle_seconds * 1000
        reaped = 0
        while has_time_left():
            candidates = self.store.idle_rooms(cutoff, REAP_BATCH)
            if not candidates:
                break
            reaped += self.store.reap(candidates, cutoff)
        return reaped

    def _new_row(self, fields: dict[str, Any]) -> tuple[str, list[str]]:
        """A validated turn of a request body as its stored row and dedupe keys."""
        turn, _ = rules.new_turn(
            fields.get("role"),
            fields.get("content"),
            fields.get("message_id"),
            fields.get("tool_calls"),
            fields.get("tool_call_id"),
        )
        return rows.encode_row(turn, self.settings.max_turn_bytes), rows.dedupe_keys(turn)

    def _within_size(self, content: rules.Content, field: str = "content") -> rules.Content:
        """Refuse, before Redis is asked, new text that alone makes a turn larger than MAX_TURN_BYTES."""
        rows.encode_row({"role": "user", "content": content}, self.settings.max_turn_bytes, field)
        return content

    def _change_text(
        self, room_id: str, message_id: Any, change: Callable[[str], str], expected_version: int | None, field: str
    ) -> Window:
        """Change the text that carries the marker (the tags live there); other parts stay as they are."""
        return self._change_turn(
            room_id,
            message_id,
            lambda old: rules.with_message_text(old, change(rules.message_text(old))),
            expected_version,
            field,
        )

    def _change_turn(
        self,
        room_id: str,
        message_id: Any,
        change: Callable[[rules.Content], rules.Content],
        expected_version: int | None,
        field: str,
    ) -> Window:
        """Read, change one turn, compare-and-set; on a lost race re-read and retry, bounded, then 409.
        `field` is the request field a too large result is blamed on."""
        rules.validate_id("room_id", room_id)
        rules.validate_id("message_id", message_id)
        for attempt in range(WRITE_ATTEMPTS):
            snapshot = self.store.read(room_id)
            if expected_version is not None and snapshot.version != expected_version:
                raise VersionMismatch(expected_version, snapshot.version)
            turns = rows.decode_rows(snapshot.rows)
            index = rules.find_turn(turns, message_id)
            turn = turns[index]
            changed = {**turn, "content": change(turn["content"])}  # tool calls and tool_call_id stay
            new_row = rows.encode_row(changed, self.settings.max_turn_bytes, field)
            result = self.store.replace_turn(
                room_id, snapshot.version, index - len(turns), snapshot.rows[index], new_row, self._now_ms()
            )
            if result.status == 1:
                return _window(result)
            self.conflicts += 1
            if expected_version is not None:
                raise VersionMismatch(expected_version, result.version)
            if attempt + 1 < WRITE_ATTEMPTS:
                self._backoff(attempt)
        raise WriteConflict("room_id", f"the room kept changing under {WRITE_ATTEMPTS} attempts; try again")

    def _backoff(self, attempt: int) -> None:
        """Full jitter: spreads writers that lost the same race."""
        self.sleep(random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)))


def _turns(stored: list[str]) -> list[rows.PlainRow | rules.Turn]:
    """The rows that are turns (another writer's garbage is skipped), plain rows of ours left as they are."""
    return [turn for turn in map(rows.plain_or_decoded, stored) if turn is not None]


def _window(result: WriteResult) -> Window:
    return Window(result.version, _turns(result.rows), result.summary)
