"""The stored row: one turn as compact JSON, in Python and in the Lua that reads it inside Redis.

A row holds exactly the keys of an OpenAI chat message, so every row is a valid message as it is. Rows
another writer left that are not turns are tolerated: they decode to None and are skipped.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidInput, TurnTooLarge
from .rules import ROLES, marker, message_id_in

# Lua twins of rules.message_id_in (a turn's own id is the first marker of its text: the content string,
# or its first text part) and of dedupe_keys. tests/test_rows.py feeds both sides the same rows.
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

local function dedupe_keys(row)
  local turn = decoded(row)
  local own = turn and own_id_of(turn)
  if own then return {'id:' .. own} end
  return {}
end
"""


def encode_row(turn: dict[str, Any], max_bytes: int, field: str = "content") -> str:
    """The stored row, refused above max_bytes (the turn's size is what MAX_TURN_BYTES bounds)."""
    try:
        row = json.dumps(
            {"role": turn["role"], "content": turn["content"]},
            ensure_ascii=False,
            allow_nan=False,
            separators=(",", ":"),
        )
        size = len(row.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(field, "must be valid Unicode (no lone surrogates)") from None
    except ValueError:  # 1e999 parses as infinity, which JSON cannot carry back
        raise InvalidInput(field, "must hold finite numbers only") from None
    if size > max_bytes:
        raise TurnTooLarge(field, f"the turn is {size} bytes, more than MAX_TURN_BYTES ({max_bytes})")
    return row


def decode_rows(rows: list[str]) -> list[dict[str, Any] | None]:
    """Stored rows as turns; a row that is not a turn (another writer's garbage) becomes None."""
    return [decode_row(row) for row in rows]


def decode_row(row: str) -> dict[str, Any] | None:
    try:
        turn = json.loads(row)
    except ValueError:
        return None
    if isinstance(turn, dict) and turn.get("role") in ROLES and isinstance(turn.get("content"), (str, list)):
        return {"role": turn["role"], "content": turn["content"]}
    return None


def marker_needle(message_id: str) -> str:
    """The marker as it appears inside an encoded row: a cheap substring test before Lua decodes the row."""
    return json.dumps(marker(message_id), ensure_ascii=False)[1:-1]


def dedupe_keys(turn: dict[str, Any]) -> list[str]:
    """The keys that make a later copy of this turn a duplicate: its own message id, when it has one."""
    own = message_id_in(turn["content"])
    return [] if own is None else [f"id:{own}"]
