"""Every route and every error of docs/API.md, through the API function's handler, on real Redis."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

from local.redis_server import free_port
from room_history.history import RoomHistory
from support import IMAGE, Api, InterleavingStore, load_event, room_path, turns, unknown_room_state

ROOM = "discord:1234"
# Every key of the room. A write refused inside Redis (412) may still refresh the room's entry in the reaper's
# activity index, which lives in another slot and is only a hint.
ROOM_KEYS = f"*{{{ROOM}}}*"
PLAIN_TEMPLATE = "Room {{ room_id }}{% if room_name %} ({{ room_name }}){% endif %}"


@pytest.fixture
def api(backend):
    return make_api(backend, SYSTEM_PROMPT_TEMPLATE=PLAIN_TEMPLATE)


def make_api(backend, **env) -> Api:
    return Api({**backend.env, **env})


def post(api, text, room=ROOM, **extra):
    return api.call("POST", room_path(room, "messages"), {"role": "user", "content": text, **extra})


class TestAppend:
    def test_created_then_stored_once(self, api):
        first = post(api, "[Message ID: 1] hi", context={"room_name": "general"})
        assert first.status == 201
        assert first.body == {
            "room_id": ROOM,
            "version": 1,
            "messages": [
                {"role": "system", "content": "Room discord:1234 (general)"},
                {"role": "user", "content": "[Message ID: 1] hi"},
            ],
        }
        again = post(api, "[Message ID: 1] hi", message_id="1")
        assert again.status == 200 and again.body["version"] == 1 and len(turns(again)) == 1
        assert first.headers["Content-Type"] == "application/json"

    def test_percent_encoded_room_id_is_the_same_room(self, api):
        post(api, "a")
        reply = api.call("POST", "/rooms/discord%3A1234/messages", {"role": "assistant", "content": "b"})
        assert reply.status == 201 and reply.body["room_id"] == ROOM and len(turns(reply)) == 2

    def test_multimodal_turn(self, api):
        content = [{"type": "text", "text": "[Message ID: 5] look"}, IMAGE]
        reply = post(api, content)
        assert reply.status == 201 and turns(reply) == [{"role": "user", "content": content}]

    @pytest.mark.parametrize(
        "body, field",
        [
            ({"role": "system", "content": "x"}, "role"),
            ({"content": "x"}, "role"),
            ({"role": "user", "content": ""}, "content"),
            ({"role": "user", "content": []}, "content"),
            ({"role": "user"}, "content"),
            ({"role": "user", "content": 12}, "content"),
            ({"role": "user", "content": "[Message ID: 1] x", "message_id": "2"}, "message_id"),
            ({"role": "user", "content": "no marker", "message_id": "2"}, "message_id"),
            ({"role": "user", "content": "x", "message_id": 2}, "message_id"),
            ({"role": "user", "content": "[Message ID: a b] x"}, "message_id"),
            ({"role": "user", "content": "x", "context": ["a"]}, "context"),
            ({"role": "user", "content": "x", "context": {"__class__": 1}}, "context.__class__"),
        ],
    )
    def test_bad_bodies_are_400_naming_the_field(self, api, backend, body, field):
        assert post(api, "[Message ID: 1] existing").status == 201
        before = backend.dump()
        reply = api.call("POST", room_path(ROOM, "messages"), body)
        assert reply.status == 400
        assert reply.body["error"] == "invalid_request" and reply.body["message"].startswith(field)
        assert backend.dump() == before

    @pytest.mark.parametrize("raw", ["{", "[1, 2]", '"text"', '{"role": NaN}', "[" * 10000 + "]" * 10000])
    def test_malformed_json_is_400(self, api, backend, raw):
        reply = api.call("POST", room_path(ROOM, "messages"), raw=raw)
        assert reply.status == 400 and reply.body["message"].startswith("body")
        assert backend.keys() == []

    @pytest.mark.parametrize("room", ["a b", "{x}", "x" * 300, "bell\x07", "tab\tx"])
    def test_bad_room_ids_are_400(self, api, backend, room):
        reply = post(api, "hi", room=room)
        assert reply.status == 400 and reply.body["message"].startswith("room_id")
        assert backend.keys() == []

    def test_oversize_turn_is_413(self, backend):
        api = make_api(backend, MAX_TURN_BYTES="1000")
        reply = post(api, "x" * 2000)
        assert reply.status == 413 and reply.body["error"] == "turn_too_large"
        assert backend.keys() == []

    def test_if_match(self, api, backend):
        post(api, "[Message ID: 1] a")
        before = backend.dump(ROOM_KEYS)
        stale = api.call(
            "POST", room_path(ROOM, "messages"), {"role": "user", "content": "[Message ID: 2] b"}, {"if-match": "0"}
        )
        assert stale.status == 412 and stale.body["error"] == "version_mismatch" and stale.body["version"] == 1
        assert backend.dump(ROOM_KEYS) == before
        fresh = api.call(
            "POST", room_path(ROOM, "messages"), {"role": "user", "content": "[Message ID: 2] b"}, {"if-match": '"1"'}
        )
        assert fresh.status == 201 and fresh.headers["ETag"] == '"2"'
        # the retry of an append that succeeded answers 200, whatever its If-Match says
        retry = api.call(
            "POST", room_path(ROOM, "messages"), {"role": "user", "content": "[Message ID: 2] b"}, {"if-match": "1"}
        )
        assert retry.status == 200 and retry.body["version"] == 2

    def test_bad_if_match_is_400(self, api, backend):
        reply = api.call("POST", room_path(ROOM, "messages"), {"role": "user", "content": "x"}, {"if-match": "seven"})
        assert reply.status == 400 and reply.body["message"].startswith("If-Match")
        assert backend.keys() == []


class TestList:
    def test_query_string_is_the_context(self, api):
        post(api, "[Message ID: 1] hi")
        reply = api.call("GET", room_path(ROOM, "messages"), query="room_name=lobby")
        assert reply.status == 200
        assert reply.body["messages"][0] == {"role": "system", "content": "Room discord:1234 (lobby)"}
        assert reply.body["version"] == 1

    def test_unknown_room_is_empty(self, api):
        reply = api.call("GET", room_path("discord:9", "messages"))
        assert reply.status == 200 and reply.body == {
            "room_id": "discord:9",
            "version": 0,
            "messages": [{"role": "system", "content": "Room discord:9"}],
        }

    def test_blank_prompt_means_no_system_message(self, backend):
        api = make_api(backend, SYSTEM_PROMPT_TEMPLATE="{% if persona %}{{ persona }}{% endif %}  \n")
        post(api, "hi")
        assert [m["role"] for m in api.call("GET", room_path(ROOM, "messages")).body["messages"]] == ["user"]
        with_persona = api.call("GET", room_path(ROOM, "messages"), query="persona=Sage")
        assert with_persona.body["messages"][0] == {"role": "system", "content": "Sage"}

    def test_default_template_ships_in_the_layer(self, backend):
        api = make_api(backend)
        reply = api.call("GET", room_path(ROOM, "messages"), query="bot_name=Sage")
        (system,) = reply.body["messages"]
        assert system["role"] == "system" and "Sage" in system["content"] and ROOM in system["content"]

    def test_context_values_are_data_not_template_code(self, api):
        reply = api.call("GET", room_path(ROOM, "messages"), query="room_name=%7B%7B+%27%27.__class__.__mro__+%7D%7D")
        assert reply.body["messages"][0]["content"] == "Room discord:1234 ({{ ''.__class__.__mro__ }})"

    def test_room_id_always_wins_over_the_context(self, api):
        reply = api.call("GET", room_path(ROOM, "messages"), query="room_id=evil")
        assert reply.body["messages"][0]["content"] == "Room discord:1234"


class TestTemplateSources:
    @pytest.fixture
    def ssm(self, monkeypatch):
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        with mock_aws():
            parameters.clear_caches()
            parameters.base.DEFAULT_PROVIDERS.clear()
            yield boto3.client("ssm", region_name="us-east-1")
        parameters.clear_caches()
        parameters.base.DEFAULT_PROVIDERS.clear()

    def test_ssm_parameter_is_read_and_cached(self, backend, ssm):
        ssm.put_parameter(Name="/room-history/prompt", Value="From SSM for {{ room_id }}", Type="String")
        api = make_api(backend, SYSTEM_PROMPT_PARAMETER="/room-history/prompt")
        reply = post(api, "hi")
        assert reply.body["messages"][0] == {"role": "system", "content": "From SSM for discord:1234"}
        ssm.put_parameter(Name="/room-history/prompt", Value="changed", Type="String", Overwrite=True)
        again = api.call("GET", room_path(ROOM, "messages"))
        assert again.body["messages"][0]["content"] == "From SSM for discord:1234"  # cached for 5 minutes

    def test_an_edited_ssm_template_is_used_after_five_minutes(self, backend, ssm, monkeypatch):
        ssm.put_parameter(Name="/room-history/prompt", Value="before", Type="String")
        api = make_api(backend, SYSTEM_PROMPT_PARAMETER="/room-history/prompt")
        assert post(api, "hi").body["messages"][0]["content"] == "before"
        ssm.put_parameter(Name="/room-history/prompt", Value="after", Type="String", Overwrite=True)
        started = datetime.now()

        class Later(datetime):  # Powertools' cache compares its expiry with datetime.now()
            @classmethod
            def now(cls, tz=None):
                return started + timedelta(seconds=seconds_later)

        monkeypatch.setattr(parameters.base, "datetime", Later)
        seconds_later = 290
        assert api.call("GET", room_path(ROOM, "messages")).body["messages"][0]["content"] == "before"
        seconds_later = 301
        assert api.call("GET", room_path(ROOM, "messages")).body["messages"][0]["content"] == "after"

    def test_template_variable_wins_over_ssm(self, backend, ssm):
        ssm.put_parameter(Name="/room-history/prompt", Value="From SSM", Type="String")
        api = make_api(backend, SYSTEM_PROMPT_PARAMETER="/room-history/prompt", SYSTEM_PROMPT_TEMPLATE="From env")
        assert post(api, "hi").body["messages"][0]["content"] == "From env"

    def test_missing_parameter_is_503_and_changes_nothing(self, backend, ssm):
        api = make_api(backend, SYSTEM_PROMPT_PARAMETER="/room-history/missing")
        reply = post(api, "hi")
        assert reply.status == 503 and reply.body["error"] == "template_unavailable"
        assert backend.keys() == []

    @pytest.mark.parametrize(
        "template", ["{{ ''.__class__.__mro__[1].__subclasses__() }}", "{% if %}", "{{ 1 + 'a' }}"]
    )
    def test_broken_or_escaping_template_is_500_and_changes_nothing(self, backend, template):
        api = make_api(backend, SYSTEM_PROMPT_TEMPLATE=template)
        reply = post(api, "hi")
        assert reply.status == 500 and reply.body["error"] == "template_error"
        assert "Traceback" not in reply.body["message"]
        assert backend.keys() == []


class TestChangeTurn:
    def test_edit_keeps_media_parts(self, api):
        post(api, [{"type": "text", "text": "[Message ID: 1] cat"}, IMAGE])
        reply = api.call("PATCH", room_path(ROOM, "messages", "1"), {"content": "[Message ID: 1] a cat"})
        assert reply.status == 200 and reply.body["version"] == 2
        assert turns(reply) == [{"role": "user", "content": [{"type": "text", "text": "[Message ID: 1] a cat"}, IMAGE]}]

    def test_list_edit_replaces_exactly(self, api):
        post(api, [{"type": "text", "text": "[Message ID: 1] cat"}, IMAGE])
        new = [{"type": "text", "text": "[Message ID: 1] no picture"}]
        assert turns(api.call("PATCH", room_path(ROOM, "messages", "1"), {"content": new}))[0]["content"] == new

    def test_delete_with_given_and_default_stamp(self, api):
        post(api, "[Message ID: 1] a")
        post(api, "[Message ID: 2] b")
        given = api.call("DELETE", room_path(ROOM, "messages", "1"), {"deleted_at": "2026-11-25T12:00:00+00:00"})
        assert given.status == 200
        assert turns(given)[0]["content"] == "[Message ID: 1] [deleted at 2026-11-25T12:00:00+00:00] a"
        default = api.call("DELETE", room_path(ROOM, "messages", "2"))
        text = turns(default)[1]["content"]
        assert text.startswith("[Message ID: 2] [deleted at ") and text.endswith("Z] b")
        once = api.call("DELETE", room_path(ROOM, "messages", "1"), {"deleted_at": "2030-01-01T00:00:00Z"})
        assert turns(once)[0]["content"] == "[Message ID: 1] [deleted at 2026-11-25T12:00:00+00:00] a"

    def test_reactions_replace_and_empty_removes(self, api):
        post(api, "[Message ID: 1] a")
        api.call("PUT", room_path(ROOM, "messages", "1", "reactions"), {"reactions": "👍 x1"})
        reply = api.call("PUT", room_path(ROOM, "messages", "1", "reactions"), {"reactions": "👍 x2, ❤️ x1"})
        assert turns(reply)[0]["content"] == "[Message ID: 1] [Reactions: 👍 x2, ❤️ x1] a"
        cleared = api.call("PUT", room_path(ROOM, "messages", "1", "reactions"), {"reactions": ""})
        assert turns(cleared)[0]["content"] == "[Message ID: 1] a" and cleared.body["version"] == 4

    @pytest.mark.parametrize(
        "method, rest, body, status, error, field",
        [
            ("PATCH", ["9"], {"content": "x"}, 404, "message_not_found", None),
            ("DELETE", ["9"], None, 404, "message_not_found", None),
            ("PUT", ["9", "reactions"], {"reactions": "x"}, 404, "message_not_found", None),
            ("PATCH", ["1"], {"content": ""}, 400, "invalid_request", "content"),
            ("PATCH", ["1"], {}, 400, "invalid_request", "content"),
            ("PATCH", ["1"], {"content": "[Message ID: 2] other"}, 400, "invalid_request", "content"),
            ("DELETE", ["1"], {"deleted_at": "soon"}, 400, "invalid_request", "deleted_at"),
            ("PUT", ["1", "reactions"], {}, 400, "invalid_request", "reactions"),
            ("PUT", ["1", "reactions"], {"reactions": "a]"}, 400, "invalid_request", "reactions"),
            ("PATCH", ["1]"], {"content": "x"}, 400, "invalid_request", "message_id"),
            ("PATCH", ["x" * 300], {"content": "x"}, 400, "invalid_request", "message_id"),
        ],
    )
    def test_errors_change_nothing(self, api, backend, method, rest, body, status, error, field):
        assert post(api, "[Message ID: 1] a").status == 201
        before = backend.dump()
        reply = api.call(method, room_path(ROOM, "messages", *rest), body)
        assert (reply.status, reply.body["error"]) == (status, error)
        if field:
            assert reply.body["message"].startswith(field)
        assert backend.dump() == before

    def test_if_match_on_edit(self, api, backend):
        post(api, "[Message ID: 1] a")
        before = backend.dump()
        stale = api.call("PATCH", room_path(ROOM, "messages", "1"), {"content": "b"}, {"if-match": "5"})
        assert stale.status == 412 and stale.body["version"] == 1
        assert backend.dump() == before
        assert api.call("PATCH", room_path(ROOM, "messages", "1"), {"content": "b"}, {"if-match": "1"}).status == 200

    def test_conflicts_exhausted_are_409(self, api, backend):
        post(api, "[Message ID: 1] a")
        real = api.module.room_history()
        busy = InterleavingStore(real.store, lambda: real.append(ROOM, "user", "noise"), times=1000)
        api.module.room_history = lambda: RoomHistory(busy, real.settings, sleep=lambda _: None)
        reply = api.call("PATCH", room_path(ROOM, "messages", "1"), {"content": "[Message ID: 1] b"})
        assert reply.status == 409 and reply.body["error"] == "write_conflict"
        assert (
            backend.client.lindex("sg:conversation:{discord:1234}", 0)
            == '{"role":"user","content":"[Message ID: 1] a"}'
        )


class TestRoom:
    def test_state_of_unknown_and_known_rooms(self, api):
        unknown = api.call("GET", room_path("discord:404"))
        assert unknown.status == 200 and unknown.body == unknown_room_state("discord:404")
        post(api, "a")
        api.call("POST", room_path(ROOM, "messages"), {"role": "assistant", "content": "b"})
        state = api.call("GET", room_path(ROOM)).body
        assert (state["version"], state["message_count"], state["last_role"]) == (2, 2, "assistant")
        assert time.time() - _epoch(state["last_activity"]) < 60

    def test_limit_clamps_flags_and_trims(self, api):
        for number in range(60):
            post(api, f"n{number}")
        raised = api.call("PUT", room_path(ROOM, "limit"), {"limit": 5000})
        assert raised.status == 200 and raised.body == {"room_id": ROOM, "limit": 1000, "rebackfill_requested": True}
        lowered = api.call("PUT", room_path(ROOM, "limit"), {"limit": 1})
        assert lowered.body == {"room_id": ROOM, "limit": 50, "rebackfill_requested": True}
        assert len(turns(api.call("GET", room_path(ROOM, "messages")))) == 50
        discarded = api.call("DELETE", room_path(ROOM, "rebackfill"))
        assert discarded.status == 204 and discarded.body is None
        state = api.call("GET", room_path(ROOM)).body
        assert (state["limit"], state["rebackfill_requested"], state["version"]) == (50, False, 63)

    @pytest.mark.parametrize("body", [{}, {"limit": "100"}, {"limit": 1.5}, {"limit": True}])
    def test_bad_limit_is_400(self, api, backend, body):
        reply = api.call("PUT", room_path(ROOM, "limit"), body)
        assert reply.status == 400 and reply.body["message"].startswith("limit")
        assert backend.keys() == []

    def test_clear_keeps_limit_and_grows_version(self, api):
        post(api, "a")
        api.call("PUT", room_path(ROOM, "limit"), {"limit": 70})
        cleared = api.call("DELETE", room_path(ROOM))
        assert cleared.status == 204
        state = api.call("GET", room_path(ROOM)).body
        assert (state["message_count"], state["limit"], state["version"]) == (0, 70, 3)
        assert post(api, "b").body["version"] == 4

    def test_if_match_on_room_routes(self, api, backend):
        post(api, "a")
        before = backend.dump(ROOM_KEYS)
        for method, path, body in [
            ("PUT", room_path(ROOM, "limit"), {"limit": 60}),
            ("DELETE", room_path(ROOM, "rebackfill"), None),
            ("DELETE", room_path(ROOM), None),
        ]:
            reply = api.call(method, path, body, {"if-match": "9"})
            assert reply.status == 412 and reply.body == {
                "error": "version_mismatch",
                "message": reply.body["message"],
                "version": 1,
            }
        assert backend.dump(ROOM_KEYS) == before
        assert api.call("DELETE", room_path(ROOM), None, {"if-match": "1"}).status == 204


def test_unknown_route_is_a_json_404(api):
    event = {**load_event("get_room.json"), "rawPath": "/nowhere", "routeKey": "$default"}
    event["requestContext"]["http"]["path"] = "/nowhere"
    reply = api.invoke(event)
    assert reply.status == 404 and reply.body["error"] == "route_not_found"


CALLS = [
    ("POST", room_path(ROOM, "messages"), {"role": "user", "content": "[Message ID: 1] a"}),
    ("GET", room_path(ROOM, "messages"), None),
    ("PATCH", room_path(ROOM, "messages", "1"), {"content": "b"}),
    ("DELETE", room_path(ROOM, "messages", "1"), None),
    ("PUT", room_path(ROOM, "messages", "1", "reactions"), {"reactions": "x"}),
    ("GET", room_path(ROOM), None),
    ("PUT", room_path(ROOM, "limit"), {"limit": 60}),
    ("DELETE", room_path(ROOM, "rebackfill"), None),
    ("DELETE", room_path(ROOM), None),
]


@pytest.mark.parametrize("cluster", ["false", "true"], ids=["single", "cluster"])
@pytest.mark.parametrize("method, path, body", CALLS)
def test_redis_unreachable_is_503_on_every_route(method, path, body, cluster):
    api = Api({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "REDIS_CLUSTER": cluster})
    started = time.monotonic()
    reply = api.call(method, path, body)
    assert reply.status == 503 and reply.body["error"] == "redis_unavailable"
    assert set(reply.body) == {"error", "message"} and "Traceback" not in reply.body["message"]
    assert time.monotonic() - started < 5


def test_logs_carry_no_message_content(api, caplog):
    caplog.set_level("INFO")
    post(api, "[Message ID: 1] my secret plans", context={"room_name": "general"})
    api.call("PATCH", room_path(ROOM, "messages", "1"), {"content": "[Message ID: 1] more secret plans"})
    formatter = api.module.logger.registered_formatter
    logs = [json.loads(formatter.format(record)) for record in caplog.records]
    assert any(log.get("message") == "turn appended" and log.get("room_id") == ROOM for log in logs)
    assert not any("secret" in json.dumps(log) for log in logs)


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _all_subclasses(kind: type) -> list[type]:
    return [sub for direct in kind.__subclasses__() for sub in (direct, *_all_subclasses(direct))]


def test_every_history_error_is_mapped(api):
    """A new error class nobody mapped would otherwise fall back to a 500."""
    from room_history.errors import HistoryError

    kinds = _all_subclasses(HistoryError)
    unmapped = [kind.__name__ for kind in kinds if api.module.error_status(kind.__new__(kind)) == api.module.UNMAPPED]
    assert len(kinds) >= 8 and unmapped == []


def test_an_unmapped_error_is_a_500_not_an_escape(api, monkeypatch):
    from room_history.errors import HistoryError

    class Surprise(HistoryError):
        pass

    def fail(*args, **kwargs):
        raise Surprise("room_id", "something new")

    monkeypatch.setattr(RoomHistory, "window", fail)
    reply = api.call("GET", room_path(ROOM, "messages"))
    assert reply.status == 500 and reply.body == {"error": "internal_error", "message": "room_id: something new"}


def test_a_subclass_takes_its_parents_status(api, monkeypatch):
    from room_history.errors import InvalidInput

    class Narrower(InvalidInput):
        pass

    def fail(*args, **kwargs):
        raise Narrower("limit", "too odd")

    monkeypatch.setattr(RoomHistory, "set_limit", fail)
    reply = api.call("PUT", room_path(ROOM, "limit"), {"limit": 60})
    assert reply.status == 400 and reply.body["error"] == "invalid_request"


def test_every_error_message_names_its_field_first(api, backend):
    post(api, "[Message ID: 1] a")
    replies = {
        "invalid_request": post(api, ""),
        "message_not_found": api.call("PATCH", room_path(ROOM, "messages", "9"), {"content": "x"}),
        "version_mismatch": api.call("DELETE", room_path(ROOM), None, {"if-match": "7"}),
        "turn_too_large": make_api(backend, MAX_TURN_BYTES="100").call(
            "POST", room_path(ROOM, "messages"), {"role": "user", "content": "x" * 200}
        ),
    }
    event = {**load_event("get_room.json"), "rawPath": "/nowhere", "routeKey": "$default"}
    event["requestContext"]["http"]["path"] = "/nowhere"
    replies["route_not_found"] = api.invoke(event)
    fields = {
        "invalid_request": "content",
        "message_not_found": "message_id",
        "version_mismatch": "If-Match",
        "turn_too_large": "content",
        "route_not_found": "path",
    }
    for code, reply in replies.items():
        assert reply.body["error"] == code
        assert reply.body["message"].startswith(f"{fields[code]}: "), reply.body


def test_a_412_carries_the_current_version_as_its_etag(api):
    post(api, "[Message ID: 1] a")
    stale = api.call("PUT", room_path(ROOM, "messages", "1", "reactions"), {"reactions": "x"}, {"if-match": "0"})
    assert stale.status == 412 and stale.body["version"] == 1 and stale.headers["ETag"] == '"1"'


def test_if_match_star_means_any_current_version(api):
    post(api, "[Message ID: 1] a")
    reply = api.call("PATCH", room_path(ROOM, "messages", "1"), {"content": "[Message ID: 1] b"}, {"if-match": "*"})
    assert reply.status == 200 and reply.body["version"] == 2


def test_room_state_counts_turns_as_the_list_shows_them(api, backend):
    for number in range(8):
        post(api, f"[Message ID: {number}] turn")
    key = f"sg:conversation:{{{ROOM}}}"
    for junk in ("not json", '{"role": "system", "content": "x"}', "[1]", '{"role": "user"}'):
        backend.client.rpush(key, junk)
    listed = turns(api.call("GET", room_path(ROOM, "messages")))
    state = api.call("GET", room_path(ROOM)).body
    assert len(listed) == 8 and state["message_count"] == 8 and state["last_role"] == "user"


@pytest.mark.parametrize(
    "method, rest, body",
    [
        ("PATCH", ("1",), {"content": "x" * 2000}),
        ("PATCH", ("1",), {"content": [{"type": "text", "text": "x" * 2000}]}),
        ("PUT", ("1", "reactions"), {"reactions": "👍" * 600}),
    ],
)
def test_oversized_changes_are_413_before_redis_is_asked(method, rest, body):
    api = Api({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "MAX_TURN_BYTES": "1000"})
    reply = api.call(method, room_path(ROOM, "messages", *rest), body)
    assert reply.status == 413 and reply.body["error"] == "turn_too_large"


def test_unreadable_prompt_parameter_without_a_region_is_503(backend, monkeypatch):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setattr(parameters.base, "DEFAULT_PROVIDERS", {})
    parameters.clear_caches()
    api = make_api(backend, SYSTEM_PROMPT_PARAMETER="/room-history/prompt")
    reply = api.call("POST", room_path(ROOM, "messages"), {"role": "user", "content": "hi"})
    assert reply.status == 503 and reply.body["error"] == "template_unavailable"
    assert backend.keys() == []


class TestConditionalReads:
    @pytest.mark.parametrize("path", [room_path(ROOM, "messages"), room_path(ROOM)])
    @pytest.mark.parametrize("validator", ["1", '"1"', 'W/"1"'])
    def test_a_current_copy_is_304_without_a_body(self, api, path, validator):
        post(api, "[Message ID: 1] a")
        reply = api.call("GET", path, headers={"if-none-match": validator})
        assert reply.status == 304 and reply.body is None and reply.headers["ETag"] == '"1"'

    @pytest.mark.parametrize("path", [room_path(ROOM, "messages"), room_path(ROOM)])
    def test_a_stale_copy_gets_the_room(self, api, path):
        post(api, "[Message ID: 1] a")
        post(api, "[Message ID: 2] b")
        reply = api.call("GET", path, headers={"if-none-match": '"1"'})
        assert reply.status == 200 and reply.body["version"] == 2 and reply.headers["ETag"] == '"2"'

    def test_a_bad_validator_is_400(self, api):
        reply = api.call("GET", room_path(ROOM, "messages"), headers={"if-none-match": "yesterday"})
        assert reply.status == 400 and reply.body["message"].startswith("If-None-Match: ")


def test_a_warm_container_reuses_one_redis_connection(single_backend):
    """The client (and its scripts) is created once per container, not per request."""
    api = make_api(single_backend, SYSTEM_PROMPT_TEMPLATE=PLAIN_TEMPLATE)
    connections = lambda: single_backend.client.info("stats")["total_connections_received"]  # noqa: E731
    before = connections()
    for number in range(5):
        assert post(api, f"[Message ID: {number}] hi").status == 201
        assert api.call("GET", room_path(ROOM)).status == 200
    assert connections() - before == 1
