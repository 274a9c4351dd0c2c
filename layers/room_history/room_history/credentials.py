"""Redis AUTH from the REDIS_SECRET_ARN secret, given to redis-py as its credential provider, re-read once
when Redis refuses it (the password was rotated)."""

from __future__ import annotations

import redis
from redis.credentials import CredentialProvider

from .secret import CachedSecret, SecretUnreadable


class SecretCredentials(CredentialProvider):
    """`{"username"?, "password"}` of a Secrets Manager secret: (password,) for an AUTH token, (user, password)
    for an ACL / ElastiCache RBAC user. redis-py asks on every new connection; Powertools caches the secret."""

    def __init__(self, secret: CachedSecret):
        self.secret = secret

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        try:
            value = self.secret.value()
        except SecretUnreadable as error:  # a ConnectionError: the API answers 503, like Redis down
            raise redis.ConnectionError(f"REDIS_SECRET_ARN: the Redis secret {error}") from None
        password = value.get("password") if isinstance(value, dict) else None
        username = value.get("username") if isinstance(value, dict) else None
        if not isinstance(password, str) or not password or not isinstance(username, str | None):
            raise redis.ConnectionError('REDIS_SECRET_ARN: the Redis secret must be {"username"?, "password"}')
        return (username, password) if username else (password,)

    def refreshed(self, refused: tuple) -> bool:
        """After Redis refused `refused`: re-read the secret (at most once every few seconds, whoever asks)
        and say whether it now holds other credentials worth one more try."""
        try:
            self.secret.refresh()
        except SecretUnreadable:
            return False
        return self.get_credentials() != refused


class _Reauthenticating:
    """A connection that, when Redis refuses the provider's credentials, authenticates once more with the
    re-read secret on the same socket (a refused AUTH leaves the connection open), then carries on."""

    def on_connect_check_health(self, check_health: bool = True):
        provider = self.credential_provider
        offered = provider.get_credentials()
        try:
            return super().on_connect_check_health(check_health)
        except redis.AuthenticationError:
            if not provider.refreshed(offered):
                raise
            return super().on_connect_check_health(check_health)


class ReauthenticatingConnection(_Reauthenticating, redis.Connection):
    pass


class ReauthenticatingSSLConnection(_Reauthenticating, redis.SSLConnection):
    pass


def secret_options(secret_arn: str, url: str) -> dict:
    """redis-py options for a client whose credentials live in a secret (for redis:// and rediss:// URLs)."""
    tls = url.startswith("rediss://")
    return {
        "credential_provider": SecretCredentials(CachedSecret(secret_arn)),
        "connection_class": ReauthenticatingSSLConnection if tls else ReauthenticatingConnection,
    }
