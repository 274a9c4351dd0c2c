"""The system prompt: a Jinja2 template rendered in a sandbox with the caller's room context."""

from __future__ import annotations

from functools import cache, lru_cache
from importlib import resources
from typing import Any

from jinja2.sandbox import SandboxedEnvironment

from .errors import TemplateFailure

# Context values are data, never template source; the sandbox guards the template's own reach.
_environment = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


@cache
def default_template() -> str:
    """The template shipped in the layer, used when no other is configured."""
    return resources.files(__package__).joinpath("templates/system_prompt.j2").read_text(encoding="utf-8")


@lru_cache(maxsize=8)
def _compiled(source: str):
    return _environment.from_string(source)


def render_system_prompt(source: str, room_id: str, context: dict[str, Any]) -> str | None:
    """The rendered prompt, or None when it renders blank (then no system message is sent)."""
    try:
        text = _compiled(source).render({**context, "room_id": room_id}).strip()
    except Exception as error:  # operator-written template code: any failure is a template failure
        raise TemplateFailure(f"the system prompt template failed: {error}") from error
    return text or None


def message_list(room_id: str, version: int, turns: list[dict], system_prompt: str | None) -> dict[str, Any]:
    """The response body of every message route."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return {"room_id": room_id, "version": version, "messages": system + turns}
