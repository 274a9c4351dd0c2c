"""The Lambda side of template.yaml, shared by the tests and the local tools.

Reads the template as SAM would (routes, handlers, layers, default environment), builds the payload 2.0 events
API Gateway would send for those routes, and stands in for the Lambda context object. Only what this template
uses: one method and path per route, no greedy {proxy+} or $default routes, no cookies.
"""

from __future__ import annotations

import base64
import importlib.util
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import yaml

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Powertools keeps the current event on its router class, shared by every copy of a handler in a process.
ONE_INVOCATION_AT_A_TIME = threading.Lock()


# --- template.yaml -------------------------------------------------------------------------


class CloudFormationLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short-form tags (!Ref, !If, !Sub, ...) into plain data."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: str | Path = ROOT / "template.yaml") -> dict:
    """Parse a SAM template file, CloudFormation tags included."""
    return yaml.load(Path(path).read_text(), Loader=CloudFormationLoader) or {}


def _resources(template: dict, type_: str) -> dict[str, dict]:
    return {
        name: resource
        for name, resource in (template.get("Resources") or {}).items()
        if isinstance(resource, dict) and resource.get("Type") == type_
    }


def function_properties(template: dict, function: str) -> dict:
    """A function's Properties with Globals.Function filled in under them."""
    merged = dict((template.get("Globals") or {}).get("Function") or {})
    merged.update(_resources(template, "AWS::Serverless::Function")[function].get("Properties") or {})
    return merged


def environment_defaults(template: dict) -> dict[str, str]:
    """Globals' environment as a deployment with default parameters would set it (unset when empty)."""
    variables = (((template.get("Globals") or {}).get("Function") or {}).get("Environment") or {}).get("Variables")
    values = {}
    for name, value in (variables or {}).items():
        value = _default_value(template, value)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value) != "":
            values[name] = str(value)
    return values


_UNKNOWN = object()


def _default_value(template: dict, value: Any) -> Any:
    """A value under default parameters: literals, Ref of a parameter, Fn::If and the conditions it
    names (Fn::Equals/Not/And/Or/Condition); anything else (resource attributes, Fn::Sub...) is unknown."""
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        parameter = (template.get("Parameters") or {}).get(value["Ref"])
        return _UNKNOWN if parameter is None else parameter.get("Default", _UNKNOWN)
    if set(value) == {"Fn::If"}:
        condition, when_true, when_false = value["Fn::If"]
        holds = _default_value(template, {"Condition": condition})
        return _UNKNOWN if holds is _UNKNOWN else _default_value(template, when_true if holds else when_false)
    if set(value) == {"Condition"}:
        return _default_value(template, (template.get("Conditions") or {}).get(value["Condition"], _UNKNOWN))
    operation, arguments = next(iter(value.items())) if len(value) == 1 else (None, None)
    if operation in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or") and isinstance(arguments, list):
        resolved = [_default_value(template, argument) for argument in arguments]
        if any(argument is _UNKNOWN for argument in resolved):
            return _UNKNOWN
        if operation == "Fn::Equals":
            return str(resolved[0]) == str(resolved[1])
        if operation == "Fn::Not":
            return not resolved[0]
        return all(resolved) if operation == "Fn::And" else any(resolved)
    return _UNKNOWN


@dataclass(frozen=True)
class Route:
    """One HttpApi event of a function: METHOD path -> function (logical id)."""

    method: str
    path: str
    function: str


def http_routes(template: dict) -> list[Route]:
    """Every HttpApi event of every function, as Routes."""
    return [
        Route(str(event["Properties"]["Method"]).upper(), event["Properties"]["Path"], name)
        for name in _resources(template, "AWS::Serverless::Function")
        for event in (function_properties(template, name).get("Events") or {}).values()
        if event.get("Type") == "HttpApi"
    ]


def layer_dirs(template: dict, root: Path = ROOT) -> list[Path]:
    """Local directories of every AWS::Serverless::LayerVersion (ContentUri, or its python/ subdirectory)."""
    dirs = []
    for layer in _resources(template, "AWS::Serverless::LayerVersion").values():
        path = (root / layer["Properties"]["ContentUri"]).resolve()
        dirs.append(path / "python" if (path / "python").is_dir() else path)
    return dirs


def use_layers(template: dict, root: Path = ROOT) -> None:
    """Put the layers on sys.path, where Lambda mounts them for the functions (/opt/python)."""
    for directory in reversed(layer_dirs(template, root)):
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))


def load_handler(template: dict, function: str, root: Path = ROOT, name: str | None = None) -> Callable:
    """Import a function's handler module by file path, layers on sys.path first, and return the handler.

    The module is registered as `name` (default: the function's logical id) and reused when already
    imported; another name gives a fresh copy with its own module state, as a second Lambda instance has.
    """
    properties = function_properties(template, function)
    module_path, attribute = properties["Handler"].rsplit(".", 1)
    name = name or function
    use_layers(template, root)
    module = sys.modules.get(name)
    if module is None:
        file = (root / properties["CodeUri"] / (module_path.replace(".", "/") + ".py")).resolve()
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import the handler of {function} from {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return getattr(module, attribute)


# --- routes and events ---------------------------------------------------------------------


class RouteNotFound(LookupError):
    """No route has this path."""


class MethodNotAllowed(LookupError):
    """Routes have this path, but not with this method."""

    def __init__(self, message: str, allowed: Sequence[str]) -> None:
        super().__init__(message)
        self.allowed = sorted(set(allowed))


def match_route(routes: Iterable[Route], method: str, raw_path: str) -> tuple[Route, dict[str, str]]:
    """The route serving METHOD raw_path and its path parameters, still percent-encoded.

    A parameter is one non-empty segment. Raises RouteNotFound when no route has the path,
    MethodNotAllowed when none has the method.
    """
    method = method.upper()
    segments = raw_path.strip("/").split("/")
    allowed = []
    for route in routes:
        parts = route.path.strip("/").split("/")
        if len(parts) != len(segments) or not all(segments):
            continue
        if all(part.startswith("{") or part == segment for part, segment in zip(parts, segments, strict=True)):
            if route.method == method:
                return route, {p[1:-1]: s for p, s in zip(parts, segments, strict=True) if p.startswith("{")}
            allowed.append(route.method)
    if allowed:
        raise MethodNotAllowed(f"{method} is not allowed on {raw_path}", allowed)
    raise RouteNotFound(f"no route for {method} {raw_path}")


def http_event(
    method: str,
    path_template: str,
    raw_path: str,
    path_parameters: Mapping[str, str] | None = None,
    query_string: str = "",
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    body: bytes | str | None = None,
    source_ip: str = "127.0.0.1",
) -> dict:
    """The payload 2.0 event API Gateway would send for this request.

    headers: a mapping or (name, value) pairs; names are lower-cased and repeated ones comma-joined, as are
    repeated query parameters. body: bytes that are not UTF-8 go base64-encoded with isBase64Encoded true.
    """
    method = method.upper()
    route_key = f"{method} {path_template}"
    header_map: dict[str, str] = {}
    for header, value in headers.items() if isinstance(headers, Mapping) else headers or ():
        header = header.lower()
        header_map[header] = f"{header_map[header]},{value}" if header in header_map else str(value)
    header_map.setdefault("x-forwarded-for", source_ip)
    header_map.setdefault("x-forwarded-proto", "http")
    now = datetime.now(UTC)
    host = header_map.get("host", "localhost").split(":")[0]
    event: dict = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": query_string,
        "headers": header_map,
    }
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
        # e.g. 25/Nov/2026:12:00:00 +0000, whatever the locale
        "time": f"{now.day:02d}/{_MONTHS[now.month - 1]}/{now:%Y:%H:%M:%S} +0000",
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


class LambdaContext:
    """Enough of the Lambda context object for the handlers and Powertools' inject_lambda_context."""

    def __init__(self, function_name: str, timeout: float = 3.0, memory_limit_in_mb: int = 128) -> None:
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
    def of(cls, template: dict, function: str) -> LambdaContext:
        """A fresh context for one invocation of a function of the template (its Timeout and MemorySize)."""
        properties = function_properties(template, function)
        return cls(function, float(properties.get("Timeout", 3)), int(properties.get("MemorySize", 128)))

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's timeout."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))
