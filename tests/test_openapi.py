"""docs/openapi.yaml describes exactly the routes of template.yaml, with the bodies, statuses and schemas
of docs/API.md."""

from __future__ import annotations

import re
import sys
import unicodedata
from pathlib import Path

import jsonschema_rs
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from room_history import rules
from room_history.errors import InvalidInput
from support import ROUTES, unknown_room_state

SPEC = yaml.safe_load((Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml").read_text())
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
OPERATIONS = {
    (method.upper(), path): operation
    for path, item in SPEC["paths"].items()
    for method, operation in item.items()
    if method in METHODS
}
MESSAGES, MESSAGE = "/rooms/{room_id}/messages", "/rooms/{room_id}/messages/{message_id}"
ROOM = "/rooms/{room_id}"
# (method, path): (documented statuses, request body fields, required body fields or None for an optional body)
CONTRACT = {
    ("POST", MESSAGES): (
        {201, 200, 400, 401, 403, 412, 413, 500, 503},
        {"role", "content", "message_id", "tool_calls", "tool_call_id", "context", "max_tokens"},
        {"role"},  # and content, or tool_calls (anyOf)
    ),
    ("GET", MESSAGES): ({200, 304, 400, 401, 403, 500, 503}, None, None),
    ("POST", ROOM + "/batch"): (
        {201, 200, 400, 401, 403, 412, 413, 500, 503},
        {"turns", "position", "context", "max_tokens"},
        {"turns"},
    ),
    ("POST", ROOM + "/compact"): (
        {200, 400, 401, 403, 404, 412, 413, 500, 503},
        {"through", "summary", "context", "max_tokens"},
        {"through", "summary"},
    ),
    ("PATCH", MESSAGE): (
        {200, 400, 401, 403, 404, 409, 412, 413, 500, 503},
        {"content", "context", "max_tokens"},
        {"content"},
    ),
    ("DELETE", MESSAGE): (
        {200, 400, 401, 403, 404, 409, 412, 413, 500, 503},
        {"deleted_at", "context", "max_tokens"},
        None,
    ),
    ("PUT", MESSAGE + "/reactions"): (
        {200, 400, 401, 403, 404, 409, 412, 413, 500, 503},
        {"reactions", "context", "max_tokens"},
        {"reactions"},
    ),
    ("GET", ROOM): ({200, 304, 400, 401, 403, 503}, None, None),
    ("PUT", ROOM + "/limit"): ({200, 400, 401, 403, 412, 503}, {"limit"}, {"limit"}),
    ("DELETE", ROOM + "/rebackfill"): ({204, 400, 401, 403, 412, 503}, None, None),
    ("DELETE", ROOM): ({204, 400, 401, 403, 412, 503}, None, None),
}
SUCCESS_SCHEMAS = {
    "GET " + ROOM: "RoomState",
    "PUT " + ROOM + "/limit": "LimitResult",
    "POST " + ROOM + "/batch": "BatchList",
}
ERROR_SCHEMAS = {
    400: "InvalidRequestError",
    401: "UnauthorizedError",
    403: "ForbiddenError",
    404: "MessageNotFoundError",
    409: "WriteConflictError",
    412: "VersionMismatchError",
    413: "TurnTooLargeError",
    500: "TemplateError",
    503: "UnavailableError",
}


def deref(node: dict) -> dict:
    """Follow local $refs ("#/components/...") until a concrete node."""
    while "$ref" in node:
        target = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def validator(name: str) -> jsonschema_rs.Draft202012Validator:
    return jsonschema_rs.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]}
    )


def parameters(path: str, method: str) -> list[dict]:
    shared = SPEC["paths"][path].get("parameters", [])
    return [deref(parameter) for parameter in shared + OPERATIONS[(method, path)].get("parameters", [])]


def response_schema(operation: dict, status: int) -> str | None:
    content = deref(operation["responses"][str(status)]).get("content")
    if content is None:
        return None
    assert set(content) == {"application/json"}
    return content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]


def test_operations_are_the_routes_of_the_template():
    assert set(OPERATIONS) == {(route.method, route.path) for route in ROUTES} == set(CONTRACT)


@pytest.mark.parametrize("method, path", list(CONTRACT))
def test_path_parameters_are_the_braces_of_the_path(method, path):
    declared = {p["name"]: p for p in parameters(path, method) if p["in"] == "path"}
    assert set(declared) == set(re.findall(r"{(\w+)}", path))
    assert all(p["required"] for p in declared.values())
    expected = {"room_id": "#/components/schemas/RoomId", "message_id": "#/components/schemas/MessageId"}
    assert {name: p["schema"]["$ref"] for name, p in declared.items()} == {name: expected[name] for name in declared}


@pytest.mark.parametrize("method, path", list(CONTRACT))
def test_if_match_on_every_mutating_route_and_if_none_match_on_reads(method, path):
    headers = [p for p in parameters(path, method) if p["in"] == "header"]
    if method == "GET":
        assert [(p["name"], p["required"]) for p in headers] == [("If-None-Match", False)]
    else:
        assert [(p["name"], p["required"]) for p in headers] == [("If-Match", False)]


@pytest.mark.parametrize("method, path", list(CONTRACT))
def test_request_bodies(method, path):
    _, fields, required = CONTRACT[(method, path)]
    body = OPERATIONS[(method, path)].get("requestBody")
    if fields is None:
        assert body is None
        return
    schema = deref(body["content"]["application/json"]["schema"])
    assert set(schema["properties"]) == fields
    assert set(schema.get("required", [])) == (required or set())
    assert body["required"] is (required is not None)


@pytest.mark.parametrize("method, path", list(CONTRACT))
def test_documented_statuses_and_their_schemas(method, path):
    operation = OPERATIONS[(method, path)]
    statuses = CONTRACT[(method, path)][0]
    assert {int(status) for status in operation["responses"]} == statuses
    for status in statuses:
        if status >= 400:
            assert response_schema(operation, status) == ERROR_SCHEMAS[status]
        elif status in (204, 304):
            assert response_schema(operation, status) is None
        else:
            assert response_schema(operation, status) == SUCCESS_SCHEMAS.get(f"{method} {path}", "MessageList")
        if status < 400:
            assert deref(deref(operation["responses"][str(status)])["headers"]["ETag"])["required"] is True


MESSAGE_LIST = {
    "room_id": "discord:1",
    "version": 7,
    "messages": [
        {"role": "system", "content": "…rendered…"},
        {"role": "user", "content": "[Message ID: 1] hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "[Message ID: 2] look"}, {"type": "image_url"}]},
    ],
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
TOOL_EXCHANGE = [
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "content": "12°C", "tool_call_id": "call_1"},
    {"role": "assistant", "content": "[Message ID: 3] checking", "tool_calls": [CALL]},
]
ROOM_STATE = unknown_room_state("discord:404")
VALID = [
    ("MessageList", MESSAGE_LIST),
    ("MessageList", {"room_id": "discord:1", "version": 0, "messages": []}),
    ("MessageList", {**MESSAGE_LIST, "messages": TOOL_EXCHANGE, "tokens": 40, "truncated": True}),
    ("AppendBody", {"role": "assistant", "tool_calls": [CALL]}),
    ("BatchBody", {"turns": [*TOOL_EXCHANGE, {"role": "user", "content": "hi"}], "max_tokens": 10}),
    ("AppendBody", {"role": "assistant", "content": None, "tool_calls": [CALL], "max_tokens": 500}),
    ("AppendBody", {"role": "tool", "content": "12°C", "tool_call_id": "call_1"}),
    ("AppendBody", {"role": "user", "content": "hi", "max_tokens": None}),
    ("RoomState", {**ROOM_STATE, "last_role": "tool"}),
    ("RoomState", ROOM_STATE),
    (
        "RoomState",
        {
            **ROOM_STATE,
            "version": 3,
            "message_count": 2,
            "last_role": "user",
            "last_activity": "2026-11-25T12:00:00.000Z",
        },
    ),
    ("LimitResult", {"room_id": "discord:1", "limit": 1000, "rebackfill_requested": True}),
    ("InvalidRequestError", {"error": "invalid_request", "message": "role: must be 'user' or 'assistant'"}),
    ("VersionMismatchError", {"error": "version_mismatch", "message": "If-Match names version 0 …", "version": 1}),
    ("UnavailableError", {"error": "redis_unavailable", "message": "Redis is unavailable"}),
    ("UnavailableError", {"error": "template_unavailable", "message": "try again"}),
    ("UnavailableError", {"error": "auth_unavailable", "message": "AUTH_SECRET_ARN: …"}),
    ("UnauthorizedError", {"error": "unauthorized", "message": "Authorization: a Bearer token is required"}),
    ("ForbiddenError", {"error": "forbidden", "message": "room_id: is outside the rooms this frontend may use"}),
]
INVALID = [
    ("MessageList", {"room_id": "discord:1", "messages": []}),
    ("MessageList", {**MESSAGE_LIST, "messages": [{"role": "tool", "content": "x"}]}),
    ("MessageList", {**MESSAGE_LIST, "messages": [{"role": "user", "content": None, "tool_calls": [CALL]}]}),
    ("MessageList", {**MESSAGE_LIST, "messages": [{"role": "assistant", "content": None}]}),
    ("MessageList", {**MESSAGE_LIST, "messages": [{**TOOL_EXCHANGE[1], "tool_calls": [CALL]}]}),
    ("MessageList", {**MESSAGE_LIST, "messages": [{"role": "user", "content": "x", "tool_call_id": "c"}]}),
    ("MessageList", {**MESSAGE_LIST, "tokens": -1}),
    ("AppendBody", {"role": "assistant"}),
    ("AppendBody", {"role": "assistant", "content": None}),
    ("AppendBody", {"role": "assistant", "content": None, "tool_calls": None}),
    ("BatchBody", {"turns": [{"role": "tool", "content": "x", "tool_call_id": ""}]}),
    ("BatchBody", {"turns": [{"role": "assistant", "content": None}]}),
    ("AppendBody", {"role": "assistant", "content": None, "tool_calls": []}),
    ("AppendBody", {"role": "assistant", "tool_calls": [{**CALL, "type": "code"}]}),
    ("AppendBody", {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {}}}]}),
    ("AppendBody", {"role": "user", "content": "hi", "max_tokens": 0}),
    ("EditBody", {"content": "hi", "max_tokens": "10"}),
    ("MessageList", {**MESSAGE_LIST, "messages": [{"role": "user", "content": ""}]}),
    ("MessageList", {**MESSAGE_LIST, "extra": 1}),
    ("RoomState", {**ROOM_STATE, "last_role": "system"}),
    ("RoomState", {key: value for key, value in ROOM_STATE.items() if key != "last_activity"}),
    ("LimitResult", {"room_id": "discord:1", "limit": 5000, "rebackfill_requested": True}),
    ("InvalidRequestError", {"error": "invalid_request"}),
    ("InvalidRequestError", {"error": "turn_too_large", "message": "x"}),
    ("InvalidRequestError", {"error": "invalid_request", "message": "x", "trace": "…"}),
    ("VersionMismatchError", {"error": "version_mismatch", "message": "x"}),
    ("ForbiddenError", {"error": "unauthorized", "message": "x"}),
]


@pytest.mark.parametrize("name, body", VALID)
def test_schemas_accept_the_contract_bodies(name, body):
    validator(name).validate(body)


@pytest.mark.parametrize("name, body", INVALID)
def test_schemas_refuse_broken_bodies(name, body):
    assert not validator(name).is_valid(body)


def test_max_tokens_is_a_reserved_query_parameter_of_the_list():
    (budget,) = [p for p in parameters(MESSAGES, "GET") if p["name"] == "max_tokens"]
    assert budget["in"] == "query" and budget["schema"] == {"$ref": "#/components/schemas/MaxTokens"}
    context = next(p for p in parameters(MESSAGES, "GET") if p["name"] == "context")
    context_schema = jsonschema_rs.Draft202012Validator({**context["schema"], "components": SPEC["components"]})
    assert context_schema.is_valid({"bot_name": "Sage"}) and not context_schema.is_valid({"max_tokens": "5"})


def test_if_match_accepts_what_the_etag_says():
    if_match = jsonschema_rs.Draft202012Validator(SPEC["components"]["parameters"]["IfMatch"]["schema"])
    assert all(if_match.is_valid(value) for value in ["7", '"7"', 'W/"7"'])
    assert not any(if_match.is_valid(value) for value in ["seven", "-1", "", 'W/"x"'])


def _valid_id(field: str, value: str) -> bool:
    try:
        rules.validate_id(field, value)
    except InvalidInput:
        return False
    return True


# Surrogates cannot reach the core through a path: percent-decoding replaces them.
IDS = st.text(st.characters(exclude_categories=["Cs"]), max_size=300) | st.text(max_size=5).map(lambda s: s * 60)


@settings(max_examples=300, deadline=None)
@given(value=IDS | st.sampled_from(["a b", "{x}", "a]", "x" * 256, "x" * 257, "\u3000", "\x85", "\u2028"]))
def test_id_schemas_agree_with_the_core(value):
    assert validator("RoomId").is_valid(value) == _valid_id("room_id", value)
    assert validator("MessageId").is_valid(value) == _valid_id("message_id", value)


def test_no_whitespace_or_control_character_is_missing_from_the_id_pattern():
    refused = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace() or unicodedata.category(chr(c)) == "Cc"]
    assert not any(validator("RoomId").is_valid(f"a{char}b") for char in refused)
