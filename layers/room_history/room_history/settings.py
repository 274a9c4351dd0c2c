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
    media_part_tokens: int = 1000  # estimated tokens of one non-text content part (window.estimate_tokens)

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
        ):
            if env.get(name):
                values[field] = env[name]
        return cls(**values)


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
