"""Play a short bot conversation against a running local API: python -m local.demo [--url http://127.0.0.1:3000]."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
import uuid
from typing import Any
from urllib.parse import quote


class StepFailed(Exception):
    """A step answered another status than expected."""


def call(base: str, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    """Send one JSON request, print METHOD path -> status, and return the decoded response."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(base + path, data=data, method=method)
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


def play(base: str) -> dict:
    """Run the conversation on a fresh room and return the final rendered message list."""
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
    call(
        base, "PATCH", f"{messages}/2001", {"content": "[Message ID: 2001] Hi Sage, what's a good name for a grey cat?"}
    )
    call(base, "PUT", f"{messages}/2002/reactions", {"reactions": "👍 x2"})
    call(base, "DELETE", f"{messages}/2003", {})
    room_path = f"/rooms/{quote(room, safe='')}"
    call(base, "PUT", f"{room_path}/limit", {"limit": 200})
    state = call(base, "GET", room_path)
    print(json.dumps(state, indent=2, ensure_ascii=False))
    return call(base, "GET", f"{messages}?bot_name=Sage&room_name=demo")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; exit status 1 when a step fails."""
    parser = argparse.ArgumentParser(prog="python -m local.demo", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:3000", help="base URL of the local API")
    args = parser.parse_args(argv)
    try:
        rendered = play(args.url.rstrip("/"))
    except StepFailed as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    except urllib.error.URLError as error:
        print(f"FAILED: cannot reach {args.url}: {error.reason} (is ./dev serve running?)", file=sys.stderr)
        return 1
    print(json.dumps(rendered, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
