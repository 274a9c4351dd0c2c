"""API Gateway HTTP API (payload format 2.0) events, route matching and a LambdaContext stand-in."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from local.sam_template import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT, Route

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

Headers = Mapping[str, str] | Iterable[tuple[str, str]]

# Powertools keeps the current event on its router class, shared by every copy of a handler in a process.
ONE_INVOCATION_AT_A_TIME = threading.Lock()


class RouteNotFound(LookupError):
    """No route has this path."""


class MethodNotAllowed(LookupError):
    """Routes have this path, but not with this method."""

    def __init__(self, message: str, allowed: Sequence[str]) -> None:
        super().__init__(message)
        self.allowed = sorted(set(allowed))


def _request_time(now: datetime) -> str:
    """API Gateway's requestContext.time, e.g. 25/Nov/2026:12:00:00 +0000 (locale-independent)."""
    return f"{now.day:02d}/{_MONTHS[now.month - 1]}/{now:%Y:%H:%M:%S} +0000"


def _join_headers(headers: Headers | None) -> dict[str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    joined: dict[str, str] = {}
    for name, value in pairs:
        name = name.lower()
        joined[name] = f"{joined[name]},{value}" if name in joined else str(value)
    return joined


def http_event(
    method: str,
    path_template: str,
    raw_path: str,
    path_parameters: Mapping[str, str] | None = None,
    query_string: str = "",
    headers: Headers | None = None,
    body: bytes | str | None = None,
    source_ip: str = "127.0.0.1",
) -> dict:
    """Build the payload 2.0 event API Gateway would send for this request.

    headers: a mapping or (name, value) pairs; repeated names are comma-joined,
    cookie headers become the cookies list. body: bytes that are not UTF-8 are
    sent base64-encoded with isBase64Encoded true.
    """
    method = method.upper()
    route_key = "$default" if path_template == "$default" else f"{method} {path_template}"
    header_map = _join_headers(headers)
    cookie_header = header_map.pop("cookie", "")
    cookies = [c.strip() for c in cookie_header.replace(",", ";").split(";") if c.strip()]
    header_map.setdefault("x-forwarded-for", source_ip)
    header_map.setdefault("x-forwarded-proto", "http")

    now = datetime.now(UTC)
    host = header_map.get("host", "localhost").split(":")[0]
    event: dict = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": query_string,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = header_map
    params: dict[str, str] = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        params[key] = f"{params[key]},{value}" if key in params else value
    if params:
        event["queryStringParameters"] = params
    event["requestContext"] = {
        "accountId": ACCOUNT_ID,
        "apiId": "local",
        "domainName": host,
        "domainPrefix": host.split(".")[0],
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": header_map.get("user-agent", ""),
        },
        "requestId": str(uuid.uuid4()),
        "routeKey": route_key,
        "stage": "$default",
        "time": _request_time(now),
        "timeEpoch": int(now.timestamp() * 1000),
    }
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    is_base64 = False
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            body, is_base64 = base64.b64encode(body).decode("ascii"), True
    if body:
        event["body"] = body
    event["isBase64Encoded"] = is_base64
    return event


def _match_path(template: str, segments: list[str]) -> dict[str, str] | None:
    """Path parameters when the raw path segments fit the template, else None (values stay raw)."""
    parts = template.strip("/").split("/")
    params: dict[str, str] = {}
    for index, part in enumerate(parts):
        if part.startswith("{") and part.endswith("+}"):
            rest = segments[index:]
            if not rest or not all(rest):
                return None
            params[part[1:-2]] = "/".join(rest)
            return params
        if index >= len(segments):
            return None
        if part.startswith("{") and part.endswith("}"):
            if not segments[index]:
                return None
            params[part[1:-1]] = segments[index]
        elif part != segments[index]:
            return None
    return params if len(parts) == len(segments) else None


def _specificity(route: Route) -> tuple[int, int]:
    """Sort key: literal segments first, greedy {proxy+} last (API Gateway's precedence)."""
    parts = route.path.strip("/").split("/")
    literal = sum(not p.startswith("{") for p in parts)
    return (-literal, int(route.path.endswith("+}")))


def match_route(routes: Iterable[Route], method: str, raw_path: str) -> tuple[Route, dict[str, str]]:
    """The route serving METHOD raw_path and its raw (not percent-decoded) path parameters.

    Raises RouteNotFound when no route has the path, MethodNotAllowed when none has the method.
    """
    method = method.upper()
    segments = raw_path.strip("/").split("/") if raw_path.strip("/") else []
    routes = list(routes)
    allowed: list[str] = []
    for route in sorted(routes, key=_specificity):
        if route.path == "$default":
            continue
        params = _match_path(route.path, segments)
        if params is None:
            continue
        if route.method in (method, "ANY"):
            return route, params
        allowed.append(route.method)
    fallback = [r for r in routes if r.path == "$default" and r.method in (method, "ANY")]
    if fallback:
        return fallback[0], {}
    if allowed:
        raise MethodNotAllowed(f"{method} is not allowed on {raw_path}", allowed)
    raise RouteNotFound(f"no route for {method} {raw_path}")


class LambdaContext:
    """Enough of the Lambda context object for handlers and Powertools' inject_lambda_context."""

    def __init__(
        self,
        function_name: str,
        timeout: float = DEFAULT_TIMEOUT,
        memory_limit_in_mb: int = DEFAULT_MEMORY_MB,
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_limit_in_mb
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout

    @classmethod
    def for_route(cls, route: Route) -> LambdaContext:
        """A fresh context for one invocation of the route's function."""
        return cls(route.function, route.timeout, route.memory_mb)

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's timeout."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))
