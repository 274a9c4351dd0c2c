"""The local tools: throwaway Redis, the Lambda harness (template, routes, events, context), the local server."""

from __future__ import annotations

import base64
import http.client
import json
import re
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from local.lambda_harness import (
    LambdaContext,
    MethodNotAllowed,
    Route,
    RouteNotFound,
    environment_defaults,
    function_properties,
    http_event,
    http_routes,
    layer_dirs,
    load_handler,
    load_template,
    match_route,
)
from local.redis_server import RedisServer
from local.server import make_server, serving

CONTRACT_ROUTES = {
    "POST /rooms/{room_id}/messages",
    "GET /rooms/{room_id}/messages",
    "PATCH /rooms/{room_id}/messages/{message_id}",
    "DELETE /rooms/{room_id}/messages/{message_id}",
    "PUT /rooms/{room_id}/messages/{message_id}/reactions",
    "POST /rooms/{room_id}/batch",
    "POST /rooms/{room_id}/compact",
    "GET /rooms/{room_id}",
    "PUT /rooms/{room_id}/limit",
    "DELETE /rooms/{room_id}/rebackfill",
    "DELETE /rooms/{room_id}",
}
CONTRACT_ENV = {
    "REDIS_URL",
    "REDIS_CLUSTER",
    "KEY_PREFIX",
    "MAX_HISTORY",
    "MAX_TURN_BYTES",
    "MAX_IDLE_SECONDS",
    "SYSTEM_PROMPT_TEMPLATE",
    "SYSTEM_PROMPT_PARAMETER",
    "MEDIA_PART_TOKENS",
}

SMALL_TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  RedisUrl: {Type: String}
Conditions:
  HasVpc: !Not [!Equals [!Join ["", !Ref SubnetIds], ""]]
Globals:
  Function:
    Timeout: 7
    Layers: [!Ref CoreLayer]
    VpcConfig: !If [HasVpc, {SubnetIds: !Ref SubnetIds}, !Ref AWS::NoValue]
    Environment:
      Variables:
        REDIS_URL: !Ref RedisUrl
Resources:
  CoreLayer:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: layer/}
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: echo/
      Handler: app.lambda_handler
      Role: !GetAtt EchoRole.Arn
      Environment:
        Variables:
          GREETING: !Sub "hello ${AWS::Region}"
      Events:
        Post: {Type: HttpApi, Properties: {Path: "/rooms/{room_id}/messages", Method: post}}
        Get: {Type: HttpApi, Properties: {Path: "/rooms/{room_id}/messages", Method: GET}}
        Limit: {Type: HttpApi, Properties: {Path: "/rooms/{room_id}/limit", Method: PUT}}
        Tick: {Type: Schedule, Properties: {Schedule: rate(5 minutes)}}
  TickFunction:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: tick/, Handler: app.lambda_handler, Timeout: 60}
"""

ECHO_APP = """
import json
from core_for_tests import greeting

def lambda_handler(event, context):
    mode = (event.get("queryStringParameters") or {}).get("mode")
    if mode == "boom":
        raise RuntimeError("boom")
    if mode == "empty":
        return {"statusCode": 204, "headers": {"etag": '"1"'}}
    return {"statusCode": 201, "headers": {"content-type": "application/json"},
            "body": json.dumps({"event": event, "remaining": context.get_remaining_time_in_millis(),
                                "function": context.function_name, "greeting": greeting()})}
"""


@pytest.fixture
def small_project(tmp_path: Path):
    """A project root with SMALL_TEMPLATE, a layer module and an echo function."""
    (tmp_path / "template.yaml").write_text(SMALL_TEMPLATE)
    (tmp_path / "layer").mkdir()
    (tmp_path / "layer" / "core_for_tests.py").write_text("def greeting():\n    return 'hi'\n")
    (tmp_path / "echo").mkdir()
    (tmp_path / "echo" / "app.py").write_text(textwrap.dedent(ECHO_APP))
    saved_path = list(sys.path)
    yield tmp_path
    sys.path[:] = saved_path
    for name in [n for n in sys.modules if n.startswith(("EchoFunction", "core_for_tests"))]:
        del sys.modules[name]


# --- RedisServer -------------------------------------------------------------------------


def test_redis_server_starts_answers_and_stops():
    with RedisServer() as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert server.running
        client.close()
    assert not server.running
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url, socket_connect_timeout=0.5).ping()


def test_kill_then_restart_comes_back_empty_on_the_same_port():
    with RedisServer() as server:
        port = server.port
        client = redis.Redis.from_url(server.url, decode_responses=True)
        client.set("room", "data")
        server.kill()
        assert not server.running
        with pytest.raises(redis.ConnectionError):
            client.get("room")
        server.restart()
        assert server.port == port
        assert client.get("room") is None
        client.close()


def test_pause_makes_redis_time_out_until_resume():
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url, socket_timeout=0.3)
        client.ping()
        server.pause()
        try:
            with pytest.raises(redis.TimeoutError):
                client.ping()
        finally:
            server.resume()
        assert redis.Redis.from_url(server.url).ping()


def test_stop_works_on_a_paused_server():
    server = RedisServer().start()
    server.pause()
    started = time.monotonic()
    server.stop()
    assert not server.running
    assert time.monotonic() - started < 5


# --- template reader ---------------------------------------------------------------------


def test_cloudformation_tags_become_plain_data(small_project):
    template = load_template(small_project / "template.yaml")
    props = template["Resources"]["EchoFunction"]["Properties"]
    assert props["Role"] == {"Fn::GetAtt": ["EchoRole", "Arn"]}
    assert props["Environment"]["Variables"]["GREETING"] == {"Fn::Sub": "hello ${AWS::Region}"}
    assert template["Globals"]["Function"]["Layers"] == [{"Ref": "CoreLayer"}]
    assert template["Conditions"]["HasVpc"] == {
        "Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "SubnetIds"}]}, ""]}]
    }
    assert template["Globals"]["Function"]["VpcConfig"]["Fn::If"][2] == {"Ref": "AWS::NoValue"}


def test_routes_and_globals_of_a_small_template(small_project):
    template = load_template(small_project / "template.yaml")
    assert http_routes(template) == [
        Route("POST", "/rooms/{room_id}/messages", "EchoFunction"),
        Route("GET", "/rooms/{room_id}/messages", "EchoFunction"),
        Route("PUT", "/rooms/{room_id}/limit", "EchoFunction"),
    ]
    assert function_properties(template, "EchoFunction")["Timeout"] == 7  # from Globals
    assert function_properties(template, "TickFunction")["Timeout"] == 60  # its own wins
    context = LambdaContext.of(template, "TickFunction")
    assert (context.function_name, context.memory_limit_in_mb) == ("TickFunction", 128)
    assert 59_000 < context.get_remaining_time_in_millis() <= 60_000


def test_the_real_template_serves_every_contract_route():
    template = load_template()
    assert {f"{r.method} {r.path}" for r in http_routes(template)} == CONTRACT_ROUTES
    assert {r.function for r in http_routes(template)} == {"ApiFunction"}
    assert CONTRACT_ENV <= set(template["Globals"]["Function"]["Environment"]["Variables"])
    assert any((d / "room_history" / "__init__.py").is_file() for d in layer_dirs(template))


def test_environment_defaults_are_what_a_default_deployment_sets():
    defaults = environment_defaults(load_template())
    assert defaults["POWERTOOLS_SERVICE_NAME"] == "room-history"
    assert (defaults["MAX_HISTORY"], defaults["KEY_PREFIX"], defaults["REDIS_CLUSTER"]) == (
        "100",
        "sg:conversation",
        "false",
    )
    assert "REDIS_URL" not in defaults and "SYSTEM_PROMPT_TEMPLATE" not in defaults  # no default / empty


def test_load_handler_imports_by_path_with_the_layer_on_sys_path(small_project):
    template = load_template(small_project / "template.yaml")
    handler = load_handler(template, "EchoFunction", root=small_project)
    assert str(small_project / "layer") in sys.path
    assert sys.modules["EchoFunction"].lambda_handler is handler
    assert load_handler(template, "EchoFunction", root=small_project) is handler
    copy = load_handler(template, "EchoFunction", root=small_project, name="EchoFunction_2")
    assert copy is not handler
    reply = handler(http_event("GET", "/x", "/x"), LambdaContext("EchoFunction"))
    assert json.loads(reply["body"])["greeting"] == "hi"


# --- route matching ----------------------------------------------------------------------


@pytest.fixture
def routes(small_project) -> list[Route]:
    return http_routes(load_template(small_project / "template.yaml"))


def test_match_keeps_a_percent_encoded_room_id_raw(routes):
    route, params = match_route(routes, "post", "/rooms/discord%3A1234/messages")
    assert (route.method, route.path) == ("POST", "/rooms/{room_id}/messages")
    assert params == {"room_id": "discord%3A1234"}
    assert match_route(routes, "PUT", "/rooms/a/limit") == (routes[2], {"room_id": "a"})


def test_a_parameter_matches_exactly_one_segment(routes):
    with pytest.raises(RouteNotFound):
        match_route(routes, "GET", "/rooms/a/b/messages")
    with pytest.raises(RouteNotFound):
        match_route(routes, "GET", "/rooms//messages")
    with pytest.raises(RouteNotFound):
        match_route(routes, "GET", "/rooms/a/messages/extra")


def test_unknown_path_and_wrong_method(routes):
    with pytest.raises(RouteNotFound):
        match_route(routes, "GET", "/nowhere")
    with pytest.raises(RouteNotFound):
        match_route(routes, "GET", "/")
    with pytest.raises(MethodNotAllowed) as caught:
        match_route(routes, "DELETE", "/rooms/a/messages")
    assert caught.value.allowed == ["GET", "POST"]


# --- events ------------------------------------------------------------------------------


def test_http_event_has_the_payload_2_0_shape():
    event = http_event(
        "post",
        "/rooms/{room_id}/messages",
        "/rooms/discord%3A1/messages",
        {"room_id": "discord%3A1"},
        "bot_name=Sage&tag=a&tag=b&room_name=the%20room&empty=",
        [
            ("Content-Type", "application/json"),
            ("X-Multi", "1"),
            ("x-multi", "2"),
            ("User-Agent", "demo/1"),
        ],
        b'{"role": "user"}',
    )
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /rooms/{room_id}/messages"
    assert event["rawPath"] == "/rooms/discord%3A1/messages"
    assert event["rawQueryString"] == "bot_name=Sage&tag=a&tag=b&room_name=the%20room&empty="
    assert event["queryStringParameters"] == {"bot_name": "Sage", "tag": "a,b", "room_name": "the room", "empty": ""}
    assert event["headers"]["content-type"] == "application/json"
    assert event["headers"]["x-multi"] == "1,2"
    assert event["pathParameters"] == {"room_id": "discord%3A1"}
    assert event["body"] == '{"role": "user"}'
    assert event["isBase64Encoded"] is False
    ctx = event["requestContext"]
    assert ctx["accountId"] == "123456789012"
    assert ctx["apiId"] == "local"
    assert ctx["stage"] == "$default"
    assert ctx["routeKey"] == event["routeKey"]
    assert ctx["http"] == {
        "method": "POST",
        "path": "/rooms/discord%3A1/messages",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "demo/1",
    }
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000", ctx["time"])
    assert abs(ctx["timeEpoch"] - time.time() * 1000) < 60_000
    parsed = APIGatewayProxyEventV2(event)
    assert parsed.path_parameters == {"room_id": "discord%3A1"}
    assert parsed.request_context.http.method == "POST"
    assert parsed.json_body == {"role": "user"}


def test_http_event_omits_empty_parts():
    event = http_event("GET", "/health", "/health")
    for key in ("queryStringParameters", "pathParameters", "body"):
        assert key not in event
    assert event["rawQueryString"] == ""
    assert event["isBase64Encoded"] is False


def test_http_event_base64_encodes_only_bytes_that_are_not_utf8():
    assert http_event("POST", "/x", "/x", body="héllo".encode())["body"] == "héllo"
    event = http_event("POST", "/x", "/x", body=b"\xff\x00\xfe")
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\x00\xfe"


def test_lambda_context_counts_down_and_suits_powertools_logger():
    context = LambdaContext("ApiFunction", timeout=2, memory_limit_in_mb=512)
    assert 1000 < context.get_remaining_time_in_millis() <= 2000
    assert context.invoked_function_arn.endswith(":function:ApiFunction")
    logger = Logger(service="local-tools-test")

    @logger.inject_lambda_context
    def handler(event, ctx):
        return logger.get_current_keys()["function_request_id"]

    assert handler({}, context) == context.aws_request_id


# --- local server ------------------------------------------------------------------------


@pytest.fixture
def local_api(small_project):
    with serving(make_server("127.0.0.1", 0, root=small_project)) as url:
        yield url


def request(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_server_passes_a_payload_2_0_event_and_writes_the_response(local_api):
    status, headers, body = request(
        f"{local_api}/rooms/discord%3A1/messages?x=1", "POST", b'{"a": 1}', {"Content-Type": "application/json"}
    )
    assert (status, headers["Content-Type"]) == (201, "application/json")
    payload = json.loads(body)
    event = payload["event"]
    assert event["routeKey"] == "POST /rooms/{room_id}/messages"
    assert event["pathParameters"] == {"room_id": "discord%3A1"}
    assert event["queryStringParameters"] == {"x": "1"}
    assert event["body"] == '{"a": 1}'
    assert payload["function"] == "EchoFunction"
    assert 0 < payload["remaining"] <= 7000


def test_server_answers_404_and_405_in_the_contract_error_shape(local_api):
    status, _, body = request(f"{local_api}/nowhere")
    assert (status, json.loads(body)) == (
        404,
        {"error": "route_not_found", "message": "path: no route for GET /nowhere"},
    )
    status, headers, body = request(f"{local_api}/rooms/a/messages", "DELETE")
    assert (status, json.loads(body)["error"], headers["Allow"]) == (405, "method_not_allowed", "GET, POST")
    assert json.loads(body)["message"].startswith("method: ")


def test_server_response_variants(local_api):
    status, headers, body = request(f"{local_api}/rooms/a/messages?mode=empty")
    assert (status, headers["ETag"], body) == (204, '"1"', b"")
    status, _, body = request(f"{local_api}/rooms/a/messages?mode=boom")
    assert (status, json.loads(body)) == (500, {"message": "Internal Server Error"})


def test_server_refuses_a_chunked_body_and_an_oversized_one(local_api):
    connection = http.client.HTTPConnection(local_api.removeprefix("http://"), timeout=5)
    connection.request("POST", "/rooms/a/messages", body=iter([b'{"a": 1}']), encode_chunked=True)
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (411, {"message": "Length Required"})
    connection.close()
    connection = http.client.HTTPConnection(local_api.removeprefix("http://"), timeout=5)
    connection.putrequest("POST", "/rooms/a/messages")
    connection.putheader("Content-Length", str(10 * 1024 * 1024 + 1))
    connection.endheaders()
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (413, {"message": "Request Entity Too Large"})
    connection.close()
