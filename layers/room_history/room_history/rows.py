"""The stored row: one turn as compact JSON, in Python and in the Lua that reads it inside Redis.

A row holds exactly the keys of an OpenAI chat message (`role`, `content`, plus `tool_calls` on an
assistant turn that calls tools, whose content may be null, and `tool_call_id` on a tool result), so
every row is a valid message as it is. Rows another writer left that are not turns are tolerated: they
decode to None and are skipped, and have no dedupe keys.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidInput, TurnTooLarge
from .rules import ROLES, Turn, marker, message_id_in

# Lua twins of rules.message_id_in (a turn's own id is the first marker of its text: the content string,
# or its first text part) and of indexed_keys over a stored row (decode_row's acceptance, then the same keys
# in the same order; a foreign row has none). tests/test_rows.py feeds both sides the same rows.
OWN_ID_LUA = """
local function decoded(row)
  local ok, turn = pcall(cjson.decode, row)
  if ok and type(turn) == 'table' then return turn end
  return nil
end

local function own_id_of(turn)
  local text = turn.content
  if type(text) == 'table' then
    text = nil
    for _, part in ipairs(turn.content) do
      if type(part) == 'table' and part.type == 'text' and type(part.text) == 'string' then
        text = part.text
        break
      end
    end
  end
  if type(text) ~= 'string' then return nil end
  return string.match(text, '%[Message ID: ([^%]]*)%]')
end

local function own_id(row)
  local turn = decoded(row)
  return turn and own_id_of(turn)
end

local function is_content(value)  -- a string, or a non-empty list (a decoded JSON object has no [1])
  return type(value) == 'string' or (type(value) == 'table' and value[1] ~= nil)
end

local function is_tool_calls(calls)
  if type(calls) ~= 'table' or calls[1] == nil then return false end
  for _, call in ipairs(calls) do
    local fn = type(call) == 'table' and call['function']
    if type(call) ~= 'table' or type(call.id) ~= 'string' or type(fn) ~= 'table'
      or type(fn.name) ~= 'string' or type(fn.arguments) ~= 'string' then
      return false
    end
  end
  return true
end

local function indexed_keys(row)
  local turn = decoded(row)
  if not turn then return {} end
  local role, content = turn.role, turn.content
  if role ~= 'user' and role ~= 'assistant' and role ~= 'tool' then return {} end
  local calls = role == 'assistant' and is_tool_calls(turn.tool_calls)
  if role == 'tool' and type(turn.tool_call_id) ~= 'string' then return {} end
  if not (is_content(content) or (calls and (content == nil or content == cjson.null))) then return {} end
  local keys = {}
  local own = own_id_of(turn)
  if own then keys[#keys + 1] = 'id:' .. own end
  if role == 'tool' then
    keys[#keys + 1] = 'result:' .. turn.tool_call_id
  elseif calls then
    keys[#keys + 1] = 'call:' .. turn.tool_calls[1].id
  end
  return keys
end
"""


def encode_row(turn: Turn, max_bytes: int, field: str = "content") -> str:
    """The stored row, refused above max_bytes (the turn's size is what MAX_TURN_BYTES bounds)."""
    fields = {"role": turn["role"], "content": turn["content"]}  # content null only beside tool_calls
    for optional in ("tool_calls", "tool_call_id"):
        if optional in turn:
            fields[optional] = turn[optional]
    try:
        row = json.dumps(fields, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        size = len(row.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(field, "must be valid Unicode (no lone surrogates)") from None
    except ValueError:  # 1e999 parses as infinity, which JSON cannot carry back
        raise InvalidInput(field, "must hold finite numbers only") from None
    if size > max_bytes:
        field = field if turn["content"] is not None else "tool_calls"
        raise TurnTooLarge(field, f"the turn is {size} bytes, more than MAX_TURN_BYTES ({max_bytes})")
    return row


# What encode_row writes for a user or assistant turn without tool calls: such a row is a valid chat message
# as it is, so a response can carry it without decoding and encoding it again. A quote inside a JSON string is
# escaped, so ',"tool_calls":[' can only be the key itself.
_PLAIN_OPENINGS = ('{"role":"user","content":', '{"role":"assistant","content":')


class PlainRow(str):
    """A stored row in this service's own encoding of a user or assistant turn without tool calls."""


def role_of(turn: PlainRow | Turn) -> str:
    if isinstance(turn, PlainRow):
        return "user" if turn[9] == "u" else "assistant"  # '{"role":"u…'
    return turn["role"]


def plain_or_decoded(row: str) -> PlainRow | Turn | None:
    """The row as it is when it is a plain turn of ours, else decoded (None when it is not a turn).

    Only a row that another writer shaped exactly like ours but broke inside would slip through as JSON.
    """
    if row.startswith(_PLAIN_OPENINGS) and row.endswith("}") and ',"tool_calls":[' not in row:
        return PlainRow(row)
    return decode_row(row)


def decode_rows(rows: list[str]) -> list[Turn | None]:
    """Stored rows as turns; a row that is not a turn (another writer's garbage) becomes None."""
    return [decode_row(row) for row in rows]


def decode_row(row: str) -> Turn | None:
    """The turn with exactly the keys of its role's chat message, or None for a row that is not a turn."""
    try:
        turn = json.loads(row)
    except ValueError:
        return None
    if not isinstance(turn, dict) or turn.get("role") not in ROLES:
        return None
    role, content = turn["role"], turn.get("content")
    calls = _tool_calls(turn.get("tool_calls")) if role == "assistant" else None
    if role == "tool" and not isinstance(turn.get("tool_call_id"), str):
        return None
    if not (isinstance(content, str) or (isinstance(content, list) and content) or (calls and content is None)):
        return None
    decoded: Turn = {"role": role, "content": content}
    if calls:
        decoded["tool_calls"] = calls
    if role == "tool":
        decoded["tool_call_id"] = turn["tool_call_id"]
    return decoded


def _tool_calls(value: Any) -> list[dict[str, Any]] | None:
    """Stored tool calls in the contract's shape, or None when they are missing or not tool calls."""
    if not isinstance(value, list) or not value:
        return None
    calls = []
    for call in value:
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            return None
        call_id, name, arguments = call.get("id"), call["function"].get("name"), call["function"].get("arguments")
        if not (isinstance(call_id, str) and isinstance(name, str) and isinstance(arguments, str)):
            return None
        calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
    return calls


def dedupe_keys(turn: Turn) -> list[str]:
    """The keys that make a new turn a duplicate when a turn of the window already has one of them.

    `id:<message id>` for a turn with a marker, `result:<tool_call_id>` for a tool result, and
    `call:<first tool call id>` for an assistant tool-call turn without a marker. The stored side is
    indexed_keys.
    """
    keys = []
    own_id = message_id_in(turn["content"])
    if own_id is not None:
        keys.append(f"id:{own_id}")
    if turn["role"] == "tool":
        keys.append(f"result:{turn['tool_call_id']}")
    elif turn.get("tool_calls") and own_id is None:
        keys.append(f"call:{turn['tool_calls'][0]['id']}")
    return keys


def indexed_keys(turn: Turn) -> list[str]:
    """The keys a stored turn answers to: its dedupe keys, and the first tool call of any assistant tool-call
    turn (with a marker too), so that a retry of it without the marker is still a duplicate.
    Lua twin: indexed_keys in OWN_ID_LUA."""
    keys = dedupe_keys(turn)
    if turn.get("tool_calls") and turn["role"] == "assistant" and message_id_in(turn["content"]) is not None:
        keys.append(f"call:{turn['tool_calls'][0]['id']}")
    return keys


def marker_needle(message_id: str) -> str:
    """The marker as it appears inside an encoded row: a cheap substring test before Lua decodes the row."""
    return json.dumps(marker(message_id), ensure_ascii=False)[1:-1]
