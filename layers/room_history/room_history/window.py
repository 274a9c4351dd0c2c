"""What the model gets: the message list built from the window, with tool pairs whole and a token budget.

Pure functions over plain turns, no I/O. The token estimate (also in the README):

    tokens(message) = 4 + ceil(text_bytes / 4) + media_part_tokens * non_text_parts

where text_bytes is the UTF-8 length of the message's text (the content string, or the `text` of each
`text` part, plus each tool call's function name and arguments), non_text_parts counts the content parts
whose type is not `text`, and 4 stands for the role and the message's framing. A list's estimate is the
sum over its messages, the system message included. About four bytes of text make a token for English
with the common tokenizers; it is an estimate to budget with, not a tokenizer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInput
from .rows import PlainRow
from .rules import Turn

MESSAGE_OVERHEAD_TOKENS = 4
BYTES_PER_TOKEN = 4


@dataclass(frozen=True)
class MessageList:
    """The messages to send; with a budget also their estimate and whether turns were left out."""

    messages: list[dict[str, Any]]
    tokens: int | None = None
    truncated: bool | None = None


def estimate_tokens(message: dict[str, Any], media_part_tokens: int) -> int:
    """The documented estimate of one message (see the module docstring)."""
    content, text_bytes, media = message.get("content"), 0, 0
    if isinstance(content, str):
        text_bytes = len(content.encode("utf-8"))
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                text_bytes += len(part["text"].encode("utf-8"))
            else:
                media += 1
    for call in message.get("tool_calls") or ():
        text_bytes += len(call["function"]["name"].encode("utf-8")) + len(call["function"]["arguments"].encode("utf-8"))
    return MESSAGE_OVERHEAD_TOKENS + -(-text_bytes // BYTES_PER_TOKEN) + media_part_tokens * media


def whole_pairs(turns: list[PlainRow | Turn]) -> list[PlainRow | Turn]:
    """Leave out every tool result whose call is not in an assistant turn before it (stranded by trimming)."""
    called: set[str] = set()
    kept = []
    for turn in turns:
        if isinstance(turn, PlainRow):  # a user or assistant turn without tool calls
            pass
        elif turn["role"] == "tool":
            if turn["tool_call_id"] not in called:
                continue
        elif "tool_calls" in turn:
            called.update(call["id"] for call in turn["tool_calls"])
        kept.append(turn)
    return kept


def within_budget(turns: list[Turn], system_tokens: int, max_tokens: int, media_part_tokens: int) -> tuple[int, int]:
    """(index of the oldest turn kept, tokens of the list): the longest suffix of turns (whose pairs are whole)
    that fits beside the system message and holds no tool result without its call."""
    total, start, kept_total = system_tokens, len(turns), system_tokens
    unanswered: set[str] = set()  # tool call ids of results in turns[index:] whose call is not in it
    for index in range(len(turns) - 1, -1, -1):
        turn = turns[index]
        total += estimate_tokens(turn, media_part_tokens)
        if total > max_tokens:
            break
        if turn["role"] == "tool":
            unanswered.add(turn["tool_call_id"])
        elif "tool_calls" in turn:
            unanswered.difference_update(call["id"] for call in turn["tool_calls"])
        if not unanswered:
            start, kept_total = index, total
    return start, kept_total


def message_list(prompt: str | None, turns: list[Turn], max_tokens: int | None, media_part_tokens: int) -> MessageList:
    """The system message (when the prompt is not blank), then the window's turns with tool pairs whole;
    with max_tokens, only the newest turns that fit beside the system message, which is always sent."""
    system = [{"role": "system", "content": prompt}] if prompt else []
    if max_tokens is None:
        return MessageList(system + whole_pairs(turns))  # plain rows stay JSON text: the fast path
    listed = whole_pairs([json.loads(turn) if isinstance(turn, PlainRow) else turn for turn in turns])
    system_tokens = sum(estimate_tokens(message, media_part_tokens) for message in system)
    start, tokens = within_budget(listed, system_tokens, max_tokens, media_part_tokens)
    return MessageList(system + listed[start:], tokens, start > 0)


def validate_max_tokens(value: Any) -> int | None:
    """The body field max_tokens: a JSON integer above zero, or None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput("max_tokens", "must be a positive integer")
    return value


def max_tokens_from_query(value: str | None) -> int | None:
    """The query parameter max_tokens: decimal digits of a positive integer, or None when absent."""
    if value is None:
        return None
    if value.isascii() and value.isdigit() and len(value) <= 4000:  # Python converts up to 4300 digits
        return validate_max_tokens(int(value))
    raise InvalidInput("max_tokens", "must be a positive integer")
