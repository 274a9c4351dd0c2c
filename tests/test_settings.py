"""Settings: the environment read once into a frozen object; unset or empty keeps the default, malformed is refused."""

from __future__ import annotations

import dataclasses

import pytest

from room_history.settings import Settings, SettingsError

URL = {"REDIS_URL": "redis://127.0.0.1:6379/0"}


def test_only_redis_url_is_required_and_the_rest_has_defaults():
    assert Settings.from_env(URL) == Settings(redis_url=URL["REDIS_URL"])
    assert Settings.from_env({**URL, "MAX_HISTORY": "", "KEY_PREFIX": "", "REDIS_CLUSTER": " "}) == Settings.from_env(
        URL
    )


def test_values_are_read_and_typed():
    settings = Settings.from_env(
        {**URL, "REDIS_CLUSTER": "true", "KEY_PREFIX": "bot", "MAX_HISTORY": "60", "REDIS_TIMEOUT_SECONDS": "0.5"}
    )
    assert (settings.redis_cluster, settings.key_prefix, settings.max_history) == (True, "bot", 60)
    assert settings.redis_timeout_seconds == 0.5


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings.from_env(URL).max_history = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REDIS_URL", "localhost:6399"),
        ("KEY_PREFIX", "a{b}"),
        ("MAX_HISTORY", "abc"),
        ("MAX_TURN_BYTES", "0"),
        ("MAX_IDLE_SECONDS", "-5"),
        ("REDIS_TIMEOUT_SECONDS", "soon"),
    ],
)
def test_a_malformed_variable_is_refused_naming_it(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**URL, name: value})
