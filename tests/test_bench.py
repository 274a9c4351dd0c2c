"""The published benchmark's own side (this service and the bare loop) runs every route it times.

The peer libraries live only in .venv-bench (bench/run installs them); their adapters are not run here.
"""

from __future__ import annotations

import json

import pytest
import redis

from bench import peers


@pytest.fixture
def ours_and_bare(redis_server, redis_client, monkeypatch):
    monkeypatch.setattr(peers, "IMPLEMENTATIONS", (peers.Ours, peers.BareLoop))
    return peers.build(redis_server.url, 10)


def test_every_timed_route_of_ours_succeeds_and_keeps_the_window(ours_and_bare, redis_client):
    ours, bare = ours_and_bare
    admin = redis.Redis.from_url(ours.module.settings.redis_url)
    for _ in range(3):  # each round: the routes in the order the benchmark times them
        for route in ours.routes:
            response = json.loads(getattr(ours, route)()())  # a status >= 300 raises
            assert response["statusCode"] < 300
            ours.settle(admin)
        for route in bare.routes:
            assert json.loads(getattr(bare, route)()())["messages"]
    listed = json.loads(json.loads(ours.read()())["body"])
    ids = [message["content"].split("]")[0].removeprefix("[Message ID: ") for message in listed["messages"][1:]]
    assert ids == list(ours.window_ids) and len(ids) == 9  # what it believes: full, less the compacted turn


def test_a_budgeted_read_reports_its_tokens(ours_and_bare):
    ours, _ = ours_and_bare
    body = json.loads(json.loads(ours.budget()())["body"])
    assert body["tokens"] <= 4000 and body["truncated"] is False
