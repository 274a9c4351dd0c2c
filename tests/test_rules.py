"""Pure room rules: no Redis here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from room_history import rules
from room_history.errors import InvalidInput, MessageNotFound
from support import IMAGE


def text_turn(message_id: str, text: str = "hello", role: str = "user") -> dict:
    return {"role": role, "content": f"[Message ID: {message_id}] {text}"}


def image_turn(message_id: str, text: str = "look") -> dict:
    return {"role": "user", "content": [{"type": "text", "text": f"[Message ID: {message_id}] {text}"}, IMAGE]}


class TestNewTurn:
    def test_message_id_is_read_from_the_marker(self):
        turn, message_id = rules.new_turn("user", "[Message ID: 42] hi")
        assert (turn, message_id) == ({"role": "user", "content": "[Message ID: 42] hi"}, "42")

    def test_marker_in_first_text_part_of_multimodal_content(self):
        _, message_id = rules.new_turn("user", [IMAGE, {"type": "text", "text": "[Message ID: 7] see"}])
        assert message_id == "7"

    def test_marker_only_in_a_later_text_part_does_not_count(self):
        content = [{"type": "text", "text": "first"}, {"type": "text", "text": "[Message ID: 7] second"}]
        assert rules.new_turn("user", content)[1] is None

    def test_turn_without_marker_has_no_id(self):
        assert rules.new_turn("assistant", "plain")[1] is None

    def test_body_id_must_agree_with_marker(self):
        with pytest.raises(InvalidInput) as error:
            rules.new_turn("user", "[Message ID: 1] hi", "2")
        assert error.value.field == "message_id"

    def test_body_id_without_marker_is_refused(self):
        with pytest.raises(InvalidInput, match="message_id"):
            rules.new_turn("user", "no marker", "1")

    @pytest.mark.parametrize(
        "role, content, field",
        [
            ("system", "hi", "role"),
            (None, "hi", "role"),
            ("user", "", "content"),
            ("user", [], "content"),
            ("user", None, "content"),
            ("user", 5, "content"),
            ("user", ["text"], "content[0]"),
            ("user", [{"text": "no type"}], "content[0].type"),
            ("user", [{"type": "text", "text": 3}], "content[0].text"),
        ],
    )
    def test_bad_turns_name_the_field(self, role, content, field):
        with pytest.raises(InvalidInput) as error:
            rules.new_turn(role, content)
        assert error.value.field == field

    def test_deeply_nested_content_is_refused(self):
        part = {"type": "file", "file": {}}
        inner = part["file"]
        for _ in range(100):
            inner["x"] = {}
            inner = inner["x"]
        with pytest.raises(InvalidInput, match="nested"):
            rules.new_turn("user", [part])


def tool_call(call_id="call_1", name="get_weather", arguments='{"city": "Oslo"}', **extra) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}, **extra}


class TestToolTurns:
    def test_a_tool_call_turn_may_have_null_content(self):
        turn, message_id = rules.new_turn("assistant", None, tool_calls=[tool_call()])
        assert turn == {"role": "assistant", "content": None, "tool_calls": [tool_call()]} and message_id is None

    def test_tool_calls_keep_only_the_contract_keys(self):
        sent = [{**tool_call(index=0), "function": {**tool_call()["function"], "extra": 1}}]
        turn, _ = rules.new_turn("assistant", "[Message ID: 9] let me look", tool_calls=sent)
        assert turn["tool_calls"] == [tool_call()] and turn["content"] == "[Message ID: 9] let me look"

    def test_arguments_are_kept_verbatim_even_when_not_json(self):
        """A model may emit malformed arguments; the history holds what it said."""
        turn, _ = rules.new_turn("assistant", None, tool_calls=[tool_call(arguments='{"city": "Os')])
        assert turn["tool_calls"][0]["function"]["arguments"] == '{"city": "Os'

    def test_a_tool_result(self):
        turn, message_id = rules.new_turn("tool", "12°C", tool_call_id="call_1")
        assert turn == {"role": "tool", "content": "12°C", "tool_call_id": "call_1"} and message_id is None

    def test_null_fields_count_as_absent(self):
        turn, _ = rules.new_turn("user", "hi", None, None, None)
        assert turn == {"role": "user", "content": "hi"}

    @pytest.mark.parametrize(
        "role, content, tool_calls, tool_call_id, field",
        [
            ("user", "hi", [tool_call()], None, "tool_calls"),
            ("tool", "hi", [tool_call()], "call_1", "tool_calls"),
            ("assistant", "hi", None, "call_1", "tool_call_id"),
            ("user", "hi", None, "call_1", "tool_call_id"),
            ("tool", "12°C", None, None, "tool_call_id"),
            ("tool", "12°C", None, "", "tool_call_id"),
            ("tool", "12°C", None, 7, "tool_call_id"),
            ("tool", "12°C", None, "a b", "tool_call_id"),
            ("tool", None, None, "call_1", "content"),
            ("tool", "", None, "call_1", "content"),
            ("assistant", None, None, None, "content"),
            ("assistant", None, [], None, "tool_calls"),
            ("assistant", None, {"id": "x"}, None, "tool_calls"),
            ("assistant", "", [tool_call()], None, "content"),
            ("assistant", None, ["call_1"], None, "tool_calls[0]"),
            ("assistant", None, [tool_call(), tool_call(call_id=None)], None, "tool_calls[1].id"),
            ("assistant", None, [tool_call(call_id="x" * 300)], None, "tool_calls[0].id"),
            ("assistant", None, [tool_call(), tool_call()], None, "tool_calls[1].id"),
            ("assistant", None, [{**tool_call(), "type": "code"}], None, "tool_calls[0].type"),
            ("assistant", None, [{"id": "c", "type": "function"}], None, "tool_calls[0].function"),
            ("assistant", None, [tool_call(name="")], None, "tool_calls[0].function.name"),
            ("assistant", None, [tool_call(name=None)], None, "tool_calls[0].function.name"),
            ("assistant", None, [tool_call(arguments={"city": "Oslo"})], None, "tool_calls[0].function.arguments"),
            ("assistant", None, [tool_call(arguments=None)], None, "tool_calls[0].function.arguments"),
            ("assistant", None, [tool_call(arguments="\ud800")], None, "tool_calls[0].function.arguments"),
        ],
    )
    def test_malformed_tool_turns_name_the_field(self, role, content, tool_calls, tool_call_id, field):
        with pytest.raises(InvalidInput) as error:
            rules.new_turn(role, content, None, tool_calls, tool_call_id)
        assert error.value.field == field

    def test_a_message_id_needs_a_marker_in_the_content(self):
        with pytest.raises(InvalidInput, match="^message_id: "):
            rules.new_turn("assistant", None, "5", [tool_call()])

    def test_a_tool_call_turn_has_no_marker_in_null_content(self):
        assert rules.message_id_in(None) is None and rules.message_text(None) is None


class TestIds:
    @pytest.mark.parametrize("value", ["", "a b", "tab\there", "x" * 257, "{room}", "a}", "bell\x07", 5, None])
    def test_bad_room_ids(self, value):
        with pytest.raises(InvalidInput) as error:
            rules.validate_id("room_id", value)
        assert error.value.field == "room_id"

    def test_message_id_may_not_close_the_marker(self):
        with pytest.raises(InvalidInput, match="message_id"):
            rules.validate_id("message_id", "12]")

    @pytest.mark.parametrize("value", ["discord:1234", "matrix:!abc:example.org", "x" * 256, "slack:T1/C2", "ж"])
    def test_good_ids(self, value):
        assert rules.validate_id("room_id", value) == value


class TestFindTurn:
    def test_newest_turn_with_the_marker_wins(self):
        turns = [text_turn("1", "old"), text_turn("2"), text_turn("1", "new")]
        assert rules.find_turn(turns, "1") == 2

    def test_prefix_ids_do_not_match(self):
        turns = [text_turn("123"), text_turn("12")]
        assert rules.find_turn(turns, "12") == 1
        assert rules.find_turn(turns, "123") == 0
        with pytest.raises(MessageNotFound):
            rules.find_turn(turns, "1")

    def test_marker_in_multimodal_turn(self):
        assert rules.find_turn([image_turn("9")], "9") == 0

    def test_unreadable_rows_are_skipped(self):
        assert rules.find_turn([None, text_turn("5")], "5") == 1


class TestEdit:
    def test_string_edit_keeps_media_parts(self):
        old = image_turn("1")["content"]
        assert rules.edit_content(old, "[Message ID: 1] new caption") == [
            {"type": "text", "text": "[Message ID: 1] new caption"},
            IMAGE,
        ]

    def test_list_edit_replaces_everything(self):
        new = [{"type": "text", "text": "[Message ID: 1] only text"}]
        assert rules.edit_content(image_turn("1")["content"], new) == new

    def test_string_edit_of_text_only_parts_replaces_exactly(self):
        old = [{"type": "text", "text": "[Message ID: 1] a"}, {"type": "text", "text": "b"}]
        assert rules.edit_content(old, "[Message ID: 1] c") == "[Message ID: 1] c"

    def test_string_edit_of_string_replaces(self):
        assert rules.edit_content("[Message ID: 1] a", "[Message ID: 1] b") == "[Message ID: 1] b"


class TestTags:
    def test_delete_inserts_right_after_marker_once(self):
        text = rules.mark_deleted("[Message ID: 1] hi", "1", "2026-01-02T03:04:05Z")
        assert text == "[Message ID: 1] [deleted at 2026-01-02T03:04:05Z] hi"
        assert rules.mark_deleted(text, "1", "2027-01-01T00:00:00Z") == text

    def test_reactions_replace_the_old_tag(self):
        text = rules.set_reactions("[Message ID: 1] hi", "1", "👍 x1")
        text = rules.set_reactions(text, "1", "👍 x2, ❤️ x1")
        assert text == "[Message ID: 1] [Reactions: 👍 x2, ❤️ x1] hi"

    def test_empty_reactions_remove_the_tag(self):
        text = rules.set_reactions("[Message ID: 1] hi", "1", "[party] x1")
        assert rules.set_reactions(text, "1", "") == "[Message ID: 1] hi"

    def test_reactions_with_brackets_are_stripped_whole(self):
        text = rules.set_reactions("[Message ID: 1] hi", "1", ":[a]: x1, [[b]] x2")
        assert rules.set_reactions(text, "1", "ok") == "[Message ID: 1] [Reactions: ok] hi"

    def test_unbalanced_reactions_are_refused(self):
        with pytest.raises(InvalidInput, match="reactions"):
            rules.validate_reactions("x] [y")

    def test_delete_and_reactions_coexist(self):
        text = rules.mark_deleted("[Message ID: 1] hi", "1", "2026-01-01T00:00:00Z")
        text = rules.set_reactions(text, "1", "👍 x1")
        assert text == "[Message ID: 1] [Reactions: 👍 x1] [deleted at 2026-01-01T00:00:00Z] hi"
        assert rules.set_reactions(text, "1", "") == "[Message ID: 1] [deleted at 2026-01-01T00:00:00Z] hi"

    def test_with_message_text_touches_only_the_first_text_part(self):
        content = [IMAGE, {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
        assert rules.with_message_text(content, "z") == [
            IMAGE,
            {"type": "text", "text": "z"},
            {"type": "text", "text": "b"},
        ]
        assert content[1]["text"] == "a"  # the input is not mutated

    @pytest.mark.parametrize("value", ["yesterday", "", 5, "2026-13-01T00:00:00Z", "2026-01-01T00:00:00Z]"])
    def test_bad_deleted_at(self, value):
        with pytest.raises(InvalidInput, match="deleted_at"):
            rules.validate_deleted_at(value)


class TestLimit:
    @pytest.mark.parametrize("given, clamped", [(10, 50), (50, 50), (200, 200), (1000, 1000), (5000, 1000)])
    def test_clamp(self, given, clamped):
        assert rules.clamp_limit(given) == clamped

    @pytest.mark.parametrize("given", ["100", 100.0, True, None])
    def test_limit_must_be_an_integer(self, given):
        with pytest.raises(InvalidInput, match="limit"):
            rules.clamp_limit(given)


def test_the_rules_import_nothing_that_does_io():
    """Pure rules: only text, time and typing helpers of the standard library, and the core's errors."""
    tree = ast.parse(Path(rules.__file__).read_text())
    absolute = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    absolute |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
    relative = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level > 0}
    pure = {"__future__", "re", "unicodedata", "datetime", "typing", "dataclasses", "json", "math", "itertools"}
    assert absolute and absolute <= pure, absolute - pure
    assert relative <= {"errors"}, relative
