"""Read template.yaml (SAM) the way the local tools need it: routes, functions, env names, handlers."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "template.yaml"
DEFAULT_TIMEOUT = 10.0
DEFAULT_MEMORY_MB = 128


class CloudFormationLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short-form tags (!Ref, !If, !Sub, ...) into plain data."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _construct_tag)


@dataclass(frozen=True)
class Route:
    """One HttpApi event of a function: METHOD path -> handler."""

    method: str
    path: str
    function: str
    code_uri: str
    handler: str
    timeout: float = DEFAULT_TIMEOUT
    memory_mb: int = DEFAULT_MEMORY_MB

    @property
    def route_key(self) -> str:
        """API Gateway's routeKey, e.g. "POST /rooms/{room_id}/messages"."""
        return "$default" if self.path == "$default" else f"{self.method} {self.path}"


def load_template(path: str | Path = TEMPLATE_PATH) -> dict:
    """Parse a SAM template file, CloudFormation tags included."""
    return loads_template(Path(path).read_text())


def loads_template(text: str) -> dict:
    """Parse SAM template text, CloudFormation tags included."""
    return yaml.load(text, Loader=CloudFormationLoader) or {}


def _resources(template: dict, type_: str) -> dict[str, dict]:
    return {
        name: resource
        for name, resource in (template.get("Resources") or {}).items()
        if isinstance(resource, dict) and resource.get("Type") == type_
    }


def function_properties(template: dict, name: str) -> dict:
    """A function's Properties with Globals.Function filled in under them."""
    merged = dict((template.get("Globals") or {}).get("Function") or {})
    merged.update(_resources(template, "AWS::Serverless::Function")[name].get("Properties") or {})
    return merged


def function_names(template: dict) -> list[str]:
    """Logical ids of every AWS::Serverless::Function."""
    return list(_resources(template, "AWS::Serverless::Function"))


def environment_names(template: dict) -> list[str]:
    """Names of the environment variables set in Globals and in any function."""
    sections = [(template.get("Globals") or {}).get("Function") or {}]
    sections += [r.get("Properties") or {} for r in _resources(template, "AWS::Serverless::Function").values()]
    names: set[str] = set()
    for section in sections:
        names.update(((section.get("Environment") or {}).get("Variables") or {}).keys())
    return sorted(names)


def environment_defaults(template: dict) -> dict[str, str]:
    """Globals' environment as a deployment with default parameters would set it (unset when empty)."""
    parameters = template.get("Parameters") or {}
    variables = (((template.get("Globals") or {}).get("Function") or {}).get("Environment") or {}).get("Variables")
    values = {}
    for name, value in (variables or {}).items():
        if isinstance(value, dict) and set(value) == {"Ref"}:
            value = (parameters.get(value["Ref"]) or {}).get("Default")
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value) != "":
            values[name] = str(value)
    return values


def _number(value: Any, default: float) -> float:
    """A literal number from the template; default for a missing value or an intrinsic (!Ref ...)."""
    try:
        return float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else default
    except ValueError:
        return default


def http_routes(template: dict) -> list[Route]:
    """Every HttpApi event of every function, as Routes."""
    routes = []
    for name in function_names(template):
        props = function_properties(template, name)
        for event in (props.get("Events") or {}).values():
            if event.get("Type") != "HttpApi":
                continue
            event_props = event.get("Properties") or {}
            routes.append(
                Route(
                    method=str(event_props.get("Method", "ANY")).upper(),
                    path=event_props.get("Path", "$default"),
                    function=name,
                    code_uri=str(props.get("CodeUri", ".")),
                    handler=str(props["Handler"]),
                    timeout=_number(props.get("Timeout"), DEFAULT_TIMEOUT),
                    memory_mb=int(_number(props.get("MemorySize"), DEFAULT_MEMORY_MB)),
                )
            )
    return routes


def layer_dirs(template: dict, root: Path = ROOT) -> list[Path]:
    """Local directories of every AWS::Serverless::LayerVersion (ContentUri, or its python/ subdirectory)."""
    dirs = []
    for layer in _resources(template, "AWS::Serverless::LayerVersion").values():
        content = (layer.get("Properties") or {}).get("ContentUri")
        if isinstance(content, str):
            path = (root / content).resolve()
            dirs.append(path / "python" if (path / "python").is_dir() else path)
    return dirs


def module_name(code_uri: str, handler: str) -> str:
    """A unique module name per function, e.g. functions/api/ + app.lambda_handler -> functions_api_app."""
    module = handler.rsplit(".", 1)[0]
    return re.sub(r"\W+", "_", f"{code_uri.strip('./')}/{module}").strip("_")


def load_handler(
    code_uri: str,
    handler: str,
    template: dict | None = None,
    name: str | None = None,
    root: Path = ROOT,
) -> Callable[[dict, Any], Any]:
    """Import a function's handler module by file path (layers on sys.path first) and return the callable.

    A module already imported under that name is reused; pass another name to get a
    fresh copy with its own module state, as a second Lambda instance would have.
    """
    template = load_template(root / "template.yaml") if template is None else template
    for directory in reversed(layer_dirs(template, root)):
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))
    module_path, attribute = handler.rsplit(".", 1)
    name = name or module_name(code_uri, handler)
    module = sys.modules.get(name)
    if module is None:
        file = (root / code_uri / (module_path.replace(".", "/") + ".py")).resolve()
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import handler {handler} from {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return getattr(module, attribute)
