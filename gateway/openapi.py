"""The OpenAPI 3.1 document, generated from the routes and their pydantic models."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.routing import BaseRoute, Route

from schemas.problem import Problem

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "query" | "path" | "header"
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Operation:
    summary: str
    response: type[BaseModel]
    status: int = 200
    body: type[BaseModel] | None = None
    params: Sequence[Param] = field(default_factory=tuple)
    also: Sequence[int] = field(default_factory=tuple)  # other success statuses with the same body


def documented(operation: Operation) -> Callable[[F], F]:
    def attach(endpoint: F) -> F:
        endpoint.openapi = operation  # type: ignore[attr-defined]
        return endpoint

    return attach


def build(routes: Sequence[BaseRoute], title: str, version: str) -> dict[str, Any]:
    documented_routes = [
        (route, route.endpoint.openapi)
        for route in routes
        if isinstance(route, Route) and hasattr(route.endpoint, "openapi")
    ]
    models: set[type[BaseModel]] = {Problem}
    for _, op in documented_routes:
        models |= {op.response} | ({op.body} if op.body else set())
    keyed: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (model, "validation" if _is_body(model, documented_routes) else "serialization") for model in models
    ]
    refs, components = models_json_schema(keyed, ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for route, op in documented_routes:
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = _operation(route, op, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _is_body(model: type[BaseModel], routes: list[tuple[Route, Operation]]) -> bool:
    return any(op.body is model for _, op in routes)


def _operation(route: Route, op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    def content(model: type[BaseModel], mode: str, media: str = "application/json") -> dict[str, Any]:
        return {media: {"schema": refs[(model, mode)]}}

    problem = {
        "description": "problem details (RFC 9457)",
        "content": content(Problem, "serialization", "application/problem+json"),
    }
    responses: dict[str, Any] = {
        str(status): {"description": "success", "content": content(op.response, "serialization")}
        for status in (op.status, *op.also)
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
        result["requestBody"] = {"required": True, "content": content(op.body, "validation")}
    if scope is not None:
        result["security"] = [{"bearer": [scope]}]
    return result
