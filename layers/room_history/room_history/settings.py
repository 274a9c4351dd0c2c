"""Settings read once per container into a frozen object and passed to the core."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


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

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        redis_url = env.get("REDIS_URL", "").strip()
        if not redis_url.startswith(("redis://", "rediss://")):
            raise SettingsError("REDIS_URL must be a redis:// or rediss:// URL")
        prefix = env.get("KEY_PREFIX", "sg:conversation")
        if not prefix or "{" in prefix or "}" in prefix:
            raise SettingsError("KEY_PREFIX must be non-empty and hold no braces (they would break the hash tag)")
        return cls(
            redis_url=redis_url,
            redis_cluster=env.get("REDIS_CLUSTER", "false").strip().lower() in ("1", "true", "yes"),
            key_prefix=prefix,
            max_history=_number(env, "MAX_HISTORY", 100, int),
            max_turn_bytes=_number(env, "MAX_TURN_BYTES", 262144, int),
            max_idle_seconds=_number(env, "MAX_IDLE_SECONDS", 3600, int),
            system_prompt_template=env.get("SYSTEM_PROMPT_TEMPLATE") or None,
            system_prompt_parameter=env.get("SYSTEM_PROMPT_PARAMETER") or None,
            redis_timeout_seconds=_number(env, "REDIS_TIMEOUT_SECONDS", 2.0, float),
        )


def _number(env: Mapping[str, str], name: str, default, kind):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {raw!r}")
    return value
