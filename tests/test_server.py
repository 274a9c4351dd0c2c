"""The local server over real HTTP, serving the real API function, and the demo against it."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest

from local import demo
from local.server import make_server, serving


@pytest.fixture
def base_url(redis_server, redis_client, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    with serving(make_server("127.0.0.1", 0)) as url:
        yield url


def send(url: str, method: str = "GET", body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_routes_over_http(base_url):
    status, headers, body = send(
        f"{base_url}/rooms/discord%3A77/messages", "POST", {"role": "user", "content": "[Message ID: 1] hi"}
    )
    assert status == 201 and headers["Content-Type"] == "application/json" and headers["ETag"] == '"1"'
    assert json.loads(body)["messages"][-1] == {"role": "user", "content": "[Message ID: 1] hi"}
    status, _, body = send(f"{base_url}/rooms/discord:77/messages/1/reactions", "PUT", {"reactions": "👍 x1"})
    assert status == 200 and json.loads(body)["messages"][-1]["content"] == "[Message ID: 1] [Reactions: 👍 x1] hi"
    status, _, body = send(f"{base_url}/rooms/discord:77")
    assert status == 200 and json.loads(body)["version"] == 2
    status, _, body = send(f"{base_url}/rooms/discord:77/messages", "POST", None)
    assert status == 400 and json.loads(body)["error"] == "invalid_request"
    status, _, body = send(f"{base_url}/rooms/discord:77", "DELETE", None, {"If-Match": '"2"'})
    assert (status, body) == (204, b"")


def test_concurrent_requests_are_served(base_url):
    results = []

    def append(number: int):
        results.append(
            send(
                f"{base_url}/rooms/discord:88/messages",
                "POST",
                {"role": "user", "content": f"[Message ID: {number}] n"},
            )[0]
        )

    threads = [threading.Thread(target=append, args=(number,)) for number in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [201] * 20
    status, _, body = send(f"{base_url}/rooms/discord:88")
    assert json.loads(body)["message_count"] == 20 and json.loads(body)["version"] == 20


def test_demo_plays_a_conversation(base_url, capsys):
    rendered = demo.play(base_url)
    messages = rendered["messages"]
    assert messages[0]["role"] == "system"
    texts = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in messages[1:]]
    assert any("[Reactions: " in text for text in texts) and any("[deleted at " in text for text in texts)
    assert any(isinstance(m["content"], list) and m["content"][-1]["type"] == "image_url" for m in messages[1:])
    assert "GET" in capsys.readouterr().out


def test_benchmark_prints_latency_and_round_trips(redis_server, redis_client, monkeypatch, capsys):
    from local import benchmark

    monkeypatch.setenv("REDIS_URL", redis_server.url)
    with benchmark.counting_round_trips() as round_trips:
        benchmark.run(requests=3, window=5, round_trips=round_trips)
    table = {line[:26].strip(): line[26:].split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert table["POST messages (append)"][2] == "1.0" and table["PATCH message"][2] == "2.0"
    assert len(table) == 8
