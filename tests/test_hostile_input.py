"""Hostile and malformed input on every route it applies to: the documented 4xx naming the field, and Redis
byte for byte unchanged. Template code in context *values* is data and renders literally."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

import pytest

from local.redis_server import free_port
from support import IMAGE, Api, Reply, room_path

ROOM = "discord:42"
MAX_TURN_BYTES = 2000
TEMPLATE = "Room {{ room_id }}{% if room_name %} ({{ room_name }}){% endif %}"
ERRORS = {400: "invalid_request", 404: "message_not_found", 413: "turn_too_large"}
DEEP = "[" * 10_000 + "]" * 10_000
NESTED_40 = json.loads("[" * 40 + '"x"' + "]" * 40)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any = None
    raw: str | None = None
    headers: dict | None = None
    query: str = ""

    def send(self, api: Api) -> Reply:
        return api.call(self.method, self.path, self.body, self.headers, self.query, self.raw)


def routes(room: str = ROOM, message: str = "1") -> dict[str, Call]:
    """A valid call of every route; each hostile case below changes exactly one thing of one of them."""
    return {
        "append": Call("POST", room_path(room, "messages"), {"role": "user", "content": "[Message ID: 7] new"}),
        "list": Call("GET", room_path(room, "messages")),
        "edit": Call("PATCH", room_path(room, "messages", message), {"content": f"[Message ID: {message}] edited"}),
        "delete": Call("DELETE", room_path(room, "messages", message), {"deleted_at": "2026-11-25T12:00:00Z"}),
        "react": Call("PUT", room_path(room, "messages", message, "reactions"), {"reactions": "❤️ x1"}),
        "state": Call("GET", room_path(room)),
        "limit": Call("PUT", room_path(room, "limit"), {"limit": 70}),
        "rebackfill": Call("DELETE", room_path(room, "rebackfill")),
        "clear": Call("DELETE", room_path(room)),
    }


MESSAGE_ROUTES = ["edit", "delete", "react"]
BODY_ROUTES = ["append", *MESSAGE_ROUTES, "limit"]
CONTEXT_ROUTES = ["append", *MESSAGE_ROUTES]
MUTATING_ROUTES = [name for name in routes() if name not in ("list", "state")]


def big_turn() -> str:
    """A turn whose stored row is 8 bytes under MAX_TURN_BYTES: any tag pushes it over."""
    head = '{"role":"user","content":"[Message ID: big] "}'
    return "[Message ID: big] " + "x" * (MAX_TURN_BYTES - 8 - len(head))


@pytest.fixture
def api(single_backend):
    """A room with a few turns (one with media, one near the size limit), reactions, a deletion and a limit."""
    api = Api({**single_backend.env, "SYSTEM_PROMPT_TEMPLATE": TEMPLATE, "MAX_TURN_BYTES": str(MAX_TURN_BYTES)})
    messages = room_path(ROOM, "messages")
    setup = [
        Call("POST", messages, {"role": "user", "content": "[Message ID: 1] hello"}),
        Call("POST", messages, {"role": "assistant", "content": "[Message ID: 2] hi there"}),
        Call("POST", messages, {"role": "user", "content": [{"type": "text", "text": "[Message ID: 3] look"}, IMAGE]}),
        Call("POST", messages, {"role": "user", "content": big_turn()}),
        Call("PUT", room_path(ROOM, "messages", "1", "reactions"), {"reactions": "👍 x2"}),
        Call("DELETE", room_path(ROOM, "messages", "2")),
        Call("PUT", room_path(ROOM, "limit"), {"limit": 60}),
    ]
    assert [call.send(api).status for call in setup] == [201, 201, 201, 201, 200, 200, 200]
    return api


def assert_wire_safe(body: Any) -> None:
    """The body can be sent as strict JSON in UTF-8: no NaN/Infinity, no lone surrogates."""
    json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")


def refused(name: str, status: int, field: str | None, room: str = ROOM, message: str = "1", **change) -> Any:
    call = replace(routes(room, message)[name], **change)
    return pytest.param(call, status, field, id=f"{name}-{field or status}")


MISSING = object()


def with_body(name: str, field: str, **fields) -> Any:
    """The route's valid body with some fields replaced (or removed: MISSING), refused with a 400 naming field."""
    body = {**(routes()[name].body or {}), **fields}
    return refused(name, 400, field, body={key: value for key, value in body.items() if value is not MISSING})


TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def tool_call(**function) -> dict:
    return {**TOOL_CALL, "function": {**TOOL_CALL["function"], **function}}


BAD_ROOM_IDS = ["a b", "{x}", "a}", "x" * 300, "bell\x07", "nul\x00", "new\nline", "del\x7f", "nbsp\u00a0b"]
BAD_MESSAGE_IDS = ["a]", "]", "a b", "{1}", "x" * 257, "bell\x07", "tab\t1"]
MALFORMED_JSON = ["{", '{"limit": 1,}', "[1, 2]", '"text"', "null", '{"limit": NaN}', "{'limit': 1}", DEEP]
BAD_CONTEXT_KEYS = ["__class__", "_private", "1x", "a.b", "a-b", "", "{{ x }}", "ROOM ID"]
BAD_IF_MATCH = ["seven", "-1", "1.5", "１", "W/", "1, 2"]

CASES = [
    *[refused(name, 400, "body", raw=raw) for name in BODY_ROUTES for raw in MALFORMED_JSON],
    refused("append", 400, "body", raw='{"role": "user", "content": ' + DEEP + "}"),
    *[refused(name, 400, "room_id", room=room) for name in routes() for room in BAD_ROOM_IDS],
    *[refused(name, 400, "message_id", message=message) for name in MESSAGE_ROUTES for message in BAD_MESSAGE_IDS],
    # wrong types, unknown roles, empty content
    *[with_body("append", "role", role=role) for role in [MISSING, None, 5, "system", "Tool", "User", "", ["user"]]],
    # malformed tool turns: the field at fault is named, down to the tool call's part
    *[with_body("append", "tool_call_id", role="tool", tool_call_id=bad) for bad in [MISSING, "", "a b", "{x}", 5]],
    with_body("append", "tool_call_id", role="tool", tool_call_id="x" * 257),
    with_body("append", "tool_call_id", tool_call_id="call_1"),
    with_body("append", "tool_calls", tool_calls=[TOOL_CALL]),
    *[with_body("append", "tool_calls", role="assistant", tool_calls=bad) for bad in [[], "call_1", {"id": "c"}]],
    with_body("append", "tool_calls[0]", role="assistant", tool_calls=[["call_1"]]),
    with_body("append", "tool_calls[0].id", role="assistant", tool_calls=[{**TOOL_CALL, "id": "a\nb"}]),
    with_body("append", "tool_calls[1].id", role="assistant", tool_calls=[TOOL_CALL, TOOL_CALL]),
    with_body("append", "tool_calls[0].type", role="assistant", tool_calls=[{**TOOL_CALL, "type": None}]),
    with_body("append", "tool_calls[0].function", role="assistant", tool_calls=[{**TOOL_CALL, "function": []}]),
    *[
        with_body("append", "tool_calls[0].function.name", role="assistant", tool_calls=[tool_call(name=bad)])
        for bad in [None, "", 5]
    ],
    *[
        with_body("append", "tool_calls[0].function.arguments", role="assistant", tool_calls=[tool_call(arguments=bad)])
        for bad in [None, {"city": "Oslo"}, ["Oslo"], 5]
    ],
    *[with_body(name, "max_tokens", max_tokens=bad) for name in CONTEXT_ROUTES for bad in [0, -1, "10", 1.5, True]],
    *[refused("list", 400, "max_tokens", query=urlencode({"max_tokens": bad})) for bad in ["0", "-1", "1e3", "x", ""]],
    *[
        with_body(name, "content", content=content)
        for name in ["append", "edit"]
        for content in [MISSING, None, "", [], 12, {"text": "x"}, NESTED_40]
    ],
    with_body("append", "content[0]", content=["x"]),
    with_body("append", "content[0].type", content=[{"text": "x"}]),
    with_body("append", "content[0].type", content=[{"type": ""}]),
    with_body("edit", "content[1].type", content=[{"type": "text", "text": "[Message ID: 1] x"}, {"type": 7}]),
    with_body("append", "content[0].text", content=[{"type": "text", "text": 5}]),
    with_body("append", "content[0].text", content=[{"type": "text"}]),
    with_body("edit", "content", content="[Message ID: 2] not this one"),
    *[with_body("append", "message_id", message_id=value) for value in [2, "", "a b", "8", ["7"], "x" * 300]],
    with_body("append", "message_id", content="no marker", message_id="7"),
    with_body("append", "message_id", content="[Message ID: a b] x"),
    *[
        with_body(name, "context", context=bad)
        for name in CONTEXT_ROUTES
        for bad in [["a"], "a=x", 5, {"a": NESTED_40}]
    ],
    *[with_body(name, f"context.{key}", context={key: "x"}) for name in CONTEXT_ROUTES for key in BAD_CONTEXT_KEYS],
    *[refused("list", 400, f"query string.{key}", query=urlencode({key: "x"})) for key in BAD_CONTEXT_KEYS if key],
    *[
        with_body("delete", "deleted_at", deleted_at=bad)
        for bad in ["soon", 5, "2026-13-01", "", "2026-11-25T12:00:00Z]"]
    ],
    *[with_body("react", "reactions", reactions=bad) for bad in [MISSING, None, 5, ["👍"], "a]", "[", "[a]]", "x\x07"]],
    *[with_body("limit", "limit", limit=value) for value in [MISSING, None, "100", 1.5, True, [60], {"n": 60}]],
    *[
        refused(name, 400, "If-Match", headers={"if-match": value})
        for name in MUTATING_ROUTES
        for value in BAD_IF_MATCH
    ],
    # oversize turns: new, edited, or grown past MAX_TURN_BYTES by a tag
    refused("append", 413, None, body={"role": "user", "content": "x" * MAX_TURN_BYTES}),
    refused(
        "append", 413, None, body={"role": "user", "content": [{"type": "text", "text": "é" * (MAX_TURN_BYTES // 2)}]}
    ),
    refused("edit", 413, None, body={"content": "[Message ID: 1] " + "x" * MAX_TURN_BYTES}),
    refused("react", 413, None, body={"reactions": "👍" * 500}),
    refused("react", 413, None, message="big", body={"reactions": "x"}),
    refused("delete", 413, None, message="big"),
    # a well-formed id that is not in the window
    *[refused(name, 404, None, message="404") for name in MESSAGE_ROUTES],
]


@pytest.mark.parametrize("name", list(routes()))
def test_the_unchanged_calls_succeed(api, name):
    assert routes()[name].send(api).status in (200, 201, 204)


@pytest.mark.parametrize("call, status, field", CASES)
def test_hostile_input_is_refused_and_changes_nothing(api, single_backend, call, status, field):
    before = single_backend.dump()  # the room's turns, version and meta, and the reaper's activity index
    reply = call.send(api)
    assert (reply.status, reply.body.get("error")) == (status, ERRORS[status]), reply.body
    if field is not None:
        assert reply.body["message"].startswith(f"{field}: "), reply.body["message"]
    assert_wire_safe(reply.body)
    assert single_backend.dump() == before


SANDBOX_ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ room_id.__class__ }}",
    "{% raw %}",
    "{{",
]


@pytest.mark.parametrize("value", SANDBOX_ESCAPES)
def test_template_code_in_context_values_is_data(api, value):
    prompt = {"role": "system", "content": f"Room {ROOM} ({value})"}
    listed = api.call("GET", room_path(ROOM, "messages"), query=urlencode({"room_name": value}))
    assert listed.status == 200 and listed.body["messages"][0] == prompt
    body = {"role": "user", "content": "x", "context": {"room_name": value}}
    appended = api.call("POST", room_path(ROOM, "messages"), body)
    assert appended.status == 201 and appended.body["messages"][0] == prompt


# Input that Python's own parsers let through, refused with a 400 rather than a 500, a non-JSON body or a body that
# is not UTF-8.
PARSER_LOOPHOLES = [
    # int() refuses more than 4300 digits (CVE-2020-10735 limit)
    refused("append", 400, "If-Match", headers={"if-match": "9" * 5000}),
    refused("edit", 400, "If-Match", headers={"if-match": '"' + "1" * 4301 + '"'}),
    # 1e999 parses to float('inf'), which would be stored as the non-JSON token Infinity
    refused("append", 400, "content", raw='{"role": "user", "content": [{"type": "text", "text": "x", "n": 1e999}]}'),
    refused("edit", 400, "content", raw='{"content": [{"type": "text", "text": "[Message ID: 1] x", "n": -1e999}]}'),
    # a lone surrogate (valid JSON escape, invalid Unicode) in the context, which the response would echo
    refused("append", 400, "context", raw='{"role": "user", "content": "x", "context": {"room_name": "\\ud800"}}'),
    refused("react", 400, "context", raw='{"reactions": "x", "context": {"a\\udfff": "x"}}'),
]


@pytest.mark.parametrize("call, status, field", PARSER_LOOPHOLES)
def test_parser_loopholes_are_refused_and_change_nothing(api, single_backend, call, status, field):
    test_hostile_input_is_refused_and_changes_nothing(api, single_backend, call, status, field)


@pytest.fixture(scope="module")
def api_without_redis():
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "SYSTEM_PROMPT_TEMPLATE": TEMPLATE}
    return Api({**env, "MAX_TURN_BYTES": str(MAX_TURN_BYTES)})


@pytest.mark.parametrize("call, status, field", [case for case in CASES if case.values[1] == 400])
def test_bad_input_is_refused_before_redis_is_asked(api_without_redis, call, status, field):
    """Nothing listens at the Redis URL: every 400 still answers 400 naming its field, never a 503."""
    reply = call.send(api_without_redis)
    assert (reply.status, reply.body["error"]) == (400, "invalid_request"), reply.body
    assert reply.body["message"].startswith(f"{field}: ")
