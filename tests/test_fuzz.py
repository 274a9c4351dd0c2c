"""Schemathesis against the local HTTP server: no 5xx but 503, every response as docs/openapi.yaml says."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.core.failures import ServerError
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from local.server import make_server, serving
from support import IMAGE, Api, room_path

SPEC = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
ROOM = "fuzz:room"
SEEDED = {"1": "[Message ID: 1] hello", "2": [{"type": "text", "text": "[Message ID: 2] look"}, IMAGE]}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
TOOL_EXCHANGE = [  # listed by every message route of the seeded room, with or without a budget
    {"role": "assistant", "content": "[Message ID: 3] checking", "tool_calls": [CALL]},
    {"role": "tool", "content": "12°C", "tool_call_id": "call_1"},
]

# http.server answers TRACE and QUERY itself (501), before any route: those probes test the stand-in, not the API.
ROUTED_METHODS = ["get", "put", "post", "delete", "options", "patch"]
CONFIG = {
    "seed": 20261125,
    "generation": {"mode": "all", "deterministic": True},
    "phases": {"coverage": {"unexpected-methods": ROUTED_METHODS}},
}
schema = schemathesis.openapi.from_path(SPEC, config=schemathesis.Config.from_dict(CONFIG))


@schema.hook
def flatmap_path_parameters(context, parameters):
    """Many cases address the seeded room, so edits, deletes and reactions also reach real turns."""
    if "message_id" in parameters:
        return st.sampled_from([parameters, *({"room_id": ROOM, "message_id": id_} for id_ in SEEDED)])
    return st.sampled_from([parameters, {"room_id": ROOM}])


def not_a_server_error_but_503(ctx, response, case):
    """A 503 is the documented answer of an unavailable Redis; any other 5xx is a bug."""
    if response.status_code >= 500 and response.status_code != 503:
        raise ServerError(operation=case.operation.label, status_code=response.status_code)


CHECKS = [
    not_a_server_error_but_503,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


class Tally:
    """Cases sent (shrinking replays included), operations reached, distinct (operation, failure kind) pairs."""

    def __init__(self):
        self.cases, self.operations, self.failures = 0, set(), set()
        self.fields = {"tool_calls": 0, "tool_call_id": 0, "max_tokens": 0}  # cases sending each new field

    def sent(self, case) -> None:
        body = case.body if isinstance(case.body, dict) else {}
        for field in self.fields:
            self.fields[field] += field in body or field in (case.query or {})

    def failed(self, label: str, error: BaseException) -> None:
        for failure in getattr(error, "exceptions", [error]):
            self.failures.add((label, type(failure).__name__))

    def line(self) -> str:
        fields = ", ".join(f"{count} with {field}" for field, count in self.fields.items())
        return (
            f"fuzz: {self.cases} cases over {len(self.operations)} operations ({fields}), {len(self.failures)} failures"
        )


@pytest.fixture(scope="module")
def tally(request):
    counts = Tally()
    yield counts
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n{counts.line()}", flush=True)


@pytest.fixture(scope="module")
def base_url(redis_server):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REDIS_URL", redis_server.url)
        with serving(make_server("127.0.0.1", 0)) as url:
            yield url


@pytest.fixture
def seeded_room(redis_server, redis_client):
    api = Api({"REDIS_URL": redis_server.url})
    for content in SEEDED.values():
        assert api.call("POST", room_path(ROOM, "messages"), {"role": "user", "content": content}).status == 201
    for turn in TOOL_EXCHANGE:
        assert api.call("POST", room_path(ROOM, "messages"), turn).status == 201
    assert api.call("PUT", room_path(ROOM, "messages", "1", "reactions"), {"reactions": "👍 x1"}).status == 200


@schema.parametrize()
# The seeded room is set up once per operation, not per case: cases may change it, which is fine.
@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_response_matches_the_description(case, base_url, seeded_room, tally):
    tally.cases += 1
    tally.operations.add(case.operation.label)
    tally.sent(case)
    try:
        case.call_and_validate(base_url=base_url, checks=CHECKS)
    except BaseException as error:  # schemathesis' FailureGroup is a BaseExceptionGroup
        tally.failed(case.operation.label, error)
        raise
