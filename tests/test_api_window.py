"""Tool turns, tool pairs and the token budget through the API function's handler, on real Redis."""

from __future__ import annotations

import json

import pytest

from room_history.window import estimate_tokens
from support import IMAGE, Api, room_path, turns

ROOM = "discord:77"
TURNS_KEY = f"sg:conversation:{{{ROOM}}}"
TEMPLATE = "Room {{ room_id }}{% if max_tokens %} budget {{ max_tokens }}{% endif %}"
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
CALLING = {"role": "assistant", "content": None, "tool_calls": [CALL]}
RESULT = {"role": "tool", "content": "12°C and rain", "tool_call_id": "call_1"}
ANSWER = {"role": "assistant", "content": "[Message ID: 3] It is 12°C and raining in Oslo."}


@pytest.fixture
def api(backend):
    return make_api(backend)


def make_api(backend, **env) -> Api:
    return Api({**backend.env, "SYSTEM_PROMPT_TEMPLATE": TEMPLATE, **env})


def post(api, body, room=ROOM, **headers):
    return api.call("POST", room_path(room, "messages"), body, headers)


def listed(api, query="", room=ROOM):
    return api.call("GET", room_path(room, "messages"), query=query)


def stored_rows(backend) -> list[dict]:
    return [json.loads(row) for row in backend.client.lrange(TURNS_KEY, 0, -1)]


class TestToolTurns:
    def test_a_tool_exchange_is_stored_and_listed_exactly(self, api, backend):
        question = {"role": "user", "content": "[Message ID: 1] alice: weather in Oslo?"}
        sent_call = {**CALLING, "tool_calls": [{**CALL, "index": 0}], "refusal": None}  # extra keys are dropped
        for body, status in [(question, 201), (sent_call, 201), (RESULT, 201), (ANSWER, 201)]:
            reply = post(api, body)
            assert reply.status == status, reply.body
        assert turns(reply) == [question, CALLING, RESULT, ANSWER]
        assert turns(listed(api)) == [question, CALLING, RESULT, ANSWER]
        assert stored_rows(backend) == [question, CALLING, RESULT, ANSWER]
        assert backend.client.lindex(TURNS_KEY, 1) == json.dumps(CALLING, ensure_ascii=False, separators=(",", ":"))
        state = api.call("GET", room_path(ROOM)).body
        assert (state["message_count"], state["last_role"], state["version"]) == (4, "assistant", 4)

    def test_a_tool_call_turn_with_text_and_several_calls(self, api):
        second = {**CALL, "id": "call_2", "function": {"name": "get_time", "arguments": "{}"}}
        body = {"role": "assistant", "content": "[Message ID: 2] let me check", "tool_calls": [CALL, second]}
        reply = post(api, {**body, "message_id": "2"})
        assert reply.status == 201 and turns(reply) == [body]

    def test_retried_tool_turns_are_stored_once(self, api, backend):
        assert post(api, CALLING).status == 201
        assert post(api, RESULT).status == 201
        before = backend.dump()
        again_call, again_result = post(api, CALLING), post(api, RESULT)
        assert (again_call.status, again_result.status) == (200, 200)
        assert again_result.body["version"] == 2 and turns(again_result) == [CALLING, RESULT]
        assert backend.dump() == before
        # the first tool call id decides for an assistant turn without a marker; a new call is a new turn
        other = {**CALLING, "tool_calls": [{**CALL, "id": "call_9"}, CALL]}
        assert post(api, other).status == 201
        assert post(api, {**CALLING, "tool_calls": [CALL, {**CALL, "id": "call_8"}]}).status == 200

    def test_a_retried_result_answers_200_whatever_its_if_match(self, api):
        post(api, CALLING)
        post(api, RESULT)
        reply = post(api, RESULT, **{"if-match": "1"})
        assert reply.status == 200 and reply.body["version"] == 2

    def test_a_tool_call_turn_with_a_marker_is_deduplicated_by_its_id(self, api):
        marked = {"role": "assistant", "content": "[Message ID: 5] looking", "tool_calls": [CALL]}
        assert post(api, marked).status == 201
        assert post(api, marked).status == 200
        # its first tool call is in the window too: a retry without the marker is stored once as well
        assert post(api, CALLING).status == 200

    def test_an_edit_keeps_the_tool_calls(self, api):
        post(api, {"role": "assistant", "content": "[Message ID: 5] looking", "tool_calls": [CALL]})
        reply = api.call("PATCH", room_path(ROOM, "messages", "5"), {"content": "[Message ID: 5] looked"})
        assert reply.status == 200
        assert turns(reply) == [{"role": "assistant", "content": "[Message ID: 5] looked", "tool_calls": [CALL]}]

    @pytest.mark.parametrize(
        "body, field",
        [
            ({"role": "system", "content": "x"}, "role"),
            ({"role": "user", "content": "x", "tool_calls": [CALL]}, "tool_calls"),
            ({"role": "user", "content": "x", "tool_call_id": "call_1"}, "tool_call_id"),
            ({"role": "tool", "content": "x"}, "tool_call_id"),
            ({"role": "tool", "content": "x", "tool_call_id": ""}, "tool_call_id"),
            ({"role": "tool", "content": "x", "tool_call_id": ["call_1"]}, "tool_call_id"),
            ({"role": "tool", "tool_call_id": "call_1"}, "content"),
            ({"role": "assistant", "content": None}, "content"),
            ({"role": "assistant", "content": None, "tool_calls": []}, "tool_calls"),
            ({"role": "assistant", "content": None, "tool_calls": "call_1"}, "tool_calls"),
            ({**CALLING, "tool_calls": [{**CALL, "id": ""}]}, "tool_calls[0].id"),
            ({**CALLING, "tool_calls": [CALL, {**CALL, "id": "call_2", "type": "tool"}]}, "tool_calls[1].type"),
            ({**CALLING, "tool_calls": [{**CALL, "function": "get_weather"}]}, "tool_calls[0].function"),
            ({**CALLING, "tool_calls": [{**CALL, "function": {"arguments": "{}"}}]}, "tool_calls[0].function.name"),
            (
                {**CALLING, "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {"city": "Oslo"}}}]},
                "tool_calls[0].function.arguments",
            ),
            ({**CALLING, "message_id": "4"}, "message_id"),
            ({**ANSWER, "max_tokens": 0}, "max_tokens"),
            ({**ANSWER, "max_tokens": "100"}, "max_tokens"),
            ({**ANSWER, "max_tokens": 1.5}, "max_tokens"),
            ({**ANSWER, "max_tokens": True}, "max_tokens"),
        ],
    )
    def test_malformed_tool_turns_are_400_naming_the_field(self, api, backend, body, field):
        assert post(api, CALLING).status == 201
        before = backend.dump()
        reply = post(api, body)
        assert reply.status == 400 and reply.body["error"] == "invalid_request"
        assert reply.body["message"].startswith(f"{field}: "), reply.body
        assert backend.dump() == before


class TestPairs:
    def test_a_result_stranded_by_trimming_is_left_out_but_stays_stored(self, backend):
        api = make_api(backend, MAX_HISTORY="3")
        for body in [CALLING, RESULT, {"role": "user", "content": "a"}, {"role": "user", "content": "b"}]:
            reply = post(api, body)
        assert turns(reply) == [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
        assert turns(listed(api)) == turns(reply)
        assert stored_rows(backend)[0] == RESULT  # still stored until trimmed
        state = api.call("GET", room_path(ROOM)).body
        assert state["message_count"] == 2 and state["last_role"] == "user"
        # a stranded result is still in the window: its retry is a duplicate; once trimmed away it is new again
        assert post(api, RESULT).status == 200
        post(api, {"role": "user", "content": "c"})
        assert post(api, RESULT).status == 201
        assert RESULT not in turns(listed(api)) and stored_rows(backend)[-1] == RESULT

    def test_a_result_posted_before_its_call_is_left_out(self, api):
        post(api, RESULT)
        reply = post(api, CALLING)
        assert turns(reply) == [CALLING]


class TestBudget:
    def fill(self, api, count=6):
        for number in range(count):
            post(api, {"role": "user", "content": f"[Message ID: {number}] " + "x" * 100})

    def test_a_budgeted_read_keeps_the_newest_turns_that_fit(self, api):
        self.fill(api)
        everything = listed(api)
        assert "tokens" not in everything.body and "truncated" not in everything.body
        system, *window = everything.body["messages"]
        costs = [estimate_tokens(message, 1000) for message in everything.body["messages"]]
        budget = costs[0] + sum(costs[-2:])  # the system message and the two newest turns, exactly
        reply = listed(api, f"max_tokens={budget}")
        assert reply.status == 200 and reply.body["messages"] == [system, *window[-2:]]
        assert (reply.body["tokens"], reply.body["truncated"]) == (budget, True)
        under = listed(api, f"max_tokens={budget - 1}")
        assert under.body["messages"] == [system, window[-1]]
        whole = listed(api, "max_tokens=100000")
        assert whole.body["messages"] == everything.body["messages"]
        assert (whole.body["tokens"], whole.body["truncated"]) == (sum(costs), False)

    def test_max_tokens_is_reserved_not_template_context(self, api):
        reply = listed(api, "max_tokens=500&room_name=x")
        assert reply.body["messages"][0] == {"role": "system", "content": f"Room {ROOM}"}

    def test_a_system_message_larger_than_the_budget_is_sent_alone(self, api):
        self.fill(api, 2)
        reply = listed(api, "max_tokens=1")
        assert reply.body["messages"] == [{"role": "system", "content": f"Room {ROOM}"}]
        assert (reply.body["tokens"], reply.body["truncated"]) == (4 + 4, True)  # "Room discord:77" is 15 bytes

    def test_a_call_and_its_results_are_kept_or_left_out_together(self, api):
        post(api, {"role": "user", "content": "q"})
        post(api, CALLING)
        post(api, RESULT)
        full = listed(api).body["messages"]
        budget = sum(estimate_tokens(message, 1000) for message in full) - 1  # all but the first user turn fits
        assert listed(api, f"max_tokens={budget}").body["messages"] == [full[0], CALLING, RESULT]
        without_call = budget - estimate_tokens(CALLING, 1000)
        assert listed(api, f"max_tokens={without_call}").body["messages"] == [full[0]]

    def test_media_parts_cost_the_configured_tokens(self, backend):
        api = make_api(backend, MEDIA_PART_TOKENS="10")
        post(api, {"role": "user", "content": [{"type": "text", "text": "abcd"}, IMAGE]})
        reply = listed(api, "max_tokens=1000")
        assert reply.body["tokens"] == estimate_tokens(reply.body["messages"][0], 10) + 4 + 1 + 10

    @pytest.mark.parametrize(
        "method, rest, body",
        [
            ("POST", (), {"role": "user", "content": "hi"}),
            ("PATCH", ("1",), {"content": "[Message ID: 1] edited"}),
            ("DELETE", ("1",), {"deleted_at": "2026-11-25T12:00:00Z"}),
            ("PUT", ("1", "reactions"), {"reactions": "👍 x1"}),
        ],
    )
    def test_every_message_route_takes_a_budget(self, api, method, rest, body):
        self.fill(api, 3)
        full = api.call(method, room_path(ROOM, "messages", *rest), body)
        assert full.status in (200, 201) and "tokens" not in full.body
        system_and_newest = full.body["messages"][:1] + full.body["messages"][-1:]
        budget = sum(estimate_tokens(message, 1000) for message in system_and_newest)
        again = api.call("GET", room_path(ROOM, "messages"), query=f"max_tokens={budget}")
        assert again.body["messages"] == system_and_newest and again.body["truncated"] is True
        if method != "POST":  # the same change again, budgeted (a repeated edit, delete or reaction is harmless)
            budgeted = api.call(method, room_path(ROOM, "messages", *rest), {**body, "max_tokens": budget})
            assert budgeted.body["messages"] == system_and_newest and budgeted.body["tokens"] == budget

    @pytest.mark.parametrize("value", ["0", "-5", "ten", "1.5", ""])
    def test_a_bad_query_budget_is_400(self, api, backend, value):
        self.fill(api, 1)
        before = backend.dump()
        reply = listed(api, f"max_tokens={value}")
        assert reply.status == 400 and reply.body["message"].startswith("max_tokens: ")
        assert backend.dump() == before

    @pytest.mark.parametrize(
        "method, rest, body",
        [
            ("PATCH", ("0",), {"content": "[Message ID: 0] edited", "max_tokens": -1}),
            ("DELETE", ("0",), {"max_tokens": "5"}),
            ("PUT", ("0", "reactions"), {"reactions": "👍 x1", "max_tokens": 0}),
        ],
    )
    def test_a_bad_body_budget_is_400_and_changes_nothing(self, api, backend, method, rest, body):
        self.fill(api, 1)
        before = backend.dump()
        reply = api.call(method, room_path(ROOM, "messages", *rest), body)
        assert reply.status == 400 and reply.body["message"].startswith("max_tokens: ")
        assert backend.dump() == before


class TestOtherRoutes:
    """Batches, compaction and conditional reads speak tool turns and budgets like the single append."""

    def test_a_batch_of_tool_turns_is_stored_exactly_and_once(self, api, backend):
        exchange = [{"role": "user", "content": "[Message ID: 1] weather?"}, CALLING, RESULT, ANSWER]
        first = api.call("POST", room_path(ROOM, "batch"), {"turns": exchange})
        assert first.status == 201 and turns(first) == exchange and stored_rows(backend) == exchange
        before = backend.dump()
        retry = api.call("POST", room_path(ROOM, "batch"), {"turns": [CALLING, RESULT, CALLING]})
        assert retry.status == 200 and (retry.body["stored"], retry.body["duplicates"]) == (0, 3)
        assert backend.dump() == before

    def test_a_malformed_tool_turn_in_a_batch_is_named_and_nothing_is_stored(self, api, backend):
        post(api, CALLING)
        before = backend.dump()
        bad = {**CALLING, "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {"city": "Oslo"}}}]}
        reply = api.call("POST", room_path(ROOM, "batch"), {"turns": [RESULT, bad]})
        assert reply.status == 400 and reply.body["message"].startswith("turns[1].tool_calls[0].function.arguments: ")
        assert backend.dump() == before

    def test_batch_and_compaction_take_a_budget(self, api, backend):
        body = {"turns": [{"role": "user", "content": f"[Message ID: {n}] " + "x" * 100} for n in range(4)]}
        full = api.call("POST", room_path(ROOM, "batch"), body).body["messages"]
        budget = sum(estimate_tokens(message, 1000) for message in [full[0], *full[-2:]])
        again = api.call("POST", room_path(ROOM, "batch"), {**body, "max_tokens": budget})
        assert again.body["messages"] == [full[0], *full[-2:]] and again.body["truncated"] is True
        assert (again.body["tokens"], again.body["duplicates"]) == (budget, 4)
        compacted = api.call("POST", room_path(ROOM, "compact"), {"through": "0", "summary": "s", "max_tokens": 1})
        assert compacted.status == 200 and compacted.body["truncated"] is True
        assert [m["role"] for m in compacted.body["messages"]] == ["system"]
        before = backend.dump()
        bad = api.call("POST", room_path(ROOM, "compact"), {"through": "1", "summary": "s", "max_tokens": 0})
        assert bad.status == 400 and bad.body["message"].startswith("max_tokens: ")
        assert backend.dump() == before

    def test_a_conditional_read_with_a_budget(self, api):
        version = post(api, ANSWER).body["version"]
        current = {"if-none-match": str(version)}
        path = room_path(ROOM, "messages")
        assert api.call("GET", path, headers=current, query="max_tokens=5").status == 304
        bad = api.call("GET", path, headers=current, query="max_tokens=0")  # checked before the version is
        assert bad.status == 400 and bad.body["message"].startswith("max_tokens: ")
