"""Shared fixtures: one real redis-server per test session, flushed around every test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "room_history")]

from local.redis_server import RedisServer  # noqa: E402
from room_history.history import RoomHistory  # noqa: E402
from room_history.settings import Settings  # noqa: E402
from room_history.store import RoomStore  # noqa: E402


@pytest.fixture(scope="session")
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_client(redis_server):
    if not redis_server.running:  # a fault test stopped it
        redis_server.restart()
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    client.script_flush()
    yield client
    client.close()


@pytest.fixture
def settings(redis_server, redis_client) -> Settings:
    return Settings(redis_url=redis_server.url, redis_timeout_seconds=1.0)


@pytest.fixture
def store(settings) -> RoomStore:
    history = RoomHistory.open(settings)
    return history.store


@pytest.fixture
def history(settings) -> RoomHistory:
    return RoomHistory.open(settings)
