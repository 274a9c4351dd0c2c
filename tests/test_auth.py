"""Authentication and room scope (CONTRACT.md), through the API function's handler on a real redis-server:
401 and 403 on every route in token and iam modes, before any Redis command; frontends from AUTH_FRONTENDS or
a Secrets Manager secret (moto) re-read at a bounded rate; the metrics of the API."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from local.lambda_harness import http_event, match_route
from local.redis_server import free_port
from room_history.access import Frontend, matches, parse_frontends, token_sha256
from room_history.errors import AccessMisconfigured
from room_history.history import RoomHistory
from support import (
    DEV_TOKEN,
    DEV_TOKEN_SHA256,
    EVENTS,
    REGION,
    ROUTES,
    Api,
    Clock,
    InterleavingStore,
    SecretsManagerCalls,
    context_for,
    load_event,
    load_function,
    room_path,
)

DISCORD_TOKEN = "discord-bot-token"
ROLE = "arn:aws:sts::123456789012:assumed-role/discord-bot"
FRONTENDS = {
    "frontends": [
        {"name": "local-dev", "token_sha256": DEV_TOKEN_SHA256, "rooms": ["*"]},
        {"name": "discord-bot", "token_sha256": token_sha256(DISCORD_TOKEN), "rooms": ["discord:*", "matrix:!ops"]},
        {"name": "discord-role", "principal": f"{ROLE}/*", "rooms": ["discord:*"]},
        {"name": "admin", "principal": "arn:aws:iam::123456789012:user/admin", "rooms": ["*"]},
    ]
}


def route_calls(room_id: str) -> list[tuple[str, str]]:
    """(method, path) of every route of template.yaml, on `room_id` (message 1 where a route names one)."""
    return [
        (route.method, route.path.replace("{room_id}", room_id.replace("/", "%2F")).replace("{message_id}", "1"))
        for route in ROUTES
    ]


def commands_run(client) -> int:
    """Commands Redis has run (INFO commandstats), not counting the INFO calls that ask."""
    stats = client.info("commandstats")
    return sum(value["calls"] for name, value in stats.items() if name != "cmdstat_info")


def token_api(backend, **env) -> Api:
    return Api({**backend.env, "AUTH_MODE": "token", "AUTH_FRONTENDS": json.dumps(FRONTENDS), **env})


def iam_call(api: Api, method: str, path: str, arn: str | None, body: str | None = None):
    """A request as API Gateway's AWS_IAM authorizer passes it on: the caller's ARN in the request context."""
    route, path_parameters = match_route(ROUTES, method, path)
    event = http_event(method, route.path, path, path_parameters, "", {"content-type": "application/json"}, body)
    if arn is not None:
        event["requestContext"]["authorizer"] = {"iam": {"userArn": arn, "accountId": "123456789012"}}
    return api.invoke(event)


class TestTokenMode:
    def test_every_route_without_a_known_token_is_401_and_sends_nothing_to_redis(self, single_backend):
        api = token_api(single_backend)
        before = commands_run(single_backend.client)
        for method, path in route_calls("discord:1"):
            for token in (None, "", "not-a-token", DEV_TOKEN + "x"):
                reply = api.call(method, path, {"role": "user", "content": "x"}, token=token)
                assert reply.status == 401, (method, path, token, reply.body)
                assert reply.body["error"] == "unauthorized"
                assert reply.body["message"].startswith("Authorization: ")
            for header in ({"authorization": f"Basic {DEV_TOKEN}"}, {"authorization": DEV_TOKEN}):
                assert api.call(method, path, None, header, token=None).status == 401
        assert commands_run(single_backend.client) == before

    def test_every_route_outside_the_rooms_is_403_and_sends_nothing_to_redis(self, single_backend):
        api = token_api(single_backend)
        before = commands_run(single_backend.client)
        for room in ("slack:1", "matrix:!other", "discordx:1", "Discord:1"):
            for method, path in route_calls(room):
                reply = api.call(method, path, {"role": "user", "content": "x"}, token=DISCORD_TOKEN)
                assert reply.status == 403, (method, path, reply.body)
                assert reply.body == {
                    "error": "forbidden",
                    "message": "room_id: is outside the rooms this frontend may use",
                }
        assert commands_run(single_backend.client) == before

    def test_rooms_inside_the_list_are_served(self, backend):
        api = token_api(backend)
        for path in ("/rooms/discord:1/messages", "/rooms/matrix:!ops/messages", "/rooms/discord%3A2/messages"):
            reply = api.call("POST", path, {"role": "user", "content": "hi"}, token=DISCORD_TOKEN)
            assert reply.status == 201, (path, reply.body)
        assert api.call("GET", room_path("discord:1"), token=DISCORD_TOKEN).body["message_count"] == 1

    def test_a_403_says_nothing_about_whether_the_room_exists(self, single_backend):
        api = token_api(single_backend)
        assert (
            api.call("POST", room_path("slack:1", "messages"), {"role": "user", "content": "[Message ID: 1] a"}).status
            == 201
        )
        for method, path in route_calls("slack:1"):
            existing = api.call(method, path, {"content": "b"}, token=DISCORD_TOKEN)
            missing = api.call(method, path.replace("slack:1", "slack:2"), {"content": "b"}, token=DISCORD_TOKEN)
            assert (existing.status, existing.body, existing.headers) == (missing.status, missing.body, missing.headers)
            assert existing.status == 403

    def test_no_frontends_configured_means_every_request_is_401(self, single_backend):
        for env in ({}, {"AUTH_FRONTENDS": json.dumps({"frontends": []})}):
            api = Api({**single_backend.env, "AUTH_MODE": "token", "AUTH_FRONTENDS": "", **env})
            for method, path in route_calls("discord:1"):
                assert api.call(method, path, {}).status == 401

    def test_unknown_routes_need_a_credential_too(self, single_backend):
        api = token_api(single_backend)
        assert api.call("GET", "/rooms/discord:1", token=None).status == 401
        event = {**load_event("get_room.json"), "rawPath": "/nowhere", "routeKey": "$default"}
        event["requestContext"]["http"]["path"] = "/nowhere"
        assert api.invoke(event).status == 404
        event["headers"] = {k: v for k, v in event["headers"].items() if k != "authorization"}
        assert api.invoke(event).status == 401

    @pytest.mark.parametrize(
        "frontends, complaint",
        [
            ("{not json", "AUTH_FRONTENDS: is not valid JSON"),
            ("[]", 'AUTH_FRONTENDS: must be a JSON object {"frontends": [...]}'),
            ('{"frontends": [{"name": "a", "rooms": ["*"]}]}', "AUTH_FRONTENDS: frontends[0] must have exactly one"),
            (
                '{"frontends": [{"name": "a", "token_sha256": "abc", "rooms": ["*"]}]}',
                "AUTH_FRONTENDS: frontends[0].token_sha256",
            ),
            (
                f'{{"frontends": [{{"name": "a", "token_sha256": "{DEV_TOKEN_SHA256}", "rooms": "*"}}]}}',
                "AUTH_FRONTENDS: frontends[0].rooms",
            ),
        ],
    )
    def test_bad_frontends_json_is_a_clear_500(self, single_backend, frontends, complaint):
        api = Api({**single_backend.env, "AUTH_MODE": "token", "AUTH_FRONTENDS": frontends})
        before = commands_run(single_backend.client)
        reply = api.call("GET", room_path("discord:1"))
        assert reply.status == 500 and reply.body["error"] == "auth_misconfigured"
        assert reply.body["message"].startswith(complaint) and "Traceback" not in reply.body["message"]
        assert commands_run(single_backend.client) == before

    def test_mode_none_needs_no_credential(self, single_backend):
        api = Api({**single_backend.env, "AUTH_MODE": "none", "AUTH_FRONTENDS": ""})
        assert (
            api.call("POST", room_path("slack:1", "messages"), {"role": "user", "content": "x"}, token=None).status
            == 201
        )

    def test_logs_never_hold_tokens(self, single_backend, capsys, caplog):
        api = token_api(single_backend, POWERTOOLS_LOG_LEVEL="DEBUG")
        caplog.set_level("DEBUG")
        api.call("POST", room_path("discord:1", "messages"), {"role": "user", "content": "x"}, token=DISCORD_TOKEN)
        api.call("GET", room_path("slack:1"), token=DISCORD_TOKEN)
        api.call("GET", room_path("slack:1"), token="wrong-token-123")
        captured = capsys.readouterr()
        records = [repr(vars(record)) for record in caplog.records]
        assert any("discord:1" in record for record in records)  # the requests were logged, with their fields
        for logged in [captured.out, captured.err, *records]:
            assert DISCORD_TOKEN not in logged and "wrong-token-123" not in logged


class TestIamMode:
    def test_every_route_needs_a_matching_principal(self, single_backend):
        api = token_api(single_backend, AUTH_MODE="iam")
        before = commands_run(single_backend.client)
        for method, path in route_calls("discord:1"):
            for arn in (None, "arn:aws:iam::123456789012:user/someone", ROLE, f"{ROLE}x/session"):
                reply = iam_call(api, method, path, arn)
                assert reply.status == 401 and reply.body["error"] == "unauthorized", (method, path, arn)
            reply = iam_call(api, method, path.replace("discord:1", "slack:1"), f"{ROLE}/session-1")
            assert reply.status == 403 and reply.body["error"] == "forbidden"
        # a token is no credential in iam mode
        assert api.call("GET", room_path("discord:1"), token=DEV_TOKEN).status == 401
        assert commands_run(single_backend.client) == before

    def test_matching_principals_are_served(self, single_backend):
        api = token_api(single_backend, AUTH_MODE="iam")
        body = json.dumps({"role": "user", "content": "hi"})
        assert iam_call(api, "POST", room_path("discord:1", "messages"), f"{ROLE}/session-1", body).status == 201
        assert iam_call(api, "GET", room_path("slack:9"), "arn:aws:iam::123456789012:user/admin").status == 200
        assert iam_call(api, "GET", room_path("discord:1"), "arn:aws:iam::123456789012:user/admin2").status == 401


def test_event_files_need_their_token():
    """Every API event of events/ carries the documented test frontend's token."""
    for path in EVENTS.glob("*.json"):
        event = json.loads(path.read_text())
        if "routeKey" in event:
            assert event["headers"]["authorization"] == f"Bearer {DEV_TOKEN}", path.name


class TestRules:
    def test_room_patterns(self):
        assert matches("*", "anything") and matches("discord:*", "discord:1") and matches("discord:1", "discord:1")
        assert not matches("discord:*", "discord") and not matches("discord:1", "discord:12")
        frontend = Frontend("a", ("discord:*", "matrix:!ops"), token_sha256="0" * 64)
        assert frontend.allows("matrix:!ops") and not frontend.allows("matrix:!ops2")

    def test_parse_names_the_source(self):
        with pytest.raises(AccessMisconfigured, match=r"^AUTH_SECRET_ARN: frontends\[1\].name"):
            parse_frontends({"frontends": [FRONTENDS["frontends"][0], {"rooms": []}]}, "AUTH_SECRET_ARN")
        parsed = parse_frontends(FRONTENDS, "x")
        assert [f.name for f in parsed] == ["local-dev", "discord-bot", "discord-role", "admin"]


# --- frontends in Secrets Manager ---------------------------------------------------------------------


def test_frontends_from_the_secret_refresh_at_a_bounded_rate(single_backend, aws, monkeypatch):
    only_dev = {"frontends": [FRONTENDS["frontends"][0]]}
    arn = aws.create_secret(Name="room-history/frontends", SecretString=json.dumps(only_dev))["ARN"]
    calls = SecretsManagerCalls(monkeypatch)
    api = Api({**single_backend.env, "AUTH_MODE": "token", "AUTH_FRONTENDS": "", "AUTH_SECRET_ARN": arn})
    clock = api.module.access.secret.clock = Clock()

    assert api.call("GET", room_path("discord:1")).status == 200
    assert api.call("GET", room_path("discord:1")).status == 200
    assert calls.calls["GetSecretValue"] == 1  # cached

    assert api.call("GET", room_path("discord:1"), token=DISCORD_TOKEN).status == 401
    assert calls.calls["GetSecretValue"] == 2  # one early re-read for an unknown token
    for _ in range(5):  # bad tokens cannot hammer Secrets Manager
        assert api.call("GET", room_path("discord:1"), token="guess").status == 401
    assert calls.calls["GetSecretValue"] == 2

    aws.put_secret_value(SecretId=arn, SecretString=json.dumps(FRONTENDS))  # an operator adds discord-bot
    assert api.call("GET", room_path("discord:1"), token=DISCORD_TOKEN).status == 401  # within the interval
    clock.now += 5
    assert api.call("GET", room_path("discord:1"), token=DISCORD_TOKEN).status == 200  # seconds later
    assert calls.calls["GetSecretValue"] == 3
    assert api.call("GET", room_path("slack:1"), token=DISCORD_TOKEN).status == 403
    assert calls.calls["GetSecretValue"] == 3


def test_an_unreadable_frontends_secret_is_a_503_naming_it(single_backend, aws):
    arn = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:missing-AbCdEf"
    api = Api({**single_backend.env, "AUTH_MODE": "token", "AUTH_FRONTENDS": "", "AUTH_SECRET_ARN": arn})
    before = commands_run(single_backend.client)
    reply = api.call("GET", room_path("discord:1"))
    assert reply.status == 503 and reply.body["error"] == "auth_unavailable"
    assert reply.body["message"].startswith("AUTH_SECRET_ARN: the frontends secret could not be read")
    aws.create_secret(Name="broken", SecretString="not json")
    api = Api({**single_backend.env, "AUTH_MODE": "token", "AUTH_FRONTENDS": "", "AUTH_SECRET_ARN": "broken"})
    reply = api.call("GET", room_path("discord:1"))
    assert reply.status == 503 and reply.body["message"].startswith("AUTH_SECRET_ARN: the frontends secret does not")
    assert commands_run(single_backend.client) == before


# --- metrics --------------------------------------------------------------------------------------------


def emitted_metrics(capsys) -> Counter:
    """Sum of each metric in the EMF blobs printed since the last call (Powertools prints them to stdout)."""
    totals: Counter = Counter()
    for line in capsys.readouterr().out.splitlines():
        try:
            blob = json.loads(line)
        except ValueError:
            continue
        if not isinstance(blob, dict) or "_aws" not in blob:
            continue
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "RoomHistory"
            for metric in directive["Metrics"]:
                value = blob[metric["Name"]]
                totals[metric["Name"]] += sum(value) if isinstance(value, list) else value
    return totals


def test_metrics(single_backend, capsys):
    api = token_api(single_backend)
    capsys.readouterr()
    post = lambda text, **kw: api.call(
        "POST", room_path("discord:1", "messages"), {"role": "user", "content": text}, **kw
    )  # noqa: E731
    assert post("[Message ID: 1] a").status == 201
    assert post("[Message ID: 1] a").status == 200
    batch = {"turns": [{"role": "user", "content": f"[Message ID: {n}] b"} for n in (1, 2, 3)]}
    assert api.call("POST", room_path("discord:1", "batch"), batch).status == 201
    assert post("x", token="bad").status == 401
    assert api.call("GET", room_path("slack:1"), token=DISCORD_TOKEN).status == 403
    assert api.call("DELETE", room_path("discord:1"), None, {"if-match": "99"}).status == 412
    got = emitted_metrics(capsys)
    assert got["TurnsStored"] == 3 and got["DuplicateAppends"] == 2
    assert got["AuthDenied"] == 2 and got["VersionMismatches"] == 1
    assert got["RedisUnavailable"] == 0 and got["WriteConflicts"] == 0

    real = api.module.room_history()
    busy = InterleavingStore(real.store, lambda: real.append("discord:1", "user", "noise"), times=1000)
    api.module.room_history = lambda: RoomHistory(busy, real.settings, sleep=lambda _: None)
    assert api.call("PATCH", room_path("discord:1", "messages", "1"), {"content": "c"}).status == 409
    got = emitted_metrics(capsys)
    assert got["WriteConflicts"] == 1 and got["CasConflicts"] == 16

    down = Api({"REDIS_URL": f"redis://127.0.0.1:{free_port()}", "REDIS_TIMEOUT_SECONDS": "0.5"})
    capsys.readouterr()
    assert down.call("GET", room_path("discord:1")).status == 503
    got = emitted_metrics(capsys)
    assert got["RedisUnavailable"] == 1


def test_cold_start_metric_once_per_container(single_backend, capsys):
    from aws_lambda_powertools.metrics.provider import cold_start

    cold_start.is_cold_start = True  # as in a fresh container (Powertools keeps it per process)
    api = token_api(single_backend)
    capsys.readouterr()
    api.call("GET", room_path("discord:1"))
    api.call("GET", room_path("discord:1"))
    assert emitted_metrics(capsys)["ColdStart"] == 1


def test_reaper_counts_rooms_reaped(single_backend, capsys):
    api = token_api(single_backend)
    api.call("POST", room_path("discord:1", "messages"), {"role": "user", "content": "x"})
    single_backend.client.hset("sg:conversation:{discord:1}:meta", "active_at", 1)
    single_backend.client.zadd("sg:conversation:activity", {"discord:1": 1})
    reaper = load_function("ReaperFunction", single_backend.env)
    capsys.readouterr()
    assert reaper(load_event("scheduled_reap.json"), context_for("ReaperFunction")) == {"reaped": 1}
    assert emitted_metrics(capsys)["RoomsReaped"] == 1


# --- over real HTTP, through the local server ------------------------------------------------------------


@pytest.fixture
def local_api(redis_server, redis_client, monkeypatch):
    """Start the local server on `host` with the given AUTH_* variables (and no others); yields its URL."""
    from contextlib import ExitStack

    from local.server import make_server, serving

    monkeypatch.setenv("REDIS_URL", redis_server.url)
    with ExitStack() as stack:

        def start(host: str = "127.0.0.1", **env: str):
            for name in ("AUTH_MODE", "AUTH_FRONTENDS", "AUTH_SECRET_ARN"):
                monkeypatch.delenv(name, raising=False)
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            server = make_server(host, 0)
            return server, stack.enter_context(serving(server))

        yield start


def http(url: str, method: str = "GET", body=None, token: str | None = None):
    from test_server import send

    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    status, _, raw = send(url, method, body, headers)
    return status, json.loads(raw) if raw else None


def test_over_http_every_route_answers_401_and_403_before_redis(local_api, redis_client):
    server, url = local_api(AUTH_FRONTENDS=json.dumps(FRONTENDS))
    assert server.auth_note.startswith("auth: token")
    before = commands_run(redis_client)
    for method, path in route_calls("discord:1"):
        status, body = http(url + path, method, {"role": "user", "content": "x"})
        assert (status, body["error"]) == (401, "unauthorized"), (method, path)
        assert http(url + path, method, {}, token="nope")[0] == 401
        status, body = http(url + path.replace("discord:1", "slack:1"), method, {}, token=DISCORD_TOKEN)
        assert (status, body) == (
            403,
            {"error": "forbidden", "message": "room_id: is outside the rooms this frontend may use"},
        )
    assert commands_run(redis_client) == before
    status, body = http(
        url + room_path("discord:1", "messages"), "POST", {"role": "user", "content": "hi"}, DISCORD_TOKEN
    )
    assert status == 201 and body["messages"][-1] == {"role": "user", "content": "hi"}
    assert http(url + room_path("discord:1"), token=DEV_TOKEN)[1]["message_count"] == 1


def test_over_http_iam_mode_without_api_gateway_is_always_401(local_api):
    # The local server checks no SigV4 signature, so no request carries an IAM caller: nobody gets in.
    server, url = local_api(AUTH_MODE="iam", AUTH_FRONTENDS=json.dumps(FRONTENDS))
    assert server.auth_note == "auth: AUTH_MODE=iam (as set)"
    for method, path in route_calls("discord:1"):
        assert http(url + path, method, {}, token=DEV_TOKEN)[0] == 401


def test_local_server_on_loopback_runs_without_credentials_unless_configured(local_api):
    server, url = local_api("127.0.0.1")
    assert server.auth_note.startswith("auth: none on a loopback address")
    assert http(url + room_path("slack:1", "messages"), "POST", {"role": "user", "content": "x"})[0] == 201
    server, url = local_api("127.0.0.1", AUTH_MODE="token")  # asked for: no frontends, so nobody gets in
    assert http(url + room_path("slack:1"), token=DEV_TOKEN)[0] == 401


@pytest.mark.parametrize(
    "host, env, mode",
    [
        ("127.0.0.1", {}, "none"),
        ("::1", {}, "none"),
        ("127.0.0.2", {}, "none"),
        ("0.0.0.0", {}, "token"),
        ("192.168.1.20", {}, "token"),
        ("127.0.0.1", {"AUTH_FRONTENDS": "{}"}, "token"),
        ("127.0.0.1", {"AUTH_SECRET_ARN": "arn"}, "token"),
        ("0.0.0.0", {"AUTH_MODE": "none"}, None),
    ],
)
def test_local_auth_mode_by_address(host, env, mode):
    from local.server import auth_environment

    environment, note = auth_environment(host, env)
    assert environment.get("AUTH_MODE") == mode and note.startswith("auth: ")
    if mode == "token" and not env:
        assert "every request is 401" in note


def test_serve_says_its_auth_mode_at_start_up(tmp_path, redis_server):
    from test_server import ctrl_c_until_exit, start

    process = start(tmp_path, "local.server", "--port", "0", REDIS_URL=redis_server.url)
    try:
        assert process.stdout.readline().startswith("Serving http://127.0.0.1:")
        assert process.stdout.readline().startswith("auth: none on a loopback address (no credential needed); set ")
    finally:
        ctrl_c_until_exit(process)
    process = start(tmp_path, "local.server", "--port", "0", REDIS_URL=redis_server.url, AUTH_FRONTENDS="{}")
    try:
        process.stdout.readline()
        assert process.stdout.readline().startswith("auth: token; send Authorization: Bearer <token>")
    finally:
        ctrl_c_until_exit(process)


def test_demo_sends_a_token_when_given_one(local_api, capsys):
    from local import demo

    _, url = local_api(AUTH_FRONTENDS=json.dumps(FRONTENDS))
    assert demo.main(["--url", url]) == 1 and "expected 201, got 401" in capsys.readouterr().err
    assert demo.main(["--url", url, "--token", DEV_TOKEN]) == 0
