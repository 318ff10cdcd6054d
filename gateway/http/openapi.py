"""The OpenAPI 3.1 document, generated from the routes and their pydantic models."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.routing import BaseRoute, Route

from schemas.consent import YEAR_PATTERN
from schemas.problem import Problem

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "query" | "path" | "header"
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


def path_param(name: str, pattern: re.Pattern[str], where: str = "path", description: str = "") -> Param:
    """An id as exactly as the route checks it (in a path, one that cannot match is a 404)."""
    return Param(name, where, {"type": "string", "pattern": f"^{pattern.pattern}$"}, description)


PAGE_PARAMS = [  # ``params.PageQuery``, as the document shows it
    Param("provider", "query", {"type": "string"}),
    Param("cursor", "query", {"type": "string"}, "next_cursor of the previous page"),
    Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200}),
]


@dataclass(frozen=True)
class Link:
    """An id a response returns, fed to the operation that takes it (OpenAPI links: clients and
    stateful fuzzers follow them)."""

    operation: str
    parameters: Mapping[str, str]


@dataclass(frozen=True)
class Operation:
    summary: str
    response: type[BaseModel]
    status: int = 200
    body: type[BaseModel] | None = None
    params: Sequence[Param] = field(default_factory=tuple)
    also: Sequence[int] = field(default_factory=tuple)  # other success statuses with the same body
    other: Mapping[int, type[BaseModel]] = field(default_factory=dict)  # other success statuses, other bodies
    links: Mapping[str, Link] = field(default_factory=dict)
    body_limit: str = "max_body_bytes"  # the setting that caps the body (413 above it)
    body_optional: bool = False  # an empty body means every field's default (``params.body_model``)
    body_text: str | None = None  # a body that is not JSON: what it is (a provider's signed webhook)


def documented(operation: Operation) -> Callable[[F], F]:
    def attach(endpoint: F) -> F:
        endpoint.openapi = operation  # type: ignore[attr-defined]
        return endpoint

    return attach


@dataclass(frozen=True)
class Deployment:
    """What config decides about the API, so the document says exactly what this deployment accepts."""

    vocabulary: Mapping[str, Sequence[str]]  # "purposes", "providers", "readable" (read back), "years"
    body_limits: Mapping[str, int]  # setting name -> bytes


def build(routes: Sequence[BaseRoute], title: str, version: str, deployment: Deployment) -> dict[str, Any]:
    documented_routes = [
        (route, route.endpoint.openapi)
        for route in routes
        if isinstance(route, Route) and hasattr(route.endpoint, "openapi")
    ]
    models: set[type[BaseModel]] = {Problem}
    for _, op in documented_routes:
        models |= {op.response, *op.other.values()} | ({op.body} if op.body else set())
    keyed: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (model, "validation" if _is_body(model, documented_routes) else "serialization") for model in models
    ]
    refs, components = models_json_schema(keyed, ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for route, op in documented_routes:
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = _operation(route, op, refs)
    schemas = components.get("$defs", {})
    _configured(schemas, paths, deployment)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def _restrict(prop: dict[str, Any], allowed: Sequence[str]) -> None:
    """``prop`` (or its non-null branch) takes only ``allowed``: as keys, items, or a date-time's year."""
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") == "object":
            branch["propertyNames"] = {"enum": list(allowed)}
        elif branch.get("type") == "array":
            branch["items"] = {"enum": list(allowed)}
        elif "pattern" in branch:
            branch["pattern"] = branch["pattern"].replace(f"^{YEAR_PATTERN}-", f"^({'|'.join(allowed)})-", 1)


def _configured(schemas: dict[str, Any], paths: dict[str, Any], deployment: Deployment) -> None:
    """Values that come from config as enums (purpose names, ``x-vocabulary`` marks where;
    provider names), body limits as numbers."""
    for title, schema in schemas.items():
        for prop in schema.get("properties", {}).values():
            name = prop.pop("x-vocabulary", None)
            if name is not None and not title.endswith("-Output"):  # what was stored under older config stays
                _restrict(prop, deployment.vocabulary[name])
    for operation in (op for item in paths.values() for op in item.values()):
        for parameter in operation["parameters"]:
            if parameter["name"] == "provider":
                parameter["schema"] = {"enum": list(deployment.vocabulary["providers"])}
        body = operation.get("requestBody")
        if body is not None:
            body["description"] += f": {deployment.body_limits[body.pop('x-limit')]} bytes here"


def _is_body(model: type[BaseModel], routes: list[tuple[Route, Operation]]) -> bool:
    return any(op.body is model for _, op in routes)


def _operation(route: Route, op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    def content(model: type[BaseModel], mode: str, media: str = "application/json") -> dict[str, Any]:
        return {media: {"schema": refs[(model, mode)]}}

    problem = {
        "description": "problem details (RFC 9457)",
        "content": content(Problem, "serialization", "application/problem+json"),
    }
    links = {
        name: {"operationId": link.operation, "parameters": dict(link.parameters)} for name, link in op.links.items()
    }
    responses: dict[str, Any] = {
        str(status): {"description": "success", "content": content(op.response, "serialization")}
        | ({"links": links} if links else {})
        for status in (op.status, *op.also)
    }
    responses |= {
        str(status): {"description": "success", "content": content(model, "serialization")}
        for status, model in op.other.items()
    }
    responses["default"] = problem
    scope = getattr(route.endpoint, "required_scope", None)
    result: dict[str, Any] = {
        "summary": op.summary,
        "operationId": route.name,
        "parameters": [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required or p.where == "path",
                "schema": p.schema,
                "description": p.description,
            }
            for p in op.params
        ],
        "responses": responses,
    }
    if op.body is not None:
        result["requestBody"] = {
            "required": not op.body_optional,
            "description": f"JSON, at most `{op.body_limit}` bytes (413 above it)",
            "x-limit": op.body_limit,
            "content": content(op.body, "validation"),
        }
    if op.body_text is not None:
        result["requestBody"] = {
            "required": True,
            "description": f"{op.body_text}, at most `{op.body_limit}` bytes (413 above it)",
            "x-limit": op.body_limit,
            "content": {"text/plain": {"schema": {"type": "string", "minLength": 1}}},
        }
    if scope is not None:
        result["security"] = [{"bearer": [scope]}]
    return result
