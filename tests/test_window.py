"""What the model gets: tool pairs stay whole, the documented token estimate, and the budget's selection
(property-tested against a brute-force oracle written from docs/API.md)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from room_history.errors import InvalidInput
from room_history.window import (
    estimate_tokens,
    max_tokens_from_query,
    message_list,
    validate_max_tokens,
    whole_pairs,
)
from support import IMAGE

MEDIA = 1000


def call(call_id: str, name: str = "lookup", arguments: str = "{}") -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def calling(*ids: str, content=None) -> dict:
    return {"role": "assistant", "content": content, "tool_calls": [call(i) for i in ids]}


def result(call_id: str, content: str = "42") -> dict:
    return {"role": "tool", "content": content, "tool_call_id": call_id}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


class TestEstimate:
    @pytest.mark.parametrize(
        "message, tokens",
        [
            (user("abcd"), 4 + 1),
            (user("abcde"), 4 + 2),  # ceil(5 / 4)
            (user("ж"), 4 + 1),  # 2 UTF-8 bytes
            (user("жжжж"), 4 + 2),  # 8 bytes
            (user("🙂" * 3), 4 + 3),  # 12 bytes
            ({"role": "user", "content": [{"type": "text", "text": "ab"}, {"type": "text", "text": "cd"}]}, 4 + 1),
            ({"role": "user", "content": [{"type": "text", "text": "abcd"}, IMAGE, IMAGE]}, 4 + 1 + 2 * MEDIA),
            ({"role": "user", "content": [IMAGE]}, 4 + MEDIA),
            (calling("c1"), 4 + math.ceil(len("lookup{}") / 4)),  # null content: only the call's text
            (calling("c1", content="abcd"), 4 + math.ceil(len("abcdlookup{}") / 4)),
            (result("c1", "abcdefgh"), 4 + 2),
            ({"role": "system", "content": "x" * 400}, 4 + 100),
        ],
    )
    def test_the_documented_formula(self, message, tokens):
        assert estimate_tokens(message, MEDIA) == tokens

    def test_media_cost_is_the_setting(self):
        message = {"role": "user", "content": [IMAGE, {"type": "input_audio", "input_audio": {}}]}
        assert estimate_tokens(message, 7) == 4 + 14


class TestWholePairs:
    def test_a_result_whose_call_was_trimmed_is_left_out(self):
        turns = [result("gone"), user("hi"), calling("c1"), result("c1")]
        assert whole_pairs(turns) == turns[1:]

    def test_a_result_before_its_call_is_left_out(self):
        turns = [result("c1"), calling("c1"), result("c1", "again")]
        assert whole_pairs(turns) == turns[1:]

    def test_interleaved_turns_and_several_calls_stay(self):
        turns = [calling("a", "b"), user("meanwhile"), result("b"), result("a"), user("thanks")]
        assert whole_pairs(turns) == turns

    def test_a_call_waiting_for_its_results_stays(self):
        assert whole_pairs([user("q"), calling("a")]) == [user("q"), calling("a")]


class TestMessageList:
    def test_without_a_budget_there_is_no_estimate(self):
        listed = message_list("sys", [user("a")], None, MEDIA)
        assert listed.messages == [{"role": "system", "content": "sys"}, user("a")]
        assert (listed.tokens, listed.truncated) == (None, None)

    def test_newest_turns_that_fit(self):
        turns = [user("a" * 40), user("b" * 4), user("c" * 4)]  # 14, 5, 5 tokens
        listed = message_list("s", turns, 5 + 5 + 5, MEDIA)  # system 5
        assert listed.messages[1:] == turns[1:] and listed.tokens == 15 and listed.truncated is True

    def test_everything_fits(self):
        listed = message_list("s", [user("a")], 10, MEDIA)
        assert (listed.tokens, listed.truncated) == (10, False)

    def test_a_system_message_larger_than_the_budget_is_sent_alone(self):
        listed = message_list("s" * 100, [user("a")], 3, MEDIA)
        assert listed.messages == [{"role": "system", "content": "s" * 100}]
        assert (listed.tokens, listed.truncated) == (29, True)

    def test_a_call_is_left_out_with_its_results(self):
        turns = [user("q"), calling("a"), user("x" * 400), result("a"), user("ok")]
        budget = sum(estimate_tokens(turn, MEDIA) for turn in turns[2:])
        listed = message_list(None, turns, budget, MEDIA)
        assert listed.messages == [user("ok")] and listed.truncated is True

    def test_stranded_results_are_not_counted_as_truncation(self):
        listed = message_list(None, [result("gone"), user("a")], 100, MEDIA)
        assert listed.messages == [user("a")] and listed.truncated is False


# Turns of a window: plain turns, tool-call turns and tool results answering recent or unknown calls.
@st.composite
def windows(draw) -> list[dict]:
    turns, calls = [], []
    for _ in range(draw(st.integers(0, 14))):
        kind = draw(st.sampled_from(["user", "assistant", "media", "call", "result", "result", "stranded"]))
        size = draw(st.integers(0, 60))
        if kind == "user" or kind == "assistant":
            turns.append({"role": kind, "content": "é" * size or "x"})
        elif kind == "media":
            turns.append({"role": "user", "content": [{"type": "text", "text": "m" * size}, IMAGE]})
        elif kind == "call":
            ids = [f"c{len(calls) + n}" for n in range(draw(st.integers(1, 3)))]
            calls += ids
            turns.append({"role": "assistant", "content": None, "tool_calls": [call(i, "f", "{}" * size) for i in ids]})
        elif kind == "result" and calls:
            turns.append(result(draw(st.sampled_from(calls)), "r" * (size + 1)))
        else:
            turns.append(result(f"unknown{len(turns)}"))
    return turns


def pairs_whole(turns: list[dict]) -> bool:
    """Every tool result has its call in an assistant turn before it in the list."""
    return all(
        turn["role"] != "tool"
        or any(turn["tool_call_id"] in [c["id"] for c in earlier.get("tool_calls") or []] for earlier in turns[:index])
        for index, turn in enumerate(turns)
    )


def cost(messages: list[dict]) -> int:
    return sum(estimate_tokens(message, MEDIA) for message in messages)


@settings(max_examples=500, deadline=None)
@given(
    turns=windows(),
    prompt=st.sampled_from([None, "sys", "s" * 300]),
    budget=st.integers(1, 400) | st.tuples(st.integers(0, 14), st.integers(-1, 1)),
)
def test_the_budget_selection(turns, prompt, budget):
    system = [{"role": "system", "content": prompt}] if prompt else []
    if isinstance(budget, tuple):  # right at the cost of some suffix: the boundary cases
        start, delta = budget
        budget = max(1, cost(system + whole_pairs(turns)[start:]) + delta)
    check_selection(turns, prompt, budget)


def check_selection(turns, prompt, max_tokens):
    listed = message_list(prompt, turns, max_tokens, MEDIA)
    system = [{"role": "system", "content": prompt}] if prompt else []
    assert listed.messages[: len(system)] == system
    kept, candidates = listed.messages[len(system) :], whole_pairs(turns)
    # no hole: the newest turns, contiguous; never a split pair
    assert kept == candidates[len(candidates) - len(kept) :]
    assert pairs_whole(kept) and pairs_whole(candidates)
    assert listed.tokens == cost(listed.messages)
    # never over budget unless only the system message is left
    assert listed.tokens <= max_tokens or kept == []
    assert listed.truncated == (len(kept) < len(candidates))
    # maximal: no longer suffix keeps pairs whole and fits
    start = len(candidates) - len(kept)
    for longer in range(start):
        suffix = candidates[longer:]
        assert not (pairs_whole(suffix) and cost(system + suffix) <= max_tokens), longer


@pytest.mark.parametrize("value", [0, -1, 1.5, 10.0, "10", True, [], {}])
def test_max_tokens_in_a_body_must_be_a_positive_integer(value):
    with pytest.raises(InvalidInput, match="^max_tokens: "):
        validate_max_tokens(value)


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "", " 5", "+5", "٣", "1e3", "9" * 5000, "1,2"])
def test_max_tokens_in_a_query_must_be_a_positive_integer(value):
    with pytest.raises(InvalidInput, match="^max_tokens: "):
        max_tokens_from_query(value)


def test_max_tokens_accepted():
    assert (validate_max_tokens(None), validate_max_tokens(5), max_tokens_from_query("0042")) == (None, 5, 42)
    assert max_tokens_from_query(None) is None


def test_the_window_module_imports_nothing_that_does_io():
    """Pure functions over plain turns: only the standard library's data helpers and the core's pure modules."""
    import ast
    from pathlib import Path

    from room_history import window

    tree = ast.parse(Path(window.__file__).read_text())
    absolute = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    absolute |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
    relative = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level > 0}
    assert absolute <= {"__future__", "json", "dataclasses", "typing", "math"}, absolute
    assert relative <= {"errors", "rows", "rules"}, relative
