"""The implementations compared: this service's API handler, a bare redis-py loop, and two peer libraries.

Each keeps one room of `turns` turns and offers the routes it has as methods (read, append, edit, state).
Every method does what a bot pays for one call and returns nothing; `settle` runs after a call,
untimed, for the peers that keep no window of their own (their list would otherwise grow without end).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import time
from collections import deque
from urllib.parse import quote

import redis

from local.lambda_harness import (
    LambdaContext,
    environment_defaults,
    http_event,
    http_routes,
    load_handler,
    load_template,
    match_route,
)

TEMPLATE = load_template()
ROUTES = http_routes(TEMPLATE)
_fresh = itertools.count()


def chat_text(message_id: str) -> str:
    """A turn of ~220 bytes, as a bot frontend would send it."""
    return f"[Message ID: {message_id}] alice: " + "chat " * 40


# Timed as deployed: token mode, every call authenticated (EMF metrics off: their lines would go to stdout).
BENCH_TOKEN = "bench-token"
BENCH_FRONTEND = {"name": "bench", "token_sha256": hashlib.sha256(BENCH_TOKEN.encode()).hexdigest(), "rooms": ["*"]}
BENCH_AUTH = {
    "AUTH_MODE": "token",
    "AUTH_FRONTENDS": json.dumps({"frontends": [BENCH_FRONTEND]}),
    "POWERTOOLS_METRICS_DISABLED": "true",
}


class Ours:
    """The API function in process, called as the Lambda runtime calls it.

    Timed: json.loads of the event as the runtime receives it, the handler (logging as deployed, at INFO,
    into /dev/null), json.dumps of the response as the runtime sends it back. The client's building of
    the event is not timed.
    """

    name = "this service"
    routes = ("read", "append", "edit", "state", "budget", "batch", "compact")
    keeps_window = True

    def __init__(self, url: str, turns: int, room: str):
        env = {**environment_defaults(TEMPLATE), "REDIS_URL": url, "MAX_HISTORY": str(turns), **BENCH_AUTH}
        saved_env, saved_stdout = dict(os.environ), sys.stdout
        os.environ.update(env)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- Powertools' log handler keeps this stream
        try:
            self.handler = load_handler(TEMPLATE, "ApiFunction", name=f"bench_api_{next(_fresh)}")
        finally:
            sys.stdout = saved_stdout
            os.environ.clear()
            os.environ.update(saved_env)
        self.module = sys.modules[self.handler.__module__]
        self.room, self.turns = room, turns
        self.base = f"/rooms/{quote(room, safe=':')}"
        self.counter = itertools.count()
        self.last_id: str | None = None
        self.window_ids: deque[str] = deque(maxlen=turns)  # the ids in the room's window, oldest first

    def prefill(self) -> None:
        for number in range(self.turns):
            self.last_id = f"w{number}"
            self.window_ids.append(self.last_id)
            self._call("POST", f"{self.base}/messages", {"role": "user", "content": chat_text(self.last_id)})

    def _event(self, method: str, path: str, body=None, query: str = "") -> str:
        route, parameters = match_route(ROUTES, method, path)
        payload = json.dumps(body) if body is not None else None
        headers = {"content-type": "application/json", "authorization": f"Bearer {BENCH_TOKEN}"}
        return json.dumps(http_event(method, route.path, path, parameters, query, headers, payload))

    def _invoke(self, event: str) -> str:
        response = self.handler(json.loads(event), LambdaContext("ApiFunction"))
        if response["statusCode"] >= 300:
            raise RuntimeError(f"{response['statusCode']}: {response.get('body')}")
        return json.dumps(response)

    def _call(self, method: str, path: str, body=None, query: str = "") -> str:
        return self._invoke(self._event(method, path, body, query))

    def status(self, method: str, path: str, body=None) -> int:
        """One call that may fail (the contention run counts 409s)."""
        return self.handler(json.loads(self._event(method, path, body)), LambdaContext("ApiFunction"))["statusCode"]

    # Each route: build the event untimed, return the timed call.
    def read(self):
        event = self._event("GET", f"{self.base}/messages", query="bot_name=Sage&room_name=general")
        return lambda: self._invoke(event)

    def append(self):
        self.last_id = f"n{next(self.counter)}"
        self.window_ids.append(self.last_id)
        event = self._event("POST", f"{self.base}/messages", {"role": "user", "content": chat_text(self.last_id)})
        return lambda: self._invoke(event)

    def edit(self):
        body = {"content": chat_text(self.last_id) + " (edited)"}
        event = self._event("PATCH", f"{self.base}/messages/{self.last_id}", body)
        return lambda: self._invoke(event)

    def state(self):
        event = self._event("GET", self.base)
        return lambda: self._invoke(event)

    def budget(self):
        event = self._event("GET", f"{self.base}/messages", query="bot_name=Sage&max_tokens=4000")
        return lambda: self._invoke(event)

    def batch(self):
        ids = [f"b{next(self.counter)}" for _ in range(5)]
        self.window_ids.extend(ids)
        turns = [{"role": "user", "content": chat_text(message_id)} for message_id in ids]
        event = self._event("POST", f"{self.base}/batch", {"turns": turns})
        return lambda: self._invoke(event)

    def compact(self):
        through = self.window_ids.popleft()
        event = self._event("POST", f"{self.base}/compact", {"through": through, "summary": "Earlier: " + "chat " * 40})
        return lambda: self._invoke(event)

    def settle(self, admin: redis.Redis, keep: int | None = None) -> None:
        pass

    def conflicts(self) -> int:
        return self.module.room_history().conflicts


class BareLoop:
    """Only the necessary work: one pipeline (RPUSH, LTRIM, INCR, LRANGE) or (GET, LRANGE), json.loads of
    every row, json.dumps of the response."""

    name = "bare redis-py"
    routes = ("read", "append")
    keeps_window = True

    def __init__(self, url: str, turns: int, room: str):
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.key, self.version_key, self.turns = f"bare:{{{room}}}", f"bare:{{{room}}}:ver", turns
        self.room = room
        self.counter = itertools.count()

    def prefill(self) -> None:
        rows = [
            json.dumps({"role": "user", "content": chat_text(f"w{n}")}, separators=(",", ":"))
            for n in range(self.turns)
        ]
        self.client.rpush(self.key, *rows)

    def _respond(self, version, rows) -> str:
        return json.dumps(
            {"room_id": self.room, "version": int(version or 0), "messages": [json.loads(row) for row in rows]},
            ensure_ascii=False,
        )

    def read(self):
        def call():
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self.version_key)
            pipe.lrange(self.key, -self.turns, -1)
            return self._respond(*pipe.execute())

        return call

    def append(self):
        turn = {"role": "user", "content": chat_text(f"n{next(self.counter)}")}

        def call():
            row = json.dumps(turn, ensure_ascii=False, separators=(",", ":"))
            pipe = self.client.pipeline(transaction=False)
            pipe.rpush(self.key, row)
            pipe.ltrim(self.key, -self.turns, -1)
            pipe.incr(self.version_key)
            pipe.lrange(self.key, 0, -1)
            _, _, version, rows = pipe.execute()
            return self._respond(version, rows)

        return call

    def settle(self, admin: redis.Redis, keep: int | None = None) -> None:
        pass


class LangChain:
    """langchain-community's RedisChatMessageHistory: LPUSH per message, the whole list read back.

    It keeps no window; `settle` trims its list back to `turns` after each timed append (untimed)."""

    name = "langchain-community"
    routes = ("read", "append")
    keeps_window = False

    def __init__(self, url: str, turns: int, room: str):
        from langchain_community.chat_message_histories import RedisChatMessageHistory

        self.history = RedisChatMessageHistory(session_id=room, url=url, key_prefix="langchain:")
        self.turns = turns
        self.counter = itertools.count()

    def prefill(self) -> None:
        from langchain_core.messages import HumanMessage

        for number in range(self.turns):
            self.history.add_message(HumanMessage(content=chat_text(f"w{number}")))

    def read(self):
        return lambda: self.history.messages

    def append(self):
        from langchain_core.messages import HumanMessage

        text = chat_text(f"n{next(self.counter)}")

        def call():
            self.history.add_message(HumanMessage(content=text))
            return self.history.messages

        return call

    def settle(self, admin: redis.Redis, keep: int | None = None) -> None:
        admin.ltrim(self.history.key, 0, (keep or self.turns) - 1)  # LPUSH: the newest turns are at the head


class LlamaIndex:
    """llama-index's RedisChatStore: RPUSH per message, the whole list read back (pydantic models).

    It keeps no window; `settle` trims its list back to `turns` after each timed append (untimed)."""

    name = "llama-index"
    routes = ("read", "append")
    keeps_window = False

    def __init__(self, url: str, turns: int, room: str):
        from llama_index.storage.chat_store.redis import RedisChatStore

        self.store = RedisChatStore(redis_url=url)
        self.key, self.turns = f"llama:{room}", turns
        self.counter = itertools.count()

    def prefill(self) -> None:
        from llama_index.core.llms import ChatMessage

        for number in range(self.turns):
            self.store.add_message(self.key, ChatMessage(role="user", content=chat_text(f"w{number}")))

    def read(self):
        return lambda: self.store.get_messages(self.key)

    def append(self):
        from llama_index.core.llms import ChatMessage

        text = chat_text(f"n{next(self.counter)}")

        def call():
            self.store.add_message(self.key, ChatMessage(role="user", content=text))
            return self.store.get_messages(self.key)

        return call

    def settle(self, admin: redis.Redis, keep: int | None = None) -> None:
        admin.ltrim(self.key, -(keep or self.turns), -1)


IMPLEMENTATIONS = (Ours, BareLoop, LangChain, LlamaIndex)


def build(url: str, turns: int) -> list:
    """One room of `turns` turns per implementation, each under its own fresh key."""
    room = f"bench-{turns}-{time.time_ns()}"
    implementations = [kind(url, turns, room) for kind in IMPLEMENTATIONS]
    for implementation in implementations:
        implementation.prefill()
    return implementations
