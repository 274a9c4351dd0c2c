"""A plain in-memory room written from docs/API.md alone (not from the core), to check the core against."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MARKER = re.compile(r"\[Message ID: ([^\]]*)\]")
REACTIONS = " [Reactions: "
DELETED = " [deleted at "
MIN_LIMIT, MAX_LIMIT = 50, 1000
CHANGE_FIELD = {"edit": "content", "delete": "deleted_at", "react": "reactions"}  # each change's request body field


def marker_text(content) -> str | None:
    """Where the marker lives: the string itself, or the first text part (none in a null content)."""
    if content is None or isinstance(content, str):
        return content
    texts = [part["text"] for part in content if part.get("type") == "text" and isinstance(part.get("text"), str)]
    return texts[0] if texts else None


def with_marker_text(content, text: str):
    if isinstance(content, str):
        return text
    parts, replaced = [], False
    for part in content:
        if not replaced and part.get("type") == "text" and isinstance(part.get("text"), str):
            part, replaced = {**part, "text": text}, True
        parts.append(part)
    return parts


def turn_id(content) -> str | None:
    """A turn's message id: the first marker of its marker text."""
    found = MARKER.search(marker_text(content) or "")
    return found.group(1) if found else None


def as_turn(fields: dict) -> dict:
    """The stored turn of a request's fields: role and content, and the tool fields when given."""
    turn = {"role": fields["role"], "content": fields.get("content")}
    turn |= {"tool_calls": fields["tool_calls"]} if fields.get("tool_calls") else {}
    turn |= {"tool_call_id": fields["tool_call_id"]} if fields.get("tool_call_id") else {}
    return turn


def keys(turn: dict) -> set[str]:
    """What makes a later copy of a turn a duplicate: its message id; a tool result's tool_call_id; an
    assistant tool-call turn's first tool call id when it has no marker."""
    message_id = turn_id(turn["content"])
    found = {f"id:{message_id}"} if message_id is not None else set()
    if turn["role"] == "tool":
        found.add(f"result:{turn['tool_call_id']}")
    elif turn.get("tool_calls") and message_id is None:
        found.add(f"call:{turn['tool_calls'][0]['id']}")
    return found


def pairs_whole(turns: list[dict]) -> list[dict]:
    """The list leaves out each tool result whose call is not in an assistant turn before it."""
    kept = []
    for turn in turns:
        called = {call["id"] for earlier in kept for call in earlier.get("tool_calls") or []}
        if turn["role"] != "tool" or turn["tool_call_id"] in called:
            kept.append(turn)
    return kept


def find(turns: list[dict], message_id: str) -> int | None:
    """Index of the newest turn whose own id is message_id."""
    matches = [index for index, turn in enumerate(turns) if turn_id(turn["content"]) == message_id]
    return matches[-1] if matches else None


def window(turns: list, limit: int) -> list:
    """The newest `limit` turns, oldest first."""
    return turns[max(0, len(turns) - limit) :]


def edited(old, new):
    media = [part for part in old if part.get("type") != "text"] if isinstance(old, list) else []
    if isinstance(new, str) and media:
        return [{"type": "text", "text": new}, *media]
    return new


def _closing(text: str, opening: int) -> int | None:
    """Index just past the ']' that balances the '[' at `opening`."""
    depth = 0
    for index in range(opening, len(text)):
        depth += {"[": 1, "]": -1}.get(text[index], 0)
        if depth == 0:
            return index + 1
    return None


def split_tags(text: str) -> tuple[str, list[str], str]:
    """(text up to the end of the turn's marker, the tags right after the marker, the rest)."""
    end = MARKER.search(text).end()
    head, rest, tags = text[:end], text[end:], []
    while rest.startswith((REACTIONS, DELETED)):
        close = _closing(rest, 1)
        if close is None:
            break
        tags.append(rest[:close])
        rest = rest[close:]
    return head, tags, rest


def deleted(text: str, stamp: str) -> str:
    """The deleted tag goes right after the marker, once: a second delete changes nothing."""
    head, tags, rest = split_tags(text)
    if any(tag.startswith(DELETED) for tag in tags):
        return text
    return head + f"{DELETED}{stamp}]" + "".join(tags) + rest


def reacted(text: str, reactions: str) -> str:
    """The reactions tag is replaced by a new one right after the marker; "" leaves none."""
    head, tags, rest = split_tags(text)
    kept = [tag for tag in tags if not tag.startswith(REACTIONS)]
    new = [f"{REACTIONS}{reactions}]"] if reactions else []
    return head + "".join(new + kept) + rest


def changed(content, op: str, value):
    """A turn's content after one edit (value: new content), delete (stamp) or react (reactions)."""
    if op == "edit":
        return edited(content, value)
    change = deleted if op == "delete" else reacted
    return with_marker_text(content, change(marker_text(content), value))


@dataclass
class Room:
    """One room's turns, version, limit and re-backfill flag; each method but state() is one successful write."""

    default_limit: int = 100
    turns: list[dict] = field(default_factory=list)
    version: int = 0
    limit_override: int | None = None
    rebackfill: bool = False
    summary: str | None = None

    @property
    def limit(self) -> int:
        return self.limit_override if self.limit_override is not None else self.default_limit

    def append(self, role: str, content, tool_calls=None, tool_call_id=None) -> bool:
        """False (and no new version) when a turn of the window shares one of its keys."""
        turn = as_turn({"role": role, "content": content, "tool_calls": tool_calls, "tool_call_id": tool_call_id})
        if any(keys(turn) & keys(other) for other in self.turns):
            return False
        self.turns = window([*self.turns, turn], self.limit)
        self.version += 1
        return True

    def listed(self) -> list[dict]:
        """The turns as a message list shows them."""
        return pairs_whole(self.turns)

    def set_limit(self, limit: int) -> tuple[int, bool]:
        clamped = min(MAX_LIMIT, max(MIN_LIMIT, limit))
        self.rebackfill = self.rebackfill or clamped > self.limit
        self.limit_override = clamped
        self.turns = window(self.turns, clamped)
        self.version += 1
        return clamped, self.rebackfill

    def clear(self) -> None:
        self.turns = []
        self.summary = None
        self.version += 1

    def batch(self, turns: list[dict], at_start: bool) -> tuple[int, int, int]:
        """(stored, duplicates, dropped); a turn sharing a key with one in the window or earlier in the batch is a
        duplicate.
        Fresh turns go after the newest turn or before the oldest; the window then keeps the newest `limit`
        turns. A batch that stores nothing changes nothing, not even the version."""
        seen = {key for turn in self.turns for key in keys(turn)}
        fresh, duplicates = [], 0
        for fields in turns:
            turn = as_turn(fields)
            if keys(turn) & seen:
                duplicates += 1
                continue
            seen |= keys(turn)
            fresh.append(turn)
        combined = [*fresh, *self.turns] if at_start else [*self.turns, *fresh]
        kept = window(combined, self.limit)
        stored = sum(1 for turn in fresh if any(turn is kept_turn for kept_turn in kept))
        if stored:
            self.turns = kept
            self.version += 1
        return stored, duplicates, len(fresh) - stored

    def compact(self, through: str, summary: str) -> None:
        """The turns up to and including `through` give way to the summary; LookupError when it is not there."""
        index = find(self.turns, through)
        if index is None:
            raise LookupError(f"no turn with message id {through!r}")
        self.turns = self.turns[index + 1 :]
        self.summary = summary
        self.version += 1

    def state(self) -> dict:
        listed = self.listed()
        return {
            "version": self.version,
            "message_count": len(listed),
            "last_role": listed[-1]["role"] if listed else None,
            "limit": self.limit,
            "rebackfill_requested": self.rebackfill,
            "summary": self.summary,
        }

    def change(self, message_id: str, op: str, value) -> None:
        """Edit, delete or react on the newest turn with that id; LookupError when there is none."""
        index = find(self.turns, message_id)
        if index is None:
            raise LookupError(f"no turn with message id {message_id!r}")
        turn = {**self.turns[index], "content": changed(self.turns[index]["content"], op, value)}
        self.turns = [*self.turns[:index], turn, *self.turns[index + 1 :]]
        self.version += 1
