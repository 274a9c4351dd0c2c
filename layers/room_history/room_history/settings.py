"""Settings read once per container into a frozen object and passed to the core."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A configuration variable is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    redis_url: str
    redis_cluster: bool = False
    key_prefix: str = "sg:conversation"
    max_history: int = 100
    max_turn_bytes: int = 262144
    max_idle_seconds: int = 3600
    system_prompt_template: str | None = None
    system_prompt_parameter: str | None = None
    redis_timeout_seconds: float = 2.0
    media_part_tokens: int = 1000  # estimated tokens of one non-text content part (window.estimate_tokens)
    redis_secret_arn: str | None = None
    auth_mode: str = "token"
    auth_frontends: str | None = None
    auth_secret_arn: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """The environment of docs/API.md (Configuration); an unset or empty variable keeps the default above."""
        redis_url = env.get("REDIS_URL", "").strip()
        if not redis_url.startswith(("redis://", "rediss://")):
            raise SettingsError("REDIS_URL must be a redis:// or rediss:// URL")
        values: dict = {"redis_url": redis_url}
        if env.get("REDIS_CLUSTER", "").strip():
            values["redis_cluster"] = env["REDIS_CLUSTER"].strip().lower() in ("1", "true", "yes")
        if env.get("KEY_PREFIX"):
            values["key_prefix"] = env["KEY_PREFIX"]
        if "{" in values.get("key_prefix", "") or "}" in values.get("key_prefix", ""):
            raise SettingsError("KEY_PREFIX must hold no braces (they would break the hash tag)")
        for field, name, kind in _NUMBERS:
            if env.get(name, "").strip():
                values[field] = _positive(name, env[name], kind)
        for field, name in (
            ("system_prompt_template", "SYSTEM_PROMPT_TEMPLATE"),
            ("system_prompt_parameter", "SYSTEM_PROMPT_PARAMETER"),
            ("auth_frontends", "AUTH_FRONTENDS"),
        ):
            if env.get(name):
                values[field] = env[name]
        for field, name in (("redis_secret_arn", "REDIS_SECRET_ARN"), ("auth_secret_arn", "AUTH_SECRET_ARN")):
            if env.get(name, "").strip():
                values[field] = env[name].strip()
        if env.get("AUTH_MODE", "").strip():
            values["auth_mode"] = env["AUTH_MODE"].strip().lower()
            if values["auth_mode"] not in AUTH_MODES:
                raise SettingsError(f"AUTH_MODE must be one of {', '.join(AUTH_MODES)}, got {env['AUTH_MODE']!r}")
        if values.get("redis_secret_arn") and urlsplit(redis_url).password:
            raise SettingsError("REDIS_URL must hold no password when REDIS_SECRET_ARN gives the credentials")
        return cls(**values)


AUTH_MODES = ("token", "iam", "none")
_NUMBERS = (
    ("max_history", "MAX_HISTORY", int),
    ("max_turn_bytes", "MAX_TURN_BYTES", int),
    ("max_idle_seconds", "MAX_IDLE_SECONDS", int),
    ("redis_timeout_seconds", "REDIS_TIMEOUT_SECONDS", float),
    ("media_part_tokens", "MEDIA_PART_TOKENS", int),
)


def _positive(name: str, raw: str, kind):
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {raw!r}")
    return value
