"""Seeded random operations by concurrent writers on two rooms, replayed in version order on tests/room_model.py.

Every successful response names the version it stands for; replaying the successful mutations in version order
on the plain model must reproduce each response, and finally what Redis holds.
"""

from __future__ import annotations

import copy
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pytest
from room_model import CHANGE_FIELD, Room, keys, turn_id
from test_stress import in_processes

from support import IMAGE, Api, room_path

ROOMS = ("discord:checker", "matrix:!checker:example.org")
WORKERS, OPS_PER_WORKER = 8, 100
DEFAULT_LIMIT = 50  # MAX_HISTORY: small, so windows slide, limits trim and re-sent ids may be stored again
REACTIONS = ["👍 x1", "❤️ x2, 🎉 x1", "", "[team] x3", "🫠 [[nested]] x1", "ü ✓"]
OPERATIONS = {  # weights
    "append": 24,
    "tool-call": 4,
    "tool-result": 4,
    "dup-append": 10,
    "edit": 14,
    "react": 12,
    "delete": 10,
    "get": 8,
    "state": 6,
    "limit": 6,
    "batch": 6,
    "backfill": 4,
    "compact": 2,
    "clear": 0.5,
}


@dataclass
class Call:
    worker: int
    step: int
    room: str
    op: str
    args: dict
    if_match: int | None
    status: int = 0
    version: int | None = None
    body: Any = None

    def __str__(self) -> str:
        condition = f" If-Match {self.if_match}" if self.if_match is not None else ""
        return f"worker {self.worker} step {self.step}: {self.op} {self.args}{condition} -> {self.status}"

    @property
    def turns(self) -> list[dict]:
        return [message for message in self.body["messages"] if message["role"] != "system"]


def new_append(rng: random.Random, worker: int, step: int) -> dict:
    message_id = f"{worker}.{step}"
    text = f"[Message ID: {message_id}] worker {worker} says {step}"
    part = {"type": "text", "text": text}
    content = rng.choice([text, [part, IMAGE], [IMAGE, part], "no marker"])
    body = {"role": rng.choice(["user", "assistant"]), "content": content}
    if content != "no marker" and rng.random() < 0.3:
        body["message_id"] = message_id
    return body


def tool_call(worker: int, step: int) -> dict:
    """An assistant turn calling one or two tools, without a marker (its first call id is its key)."""
    ids = [f"call-{worker}.{step}.{n}" for n in range(1 + step % 2)]
    calls = [{"id": id_, "type": "function", "function": {"name": "roll", "arguments": '{"d": 6}'}} for id_ in ids]
    return {"role": "assistant", "content": None, "tool_calls": calls}


def plan(rng: random.Random, worker: int, step: int, sent: list[dict], known: list[str]) -> tuple[str, dict]:
    op = rng.choices(list(OPERATIONS), weights=list(OPERATIONS.values()))[0]
    if op == "dup-append" and sent:
        return op, rng.choice(sent)
    if op == "tool-call":
        return op, tool_call(worker, step)
    calls = [call["id"] for body in sent for call in body.get("tool_calls") or []]
    if op == "tool-result" and calls:  # often answering a call made long ago: trimmed, so left out
        return op, {"role": "tool", "content": f"rolled {step % 6 + 1}", "tool_call_id": rng.choice(calls[-4:] + calls)}
    if op in ("edit", "react", "delete") and known:
        target = rng.choice(known)
        if op == "react":
            return op, {"id": target, "reactions": rng.choice(REACTIONS)}
        if op == "delete":
            return op, {"id": target, "deleted_at": f"2026-11-25T1{worker}:{step // 60:02d}:{step % 60:02d}+01:00"}
        text = f"[Message ID: {target}] edited by {worker} at {step}"
        content = rng.choice([text, text, [{"type": "text", "text": text}], "marker edited away"])
        return op, {"id": target, "content": content}
    if op == "limit":
        return op, {"limit": rng.randint(30, 80)}
    if op in ("batch", "backfill"):  # new turns, a re-sent one now and then, an id twice in the batch
        turns = [new_append(rng, worker, step * 10 + index) for index in range(rng.randint(1, 5))]
        if sent and rng.random() < 0.4:
            turns.insert(rng.randrange(len(turns) + 1), rng.choice(sent))
        if rng.random() < 0.2:
            turns.append(turns[0])
        return op, {"turns": turns, "position": "start" if op == "backfill" else "end"}
    if op == "compact" and known:
        return op, {"through": rng.choice(known), "summary": f"summary by {worker} at {step}"}
    if op in ("get", "state", "clear"):
        return op, {}
    return "append", new_append(rng, worker, step)


ROUTES = {
    "append": ("POST", ["messages"]),
    "tool-call": ("POST", ["messages"]),
    "tool-result": ("POST", ["messages"]),
    "dup-append": ("POST", ["messages"]),
    "edit": ("PATCH", ["messages", "{id}"]),
    "react": ("PUT", ["messages", "{id}", "reactions"]),
    "delete": ("DELETE", ["messages", "{id}"]),
    "get": ("GET", ["messages"]),
    "state": ("GET", []),
    "limit": ("PUT", ["limit"]),
    "batch": ("POST", ["batch"]),
    "backfill": ("POST", ["batch"]),
    "compact": ("POST", ["compact"]),
    "clear": ("DELETE", []),
}


def send(api: Api, call: Call) -> None:
    args = dict(call.args)
    target = args.pop("id", None)
    method, parts = ROUTES[call.op]
    path = room_path(call.room, *(target if part == "{id}" else part for part in parts))
    reply = api.call(method, path, args or None, {"If-Match": str(call.if_match)} if call.if_match is not None else {})
    call.status, call.body = reply.status, reply.body
    etag = reply.headers.get("ETag")
    call.version = int(etag.strip('"')) if etag else (reply.body or {}).get("version")


def work(env: dict, worker: int, seed: int, start) -> list[Call]:
    """One writer process: random operations on both rooms, each recorded with its response."""
    api = Api(env)
    rng = random.Random(f"{seed}/{worker}")
    calls: list[Call] = []
    sent: list[dict] = []
    known: dict[str, list[str]] = defaultdict(list)  # ids in the last window seen; sometimes an older one
    ever: dict[str, set[str]] = defaultdict(set)
    last_version: dict[str, int] = defaultdict(int)
    start()
    for step in range(OPS_PER_WORKER):
        room = rng.choice(ROOMS)
        op, args = plan(rng, worker, step, sent, known[room] if rng.random() < 0.8 else sorted(ever[room]))
        mutating = op not in ("get", "state")
        call = Call(worker, step, room, op, args, last_version[room] if mutating and rng.random() < 0.15 else None)
        send(api, call)
        calls.append(call)
        if op in ("append", "tool-call", "tool-result"):
            sent.append(args)
        if op in ("batch", "backfill"):
            sent.extend(turn for turn in args["turns"] if turn_id(turn["content"]))
        if call.status in (200, 201, 204) and call.version is not None:
            last_version[room] = call.version
        if call.status in (200, 201) and "messages" in call.body:
            known[room] = [turn_id(turn["content"]) for turn in call.turns if turn_id(turn["content"])]
            ever[room].update(known[room])
    return calls


def diverged(call: Call, what: str, expected: Any, actual: Any) -> None:
    pytest.fail(
        f"first divergence at version {call.version} ({call}), {what}:\n  expected {expected!r}\n  actual   {actual!r}"
    )


def first_difference(expected: list, actual: list) -> tuple[str, Any, Any]:
    for index, (want, got) in enumerate(zip(expected, actual, strict=False)):  # lengths: below
        if want != got:
            return f"turn {index} of the window", want, got
    return "window length", len(expected), len(actual)


def apply(model: Room, call: Call) -> None:
    """Apply one successful mutation to the model, comparing its outcome with the response."""
    if call.if_match is not None and call.if_match != model.version:
        diverged(call, "If-Match (the version the write was made on)", model.version, call.if_match)
    try:
        if call.op in APPENDS:
            fields = [call.args.get(field) for field in ("role", "content", "tool_calls", "tool_call_id")]
            if not model.append(*fields):
                diverged(call, "stored", "already in the window (200)", "stored again (201)")
        elif call.op in CHANGE_FIELD:
            model.change(call.args["id"], call.op, call.args[CHANGE_FIELD[call.op]])
        elif call.op == "limit":
            expected = model.set_limit(call.args["limit"])
            actual = (call.body["limit"], call.body["rebackfill_requested"])
            if actual != expected:
                diverged(call, "limit, rebackfill", expected, actual)
        elif call.op in ("batch", "backfill"):
            counts = model.batch(call.args["turns"], call.args["position"] == "start")
            actual = (call.body["stored"], call.body["duplicates"], call.body["dropped"])
            if actual != counts:
                diverged(call, "stored, duplicates, dropped", counts, actual)
        elif call.op == "compact":
            model.compact(call.args["through"], call.args["summary"])
        elif call.op == "clear":
            model.clear()
    except LookupError as error:
        diverged(call, "target", str(error), "changed")


def observe(model: Room, call: Call) -> None:
    """A response that stands for the room as of its version must show exactly the model's room."""
    if call.op == "state":
        actual = {key: call.body[key] for key in model.state()}
        if actual != model.state():
            diverged(call, "room state", model.state(), actual)
        return
    if call.op in ("batch", "backfill") and call.status == 200:  # stored nothing: the model agrees
        counts = copy.deepcopy(model).batch(call.args["turns"], call.args["position"] == "start")
        if counts[0] != 0 or counts != (call.body["stored"], call.body["duplicates"], call.body["dropped"]):
            diverged(call, "a batch that stores nothing", counts, call.body)
    already_stored = call.op in APPENDS and call.status == 200
    if already_stored and not any(keys(call.args) & keys(turn) for turn in model.turns):
        diverged(call, "stored", "not in the window (201)", "already stored (200)")
    if "messages" in (call.body or {}) and call.turns != model.listed():
        diverged(call, *first_difference(model.listed(), call.turns))


APPENDS = ("append", "dup-append", "tool-call", "tool-result")


def is_mutation(call: Call) -> bool:
    changes = ("edit", "react", "delete", "limit", "compact")
    return call.status in (201, 204) or (call.status == 200 and call.op in changes)


def check_room(room: str, calls: list[Call]) -> Room:
    """Replay the room's successful calls version by version; fail at the first divergence."""
    by_version: dict[int, list[Call]] = defaultdict(list)
    for call in calls:
        if call.room == room and call.status in (200, 201, 204):
            by_version[call.version].append(call)
    model = Room(default_limit=DEFAULT_LIMIT)
    for version in range(max(by_version, default=0) + 1):
        changes = [call for call in by_version[version] if is_mutation(call)]
        if len(changes) != (1 if version else 0):
            pytest.fail(f"{room}: version {version} stands for {len(changes)} successful mutations: {changes}")
        for call in changes:
            apply(model, call)
        for call in by_version[version]:
            observe(model, call)
    return model


def environment(redis_server) -> dict[str, str]:
    return {"REDIS_URL": redis_server.url, "MAX_HISTORY": str(DEFAULT_LIMIT)}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_concurrent_history_replays_on_the_model(redis_server, redis_client, seed):
    quiet = {**environment(redis_server), "POWERTOOLS_LOG_LEVEL": "WARNING"}
    results = in_processes(work, [(quiet, worker, seed) for worker in range(WORKERS)])
    calls = [call for calls in results for call in calls]
    assert {call.status for call in calls} <= {200, 201, 204, 404, 409, 412}
    succeeded = {(call.op, call.status) for call in calls}
    assert {("batch", 201), ("backfill", 201), ("compact", 200)} <= succeeded  # the mix ran
    for call in calls:
        if call.status == 412:
            assert call.body["version"] != call.if_match, call
    api = Api(environment(redis_server))
    for room in ROOMS:
        final = [Call(-1, step, room, op, {}, None) for step, op in enumerate(["get", "state"])]
        for call in final:
            send(api, call)
        model = check_room(room, calls + final)  # the final reads are checked like any other response
        assert final[0].version == model.version


QUOTING = {"role": "assistant", "content": "[Message ID: 2] as you said in [Message ID: 1]"}
HI = {"role": "user", "content": "[Message ID: 1] hi"}


@pytest.mark.parametrize(
    "script",
    [
        [("append", QUOTING), ("append", HI)],  # message 1's first attempt failed; its retry comes after the reply
        [("append", HI), ("append", QUOTING), ("edit", {"id": "1", "content": "[Message ID: 1] hello"})],
    ],
    ids=["late-append-of-a-quoted-message-is-stored", "edit-lands-on-the-quoted-message"],
)
def test_a_turn_quoting_another_marker_does_not_stand_for_that_message(redis_server, redis_client, script):
    """A turn's id is its first marker: a marker it quotes neither makes an append a duplicate nor takes a change."""
    api = Api(environment(redis_server))
    calls = [Call(0, step, ROOMS[0], op, args, None) for step, (op, args) in enumerate(script)]
    for call in calls:
        send(api, call)
    check_room(ROOMS[0], calls)
