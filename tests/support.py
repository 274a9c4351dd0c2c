"""Invoke the functions of template.yaml in-process, exactly as `sam local invoke` would."""

from __future__ import annotations

import itertools
import json
import os
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from local.events import LambdaContext, http_event, match_route
from local.sam_template import http_routes, load_handler, load_template

TEMPLATE = load_template()
ROUTES = http_routes(TEMPLATE)
_fresh = itertools.count()


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict


def load_function(logical_id: str, env: dict[str, str]):
    """A fresh copy of a function's module under `env`, as a cold start with that configuration."""
    properties = TEMPLATE["Resources"][logical_id]["Properties"]
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return load_handler(properties["CodeUri"], properties["Handler"], TEMPLATE, name=f"{logical_id}_{next(_fresh)}")
    finally:
        os.environ.clear()
        os.environ.update(saved)


def context_for(logical_id: str) -> LambdaContext:
    return LambdaContext(logical_id, float(TEMPLATE["Resources"][logical_id]["Properties"].get("Timeout", 10)))


class Api:
    """Calls the API function with payload 2.0 events built like API Gateway's."""

    def __init__(self, env: dict[str, str]):
        self.handler = load_function("ApiFunction", env)
        self.module = __import__("sys").modules[self.handler.__module__]

    # Powertools keeps the current event on its router class, shared by every copy of the handler in a
    # process: like a Lambda instance, a process serves one invocation at a time (processes run in parallel).
    _one_at_a_time = threading.Lock()

    def invoke(self, event: dict) -> Reply:
        with self._one_at_a_time:
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
    ) -> Reply:
        route, parameters = match_route(ROUTES, method, path)
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        all_headers = {"content-type": "application/json", **(headers or {})}
        return self.invoke(http_event(method, route.path, path, parameters, query, all_headers, payload))


def room_path(room_id: str, *rest: str) -> str:
    return "/".join([f"/rooms/{quote(room_id, safe=':')}", *[quote(part, safe="") for part in rest]])
