"""Invoke the functions of template.yaml in-process, exactly as `sam local invoke` would."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import redis

from local.lambda_harness import (
    ONE_INVOCATION_AT_A_TIME,
    ROOT,
    LambdaContext,
    http_event,
    http_routes,
    load_handler,
    load_template,
    match_route,
)
from room_history.store import RoomStore

TEMPLATE = load_template()
ROUTES = http_routes(TEMPLATE)
EVENTS = ROOT / "events"
IMAGE = {"type": "image_url", "image_url": {"url": "https://cdn.example/cat.png"}}
_fresh = itertools.count()
# The documented test frontend (README): events/ carry its token, and the tests' API runs in token mode with it.
DEV_TOKEN = "local-dev-token"
DEV_TOKEN_SHA256 = hashlib.sha256(DEV_TOKEN.encode()).hexdigest()
DEV_FRONTENDS = json.dumps({"frontends": [{"name": "local-dev", "token_sha256": DEV_TOKEN_SHA256, "rooms": ["*"]}]})


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict


def load_function(logical_id: str, env: dict[str, str]):
    """A fresh copy of a function's module under `env`, as a cold start with that configuration."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return load_handler(TEMPLATE, logical_id, name=f"{logical_id}_{next(_fresh)}")
    finally:
        os.environ.clear()
        os.environ.update(saved)


def context_for(logical_id: str) -> LambdaContext:
    return LambdaContext.of(TEMPLATE, logical_id)


class Api:
    """Calls the API function with payload 2.0 events built like API Gateway's."""

    def __init__(self, env: dict[str, str]):
        """Token mode with the test frontend unless `env` says otherwise."""
        self.handler = load_function("ApiFunction", {"AUTH_MODE": "token", "AUTH_FRONTENDS": DEV_FRONTENDS, **env})
        self.module = __import__("sys").modules[self.handler.__module__]

    def invoke(self, event: dict) -> Reply:
        with ONE_INVOCATION_AT_A_TIME:  # like a Lambda instance; processes run in parallel
            response = self.handler(event, context_for("ApiFunction"))
        body = json.loads(response["body"]) if response.get("body") else None
        return Reply(response["statusCode"], body, response.get("headers") or {})

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict | None = None,
        query: str = "",
        raw: str | None = None,
        token: str | None = DEV_TOKEN,
    ) -> Reply:
        """One request, with `Authorization: Bearer <token>` unless token is None."""
        route, parameters = match_route(ROUTES, method, path)
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        credential = {"authorization": f"Bearer {token}"} if token is not None else {}
        all_headers = {"content-type": "application/json", **credential, **(headers or {})}
        return self.invoke(http_event(method, route.path, path, parameters, query, all_headers, payload))


def room_path(room_id: str, *rest: str) -> str:
    return "/".join([f"/rooms/{quote(room_id, safe=':')}", *[quote(part, safe="") for part in rest]])


def turns(reply: Reply) -> list:
    """The stored turns of a message list, without the system prompt."""
    return [message for message in reply.body["messages"] if message["role"] != "system"]


def load_event(name: str) -> dict:
    """An event file of events/, as `sam local invoke -e events/<name>` reads it."""
    return json.loads((EVENTS / name).read_text())


@contextmanager
def counting_round_trips():
    """Counts the requests written to any Redis connection while active (a pipeline is one write)."""
    counter = {"n": 0}
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(connection, command, check_health=True):
        counter["n"] += 1
        return original(connection, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = counting
    try:
        yield counter
    finally:
        redis.connection.AbstractConnection.send_packed_command = original


class InterleavingStore(RoomStore):
    """A real store that lets another writer in right after each read, to lose the race for real."""

    def __init__(self, inner: RoomStore, interloper, times: int):
        super().__init__(inner.client, inner.key_prefix, inner.default_limit)
        self.interloper, self.times = interloper, times

    def read(self, room_id):
        snapshot = super().read(room_id)
        if self.times > 0:
            self.times -= 1
            self.interloper()
        return snapshot


def unknown_room_state(room_id: str) -> dict:
    """GET /rooms/{room_id} of a room that does not exist (or was reaped, or lost with its Redis)."""
    return {
        "room_id": room_id,
        "version": 0,
        "message_count": 0,
        "last_role": None,
        "limit": 100,
        "rebackfill_requested": False,
        "last_activity": None,
        "summary": None,
    }


REGION = "us-east-1"  # of the moto-faked AWS services


class SecretsManagerCalls:
    """Counts the Secrets Manager API calls every boto3 client of this process makes (moto counts none)."""

    def __init__(self, monkeypatch):
        import botocore.client

        self.calls: Counter = Counter()
        real = botocore.client.BaseClient._make_api_call

        def counting(client, operation, params):
            if client.meta.service_model.service_name == "secretsmanager":
                self.calls[operation] += 1
            return real(client, operation, params)

        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counting)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
