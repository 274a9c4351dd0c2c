"""docs/API.md, the reference a user of a clone reads, says what docs/openapi.yaml and the code do.

Each check reads its facts from the spec or the code at test time, so a route, status, body field, error
code or environment variable added there without a line in docs/API.md fails here.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
from test_openapi import SPEC, deref

from room_history.settings import Settings
from support import Api

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = (ROOT / "docs" / "API.md").read_text(encoding="utf-8")
METHODS = ("get", "put", "post", "delete", "patch")
OPERATIONS = [
    (method.upper(), path, operation)
    for path, item in SPEC["paths"].items()
    for method, operation in item.items()
    if method in METHODS
]
HANDLER_SOURCES = sorted((ROOT / "functions" / "api").glob("*.py"))
CODE_SOURCES = sorted([*(ROOT / "functions").glob("*/*.py"), *(ROOT / "layers/room_history/room_history").glob("*.py")])
CORE = ROOT / "layers" / "room_history" / "room_history"
CORE_INIT = "layers/room_history/room_history/__init__.py"
SETTINGS_SOURCE = CORE / "settings.py"
ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\Z")


def chapter(title: str) -> str:
    """The text of the `## title` chapter."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", REFERENCE, re.M | re.S)
    assert match, f"docs/API.md has no '## {title}' chapter"
    return match.group(1)


def route_section(method: str, path: str) -> str:
    """The text of the route's `### \\`METHOD path\\`` section."""
    match = re.search(rf"^### `{method} {re.escape(path)}`\n(.*?)(?=^##|\Z)", REFERENCE, re.M | re.S)
    assert match, f"docs/API.md has no section '### `{method} {path}`'"
    return match.group(1)


def documented_statuses(section: str) -> set[int]:
    """The numbers of the section's `Statuses:` paragraph."""
    match = re.search(r"^Statuses:(.*?)(?:\n\n|\Z)", section, re.M | re.S)
    assert match, "a route section lists its statuses in a 'Statuses:' paragraph"
    return {int(number) for number in re.findall(r"(?<![\w.])([1-5]\d\d)(?!\w|\.\d)", match.group(1))}


def table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row of `text`, backticks kept."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.match(r"\|[-| ]+\|$", line):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def mentions(text: str, name: str) -> bool:
    return f"`{name}`" in text or f'"{name}"' in text


def body_fields(schema: dict) -> set[str]:
    """Property names of a request body schema, also of the objects in its array properties (batch turns)."""
    schema, fields = deref(schema), set()
    for member in [schema, *(deref(part) for key in ("allOf", "anyOf", "oneOf") for part in schema.get(key, []))]:
        for name, prop in member.get("properties", {}).items():
            fields.add(name)
            prop = deref(prop)
            if prop.get("type") == "array" and "items" in prop:
                fields |= set(deref(prop["items"]).get("properties", {}))
    return fields


def test_every_operation_of_the_spec_has_a_section_and_nothing_else_does():
    documented = set(re.findall(r"^### `([A-Z]+) (/\S*)`$", REFERENCE, re.M))
    in_spec = {(method, path) for method, path, _ in OPERATIONS}
    assert documented == in_spec
    overview = chapter("Routes")
    for method, path in in_spec:
        assert f"`{method} {path}`" in overview, f"{method} {path} is missing from the route table"


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_every_documented_status_and_parameter_appears_in_the_route_section(method, path, operation):
    section = route_section(method, path)
    statuses = {int(status) for status in operation["responses"]}
    assert statuses <= documented_statuses(section), f"{method} {path}: {statuses - documented_statuses(section)}"
    parameters = [deref(parameter) for parameter in operation.get("parameters", [])]
    for parameter in parameters:
        if parameter["in"] in ("header", "query"):
            assert mentions(section, parameter["name"]), f"{method} {path}: {parameter['name']} undocumented"


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    [operation for operation in OPERATIONS if "requestBody" in operation[2]],
    ids=[f"{m} {p}" for m, p, o in OPERATIONS if "requestBody" in o],
)
def test_every_request_body_field_appears_in_the_route_section(method, path, operation):
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    fields = body_fields(schema)
    assert fields, "the body schema has properties"
    section = route_section(method, path)
    missing = sorted(field for field in fields if not mentions(section, field))
    assert not missing, f"{method} {path}: body fields {missing} are not in its section of docs/API.md"


def handler_error_codes() -> set[tuple[int, str]]:
    """(status, code) of every error the API function can answer: its ERRORS table and fallback, as loaded,
    and every `(status, "code")` pair written in its source (route_not_found, ...)."""
    module = Api({"REDIS_URL": "redis://127.0.0.1:1/0", "AUTH_MODE": "none"}).module
    codes = set(module.ERRORS.values()) | {module.UNMAPPED}
    for source in HANDLER_SOURCES:
        for status, code in re.findall(r"\b([45]\d\d),\s*\"([a-z]+(?:_[a-z]+)+)\"", source.read_text()):
            codes.add((int(status), code))
    return codes


def test_every_error_code_of_the_handler_is_in_the_error_table_with_its_status():
    codes = handler_error_codes()
    assert {(400, "invalid_request"), (404, "route_not_found"), (500, "internal_error")} <= codes
    rows = table_rows(chapter("Errors"))
    table = {(row[0], row[1].strip("`")) for row in rows if len(row) >= 2}
    missing = sorted(code for code in codes if (str(code[0]), code[1]) not in table)
    assert not missing, f"error codes missing from the Errors table of docs/API.md: {missing}"


def test_the_error_table_lists_only_codes_the_handler_answers_or_the_auth_contract_names():
    """Authentication (401/403) is the one part of the table that may precede its code."""
    codes = handler_error_codes() | {(401, "unauthorized"), (403, "forbidden")}
    rows = table_rows(chapter("Errors"))[1:]
    assert {(int(row[0]), row[1].strip("`")) for row in rows} <= codes


def environment_names(source: str, settings_module: bool) -> set[str]:
    """Environment variables a module reads: `env.get("NAME")`, `os.environ["NAME"]`, `os.getenv("NAME")`, and
    in the settings module every ALL_CAPS string constant (its tables of names)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if settings_module and isinstance(node, ast.Constant) and isinstance(node.value, str):
            if ENV_NAME.match(node.value):
                names.add(node.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            receiver, first = ast.unparse(node.func.value), node.args[0]
            reads = node.func.attr == "getenv" or (node.func.attr in ("get", "pop") and "env" in receiver.lower())
            if reads:
                if isinstance(first, ast.Constant) and isinstance(first.value, str) and ENV_NAME.match(first.value):
                    names.add(first.value)
        if isinstance(node, ast.Subscript) and "env" in ast.unparse(node.value).lower():
            key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str) and ENV_NAME.match(key.value):
                names.add(key.value)
    return names


def test_the_environment_reader_finds_every_form_of_read():
    """The check below cannot pass by finding nothing."""
    source = 'import os\nx = os.environ.get("A_ONE")\ny = os.environ["B_TWO"]\nz = os.getenv("C_THREE")\n'
    source += 'def f(env):\n    return env.get("D_FOUR", "")\nNAMES = (("f", "E_FIVE"),)\n'
    assert environment_names(source, settings_module=False) == {"A_ONE", "B_TWO", "C_THREE", "D_FOUR"}
    assert environment_names(source, settings_module=True) == {"A_ONE", "B_TWO", "C_THREE", "D_FOUR", "E_FIVE"}
    assert {"REDIS_URL", "REDIS_TIMEOUT_SECONDS", "MAX_HISTORY"} <= code_environment()


def code_environment() -> set[str]:
    names = set()
    for path in CODE_SOURCES:
        names |= environment_names(path.read_text(), settings_module=path == SETTINGS_SOURCE)
    return names


def configuration_table() -> dict[str, str]:
    """Name -> default cell of the Configuration table."""
    rows = table_rows(chapter("Configuration"))
    assert rows[0] == ["name", "meaning", "default"]
    return {row[0].strip("`"): row[2].strip("`") for row in rows[1:]}


def test_every_environment_variable_the_code_reads_is_in_the_configuration_table():
    missing = sorted(code_environment() - set(configuration_table()))
    assert not missing, f"variables read by the code but missing from docs/API.md's Configuration: {missing}"


def test_the_configuration_table_gives_the_defaults_of_the_settings():
    table, checked = configuration_table(), 0
    for field in dataclasses.fields(Settings):
        documented = table.get(field.name.upper())
        if documented is None:
            continue  # a setting not read from a variable of its own name
        checked += 1
        if field.default is dataclasses.MISSING:
            assert documented == "required", field.name
            continue
        default = getattr(field.default, "value", field.default)
        if default is None:
            assert documented == "unset", field.name
        elif isinstance(default, bool):
            assert documented == str(default).lower(), field.name
        elif isinstance(default, int | float):
            assert float(documented) == default, field.name
        else:
            assert documented == str(default), field.name
    assert checked >= 9


def test_the_token_budget_response_fields_and_the_estimate_are_documented():
    listing = chapter("The message list")
    for name in ("max_tokens", "tokens", "truncated", "summary", "room_id"):
        assert mentions(listing, name), name


@pytest.mark.parametrize("document", ["README.md", "docs/API.md"])
def test_the_documentation_names_only_files_a_clone_has(document):
    """A clone needs nothing beside it: every file path the text names exists, and nothing points outside."""
    text = (ROOT / document).read_text(encoding="utf-8")
    assert "CONTRACT.md" not in text and "shared/" not in text
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    paths = re.findall(r"`([\w.-]+(?:/[\w.-]+)+\.(?:md|ya?ml|py|txt|j2|json|toml))`", text)
    assert links or paths
    base = (ROOT / document).parent
    missing = [link for link in links if "://" not in link and not (base / link).exists()]
    missing += [path for path in paths if not (ROOT / path).exists()]
    assert not missing, f"{document} names files a clone does not have: {missing}"


def test_the_readme_layout_names_files_that_exist():
    """The file tree under "How it works" in README.md."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tree = re.search(r"## How it works\n+```\n(.*?)```", readme, re.S).group(1)
    named = []
    for line in tree.splitlines():
        first = line.split()[0] if line.strip() else ""
        if line.startswith("  ") and not line.startswith("   ") and re.match(r"[\w/]+\.\w+$", first):
            named.append(f"layers/room_history/{first}")  # the layer's modules, indented under it
        elif re.match(r"[\w/.]+$", first) and not line.startswith(" "):
            named.append(first)
        if first == "local/" or line.startswith(" " * 26):  # the tools listed beside local/
            named += [f"local/{name}" for name in re.findall(r"\b(\w+\.py)\b", line)]
    assert len(named) >= 15, named
    assert not [path for path in named if not (ROOT / path).exists()]
    modules = {f"layers/room_history/room_history/{path.name}" for path in CORE.glob("*.py")} - {CORE_INIT}
    assert not sorted(modules - set(named)), "a module of the core is missing from README's layout"


def test_the_documented_token_estimate_is_the_one_the_code_uses():
    from room_history import window

    listing = chapter("The message list")
    formula = re.search(
        r"`tokens = (\d+) \+ ceil\(text_bytes / (\d+)\) \+ MEDIA_PART_TOKENS × non_text_parts`", listing
    )
    assert formula, "the estimate formula is in 'The message list'"
    assert (int(formula.group(1)), int(formula.group(2))) == (window.MESSAGE_OVERHEAD_TOKENS, window.BYTES_PER_TOKEN)
    image = {"role": "user", "content": [{"type": "text", "text": "é" * 9}, {"type": "image_url", "image_url": {}}]}
    assert window.estimate_tokens(image, 1000) == 4 + 5 + 1000  # 18 UTF-8 bytes of text, one media part
