"""Pure room rules: validation, markers, edits, tags and limits. No I/O here."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Any

from .errors import InvalidInput, MessageNotFound

ROLES = ("user", "assistant", "tool")
MAX_ID_LENGTH = 256
MIN_LIMIT, MAX_LIMIT = 50, 1000
MAX_BATCH = 100
POSITIONS = ("end", "start")
MAX_NESTING = 32  # far deeper than any chat part; keeps Redis' cjson (limit 1000) and recursion safe
MARKER_PATTERN = re.compile(r"\[Message ID: ([^\]]*)\]")
REACTIONS_OPENING = " [Reactions: "
DELETED_OPENING = " [deleted at "

Content = str | list[dict[str, Any]]
Turn = dict[str, Any]


def marker(message_id: str) -> str:
    return f"[Message ID: {message_id}]"


def validate_id(field: str, value: Any) -> str:
    """Room and message ids become key names and marker text: keep them printable and brace-free."""
    if not isinstance(value, str) or value == "":
        raise InvalidInput(field, "must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInput(field, f"must be at most {MAX_ID_LENGTH} characters")
    for char in value:
        if char.isspace() or unicodedata.category(char) in ("Cc", "Cs"):
            raise InvalidInput(field, "must not hold whitespace or control characters")
        if char in "{}":
            raise InvalidInput(field, "must not hold '{' or '}'")
        if char == "]" and field == "message_id":
            raise InvalidInput(field, "must not hold ']' (it closes the marker)")
    return value


def nesting_depth(value: Any) -> int:
    """Depth of nested lists/objects, stopping early once past MAX_NESTING."""
    depth, level = 0, [value]
    while level and depth <= MAX_NESTING:
        children = []
        for item in level:
            if isinstance(item, dict):
                children.extend(item.values())
            elif isinstance(item, list):
                children.extend(item)
        if not children:
            return depth + any(isinstance(item, (dict, list)) for item in level)
        depth, level = depth + 1, children
    return depth


def validate_content(value: Any, field: str = "content") -> Content:
    if isinstance(value, str):
        if value == "":
            raise InvalidInput(field, "must not be empty")
        return value
    if not isinstance(value, list):
        raise InvalidInput(field, "must be a string or a list of content parts")
    if not value:
        raise InvalidInput(field, "must not be an empty list")
    if nesting_depth(value) > MAX_NESTING:
        raise InvalidInput(field, f"is nested deeper than {MAX_NESTING} levels")
    for position, part in enumerate(value):
        where = f"{field}[{position}]"
        if not isinstance(part, dict):
            raise InvalidInput(where, "must be an object with a 'type'")
        if not isinstance(part.get("type"), str) or part["type"] == "":
            raise InvalidInput(f"{where}.type", "must be a non-empty string")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise InvalidInput(f"{where}.text", "must be a string")
    return value


def validate_role(value: Any) -> str:
    if value not in ROLES:
        raise InvalidInput("role", "must be 'user', 'assistant' or 'tool'")
    return value


def _text(field: str, value: Any, empty_ok: bool = False) -> str:
    if not isinstance(value, str) or (value == "" and not empty_ok):
        raise InvalidInput(field, "must be a string" if empty_ok else "must be a non-empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, "must be valid Unicode (no lone surrogates)") from None
    return value


def validate_tool_calls(value: Any) -> list[dict[str, Any]]:
    """An assistant turn's tool calls, each reduced to the keys of the contract (id, type, function).

    `arguments` must be a string but need not parse as JSON: models do emit malformed arguments, the
    history must hold what the model said, and the tool result that answers it needs its call in the list.
    """
    if not isinstance(value, list) or not value:
        raise InvalidInput("tool_calls", "must be a non-empty list of tool calls")
    calls, seen = [], set()
    for position, call in enumerate(value):
        where = f"tool_calls[{position}]"
        if not isinstance(call, dict):
            raise InvalidInput(where, "must be an object with 'id', 'type' and 'function'")
        call_id = validate_id(f"{where}.id", call.get("id"))
        if call_id in seen:
            raise InvalidInput(f"{where}.id", f"repeats the id {call_id!r} of an earlier tool call")
        seen.add(call_id)
        if call.get("type") != "function":
            raise InvalidInput(f"{where}.type", "must be 'function'")
        function = call.get("function")
        if not isinstance(function, dict):
            raise InvalidInput(f"{where}.function", "must be an object with 'name' and 'arguments'")
        name = _text(f"{where}.function.name", function.get("name"))
        if not isinstance(function.get("arguments"), str):
            raise InvalidInput(f"{where}.function.arguments", "must be a string (the arguments as JSON text)")
        arguments = _text(f"{where}.function.arguments", function["arguments"], empty_ok=True)
        calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
    return calls


def message_text(content: Content | None) -> str | None:
    """The text that carries the marker: the string itself, or the first text part (none in a null content)."""
    if content is None or isinstance(content, str):
        return content
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
            return part["text"]
    return None


def with_message_text(content: Content, text: str) -> Content:
    if isinstance(content, str):
        return text
    parts = [dict(part) for part in content]
    for part in parts:
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            part["text"] = text
            break
    return parts


def message_id_in(content: Content | None) -> str | None:
    """A turn's own message id: the first marker of its message text."""
    found = MARKER_PATTERN.search(message_text(content) or "")
    return found.group(1) if found else None


def new_turn(
    role: Any, content: Any, message_id: Any = None, tool_calls: Any = None, tool_call_id: Any = None
) -> tuple[Turn, str | None]:
    """Validate an incoming turn and settle its message id (body field and marker must agree).

    The turn holds exactly the keys of its chat message: `tool_calls` only on an assistant turn that
    calls tools (its content may then be null), `tool_call_id` only on a tool result. A null field
    counts as absent, as OpenAI clients serialize unset fields.
    """
    role = validate_role(role)
    turn: Turn = {"role": role}
    if tool_calls is not None and role != "assistant":
        raise InvalidInput("tool_calls", "only an assistant turn calls tools")
    if tool_call_id is not None and role != "tool":
        raise InvalidInput("tool_call_id", "only a tool turn answers a tool call")
    if role == "tool" and tool_call_id is None:
        raise InvalidInput("tool_call_id", "a tool turn must name the tool call it answers")
    calls = validate_tool_calls(tool_calls) if tool_calls is not None else None
    turn["content"] = None if calls is not None and content is None else validate_content(content)
    if calls is not None:
        turn["tool_calls"] = calls
    if tool_call_id is not None:
        turn["tool_call_id"] = validate_id("tool_call_id", tool_call_id)
    in_content = message_id_in(turn["content"])
    if message_id is None:
        return turn, (validate_id("message_id", in_content) if in_content is not None else None)
    validate_id("message_id", message_id)
    if in_content is None:
        raise InvalidInput("message_id", f"the content holds no [Message ID: {message_id}] marker")
    if in_content != message_id:
        raise InvalidInput("message_id", f"is {message_id!r} but the content's marker says {in_content!r}")
    return turn, message_id


def find_turn(turns: list[Turn | None], message_id: str) -> int:
    """Index of the newest turn whose own id (its first marker) is message_id; a quoted marker does not count."""
    for index in range(len(turns) - 1, -1, -1):
        if turns[index] is not None and message_id_in(turns[index]["content"]) == message_id:
            return index
    raise MessageNotFound(message_id)


def edit_content(old: Content, new: Content) -> Content:
    """A string edit of a turn with media parts keeps them; anything else replaces the content."""
    if isinstance(new, str) and isinstance(old, list):
        media = [part for part in old if not (isinstance(part, dict) and part.get("type") == "text")]
        if media:
            return [{"type": "text", "text": new}, *media]
    return new


def _tags_after_marker(text: str, message_id: str) -> tuple[str, list[str], str]:
    """(text through the turn's own marker, the tags right after it, the rest). Tags live only there,
    so body text that merely looks like a tag is never taken for one."""
    wanted = marker(message_id)
    at = text.index(wanted) + len(wanted)
    head, rest, tags = text[:at], text[at:], []
    while rest.startswith((REACTIONS_OPENING, DELETED_OPENING)):
        end = _tag_end(rest, 1)
        if end is None:
            break
        tags.append(rest[:end])
        rest = rest[end:]
    return head, tags, rest


def _tag_end(text: str, opening: int) -> int | None:
    """Index just past the ']' that balances the '[' at `opening`, or None if it never closes."""
    depth = 0
    for index in range(opening, len(text)):
        depth += {"[": 1, "]": -1}.get(text[index], 0)
        if depth == 0:
            return index + 1
    return None


def mark_deleted(text: str, message_id: str, deleted_at: str) -> str:
    """Insert ' [deleted at <iso>]' right after the marker, once; the content stays for context."""
    head, tags, rest = _tags_after_marker(text, message_id)
    if any(tag.startswith(DELETED_OPENING) for tag in tags):
        return text
    return head + f"{DELETED_OPENING}{deleted_at}]" + "".join(tags) + rest


def set_reactions(text: str, message_id: str, reactions: str) -> str:
    """Replace the reactions tag by one right after the marker; an empty value just removes it."""
    head, tags, rest = _tags_after_marker(text, message_id)
    kept = [tag for tag in tags if not tag.startswith(REACTIONS_OPENING)]
    new = [f"{REACTIONS_OPENING}{reactions}]"] if reactions else []
    return head + "".join(new + kept) + rest


def validate_reactions(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput("reactions", "must be a string")
    depth = 0
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise InvalidInput("reactions", "must not hold control characters")
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth < 0:
            break
    if depth != 0:
        raise InvalidInput("reactions", "must have balanced '[' and ']'")
    return value


def validate_deleted_at(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput("deleted_at", "must be an ISO 8601 string")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput("deleted_at", f"{value!r} is not an ISO 8601 date-time") from None
    return value


def clamp_limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput("limit", "must be an integer")
    return max(MIN_LIMIT, min(MAX_LIMIT, value))


def validate_position(value: Any) -> bool:
    """Where a batch goes: True for before the oldest turn ("start"), False for the end (the default)."""
    if value is None:
        return False
    if value not in POSITIONS:
        raise InvalidInput("position", "must be 'end' or 'start'")
    return value == "start"


def validate_summary(value: Any) -> str:
    if not isinstance(value, str) or value.strip() == "":
        raise InvalidInput("summary", "must be a non-empty string")
    return value
