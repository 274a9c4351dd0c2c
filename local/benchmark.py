"""Print latency and Redis round trips of each route through the real API handler.

python -m local.benchmark [--requests 500] [--window 100]: starts its own redis-server unless REDIS_URL is set.
Figures, not assertions: the tests prove behaviour, this measures it on the machine at hand.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import ExitStack, contextmanager
from urllib.parse import quote

import redis

from local.lambda_harness import LambdaContext, http_event, http_routes, load_handler, load_template, match_route
from local.redis_server import RedisServer
from local.server import stop_on_signals


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


def main(argv: list[str] | None = None) -> int:
    """Measure every route; 130 on Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="./dev bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=500, help="requests per route")
    parser.add_argument("--window", type=int, default=100, help="turns already in the room")
    args = parser.parse_args(argv)
    stop_on_signals()
    try:
        with ExitStack() as stack:
            if "REDIS_URL" not in os.environ:
                os.environ["REDIS_URL"] = stack.enter_context(RedisServer()).url
            os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
            round_trips = stack.enter_context(counting_round_trips())
            run(args.requests, args.window, round_trips)
    except KeyboardInterrupt:
        return 130
    return 0


def run(requests: int, window: int, round_trips: dict) -> None:
    template = load_template()
    routes = http_routes(template)
    handler = load_handler(template, "ApiFunction")
    room = f"bench:{time.time_ns()}"

    def call(method: str, path: str, body=None) -> int:
        route, parameters = match_route(routes, method, path)
        payload = json.dumps(body) if body is not None else None
        event = http_event(method, route.path, path, parameters, "", {"content-type": "application/json"}, payload)
        return handler(event, LambdaContext.of(template, "ApiFunction"))["statusCode"]

    base = f"/rooms/{quote(room)}"
    call("PUT", f"{base}/limit", {"limit": 1000})
    for number in range(window):
        call("POST", f"{base}/messages", {"role": "user", "content": f"[Message ID: w{number}] {'chat ' * 40}"})
    counter = iter(range(10**9))
    cases = {
        "POST messages (append)": lambda: (
            "POST",
            f"{base}/messages",
            {"role": "user", "content": f"[Message ID: n{next(counter)}] hi"},
        ),
        "POST messages (retry)": lambda: (
            "POST",
            f"{base}/messages",
            {"role": "user", "content": "[Message ID: w1] x"},
        ),
        "GET messages": lambda: ("GET", f"{base}/messages", None),
        "PATCH message": lambda: (
            "PATCH",
            f"{base}/messages/w{window - 1}",
            {"content": f"[Message ID: w{window - 1}] edited"},
        ),
        "PUT reactions": lambda: ("PUT", f"{base}/messages/w{window - 2}/reactions", {"reactions": "👍 x2"}),
        "DELETE message": lambda: ("DELETE", f"{base}/messages/w{window - 3}", {}),
        "GET room": lambda: ("GET", base, None),
        "PUT limit": lambda: ("PUT", f"{base}/limit", {"limit": 1000}),
    }
    print(f"{requests} requests per route, room window {window}+ turns, Redis {os.environ['REDIS_URL']}")
    print(f"{'route':26} {'p50 ms':>8} {'p95 ms':>8} {'round trips':>12}")
    for name, make in cases.items():
        call(*make())  # warm: scripts loaded, template compiled
        timings, before = [], round_trips["n"]
        for _ in range(requests):
            method, path, body = make()
            started = time.perf_counter()
            status = call(method, path, body)
            timings.append((time.perf_counter() - started) * 1000)
            if status >= 300:
                raise SystemExit(f"{name}: unexpected status {status}")
        trips = (round_trips["n"] - before) / requests
        p95 = statistics.quantiles(timings, n=20)[-1]
        print(f"{name:26} {statistics.median(timings):8.2f} {p95:8.2f} {trips:12.1f}")


if __name__ == "__main__":
    sys.exit(main())
