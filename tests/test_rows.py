"""The row codec, and the Lua twin of "a turn's own id" pinned to the Python rule on the same rows."""

from __future__ import annotations

import json

import pytest
import redis

from room_history import rows, rules
from room_history.errors import InvalidInput, TurnTooLarge
from support import IMAGE


def test_row_is_plain_compact_json():
    row = rows.encode_row({"role": "user", "content": "ж [Message ID: 1]"}, 1000)
    assert row == '{"role":"user","content":"ж [Message ID: 1]"}'
    assert rows.marker_needle("1") in row


def test_oversize_row_is_refused_naming_the_field():
    with pytest.raises(TurnTooLarge, match=r"^content: the turn is \d+ bytes"):
        rows.encode_row({"role": "user", "content": "x" * 100}, 50)


@pytest.mark.parametrize("content, problem", [("\ud800", "Unicode"), ([{"type": "x", "n": float("inf")}], "finite")])
def test_unencodable_content_is_refused(content, problem):
    with pytest.raises(InvalidInput, match=f"content: .*{problem}"):
        rows.encode_row({"role": "user", "content": content}, 1000)


@pytest.mark.parametrize(
    "row",
    ["not json", "[1, 2]", '{"role": "system", "content": "x"}', '{"role": "user"}', '{"role": "user", "content": 7}'],
)
def test_foreign_rows_decode_to_none(row):
    assert rows.decode_rows([row, '{"role":"user","content":"hi"}']) == [None, {"role": "user", "content": "hi"}]


def test_decoding_keeps_only_the_turn_keys():
    assert rows.decode_row('{"role":"assistant","content":"x","extra":1}') == {"role": "assistant", "content": "x"}


def test_needle_matches_escaped_ids():
    message_id = 'say"hi\\ok'
    row = rows.encode_row({"role": "user", "content": rules.marker(message_id) + " x"}, 1000)
    assert rows.marker_needle(message_id) in row


OWN_ID_CASES = {
    "plain": "[Message ID: 7] alice: hi",
    "no marker": "alice: hi",
    "quoted after own": "[Message ID: 8] bob: replying to [Message ID: 7]",
    "quoted first": "> [Message ID: 7] said hi\n[Message ID: 9] carol",
    "id prefixes another": "[Message ID: 12] x",
    "longer id": "[Message ID: 123] x",
    "non-ASCII": "[Message ID: сообщение-ж🙂] привет",
    "escapes": '[Message ID: a"b\\c/d] with "quotes" and \\ backslash\n\ttabs',
    "empty id": "[Message ID: ] nothing",
    "first text part": [{"type": "text", "text": "[Message ID: 5] pic"}, IMAGE],
    "marker in a later part": [IMAGE, {"type": "text", "text": "see"}, {"type": "text", "text": "[Message ID: 6] x"}],
    "media part first": [IMAGE, {"type": "text", "text": "[Message ID: 10] caption"}],
    "no text part": [IMAGE],
    "unclosed marker": "[Message ID: 11 no bracket",
}


@pytest.mark.parametrize("case", OWN_ID_CASES)
def test_lua_own_id_agrees_with_the_python_rule(case, redis_client: redis.Redis):
    """rules.message_id_in and rows.OWN_ID_LUA must name the same id for every row."""
    content = OWN_ID_CASES[case]
    row = rows.encode_row({"role": "user", "content": content}, 10_000)
    lua = redis_client.eval(rows.OWN_ID_LUA + "return own_id(ARGV[1])", 0, row)
    assert lua == rules.message_id_in(content)


def test_lua_own_id_tolerates_foreign_rows(redis_client: redis.Redis):
    for row in ("not json", "[]", '{"content": {"a": 1}}', json.dumps({"role": "user", "content": 5})):
        assert redis_client.eval(rows.OWN_ID_LUA + "return own_id(ARGV[1])", 0, row) is None
