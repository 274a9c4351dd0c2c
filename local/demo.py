"""Play a short bot conversation and print the message list a model would get.

./dev demo starts a local API of its own (with a throwaway redis-server unless REDIS_URL is set);
./dev demo --url http://127.0.0.1:3000 plays on a running one instead.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from typing import Any
from urllib.parse import quote

from local.server import StartupError, running_api, serving, stop_on_signals


class StepFailed(Exception):
    """A step answered another status than expected."""


def _call(base: str, method: str, path: str, body: Any = None, expect: int = 200, token: str | None = None) -> Any:
    """Send one JSON request, print METHOD path -> status, and return the decoded response."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(base + path, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, text = response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode("utf-8", "replace")
    print(f"{method:6} {path} -> {status}")
    if status != expect:
        raise StepFailed(f"{method} {path}: expected {expect}, got {status}: {text}")
    return json.loads(text) if text else None


def play(base: str, token: str | None = None) -> dict:
    """Run the conversation on a fresh room and return the final rendered message list."""
    call = functools.partial(_call, token=token)
    room = f"demo:{uuid.uuid4().hex[:8]}"
    messages = f"/rooms/{quote(room, safe='')}/messages"
    print(f"Room {room} at {base}")
    call(
        base,
        "POST",
        messages,
        {"role": "user", "content": "[Message ID: 2001] Hi Sage, what's a good name for a cat?"},
        201,
    )
    call(base, "POST", messages, {"role": "assistant", "content": "[Message ID: 2002] How about Miso?"}, 201)
    image_turn = [
        {"type": "text", "text": "[Message ID: 2003] Here is the cat:"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    call(base, "POST", messages, {"role": "user", "content": image_turn}, 201)
    # A tool exchange: the assistant calls a tool and the bot stores the result; a retried result is stored once.
    lookup = {"id": "call_2004", "type": "function", "function": {"name": "cat_names", "arguments": '{"coat": "grey"}'}}
    asking = {"role": "assistant", "content": "[Message ID: 2004] Let me look some up.", "tool_calls": [lookup]}
    call(base, "POST", messages, asking, 201)
    answer = {"role": "tool", "tool_call_id": "call_2004", "content": '["Miso", "Smokey", "Ash"]'}
    call(base, "POST", messages, answer, 201)
    call(base, "POST", messages, answer, 200)
    # A budgeted read: the newest turns that fit in 600 tokens beside the system prompt (the image costs 1000).
    budgeted = call(base, "GET", f"{messages}?bot_name=Sage&max_tokens=600")
    roles = [message["role"] for message in budgeted["messages"]]
    print(f"  max_tokens=600: {roles}, {budgeted['tokens']} tokens, truncated: {budgeted['truncated']}")
    call(
        base, "PATCH", f"{messages}/2001", {"content": "[Message ID: 2001] Hi Sage, what's a good name for a grey cat?"}
    )
    call(base, "PUT", f"{messages}/2002/reactions", {"reactions": "👍 x2"})
    call(base, "DELETE", f"{messages}/2003", {})
    room_path = f"/rooms/{quote(room, safe='')}"
    call(base, "PUT", f"{room_path}/limit", {"limit": 200})  # a larger window asks for a re-backfill
    for page in (("1990", "1995"), ("1980", "1985")):  # older history, page after page, oldest page last
        older = [{"role": "user", "content": f"[Message ID: {number}] (older message {number})"} for number in page]
        reply = call(base, "POST", f"{room_path}/batch", {"turns": older, "position": "start"}, 201)
        print(f"       stored {reply['stored']}, duplicates {reply['duplicates']}, dropped {reply['dropped']}")
    call(base, "DELETE", f"{room_path}/rebackfill", None, 204)
    summary = "Older messages were small talk; the user asked Sage for a cat name."
    call(base, "POST", f"{room_path}/compact", {"through": "1995", "summary": summary})
    state = call(base, "GET", room_path)
    print(json.dumps(state, indent=2, ensure_ascii=False))
    return call(base, "GET", f"{messages}?bot_name=Sage&room_name=demo")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; exit status 1 when a step fails or the API cannot start, 130 on Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="./dev demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="base URL of a running API (default: start one)")
    parser.add_argument("--token", help="a frontend's token, for an API that requires one (./dev frontend add)")
    args = parser.parse_args(argv)
    stop_on_signals()
    try:
        if args.url:
            return _play_or_explain(args.url, args.token)
        os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")  # the functions' logs would drown the conversation
        os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # and so would their metrics (EMF lines)
        with running_api(port=0) as server, serving(server) as url:
            return _play_or_explain(url)
    except StartupError as error:
        print(f"./dev demo: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _play_or_explain(url: str, token: str | None = None) -> int:
    try:
        rendered = play(url.rstrip("/"), token)
    except StepFailed as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    except urllib.error.URLError as error:
        print(f"FAILED: cannot reach {url}: {error.reason}", file=sys.stderr)
        return 1
    print(json.dumps(rendered, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
