"""Shared fixtures: a real redis-server per test session (and a real Redis Cluster when a test asks for
one), flushed before every test."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import redis
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "room_history")]

from local.redis_cluster import LocalRedisCluster  # noqa: E402
from local.redis_server import RedisServer  # noqa: E402
from room_history.history import RoomHistory  # noqa: E402
from room_history.settings import Settings  # noqa: E402


@pytest.fixture(scope="session")
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster():
    """Three masters, started the first time a test needs them."""
    with LocalRedisCluster() as cluster:
        yield cluster


@pytest.fixture
def redis_client(redis_server):
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    client.script_flush()
    yield client
    client.close()


@pytest.fixture
def settings(redis_server, redis_client) -> Settings:
    return Settings(redis_url=redis_server.url, redis_timeout_seconds=1.0)


@pytest.fixture
def history(settings) -> RoomHistory:
    return RoomHistory.open(settings)


@dataclass
class Backend:
    """One Redis deployment the functions can be pointed at, and a client that sees all of it."""

    url: str
    cluster: bool
    client: redis.Redis | redis.RedisCluster

    @property
    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.url, "REDIS_CLUSTER": "true" if self.cluster else "false"}

    @property
    def settings(self) -> Settings:
        return Settings(redis_url=self.url, redis_cluster=self.cluster, redis_timeout_seconds=1.0)

    def keys(self, pattern: str = "*") -> list[str]:
        """Sorted keys matching pattern; in a cluster, KEYS on every primary (redis-py asks one node by default)."""
        if self.cluster:
            return sorted(self.client.keys(pattern, target_nodes=redis.RedisCluster.PRIMARIES))
        return sorted(self.client.keys(pattern))

    def dump(self, pattern: str = "*") -> dict[str, bytes]:
        """Every matching key with its serialized value: equal dumps mean nothing changed."""
        return {key: self.client.dump(key) for key in self.keys(pattern)}


@pytest.fixture
def single_backend(redis_server, redis_client) -> Backend:
    """The session's redis-server, for tests that need not run on the cluster too."""
    return Backend(redis_server.url, False, redis_client)


@pytest.fixture(params=["single", "cluster"])
def backend(request):
    """Each test twice: on the session's redis-server and on the session's three-master cluster."""
    if request.param == "single":
        yield request.getfixturevalue("single_backend")
        return
    cluster = request.getfixturevalue("redis_cluster")
    client = redis.RedisCluster.from_url(cluster.url, decode_responses=True)
    client.flushall()  # FLUSHALL and SCRIPT FLUSH go to every primary
    client.script_flush()
    yield Backend(cluster.url, True, client)
    client.close()


@pytest.fixture
def aws(monkeypatch):
    """Secrets Manager faked by moto (a client to set secrets up); Powertools' caches emptied around the test."""
    from support import REGION

    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    parameters.clear_caches()
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)
    parameters.clear_caches()
