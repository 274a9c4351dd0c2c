"""Redis credentials from REDIS_SECRET_ARN (Secrets Manager faked with moto) against a real redis-server ACL
user whose password is rotated in the middle of a run."""

from __future__ import annotations

import json

import pytest

from room_history.settings import Settings, SettingsError
from support import REGION, Api, Clock, SecretsManagerCalls, room_path

USER = "room-history-app"


@pytest.fixture
def acl_user(single_backend):
    client = single_backend.client
    client.execute_command("ACL", "SETUSER", USER, "reset", "on", ">first-password", "~*", "&*", "+@all")
    yield client
    client.execute_command("ACL", "DELUSER", USER)


def set_password(client, password: str) -> None:
    """Rotate the user's password and drop its open connections, as a failover or a restart would."""
    client.execute_command("ACL", "SETUSER", USER, "resetpass", f">{password}")
    client.execute_command("CLIENT", "KILL", "USER", USER)


def post(api: Api, text: str):
    return api.call("POST", room_path("discord:1", "messages"), {"role": "user", "content": text})


def test_rotated_password_is_re_read_once(single_backend, acl_user, aws, monkeypatch):
    secret = {"username": USER, "password": "first-password"}
    arn = aws.create_secret(Name="room-history/redis", SecretString=json.dumps(secret))["ARN"]
    calls = SecretsManagerCalls(monkeypatch)
    api = Api({**single_backend.env, "REDIS_SECRET_ARN": arn})

    assert post(api, "a").status == 201
    provider = api.module.room_history().store.client.connection_pool.connection_kwargs["credential_provider"]
    clock = provider.secret.clock = Clock()
    assert calls.calls["GetSecretValue"] == 1
    assert USER in {client["user"] for client in acl_user.client_list()}  # connected as the secret's user

    # Rotation: the secret gets the new password first, then Redis; the next request re-reads once and succeeds.
    aws.put_secret_value(SecretId=arn, SecretString=json.dumps({**secret, "password": "second-password"}))
    set_password(acl_user, "second-password")
    assert post(api, "b").status == 201
    assert calls.calls["GetSecretValue"] == 2
    assert post(api, "c").status == 201
    assert calls.calls["GetSecretValue"] == 2

    # Redis changed, the secret did not: one re-read, then 503, and no re-read storm while it lasts.
    clock.now += 60
    set_password(acl_user, "third-password")
    for _ in range(3):
        reply = post(api, "d")
        assert reply.status == 503 and reply.body["error"] == "redis_unavailable"
    assert calls.calls["GetSecretValue"] == 3
    assert not any(f"{n}-password" in json.dumps(reply.body) for n in ("first", "second", "third"))

    # The operator fixes the secret: served again within seconds.
    aws.put_secret_value(SecretId=arn, SecretString=json.dumps({**secret, "password": "third-password"}))
    clock.now += 5
    assert post(api, "e").status == 201
    assert calls.calls["GetSecretValue"] == 4
    texts = [turn["content"] for turn in api.call("GET", room_path("discord:1", "messages")).body["messages"][1:]]
    assert texts == ["a", "b", "c", "e"]


def test_an_unreadable_redis_secret_is_a_503(single_backend, aws):
    arn = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:missing-AbCdEf"
    api = Api({**single_backend.env, "REDIS_SECRET_ARN": arn})
    reply = post(api, "a")
    assert reply.status == 503 and "REDIS_SECRET_ARN: the Redis secret could not be read" in reply.body["message"]
    aws.create_secret(Name="no-password", SecretString=json.dumps({"username": USER}))
    reply = post(Api({**single_backend.env, "REDIS_SECRET_ARN": "no-password"}), "a")
    assert reply.status == 503 and 'must be {"username"?, "password"}' in reply.body["message"]


def test_settings_refuse_a_password_in_the_url_beside_the_secret():
    with pytest.raises(SettingsError, match="REDIS_URL must hold no password"):
        Settings.from_env({"REDIS_URL": "redis://:pw@localhost:6379", "REDIS_SECRET_ARN": "arn"})
    assert (
        Settings.from_env({"REDIS_URL": "redis://u@localhost", "REDIS_SECRET_ARN": " arn "}).redis_secret_arn == "arn"
    )
    with pytest.raises(SettingsError, match="AUTH_MODE must be one of token, iam, none"):
        Settings.from_env({"REDIS_URL": "redis://localhost", "AUTH_MODE": "open"})


def test_secret_credentials_on_a_single_server_and_a_cluster(backend, aws, monkeypatch):
    """The default user has no password here (nopass accepts any): this checks the wiring, for both clients."""
    arn = aws.create_secret(Name="redis", SecretString=json.dumps({"username": "default", "password": "x"}))["ARN"]
    calls = SecretsManagerCalls(monkeypatch)
    api = Api({**backend.env, "REDIS_SECRET_ARN": arn})
    assert post(api, "a").status == 201 and post(api, "b").status == 201
    assert calls.calls["GetSecretValue"] == 1
    client = api.module.room_history().store.client
    nodes = client.get_nodes() if backend.cluster else [client]
    for node in nodes:
        pool = (node.redis_connection if backend.cluster else node).connection_pool
        assert pool.connection_class.__name__ == "ReauthenticatingConnection"


def test_rediss_urls_keep_tls_with_the_secret():
    from room_history.credentials import ReauthenticatingConnection, ReauthenticatingSSLConnection
    from room_history.store import connect

    for url, kind in (
        ("rediss://cache:6379/0", ReauthenticatingSSLConnection),
        ("redis://cache:6379", ReauthenticatingConnection),
    ):
        client = connect(Settings(redis_url=url, redis_secret_arn="arn:aws:secretsmanager:us-east-1:1:secret:r"))
        assert client.connection_pool.connection_class is kind  # a single client connects lazily: nothing sent
        assert client.connection_pool.connection_kwargs["host"] == "cache"
