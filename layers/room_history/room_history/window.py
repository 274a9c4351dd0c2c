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

from dataclasses import dataclass
from typing import Any

from .errors import InvalidInput
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
    content = message.get("content")
    texts, media = [], 0
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                media += 1
    for call in message.get("tool_calls") or []:
        texts += [call["function"]["name"], call["function"]["arguments"]]
    text_bytes = sum(len(text.encode("utf-8")) for text in texts)
    return MESSAGE_OVERHEAD_TOKENS + -(-text_bytes // BYTES_PER_TOKEN) + media_part_tokens * media


def whole_pairs(turns: list[Turn]) -> list[Turn]:
    """Leave out every tool result whose call is not in an assistant turn before it (stranded by trimming)."""
    called: set[str] = set()
    kept = []
    for turn in turns:
        if turn["role"] == "tool" and turn["tool_call_id"] not in called:
            continue
        called.update(call["id"] for call in turn.get("tool_calls") or [])
        kept.append(turn)
    return kept


def cut_points(turns: list[Turn]) -> list[bool]:
    """cut_points(turns)[i]: turns[i:] splits no tool call from its results (turns already have whole pairs)."""
    latest_call: dict[str, int] = {}  # tool call id -> index of the latest assistant turn that made it
    answered = {}  # index of a tool result -> index of its call
    for index, turn in enumerate(turns):
        if turn["role"] == "tool":
            answered[index] = latest_call[turn["tool_call_id"]]
        for call in turn.get("tool_calls") or []:
            latest_call[call["id"]] = index
    cuts, oldest_call = [True] * len(turns), len(turns)  # oldest call answered at or after the index
    for index in range(len(turns) - 1, -1, -1):
        oldest_call = min(oldest_call, answered.get(index, oldest_call))
        cuts[index] = oldest_call >= index
    return cuts


def within_budget(turns: list[Turn], system_tokens: int, max_tokens: int, media_part_tokens: int) -> int:
    """Index of the oldest turn kept: the longest suffix that fits with the system message and splits no pair."""
    cuts, total, start = cut_points(turns), system_tokens, len(turns)
    for index in range(len(turns) - 1, -1, -1):
        total += estimate_tokens(turns[index], media_part_tokens)
        if total > max_tokens:
            break
        if cuts[index]:
            start = index
    return start


def message_list(prompt: str | None, turns: list[Turn], max_tokens: int | None, media_part_tokens: int) -> MessageList:
    """The system message (when the prompt is not blank), then the window's turns with tool pairs whole;
    with max_tokens, only the newest turns that fit beside the system message, which is always sent."""
    system = [{"role": "system", "content": prompt}] if prompt else []
    listed = whole_pairs(turns)
    if max_tokens is None:
        return MessageList(system + listed)
    system_tokens = sum(estimate_tokens(message, media_part_tokens) for message in system)
    start = within_budget(listed, system_tokens, max_tokens, media_part_tokens)
    kept = listed[start:]
    tokens = system_tokens + sum(estimate_tokens(turn, media_part_tokens) for turn in kept)
    return MessageList(system + kept, tokens, start > 0)


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
