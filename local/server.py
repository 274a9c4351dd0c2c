"""Serve the HTTP API of template.yaml locally: python -m local.server [--host 127.0.0.1] [--port 3000]."""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from local.events import (
    ONE_INVOCATION_AT_A_TIME,
    LambdaContext,
    MethodNotAllowed,
    RouteNotFound,
    http_event,
    match_route,
)
from local.redis_server import RedisServer
from local.sam_template import ROOT, Route, environment_defaults, http_routes, load_handler, load_template

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway HTTP API's payload limit
NO_BODY_STATUSES = {204, 304}


class FunctionPool:
    """One warm copy of a function's handler. The process serves one invocation at a time, of any function
    (ONE_INVOCATION_AT_A_TIME): Powertools keeps the current event on its router class.
    """

    def __init__(self, route: Route, template: dict, root: Path) -> None:
        self._route = route
        self._template = template
        self._root = root
        self._handler: Callable | None = None

    def invoke(self, event: dict) -> Any:
        """Call the handler with a fresh LambdaContext."""
        with ONE_INVOCATION_AT_A_TIME:
            return self._load()(event, LambdaContext.for_route(self._route))

    def preload(self) -> None:
        """Import the handler now, so import errors show at startup."""
        with ONE_INVOCATION_AT_A_TIME:
            self._load()

    def _load(self) -> Callable:
        if self._handler is None:
            route = self._route
            self._handler = load_handler(route.code_uri, route.handler, self._template, root=self._root)
        return self._handler


class LocalApiServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that routes requests to the template's handlers as API Gateway would."""

    daemon_threads = True
    request_queue_size = 64  # bots open many connections at once

    def __init__(
        self, address: tuple[str, int], routes: Sequence[Route], template: dict, root: Path, log_requests: bool
    ) -> None:
        self.routes = list(routes)
        self.log_requests = log_requests
        self.pools = {route.function: FunctionPool(route, template, root) for route in self.routes}
        super().__init__(address, _RequestHandler)

    @property
    def url(self) -> str:
        """http://host:port of the bound socket."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def preload(self) -> None:
        """Import every function's handler."""
        for pool in self.pools.values():
            pool.preload()


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # keep-alive responses would otherwise wait ~40 ms for the client's ACK
    server: LocalApiServer

    def _serve(self) -> None:
        target = self.path.split("#", 1)[0]
        raw_path, _, query = target.partition("?")
        try:
            body = self._read_body()
        except ValueError as exc:
            self.close_connection = True
            self._send(413, [], {"message": str(exc)})
            return
        try:
            route, params = match_route(self.server.routes, self.command, raw_path)
        except RouteNotFound as exc:
            self._send(404, [], {"error": "route_not_found", "message": str(exc)})
            return
        except MethodNotAllowed as exc:
            allow = [("Allow", ", ".join(exc.allowed))]
            self._send(405, allow, {"error": "method_not_allowed", "message": str(exc)})
            return
        event = http_event(
            self.command,
            route.path,
            raw_path,
            params,
            query,
            self.headers.items(),
            body,
            source_ip=self.client_address[0],
        )
        try:
            result = self.server.pools[route.function].invoke(event)
        except Exception:
            traceback.print_exc()
            self._send(500, [], {"message": "Internal Server Error"})
            return
        self._send_result(result)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_TRACE = do_QUERY = _serve

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():
                pass  # trailers
            body = b"".join(chunks)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                raise ValueError("Request Entity Too Large")
            body = self.rfile.read(length)
        if len(body) > MAX_BODY_BYTES:
            raise ValueError("Request Entity Too Large")
        return body

    def _send_result(self, result: Any) -> None:
        """Write a payload 2.0 response; a value without statusCode is 200 JSON, as API Gateway does."""
        if not (isinstance(result, dict) and "statusCode" in result):
            self._send(200, [], result)
            return
        headers = [(k, str(v)) for k, v in (result.get("headers") or {}).items()]
        seen = {k.lower() for k, _ in headers}
        for name, values in (result.get("multiValueHeaders") or {}).items():
            if name.lower() not in seen:
                headers += [(name, str(v)) for v in values]
        headers += [("Set-Cookie", cookie) for cookie in result.get("cookies") or []]
        body = result.get("body") or ""
        data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
        self._write(int(result["statusCode"]), headers, data)

    def _send(self, status: int, headers: list[tuple[str, str]], payload: Any) -> None:
        data = json.dumps(payload).encode("utf-8")
        self._write(status, [("Content-Type", "application/json"), *headers], data)

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
    host: str = "127.0.0.1",
    port: int = 0,
    routes: Sequence[Route] | None = None,
    template: dict | None = None,
    log_requests: bool = False,
    root: Path = ROOT,
) -> LocalApiServer:
    """Build (not start) the local API server; port 0 picks a free port. Start it with serving(server).

    root is the directory of the template, against which CodeUri and ContentUri are resolved.
    """
    template = load_template(root / "template.yaml") if template is None else template
    routes = http_routes(template) if routes is None else routes
    return LocalApiServer((host, port), routes, template, Path(root), log_requests)


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


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    """Start Redis if REDIS_URL is unset, then serve the API until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m local.server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000, help="0 picks a free port")
    parser.add_argument("--template", default=None, help="SAM template (default: template.yaml)")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _interrupt)
    redis = None
    server = None
    try:
        if not os.environ.get("REDIS_URL"):
            redis = RedisServer().start()
            os.environ["REDIS_URL"] = redis.url
        template_path = Path(args.template).resolve() if args.template else ROOT / "template.yaml"
        template = load_template(template_path)
        for name, value in environment_defaults(template).items():  # what a default deployment sets
            os.environ.setdefault(name, value)
        server = make_server(args.host, args.port, template=template, log_requests=True, root=template_path.parent)
        server.preload()
        print(f"Serving {server.url} (REDIS_URL {_redacted(os.environ['REDIS_URL'])})", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.server_close()
        if redis is not None:
            redis.stop()
    print("Stopped.", file=sys.stderr)


if __name__ == "__main__":
    main()
