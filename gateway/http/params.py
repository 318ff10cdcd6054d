"""Query parameters and JSON bodies, read strictly: what a client sends is what it meant.

Python's own parsers are generous (``float("1_0") == 10``, ``json.loads`` keeps the last of
two equal keys); a consent service must refuse what it would otherwise have to guess.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Callable, Collection
from itertools import accumulate
from typing import Annotated, Any, NamedTuple, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from starlette.requests import Request

from gateway.refusals import Refusal, bad_parameter, invalid, not_found
from schemas.problem import FieldError

DIGITS = re.compile(r"[0-9]{1,9}")
DECIMAL = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SUBJECT_ID = re.compile(r"[A-Za-z0-9._:@+-]{1,200}")  # as schemas.consent.SubjectId
JSON_MEDIA = re.compile(r"application/([a-z0-9.+-]+\+)?json", re.IGNORECASE)
JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
NOT_A_BRACKET = bytes(code for code in range(256) if code not in b"[]{}")
MAX_DEPTH = 32  # the deepest body the API documents is 4 levels; Python's parsers recurse

Query = TypeVar("Query", bound="QueryModel")
Model = TypeVar("Model", bound=BaseModel)


def _digits(value: Any) -> Any:
    if isinstance(value, str) and not DIGITS.fullmatch(value):
        raise ValueError("must be a whole number written with the digits 0-9")
    return value


def _decimal(value: Any) -> Any:
    if isinstance(value, str) and not DECIMAL.fullmatch(value):
        raise ValueError("must be a number written with the digits 0-9 and an optional decimal point")
    return value


WholeNumber = Annotated[int, BeforeValidator(_digits)]
PlainDecimal = Annotated[float, BeforeValidator(_decimal)]


class QueryModel(BaseModel):
    """A route's query parameters; an unknown parameter is refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


class PageQuery(QueryModel):
    """A list's page, maybe of one provider's items: where the previous page ended (its
    ``next_cursor``), and how many items."""

    provider: str | None = None
    cursor: str | None = None
    limit: Annotated[WholeNumber, Field(ge=1, le=200)] = 50


Page = TypeVar("Page", bound=PageQuery)


def page_query(request: Request, model: type[Page], providers: Collection[str], decode: Callable[[str], Any]) -> Page:
    """A list route's query: a 400 naming ``provider`` when it is not configured, ``cursor`` when
    ``decode`` refuses it (a cursor this service never handed out)."""
    filters = query(request, model)
    if filters.provider is not None and filters.provider not in providers:
        raise bad_parameter("provider", f"not a configured provider; configured: {', '.join(providers)}")
    if filters.cursor is not None:
        try:
            decode(filters.cursor)
        except ValueError:
            raise bad_parameter("cursor", "not a cursor this service handed out") from None
    return filters


def query(request: Request, model: type[Query]) -> Query:
    """The request's query parameters as ``model``; a 400 problem naming each bad one."""
    params = request.query_params
    repeated = sorted({key for key in params if len(params.getlist(key)) > 1})
    if repeated:
        errors = [FieldError(field=key, message="given more than once") for key in repeated]
        raise Refusal(400, "validation-error", "The request is not valid", "repeated query parameter", errors)
    try:
        return model.model_validate(dict(params))
    except ValidationError as error:
        raise invalid(error, status=400) from None


def path_id(request: Request, name: str, pattern: re.Pattern[str], what: str) -> str:
    """A path id, or 404 when it cannot name anything here (never sent on to the store)."""
    value = str(request.path_params[name])
    if not pattern.fullmatch(value):
        raise not_found(what)
    return value


def require_json(request: Request) -> None:
    """415 unless the body is declared as JSON: a form post or text/plain is not a decision."""
    media = request.headers.get("content-type", "").partition(";")[0].strip()
    if not JSON_MEDIA.fullmatch(media):
        raise Refusal(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as application/json",
            [FieldError(field="Content-Type", message="must be application/json")],
        )


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, refusing more than ``limit`` bytes whether or not Content-Length says so, and a
    body still arriving after ``timeout_s`` (a client trickling bytes holds a socket)."""
    declared = request.headers.get("content-length", "")
    if DIGITS.fullmatch(declared) and int(declared) > limit:
        raise too_large(limit)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        detail = f"the body did not arrive within {timeout_s:g} s"
        raise Refusal(
            408, "body-too-slow", "Request body too slow", detail, [FieldError(field="body", message=detail)]
        ) from None
    return b"".join(chunks)


def too_large(limit: int) -> Refusal:
    return Refusal(
        413,
        "body-too-large",
        "Request body too large",
        f"the limit is {limit} bytes",
        [FieldError(field="body", message=f"larger than {limit} bytes")],
    )


class _Repeated(dict[str, Any]):
    """A JSON object that named some key more than once (``json.loads`` would keep the last)."""

    repeated: list[str]


class Parsed(NamedTuple):
    value: Any
    repeats: bool  # some object names a key twice: walk it with :func:`refuse_repeated_keys`


def parse_json(body: bytes) -> Parsed:
    """The body as JSON, with objects that repeat a key marked (see :func:`repeated_keys`);
    a 422 naming ``body`` when it is not JSON at all."""
    _refuse_deep(body)
    repeated: list[bool] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found = dict(pairs)
        if len(found) == len(pairs):
            return found
        counts = Counter(key for key, _ in pairs)
        marked = _Repeated(found)
        marked.repeated = sorted(key for key, count in counts.items() if count > 1)
        repeated.append(True)
        return marked

    try:
        return Parsed(json.loads(body, object_pairs_hook=pairs_hook), bool(repeated))
    except ValueError as error:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else "not UTF-8"
        raise _body_error(f"is not valid JSON: {reason}") from None


def _refuse_deep(body: bytes) -> None:
    """A 422 naming ``body`` for arrays and objects nested past :data:`MAX_DEPTH`, before
    ``json.loads`` (and everything after it that walks the value) runs out of stack on them."""
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:  # no deeper than its openers, counted in C
        return
    brackets = JSON_STRING.sub(b"", body).translate(None, NOT_A_BRACKET)
    if max(accumulate(1 if code in b"[{" else -1 for code in brackets), default=0) > MAX_DEPTH:
        raise _body_error(f"nests arrays and objects more than {MAX_DEPTH} deep")


def _body_error(message: str) -> Refusal:
    errors = [FieldError(field="body", message=message)]
    return Refusal(422, "validation-error", "The request is not valid", f"body {message}", errors)


def repeated_keys(value: Any, prefix: str = "", *, deep: bool = True) -> list[FieldError]:
    """One error per key an object in ``value`` repeats (only ``value`` itself unless ``deep``),
    named by its dotted path."""
    found = [
        FieldError(field=_join(prefix, key), message="given more than once") for key in getattr(value, "repeated", ())
    ]
    if not deep:
        return found
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in children:
        found += repeated_keys(item, _join(prefix, str(key)))
    return found


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


async def body_model(request: Request, model: type[Model], limit: int, timeout_s: float) -> Model:
    """A small JSON body as ``model``; an empty body means every field's default."""
    raw = await read_body(request, limit, timeout_s)
    if not raw:  # no body: every default (whitespace alone is a body, and not JSON)
        return model()
    require_json(request)
    parsed = parse_json(raw)
    if parsed.repeats:
        refuse_repeated_keys(parsed.value)
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise invalid(error) from None


def refuse_repeated_keys(value: Any, prefix: str = "", *, deep: bool = True) -> None:
    """422 naming every repeated key: ``{"id": "a", "id": "b"}`` must not silently mean ``"b"``."""
    errors = repeated_keys(value, prefix, deep=deep)
    if errors:
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        raise Refusal(422, "validation-error", "The request is not valid", detail, errors)
