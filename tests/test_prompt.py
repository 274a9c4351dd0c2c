"""The system prompt module: its context rules, its sources and sandboxed rendering."""

from __future__ import annotations

import pytest

from room_history.errors import InvalidInput, TemplateFailure, TemplateUnavailable
from room_history.prompt import SystemPrompt, shipped_template, validate_context
from room_history.settings import Settings


def prompt(**settings) -> SystemPrompt:
    return SystemPrompt(Settings(redis_url="redis://127.0.0.1:1", **settings))


class TestContext:
    def test_identifier_keys_pass(self):
        assert validate_context({"room_name": "general", "n": {"a": [1]}}) == {"room_name": "general", "n": {"a": [1]}}

    @pytest.mark.parametrize("key", ["__class__", "_private", "a-b", "", "1x"])
    def test_other_keys_are_refused(self, key):
        with pytest.raises(InvalidInput, match="context"):
            validate_context({key: "x"})

    def test_context_must_be_an_object(self):
        with pytest.raises(InvalidInput, match="context"):
            validate_context(["a"])

    def test_the_field_is_named(self):
        with pytest.raises(InvalidInput, match=r"^query string\.x-y: "):
            prompt().render("r", {"x-y": "1"}, "query string")


class TestSources:
    def test_inline_template_wins(self):
        assert prompt(system_prompt_template="Hi {{ room_id }}").render("discord:1", {}) == "Hi discord:1"

    def test_shipped_template_is_the_default(self):
        assert prompt().source() == shipped_template()
        assert "discord:1" in prompt().render("discord:1", {})

    def test_blank_render_is_none(self):
        assert prompt(system_prompt_template="{{ '' }}  ").render("r", {}) is None

    def test_room_id_wins_over_the_context(self):
        assert prompt(system_prompt_template="{{ room_id }}").render("real", {"room_id": "fake"}) == "real"

    def test_broken_template_is_a_template_failure(self):
        with pytest.raises(TemplateFailure, match="^template: "):
            prompt(system_prompt_template="{% if %}").render("r", {})

    def test_unreadable_parameter_without_a_region_is_unavailable(self, monkeypatch):
        for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
        from aws_lambda_powertools.utilities import parameters

        parameters.clear_caches()
        monkeypatch.setattr(parameters.base, "DEFAULT_PROVIDERS", {})
        with pytest.raises(TemplateUnavailable, match="^template: "):
            prompt(system_prompt_parameter="/room-history/prompt").render("r", {})
