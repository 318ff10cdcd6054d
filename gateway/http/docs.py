"""``GET /docs``: the OpenAPI document as a page for people, rendered here with no script and no
CDN (the gateway often runs where nothing outside answers): every operation with its parameters,
body and answers, then every schema with its fields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    required: bool
    description: str


@dataclass(frozen=True)
class Answer:
    status: str
    description: str
    kind: str


@dataclass(frozen=True)
class OperationView:
    method: str
    path: str
    summary: str
    anchor: str
    parameters: list[Field]
    body: str
    answers: list[Answer]


def kind(schema: dict[str, Any]) -> str:
    """A schema in a few words: ``string (date-time)``, ``array of DeliveryOut``, ``one of: a, b``."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "enum" in schema:
        return "one of: " + ", ".join(str(value) for value in schema["enum"])
    for combined in ("anyOf", "oneOf", "allOf"):
        if combined in schema:
            return " or ".join(kind(part) for part in schema[combined])
    name = str(schema.get("type", "any"))
    if name == "array":
        return f"array of {kind(schema.get('items', {}))}"
    if name == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of {kind(schema['additionalProperties'])}"
    details = [str(schema[key]) for key in ("format",) if key in schema]
    details += [f"pattern {schema['pattern']}"] if "pattern" in schema else []
    return f"{name} ({', '.join(details)})" if details else name


def _body_kind(content: dict[str, Any] | None) -> str:
    if not content:
        return ""
    media, value = next(iter(content.items()))
    return f"{kind(value.get('schema', {}))} ({media})"


def operations(document: dict[str, Any]) -> list[OperationView]:
    return [
        _operation(method, path, item[method])
        for path, item in document.get("paths", {}).items()
        for method in METHODS
        if method in item
    ]


def _operation(method: str, path: str, operation: dict[str, Any]) -> OperationView:
    parameters = [_parameter(parameter) for parameter in operation.get("parameters", [])]
    answers = [
        Answer(status, answer.get("description", ""), _body_kind(answer.get("content")))
        for status, answer in operation.get("responses", {}).items()
    ]
    body = _body_kind(operation.get("requestBody", {}).get("content"))
    anchor = operation.get("operationId", f"{method}-{path}")
    return OperationView(method.upper(), path, operation.get("summary", ""), anchor, parameters, body, answers)


def _parameter(parameter: dict[str, Any]) -> Field:
    where = f"{parameter['in']}: {kind(parameter.get('schema', {}))}"
    return Field(parameter["name"], where, parameter.get("required", False), parameter.get("description", ""))


def schemas(document: dict[str, Any]) -> dict[str, list[Field]]:
    shown = {}
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        required = set(schema.get("required", []))
        shown[name] = [
            Field(field, kind(value), field in required, value.get("description", ""))
            for field, value in schema.get("properties", {}).items()
        ] or [Field("", kind(schema), False, schema.get("description", ""))]
    return shown


def page(request: Request, document: dict[str, Any]) -> Response:
    context = {"info": document.get("info", {}), "operations": operations(document), "schemas": schemas(document)}
    return TEMPLATES.TemplateResponse(request, "docs.html", context)
