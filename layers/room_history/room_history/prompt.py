"""The system prompt: where its template comes from, which context it accepts, and sandboxed rendering."""

from __future__ import annotations

import json
import re
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from jinja2.sandbox import SandboxedEnvironment

from .errors import InvalidInput, TemplateFailure, TemplateUnavailable
from .rules import MAX_NESTING, nesting_depth
from .settings import Settings

PARAMETER_MAX_AGE_SECONDS = 300  # an edited SSM template reaches warm functions within five minutes
CONTEXT_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")

# Context values are data, never template source; the sandbox guards the template's own reach.
_environment = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


class SystemPrompt:
    """The template chosen by the settings: inline text wins, then the SSM parameter, then the shipped one."""

    def __init__(self, settings: Settings):
        self.inline_template = settings.system_prompt_template
        self.parameter_name = settings.system_prompt_parameter

    def render(self, room_id: str, context: Any, field: str = "context", summary: str | None = None) -> str | None:
        """The rendered prompt, or None when it renders blank (then no system message is sent).

        Writers render once before writing, so a bad context or a template failure changes nothing.
        """
        values, source = validate_context(context, field), self.source()
        try:
            text = _compiled(source).render({**values, "room_id": room_id, "summary": summary}).strip()
        except Exception as error:  # operator-written template code: any failure is a template failure
            raise TemplateFailure("template", f"the system prompt template failed: {error}") from error
        return text or None

    def source(self) -> str:
        if self.inline_template:
            return self.inline_template
        if self.parameter_name:
            return _read_parameter(self.parameter_name)
        return shipped_template()


def _read_parameter(name: str) -> str:
    """The SSM parameter through Powertools (cached per container); imported only when configured."""
    from aws_lambda_powertools.utilities import parameters
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return parameters.get_parameter(name, max_age=PARAMETER_MAX_AGE_SECONDS)
    except (parameters.exceptions.GetParameterError, BotoCoreError, ClientError) as error:  # also no region
        raise TemplateUnavailable("template", f"the system prompt parameter could not be read ({error})") from error


@cache
def shipped_template() -> str:
    """The template shipped in the layer, used when no other is configured."""
    return resources.files(__package__).joinpath("templates/system_prompt.j2").read_text(encoding="utf-8")


@lru_cache(maxsize=8)
def _compiled(source: str):
    return _environment.from_string(source)


def validate_context(value: Any, field: str = "context") -> dict[str, Any]:
    """Template variables: plain identifiers only, so no key can reach dunder attributes."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(field, "must be an object")
    if nesting_depth(value) > MAX_NESTING:
        raise InvalidInput(field, f"is nested deeper than {MAX_NESTING} levels")
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, "must be valid Unicode (no lone surrogates)") from None
    except ValueError:
        raise InvalidInput(field, "must hold finite numbers only") from None
    for key in value:
        if not CONTEXT_KEY.match(key):
            raise InvalidInput(f"{field}.{key}", "keys must be identifiers starting with a letter")
    return value
