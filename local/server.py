"""Serve the HTTP API of template.yaml on this machine, as API Gateway and Lambda would.

It starts a throwaway redis-server unless REDIS_URL is set. The functions get the environment a deployment with
default parameters has, with the variables you set on top (KEY_PREFIX, MAX_HISTORY, SYSTEM_PROMPT_TEMPLATE...).
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import itertools
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from local.lambda_harness import (
    ONE_INVOCATION_AT_A_TIME,
    ROOT,
    LambdaContext,
    MethodNotAllowed,
    RouteNotFound,
    environment_defaults,
    http_event,
    http_routes,
    load_handler,
    load_template,
    match_route,
    use_layers,
)
from local.redis_server import RedisServer, RedisServerError

_servers = itertools.count(1)
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway HTTP API's payload limit
NO_BODY_STATUSES = {204, 304}
REDIS_PING_SECONDS = 1.0


class StartupError(Exception):
    """The local API cannot start; the message is one line for the user."""


class LocalApiServer(ThreadingHTTPServer):
    """Routes requests to the template's functions as API Gateway would, one invocation at a time."""

    daemon_threads = True
    request_queue_size = 64  # bots open many connections at once

    def __init__(self, address: tuple[str, int], template: dict, root: Path, log_requests: bool) -> None:
        self.template = template
        self.root = root
        self.routes = http_routes(template)
        self.log_requests = log_requests
        super().__init__(address, _RequestHandler)
        # Chosen from the caller's environment when the socket is bound, applied when the functions are imported.
        self.auth_environment, self.auth_note = auth_environment(self.server_address[0], os.environ)
        self.instance = next(_servers)  # this server's functions are Lambda instances of their own

    @property
    def url(self) -> str:
        """http://host:port of the bound socket."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def invoke(self, function: str, event: dict) -> dict:
        """Call the function's warm handler (imported on first use) with a fresh context."""
        with ONE_INVOCATION_AT_A_TIME:
            handler = self._handler(function)
            return handler(event, LambdaContext.of(self.template, function))

    def preload(self) -> None:
        """Import every function's handler now, so that a bad setting shows at start-up."""
        with ONE_INVOCATION_AT_A_TIME:
            for function in {route.function for route in self.routes}:
                self._handler(function)

    def _handler(self, function: str):
        """The function's warm handler; imported on first use with the server's auth mode on top of os.environ."""
        name = f"{function}#{self.instance}"
        if name in sys.modules:
            return load_handler(self.template, function, self.root, name=name)
        saved = {key: os.environ.get(key) for key in self.auth_environment}
        os.environ.update(self.auth_environment)
        try:
            return load_handler(self.template, function, self.root, name=name)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # keep-alive responses would otherwise wait ~40 ms for the client's ACK
    server: LocalApiServer

    def _serve(self) -> None:
        raw_path, _, query = self.path.split("#", 1)[0].partition("?")
        if "Transfer-Encoding" in self.headers:  # chunked bodies: no client of this API sends them
            self.close_connection = True
            self._send(411, [], {"message": "Length Required"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(413, [], {"message": "Request Entity Too Large"})
            return
        body = self.rfile.read(length)
        try:
            route, params = match_route(self.server.routes, self.command, raw_path)
        except RouteNotFound as exc:
            self._send(404, [], {"error": "route_not_found", "message": f"path: {exc}"})
            return
        except MethodNotAllowed as exc:
            allow = [("Allow", ", ".join(exc.allowed))]
            self._send(405, allow, {"error": "method_not_allowed", "message": f"method: {exc}"})
            return
        event = http_event(
            self.command, route.path, raw_path, params, query, self.headers.items(), body, self.client_address[0]
        )
        try:
            result = self.server.invoke(route.function, event)
        except Exception:
            traceback.print_exc()
            self._send(500, [], {"message": "Internal Server Error"})  # API Gateway's body for a failed function
            return
        headers = [(name, str(value)) for name, value in (result.get("headers") or {}).items()]
        self._write(int(result["statusCode"]), headers, (result.get("body") or "").encode("utf-8"))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_TRACE = do_QUERY = _serve

    def _send(self, status: int, headers: list[tuple[str, str]], payload: Any) -> None:
        self._write(status, [("Content-Type", "application/json"), *headers], json.dumps(payload).encode("utf-8"))

    def _write(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        if status in NO_BODY_STATUSES:
            data = b""
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log_requests:
            super().log_message(format, *args)


def make_server(
    host: str = "127.0.0.1", port: int = 0, template: dict | None = None, log_requests: bool = False, root: Path = ROOT
) -> LocalApiServer:
    """Bind (not start) the local API; port 0 picks a free port. Serve it with serving(server).

    root is the directory of the template, against which CodeUri and ContentUri are resolved.
    """
    template = load_template(root / "template.yaml") if template is None else template
    return LocalApiServer((host, port), template, Path(root), log_requests)


@contextmanager
def serving(server: LocalApiServer) -> Iterator[str]:
    """Serve in a background thread; yields the server's URL, then shuts it down and closes its socket."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def auth_environment(host: str, env: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The AUTH_MODE the functions get on this address, and the start-up line that says so.

    On a loopback address only this machine can call, so without frontends or AUTH_MODE it is none; on any
    other address the deployments' default, token, holds (with no frontends every request is then a 401).
    """
    if env.get("AUTH_MODE"):
        return {}, f"auth: AUTH_MODE={env['AUTH_MODE']} (as set)"
    if env.get("AUTH_FRONTENDS") or env.get("AUTH_SECRET_ARN"):
        return {"AUTH_MODE": "token"}, "auth: token; send Authorization: Bearer <token> of a configured frontend"
    try:
        loopback = ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        hint = "set AUTH_FRONTENDS (./dev frontend add) or AUTH_MODE=token to require tokens"
        return {"AUTH_MODE": "none"}, f"auth: none on a loopback address (no credential needed); {hint}"
    hint = "every request is 401 until AUTH_FRONTENDS is set (./dev frontend add)"
    return {"AUTH_MODE": "token"}, f"auth: token on {host}, a non-loopback address; {hint}"


def function_environment(template: dict, redis_url: str | None) -> dict[str, str]:
    """The environment the functions get locally; the one place for local defaults.

    A default deployment's variables, then the local Redis (when this process started one), then every
    variable the caller set to a non-empty value, which wins.
    """
    env = environment_defaults(template)
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update({name: value for name, value in os.environ.items() if value})
    return env


@contextmanager
def running_api(host: str = "127.0.0.1", port: int = 3000, log_requests: bool = False) -> Iterator[LocalApiServer]:
    """The local API, ready to serve: port bound, Redis started unless REDIS_URL is set, the functions'
    environment put in os.environ (they read it at import) and checked, functions imported. On exit the socket
    is closed and Redis stopped, its temporary directory removed.

    Raises StartupError with one line for the user (port in use, malformed setting, no redis-server).
    """
    template = load_template()
    use_layers(template)
    from room_history.settings import Settings, SettingsError  # the layer is on sys.path from here

    try:
        server = make_server(host, port, template, log_requests)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            hint = f"pick another with --port, e.g. --port {port + 1}"
            raise StartupError(f"port {port} on {host} is in use; {hint}") from None
        raise StartupError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    own_redis = None
    try:
        try:
            if not os.environ.get("REDIS_URL"):
                own_redis = RedisServer()
                own_redis.start()
            os.environ.update(function_environment(template, own_redis and own_redis.url))
            settings = Settings.from_env(os.environ)
            if own_redis is None:
                _warn_unless_redis_answers(settings.redis_url)
            server.preload()
        except (SettingsError, RedisServerError) as error:
            raise StartupError(str(error)) from None
        yield server
    finally:
        server.server_close()
        if own_redis is not None:
            own_redis.stop()


def _warn_unless_redis_answers(url: str) -> None:
    """One PING with a short timeout: a Redis that is not there yet is a warning, not a reason not to serve."""
    client = redis.Redis.from_url(url, socket_connect_timeout=REDIS_PING_SECONDS, socket_timeout=REDIS_PING_SECONDS)
    try:
        client.ping()
    except redis.RedisError as error:
        print(
            f"warning: no Redis answers at {redacted(url)} ({error});",
            "serving anyway, the API answers 503 until it does",
            file=sys.stderr,
            flush=True,
        )
    finally:
        client.close()


def redacted(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def stop_on_signals() -> None:
    """Ctrl-C or SIGTERM raises KeyboardInterrupt once; later ones are ignored, so clean-up runs to its end."""

    def interrupt(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C or SIGTERM; 1 when the API cannot start."""
    parser = argparse.ArgumentParser(
        prog="./dev serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3000, help="default: 3000; 0 picks a free port")
    args = parser.parse_args(argv)
    stop_on_signals()
    try:
        with running_api(args.host, args.port, log_requests=True) as server:
            print(f"Serving {server.url} (Redis {redacted(os.environ['REDIS_URL'])}); Ctrl-C stops", flush=True)
            print(server.auth_note, flush=True)
            server.serve_forever()
    except StartupError as error:
        print(f"./dev serve: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    print("Stopped.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
