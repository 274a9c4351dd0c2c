"""Sixteen writer processes, each with its own cold-started API function and Redis connection, on one room."""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from room_model import CHANGE_FIELD, changed, turn_id

from support import IMAGE, Api, room_path

ROOM = "discord:stress"
WRITERS = 16
OPS_PER_WRITER = 80  # 55% appends, some repeated: ~600 turns, well under the limit of 1000, so nothing slides out
SHARED_IDS = 30  # ids every writer may append: each must be stored by exactly one of them
REACTIONS = ["👍 x1", "❤️ x2, 🎉 x1", "", "[team] x3", "🫠 [[nested]] x1"]
# Third-party imports a writer would otherwise repeat 16 times; the handler itself is still loaded per process.
PRELOAD = [
    "aws_lambda_powertools.utilities.parameters",
    "aws_lambda_powertools.event_handler",
    "redis",
    "jinja2",
    "yaml",
    "pytest",
]


@dataclass(frozen=True)
class Call:
    writer: int
    step: int
    op: str  # append, batch, edit, react, delete, compact
    message_id: str
    body: dict
    status: int
    version: int | None
    reply: dict | None = None  # the batch counts


def shared_append(number: int) -> dict:
    message_id = f"shared-{number}"
    return {"role": "user", "content": f"[Message ID: {message_id}] said by everyone", "message_id": message_id}


def next_request(rng: random.Random, writer: int, step: int, sent: list[dict], known: list[str]):
    roll = rng.random()
    if roll < 0.06 and sent:  # a retried call: the same writer sends an append again
        body = sent[-1] if rng.random() < 0.5 else rng.choice(sent)
        return "append", turn_id(body["content"]), body
    if roll < 0.12:  # another writer may be sending this one right now
        body = shared_append(rng.randrange(SHARED_IDS))
        return "append", body["message_id"], body
    if roll < 0.55 or not known:
        message_id = f"w{writer}-{step}"
        text = f"[Message ID: {message_id}] writer {writer} says {step}"
        content = [{"type": "text", "text": text}, IMAGE] if step % 5 == 0 else text
        return "append", message_id, {"role": ("user", "assistant")[step % 2], "content": content}
    if roll < 0.60:  # a batch of new turns (and a shared one now and then), at the end or, rarely, the start
        turns = [new_turn(f"w{writer}-{step}-{index}", writer, step) for index in range(rng.randint(2, 4))]
        if rng.random() < 0.3:
            turns.append(shared_append(rng.randrange(SHARED_IDS)))
        position = "start" if rng.random() < 0.25 else "end"
        return "batch", "", {"turns": turns, "position": position}
    if roll < 0.62 and len(known) > 8:  # compact through an old turn this writer saw
        through = known[len(known) // 8]
        return "compact", through, {"through": through, "summary": f"summary by {writer} at {step}"}
    target = rng.choice(known)
    if roll < 0.72:
        text = f"[Message ID: {target}] edited by {writer} at {step}"
        return "edit", target, {"content": [{"type": "text", "text": text}] if step % 4 == 0 else text}
    if roll < 0.86:
        return "react", target, {"reactions": rng.choice(REACTIONS)}
    return "delete", target, {"deleted_at": f"2026-11-25T10:{writer:02d}:{step % 60:02d}Z"}


def new_turn(message_id: str, writer: int, step: int) -> dict:
    return {"role": "user", "content": f"[Message ID: {message_id}] writer {writer} batched at {step}"}


def send(api: Api, op: str, message_id: str, body: dict):
    if op == "append":
        return api.call("POST", room_path(ROOM, "messages"), body)
    if op in ("batch", "compact"):
        return api.call("POST", room_path(ROOM, op), body)
    if op == "react":
        return api.call("PUT", room_path(ROOM, "messages", message_id, "reactions"), body)
    return api.call("PATCH" if op == "edit" else "DELETE", room_path(ROOM, "messages", message_id), body)


def ids_of(messages: list[dict]) -> list[str]:
    return [turn_id(message["content"]) for message in messages if message["role"] != "system"]


_start = None  # in each writer process: the barrier every writer waits at, once its handler is loaded


def _remember_start(barrier) -> None:
    global _start
    _start = barrier


def _run(work, arguments: tuple):
    return work(*arguments, lambda: _start.wait(timeout=60))


def in_processes(work, argument_lists: list[tuple]) -> list:
    """work(*arguments, start) in a process of its own for each tuple; start() returns once every one called it.

    Processes, not threads: Powertools keeps the current event on a class, shared by every copy of the handler.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    barrier = context.Barrier(len(argument_lists))
    with context.Pool(len(argument_lists), initializer=_remember_start, initargs=(barrier,)) as pool:
        pending = [pool.apply_async(_run, (work, arguments)) for arguments in argument_lists]
        return [job.get(timeout=120) for job in pending]


def write(env: dict, writer: int, seed: int, start) -> tuple[list[Call], int]:
    """One writer: load the handler, wait for the others, then send its requests one after another."""
    api = Api(env)
    rng = random.Random(seed * 100 + writer)
    calls: list[Call] = []
    sent: list[dict] = []
    known: list[str] = []
    start()
    for step in range(OPS_PER_WRITER):
        op, message_id, body = next_request(rng, writer, step, sent, known)
        reply = send(api, op, message_id, body)
        version = reply.body.get("version") if isinstance(reply.body, dict) else None
        window = ids_of(reply.body["messages"]) if reply.status in (200, 201) else []
        counts = {key: reply.body[key] for key in ("stored", "duplicates", "dropped")} if op == "batch" else None
        if op == "batch" and reply.status not in (200, 201):
            counts = None
        calls.append(Call(writer, step, op, message_id, body, reply.status, version, counts))
        known = window or known
        if op == "append" and reply.status in (200, 201) and body not in sent:
            sent.append(body)
    return calls, api.module.room_history().conflicts


def expected_content(body: dict, changes: list[Call]) -> Any:
    """The appended content with every successful change on it replayed in version order (tests/room_model.py)."""
    content = body["content"]
    for change in sorted(changes, key=lambda call: call.version):
        content = changed(content, change.op, change.body[CHANGE_FIELD[change.op]])
    return content


@dataclass
class Replay:
    """The room's ids in list order, rebuilt from the successful writes in version order (limit 1000: nothing
    slides out), with where each id was created and which ids a compaction removed."""

    order: list[str]
    created: dict[str, list[tuple[dict, int]]]  # id -> (the turn's body, the version that stored it), each time
    compacted: set[str]


def replay(calls: list[Call]) -> Replay:
    order: list[str] = []
    created: dict[str, list[tuple[dict, int]]] = {}
    compacted: set[str] = set()
    stores = [call for call in calls if call.status == 201 or (call.op == "compact" and call.status == 200)]
    for call in sorted(stores, key=lambda call: call.version):
        if call.op == "append":
            assert call.message_id not in order, call  # a 201 for an id already in the window
            order.append(call.message_id)
            created.setdefault(call.message_id, []).append((call.body, call.version))
        elif call.op == "batch":
            fresh, seen = [], set(order)
            for turn in call.body["turns"]:
                message_id = turn_id(turn["content"])
                if message_id not in seen:
                    seen.add(message_id)
                    fresh.append(message_id)
                    created.setdefault(message_id, []).append((turn, call.version))
            assert (call.reply["stored"], call.reply["duplicates"], call.reply["dropped"]) == (
                len(fresh),
                len(call.body["turns"]) - len(fresh),
                0,
            ), call
            order = fresh + order if call.body["position"] == "start" else order + fresh
        else:  # compact: everything up to and including `through` gives way to the summary
            cut = order.index(call.message_id) + 1
            compacted.update(order[:cut])
            order = order[cut:]
    return Replay(order, created, compacted)


def test_concurrent_writers_lose_duplicate_and_resurrect_nothing(backend, capsys):
    api = Api(backend.env)
    assert api.call("PUT", room_path(ROOM, "limit"), {"limit": 1000}).status == 200
    began = time.monotonic()
    env = {**backend.env, "POWERTOOLS_LOG_LEVEL": "WARNING"}
    results = in_processes(write, [(env, writer, 7) for writer in range(WRITERS)])
    calls, conflicts = [call for calls, _ in results for call in calls], sum(conflicts for _, conflicts in results)
    elapsed = time.monotonic() - began

    room = api.call("GET", room_path(ROOM, "messages")).body
    turns = [message for message in room["messages"] if message["role"] != "system"]
    stored_ids = ids_of(turns)
    statuses = Counter(call.status for call in calls)
    history = replay(calls)
    appends = [call for call in calls if call.op == "append"]
    batches = [call for call in calls if call.op == "batch" and call.status in (200, 201)]
    acknowledged = {call.message_id for call in appends if call.status in (200, 201)}
    acknowledged |= {turn_id(turn["content"]) for call in batches for turn in call.body["turns"]}
    lost = acknowledged - set(stored_ids) - history.compacted
    duplicated = [message_id for message_id, times in Counter(stored_ids).items() if times > 1]
    with capsys.disabled():
        print(
            f"\nstress[{'cluster' if backend.cluster else 'single'}]: {WRITERS} writers, {len(calls)} ops "
            f"({len(batches)} batches, {sum(call.op == 'compact' and call.status == 200 for call in calls)} "
            f"compactions), {len(history.created)} turns, {conflicts} conflicts, {conflicts - statuses[409]} "
            f"retries, {statuses[409]} 409s, {sum(call.status == 200 for call in appends)} repeated appends, "
            f"lost {len(lost)}, duplicated {len(duplicated)}, {elapsed:.1f} s"
        )

    assert set(statuses) <= {200, 201, 404, 409}, statuses
    assert all(call.op not in ("append", "batch") for call in calls if call.status == 404)  # a compacted target
    assert (lost, duplicated) == (set(), [])
    assert sum(len(times) for times in history.created.values()) < 1000  # nothing slid out of the window
    assert stored_ids == history.order  # in order: appends at the end, start batches before the oldest
    assert acknowledged == set(history.created)  # a 200 "already stored" always has its creation somewhere
    for call in appends:
        if call.status == 200:  # it saw the turn stored: a creation happened at or before its version
            assert min(version for _, version in history.created[call.message_id]) <= call.version, call

    changes = [call for call in calls if call.op in CHANGE_FIELD and call.status == 200]
    for turn, message_id in zip(turns, stored_ids, strict=True):
        mine = [change for change in changes if change.message_id == message_id]
        body, since = history.created[message_id][-1]  # the creation still in the window (a compaction
        mine = [change for change in mine if change.version > since]  # may have removed an earlier one)
        assert turn["content"] == expected_content(body, mine), message_id

    compactions = [call.version for call in calls if call.op == "compact" and call.status == 200]
    stores = [call.version for call in calls if call.status == 201]
    mutations = [1] + stores + compactions + [call.version for call in changes]  # 1: the limit
    assert room["version"] == len(mutations)
    assert sorted(mutations) == list(range(1, room["version"] + 1))  # each version stored exactly one change
    for writer in range(WRITERS):  # nobody ever saw the room go back in time
        seen = [call.version for call in calls if call.writer == writer and call.status in (200, 201)]
        assert seen == sorted(seen), writer
