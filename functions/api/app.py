"""HTTP API of the room history: thin adapters from API Gateway (payload 2.0) to the core."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from functools import cache
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from room_history import rules
from room_history.access import Access
from room_history.errors import (
    AccessMisconfigured,
    AccessUnavailable,
    Forbidden,
    HistoryError,
    InvalidInput,
    MessageNotFound,
    StoreUnavailable,
    TemplateFailure,
    TemplateUnavailable,
    TurnTooLarge,
    Unauthenticated,
    VersionMismatch,
    WriteConflict,
)
from room_history.history import RoomHistory, Window
from room_history.prompt import SystemPrompt
from room_history.rows import PlainRow
from room_history.settings import Settings
from room_history.window import max_tokens_from_query, message_list, validate_max_tokens

# Most requests count nothing; Powertools would warn about each of them in the log.
warnings.filterwarnings("ignore", "No application metrics to publish", UserWarning)

logger = Logger()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "RoomHistory")
app = APIGatewayHttpResolver()
settings = Settings.from_env(os.environ)
system_prompt = SystemPrompt(settings)
access = Access(settings)

ERRORS: dict[type[HistoryError], tuple[int, str]] = {
    InvalidInput: (400, "invalid_request"),
    Unauthenticated: (401, "unauthorized"),
    Forbidden: (403, "forbidden"),
    MessageNotFound: (404, "message_not_found"),
    WriteConflict: (409, "write_conflict"),
    VersionMismatch: (412, "version_mismatch"),
    TurnTooLarge: (413, "turn_too_large"),
    StoreUnavailable: (503, "redis_unavailable"),
    TemplateUnavailable: (503, "template_unavailable"),
    TemplateFailure: (500, "template_error"),
    AccessUnavailable: (503, "auth_unavailable"),
    AccessMisconfigured: (500, "auth_misconfigured"),
}
UNMAPPED = (500, "internal_error")
# Errors counted as metrics (names fixed across the project), beside the counts of the routes.
ERROR_METRICS: dict[type[HistoryError], str] = {
    Unauthenticated: "AuthDenied",
    Forbidden: "AuthDenied",
    WriteConflict: "WriteConflicts",
    VersionMismatch: "VersionMismatches",
    StoreUnavailable: "RedisUnavailable",
}


@cache
def room_history() -> RoomHistory:
    """One Redis client per container, created on first use so a Redis outage is a 503, not a failed init."""
    return RoomHistory.open(settings)


def count(name: str, value: int = 1) -> None:
    """Add a Count metric (nothing when zero); flushed as EMF when the invocation ends."""
    if value:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def bearer_token() -> str | None:
    """The token of `Authorization: Bearer <token>` (the scheme is case-insensitive)."""
    scheme, _, token = (app.current_event.headers.get("authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def iam_caller() -> str | None:
    """The caller's ARN, set by API Gateway's AWS_IAM authorizer after it checked the SigV4 signature."""
    context = app.current_event.raw_event.get("requestContext") or {}
    return (((context.get("authorizer") or {}).get("iam") or {}).get("userArn")) or None


def require_access(app: APIGatewayHttpResolver, next_middleware: Callable[..., Response]) -> Response:
    """Every route: 401 without a known credential, then 403 for a room outside the caller's rooms, before
    any core call (so before Redis). The room is the one the route itself receives."""
    frontend = access.authenticate(bearer_token(), iam_caller())
    room_id = app.context.get("_route_args", {}).get("room_id")
    if room_id is not None:
        access.authorize(frontend, unquote(room_id))
    return next_middleware(app)


app.use(middlewares=[require_access])


def error_status(error: HistoryError) -> tuple[int, str]:
    """The status and code of the nearest mapped class in the error's hierarchy; unmapped ones are a 500."""
    return next((ERRORS[kind] for kind in type(error).__mro__ if kind in ERRORS), UNMAPPED)


def json_response(status: int, body: dict[str, Any], version: int | None = None) -> Response:
    headers = {"ETag": f'"{version}"'} if version is not None else None
    return Response(status, content_types.APPLICATION_JSON, json_text(body), headers)


def json_text(body: dict[str, Any]) -> str:
    """The body as JSON; stored rows among the messages are JSON already and go in as they are."""
    messages = body.get("messages")
    if messages is None:
        return json.dumps(body, ensure_ascii=False)
    head = json.dumps({key: value for key, value in body.items() if key != "messages"}, ensure_ascii=False)
    listed = ",".join(m if isinstance(m, PlainRow) else json.dumps(m, ensure_ascii=False) for m in messages)
    return f'{head[:-1]},"messages":[{listed}]}}'


def error_response(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": code, "message": message})


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def request_body() -> dict[str, Any]:
    """The JSON object body; an absent body is an empty object (optional-body routes)."""
    try:
        raw = app.current_event.decoded_body
        if raw is None or raw.strip() == "":
            return {}
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InvalidInput("body", "is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")
    return body


def version_header(name: str) -> int | None:
    """A version precondition: a bare number or an ETag such as "7" or W/"7"; `*` (any version) is none."""
    raw = app.current_event.headers.get(name.lower())
    if raw is None or raw.strip() == "*":
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    if not value.isascii() or not value.isdigit() or len(value) > 19:  # versions are Redis int64 counters
        raise InvalidInput(name, "must be a room version number")
    return int(value)


def if_match() -> int | None:
    """Writes: act only on the version the frontend rendered."""
    return version_header("If-Match")


def if_none_match() -> int | None:
    """Reads: the frontend's copy is current at this version (then 304)."""
    return version_header("If-None-Match")


def path_id(field: str, raw: str) -> str:
    """Path ids arrive as in the URL: discord:1 and discord%3A1 name the same room."""
    return rules.validate_id(field, unquote(raw))


def no_content(version: int) -> Response:
    return Response(204, headers={"ETag": f'"{version}"'})


def not_modified(version: int) -> Response:
    return Response(304, headers={"ETag": f'"{version}"'})


class MessageList:
    """The body of every message route, for one request's room, template context and token budget."""

    def __init__(self, room_id: str, context: Any, max_tokens: int | None, field: str = "context"):
        self.room_id, self.context, self.max_tokens, self.field = room_id, context, max_tokens, field
        # Rendered before any write, so a bad context or a failing template changes nothing.
        self.prompt = system_prompt.render(room_id, context, field)

    @classmethod
    def of_body(cls, room_id: str, body: dict[str, Any]) -> MessageList:
        return cls(room_id, body.get("context"), validate_max_tokens(body.get("max_tokens")))

    @classmethod
    def of_query(cls, room_id: str, query: dict[str, str]) -> MessageList:
        """The query string is the template context, but for max_tokens: reserved, never passed to the template."""
        context = dict(query)
        return cls(room_id, context, max_tokens_from_query(context.pop("max_tokens", None)), "query string")

    def response(self, window: Window, status: int = 200, **counts: int) -> Response:
        """window.message_list of the room's turns: tool pairs whole, and the budget when one was asked for."""
        prompt = self.prompt
        if window.summary is not None:  # the room's summary is known once Redis answered
            prompt = system_prompt.render(self.room_id, self.context, self.field, window.summary)
        listed = message_list(prompt, window.items, self.max_tokens, settings.media_part_tokens)
        body = {"room_id": self.room_id, "version": window.version, "messages": listed.messages, **counts}
        if self.max_tokens is not None:
            body.update(tokens=listed.tokens, truncated=listed.truncated)
        return json_response(status, body, window.version)


@app.post("/rooms/<room_id>/messages")
def append_message(room_id: str) -> Response:
    room_id, body = path_id("room_id", room_id), request_body()
    messages = MessageList.of_body(room_id, body)
    window, stored = room_history().append(
        room_id,
        body.get("role"),
        body.get("content"),
        body.get("message_id"),
        if_match(),
        tool_calls=body.get("tool_calls"),
        tool_call_id=body.get("tool_call_id"),
    )
    count("TurnsStored" if stored else "DuplicateAppends")
    logger.info("turn appended" if stored else "turn already stored", room_id=room_id, version=window.version)
    return messages.response(window, 201 if stored else 200)


@app.get("/rooms/<room_id>/messages")
def list_messages(room_id: str) -> Response:
    room_id, known = path_id("room_id", room_id), if_none_match()
    messages = MessageList.of_query(room_id, app.current_event.query_string_parameters or {})
    window = room_history().window(room_id, known)
    return not_modified(known) if window is None else messages.response(window)


@app.post("/rooms/<room_id>/batch")
def append_batch(room_id: str) -> Response:
    room_id, body = path_id("room_id", room_id), request_body()
    messages = MessageList.of_body(room_id, body)
    window, counts = room_history().append_batch(room_id, body.get("turns"), body.get("position"), if_match())
    count("TurnsStored", counts.stored)
    count("DuplicateAppends", counts.duplicates)
    logger.info("batch stored", room_id=room_id, version=window.version, **vars(counts))
    return messages.response(window, 201 if counts.stored else 200, **vars(counts))


@app.post("/rooms/<room_id>/compact")
def compact_room(room_id: str) -> Response:
    room_id, body = path_id("room_id", room_id), request_body()
    messages = MessageList.of_body(room_id, body)
    window = room_history().compact(room_id, body.get("through"), body.get("summary"), if_match())
    logger.info("room compacted", room_id=room_id, version=window.version)
    return messages.response(window)


def change_message(room_id: str, message_id: str, operation: Callable[..., Window], field: str, done: str) -> Response:
    """Edit, delete and reactions: the same request shape, one RoomHistory operation each."""
    room_id, message_id, body = path_id("room_id", room_id), path_id("message_id", message_id), request_body()
    messages = MessageList.of_body(room_id, body)
    history = room_history()
    conflicts = history.conflicts
    try:
        window = operation(history, room_id, message_id, body.get(field), if_match())
    finally:  # compare-and-set races this request lost (retried, or ending in a 409)
        count("CasConflicts", history.conflicts - conflicts)
    logger.info(done, room_id=room_id, message_id=message_id, version=window.version)
    return messages.response(window)


@app.patch("/rooms/<room_id>/messages/<message_id>")
def edit_message(room_id: str, message_id: str) -> Response:
    return change_message(room_id, message_id, RoomHistory.edit, "content", "turn edited")


@app.delete("/rooms/<room_id>/messages/<message_id>")
def delete_message(room_id: str, message_id: str) -> Response:
    return change_message(room_id, message_id, RoomHistory.delete, "deleted_at", "turn marked deleted")


@app.put("/rooms/<room_id>/messages/<message_id>/reactions")
def set_reactions(room_id: str, message_id: str) -> Response:
    return change_message(room_id, message_id, RoomHistory.react, "reactions", "reactions set")


@app.get("/rooms/<room_id>")
def get_room(room_id: str) -> Response:
    room_id, known = path_id("room_id", room_id), if_none_match()
    state = room_history().state(room_id, known)
    if state is None:
        return not_modified(known)
    body = {
        "room_id": room_id,
        "version": state.version,
        "message_count": state.message_count,
        "last_role": state.last_role,
        "limit": state.limit,
        "rebackfill_requested": state.rebackfill_requested,
        "last_activity": state.last_activity,
        "summary": state.summary,
    }
    return json_response(200, body, state.version)


@app.put("/rooms/<room_id>/limit")
def set_limit(room_id: str) -> Response:
    room_id, body = path_id("room_id", room_id), request_body()
    version, limit, rebackfill = room_history().set_limit(room_id, body.get("limit"), if_match())
    logger.info("limit set", room_id=room_id, limit=limit, version=version)
    return json_response(200, {"room_id": room_id, "limit": limit, "rebackfill_requested": rebackfill}, version)


@app.delete("/rooms/<room_id>/rebackfill")
def discard_rebackfill(room_id: str) -> Response:
    room_id = path_id("room_id", room_id)
    version = room_history().discard_rebackfill(room_id, if_match())
    logger.info("rebackfill discarded", room_id=room_id, version=version)
    return no_content(version)


@app.delete("/rooms/<room_id>")
def clear_room(room_id: str) -> Response:
    room_id = path_id("room_id", room_id)
    version = room_history().clear(room_id, if_match())
    logger.info("room cleared", room_id=room_id, version=version)
    return no_content(version)


@app.exception_handler(HistoryError)
def history_error(error: HistoryError) -> Response:
    status, code = error_status(error)
    metric = next((ERROR_METRICS[kind] for kind in type(error).__mro__ if kind in ERROR_METRICS), None)
    if metric:
        count(metric)
    if status >= 500:
        logger.warning("request failed", error=code, reason=str(error))
    body = {"error": code, "message": str(error), **error.details}
    return json_response(status, body, body.get("version"))  # a 412 carries the current version as its ETag


@app.not_found
def route_not_found(_: Exception) -> Response:
    event = app.current_event
    try:  # an unknown route tells nothing to a caller without a credential either
        access.authenticate(bearer_token(), iam_caller())
    except HistoryError as error:
        return history_error(error)
    return error_response(404, "route_not_found", f"path: no route for {event.http_method} {event.path}")


@app.exception_handler(Exception)
def unexpected_error(error: Exception) -> Response:
    logger.exception("unexpected error")
    return error_response(500, "internal_error", "request: failed unexpectedly; nothing was changed")


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
