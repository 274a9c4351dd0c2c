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
    assert rows.decode_row('{"role":"user","content":"x","tool_call_id":"c","tool_calls":[]}') == {
        "role": "user",
        "content": "x",
    }


CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
TOOL_TURNS = [
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "assistant", "content": "[Message ID: 4] checking", "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
    {"role": "tool", "content": "12°C", "tool_call_id": "call_1"},
    {"role": "tool", "content": [{"type": "text", "text": "[Message ID: 5] 12°C"}], "tool_call_id": "call_2"},
]


def test_tool_turns_round_trip_with_exactly_their_keys():
    for turn in TOOL_TURNS:
        row = rows.encode_row(turn, 1000)
        assert list(json.loads(row)) == list(turn) and rows.decode_row(row) == turn
    assert rows.encode_row(TOOL_TURNS[0], 1000) == (
        '{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",'
        '"function":{"name":"get_weather","arguments":"{\\"city\\":\\"Oslo\\"}"}}]}'
    )


def test_an_oversize_tool_call_names_tool_calls():
    call = {**CALL, "function": {"name": "f", "arguments": "x" * 99}}
    big = {"role": "assistant", "content": None, "tool_calls": [call]}
    with pytest.raises(TurnTooLarge, match="^tool_calls: "):
        rows.encode_row(big, 50)


@pytest.mark.parametrize(
    "row",
    [
        '{"role":"assistant","content":null}',
        '{"role":"assistant","tool_calls":[]}',
        '{"role":"assistant","content":null,"tool_calls":[{"id":1,"function":{"name":"f","arguments":"{}"}}]}',
        '{"role":"assistant","content":null,"tool_calls":[{"id":"c","function":{"name":"f","arguments":{}}}]}',
        '{"role":"assistant","content":null,"tool_calls":{"id":"c"}}',
        '{"role":"tool","content":"x"}',
        '{"role":"tool","content":"x","tool_call_id":5}',
        '{"role":"tool","content":null,"tool_call_id":"c"}',
        '{"role":"user","content":{"type":"text"}}',
        '{"role":"user","content":[]}',
    ],
)
def test_foreign_tool_rows_decode_to_none(row):
    assert rows.decode_row(row) is None


class TestDedupeKeys:
    def test_keys_of_each_kind_of_turn(self):
        assert rows.dedupe_keys({"role": "user", "content": "[Message ID: 1] hi"}) == ["id:1"]
        assert rows.dedupe_keys({"role": "user", "content": "hi"}) == []
        assert rows.dedupe_keys(TOOL_TURNS[0]) == ["call:call_1"]
        assert rows.dedupe_keys(TOOL_TURNS[1]) == ["id:4"]  # a marker is the turn's identity
        assert rows.dedupe_keys(TOOL_TURNS[2]) == ["result:call_1"]
        assert rows.dedupe_keys(TOOL_TURNS[3]) == ["id:5", "result:call_2"]


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


# Rows written by encode_row, and foreign rows another writer left, fed to both indexed_keys.
DEDUPE_ROWS = [
    *(rows.encode_row(turn, 10_000) for turn in TOOL_TURNS),
    *(rows.encode_row({"role": "user", "content": content}, 10_000) for content in OWN_ID_CASES.values()),
    rows.encode_row({"role": "assistant", "content": "[Message ID: 3] plain"}, 10_000),
    rows.encode_row({"role": "tool", "content": "x", "tool_call_id": 'ж-🙂/\\"q'}, 10_000),
    rows.encode_row({"role": "assistant", "content": [IMAGE], "tool_calls": [CALL]}, 10_000),
    '{"role":"system","content":"[Message ID: 1] x"}',
    '{"role":"user","content":"[Message ID: 1] x","tool_call_id":"c","tool_calls":[{"id":"d"}]}',
    '{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f","arguments":"{}"}}]}',
    '{"role":"assistant","content":null,"tool_calls":[{"id":"c","function":{"name":"f"}}]}',
    '{"role":"assistant","content":null,"tool_calls":[{"id":"c","function":{"name":"f","arguments":"{}"}},null]}',
    '{"role":"assistant","content":{"text":"[Message ID: 2]"}}',
    '{"role":"tool","content":"[Message ID: 2] x"}',
    '{"role":"tool","content":"[Message ID: 2] x","tool_call_id":"c"}',
    '{"role":"user","content":[]}',
    '{"role":"user","content":{}}',
    "not json",
    "[1, 2]",
    '"[Message ID: 1]"',
]


@pytest.mark.parametrize("row", DEDUPE_ROWS)
def test_lua_indexed_keys_agree_with_the_python_keys(row, redis_client: redis.Redis):
    """rows.indexed_keys of the decoded row (none for a foreign row) and the Lua twin on the stored row."""
    turn = rows.decode_row(row)
    expected = rows.indexed_keys(turn) if turn is not None else []
    assert redis_client.eval(rows.OWN_ID_LUA + "return indexed_keys(ARGV[1])", 0, row) == expected


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


def test_plain_rows_of_ours_pass_as_they_are_and_others_are_decoded():
    plain = rows.encode_row({"role": "assistant", "content": 'say "tool_calls": [1]'}, 1000)
    assert isinstance(rows.plain_or_decoded(plain), rows.PlainRow) and rows.role_of(rows.PlainRow(plain)) == "assistant"
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    tool_calls = rows.encode_row({"role": "assistant", "content": None, "tool_calls": [call]}, 1000)
    assert rows.plain_or_decoded(tool_calls) == {"role": "assistant", "content": None, "tool_calls": [call]}
    spaced = '{"role": "user", "content": "written by another client"}'
    assert rows.plain_or_decoded(spaced) == {"role": "user", "content": "written by another client"}
    # trusted by its shape: a row written exactly like ours is ours (documented in the README)
    assert rows.plain_or_decoded('{"role":"user","content":"x","extra":1}') == '{"role":"user","content":"x","extra":1}'
    assert rows.plain_or_decoded('{"role": "user", "content": "x", "extra": 1}') == {"role": "user", "content": "x"}
    assert rows.plain_or_decoded("not json") is None
