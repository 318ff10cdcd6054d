"""Wix marketing-consent rules, read from the docs: field checks, field masks, eligibility, query parsing.

Pure functions over JSON-like values, kept apart from the app in `wix` so each stays small. Violations
become a 400 ``{message, details.validationError.fieldViolations[{field, description, violatedRule,
ruleName}]}``.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterable
from functools import partial
from typing import Any

from adapters.simulators.common import Reject

__all__ = [
    "OPTIONAL_FIELDS",
    "STATES",
    "UPDATABLE",
    "Violations",
    "check_details",
    "check_fields",
    "check_rules",
    "consent_request",
    "copy_path",
    "eligibility",
    "identifier",
    "mask_paths",
    "parse_revision",
    "request_object",
    "run_query",
]

STATES = ("UNKNOWN_STATE", "NEVER_CONFIRMED", "REVOKED", "PENDING", "CONFIRMED")
IDENTIFIER_TYPES = ("EMAIL", "PHONE")  # UNKNOWN_TYPE is in the enum but names no identifier
ACTIVITY_ENUMS: dict[str, dict[str, tuple[str, ...]]] = {
    "lastConfirmationActivity": {
        "source": ("IN_PERSON", "FORM", "LINK_CONFIRMATION", "EMAIL_SERVICE", "WIX_USERS", "OTHER"),
        "optInLevel": ("UNKNOWN_OPT_IN_LEVEL", "SINGLE_CONFIRMATION", "DOUBLE_CONFIRMATION"),
    },
    "lastRevokeActivity": {"source": ("IN_PERSON", "FORM", "REVOKE_LINK", "WIX_USERS", "OTHER")},
}
OPTIONAL_FIELDS = ("lastConfirmationActivity", "lastRevokeActivity", "extendedFields")
UPDATABLE = ("state", *OPTIONAL_FIELDS)
QUERY_FIELDS = ("details.email", "details.phone", "state")
SORT_FIELDS = (*QUERY_FIELDS, "createdDate", "updatedDate")
DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT = 50, 100
E164 = re.compile(r"\+[1-9]\d{1,14}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _violation(field: str, description: str, rule: str = "OTHER", name: str = "") -> dict[str, str]:
    return {"field": field, "description": description, "violatedRule": rule, "ruleName": name or rule}


def _validation_error(violations: list[dict[str, str]]) -> Reject:
    message = "; ".join(f"{item['field']}: {item['description']}" for item in violations)
    return Reject(400, {"message": message, "details": {"validationError": {"fieldViolations": violations}}})


class Violations(list[dict[str, str]]):
    """Field violations collected for one request, so one 400 names every problem at once."""

    def add(self, field: str, description: str, rule: str = "OTHER", name: str = "") -> None:
        self.append(_violation(field, description, rule, name))

    def raise_any(self) -> None:
        if self:
            raise _validation_error(list(self))


def check_details(details: Any, prefix: str, out: Violations) -> None:
    """type EMAIL|PHONE with exactly its own identifier; phone in E.164."""
    if not isinstance(details, dict):
        out.add(prefix.rstrip("."), "is required", "REQUIRED_FIELD")
        return
    kind = details.get("type")
    if kind not in IDENTIFIER_TYPES:
        out.add(f"{prefix}type", "must be EMAIL or PHONE", "INVALID_ENUM_VALUE")
        return
    own, other = ("email", "phone") if kind == "EMAIL" else ("phone", "email")
    value, pattern = details.get(own), EMAIL if kind == "EMAIL" else E164
    if value is None:
        out.add(f"{prefix}{own}", f"is required for type {kind}", "REQUIRED_FIELD")
    elif not isinstance(value, str) or not pattern.fullmatch(value):
        out.add(f"{prefix}{own}", "must be E.164" if own == "phone" else "must be an email address", "FORMAT")
    if details.get(other) is not None:
        out.add(f"{prefix}{other}", f"must be empty for type {kind}", "OTHER", "ONE_OF_IDENTIFIER")


def check_fields(consent: dict[str, Any], prefix: str, out: Violations) -> None:
    """Types and enum values of the updatable fields a request carries."""
    if "state" in consent and consent["state"] not in STATES:
        out.add(f"{prefix}state", f"must be one of {', '.join(STATES)}", "INVALID_ENUM_VALUE")
    for activity, enums in ACTIVITY_ENUMS.items():
        if activity not in consent:
            continue
        value = consent[activity]
        if not isinstance(value, dict):
            out.add(f"{prefix}{activity}", "must be an object", "FORMAT")
            continue
        for key, allowed in enums.items():
            if key in value and value[key] not in allowed:
                out.add(f"{prefix}{activity}.{key}", f"must be one of {', '.join(allowed)}", "INVALID_ENUM_VALUE")
    extended = consent.get("extendedFields", {})
    if not isinstance(extended, dict) or not isinstance(extended.get("namespaces", {}), dict):
        out.add(f"{prefix}extendedFields", "must be an object with a namespaces object", "FORMAT")


def check_rules(entity: dict[str, Any], prefix: str, out: Violations) -> None:
    """The state/activity rules, on the entity as it would be stored."""
    state = entity.get("state", "UNKNOWN_STATE")
    confirmation = entity.get("lastConfirmationActivity") or {}
    if state in ("PENDING", "CONFIRMED") and not confirmation:
        out.add(f"{prefix}lastConfirmationActivity", f"is required when state is {state}", "REQUIRED_FIELD")
    if state == "REVOKED" and not entity.get("lastRevokeActivity"):
        out.add(f"{prefix}lastRevokeActivity", "is required when state is REVOKED", "REQUIRED_FIELD")
    if state == "PENDING" and confirmation and confirmation.get("optInLevel") != "DOUBLE_CONFIRMATION":
        out.add(
            f"{prefix}state",
            "PENDING is only valid with optInLevel DOUBLE_CONFIRMATION",
            "OTHER",
            "PENDING_NEEDS_DOI",
        )


def request_object(body: Any, field: str) -> dict[str, Any]:
    """The request's top-level object `field`; a 400 when it is missing or not an object."""
    value = body.get(field) if isinstance(body, dict) else None
    if not isinstance(value, dict):
        raise _validation_error([_violation(field, "is required and must be an object", "REQUIRED_FIELD")])
    return value


def consent_request(body: Any) -> tuple[dict[str, Any], Violations]:
    """The request's `marketingConsent`, with its details and field violations already collected."""
    consent = request_object(body, "marketingConsent")
    out = Violations()
    check_details(consent.get("details"), "marketingConsent.details.", out)
    check_fields(consent, "marketingConsent.", out)
    return consent, out


def identifier(details: dict[str, Any]) -> tuple[str, str]:
    kind = str(details["type"])
    return (kind, str(details["email"]).lower()) if kind == "EMAIL" else (kind, str(details["phone"]))


def _lookup(entity: dict[str, Any], path: str) -> Any:
    value: Any = entity
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def copy_path(source: dict[str, Any], target: dict[str, Any], parts: list[str]) -> None:
    """Field-mask copy of one path: set it from `source`, or clear it when `source` lacks it."""
    head, rest = parts[0], parts[1:]
    if not rest:
        if head in source:
            target[head] = copy.deepcopy(source[head])
        else:
            target.pop(head, None)
        return
    nested = source.get(head)
    copy_path(nested if isinstance(nested, dict) else {}, target.setdefault(head, {}), rest)


def mask_paths(mask: Any, out: Violations) -> list[str] | None:
    """Mask paths, or None for "the updatable fields present" (no mask, or an empty one)."""
    # REST sends {"paths": [...]}; the JS SDK's typed mask is a plain list.
    paths = mask.get("paths") if isinstance(mask, dict) else mask
    if not paths:
        return None
    if not isinstance(paths, list) or not all(isinstance(path, str) for path in paths):
        out.add("mask.paths", "must be a list of field paths", "FORMAT")
        return None
    for path in paths:
        head, _, rest = path.partition(".")
        if head not in UPDATABLE or (head == "state" and rest):
            out.add("mask.paths", f"{path!r} is not updatable; use {', '.join(UPDATABLE)}", "OTHER", "MASK_PATH")
    return paths


def parse_revision(value: Any, out: Violations) -> int | None:
    """Responses carry the revision as a string; requests may send a string or an integer (doc example)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    out.add("marketingConsent.revision", "must be an integer", "FORMAT")
    return None


def eligibility(entity: dict[str, Any]) -> dict[str, Any]:
    """REVOKED → false; NEVER_CONFIRMED → false for PHONE but true for EMAIL (PROVIDERS.md, from the docs)."""
    state = entity["state"]
    email = entity["details"]["type"] == "EMAIL"
    return {
        "granted": state == "CONFIRMED" or (email and state in ("NEVER_CONFIRMED", "UNKNOWN_STATE")),
        "reason": state,
    }


def _sort_value(entity: dict[str, Any], path: str) -> str:
    return str(_lookup(entity, path) or "")


def _cursor(value: Any, out: Violations) -> int:
    if value is None:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(str(value).encode()).decode())
    except ValueError:
        offset = -1
    if offset < 0:
        out.add("query.cursorPaging.cursor", "is not a cursor this API issued", "FORMAT")
    return max(offset, 0)


def _query_filter(raw: Any, out: Violations) -> list[tuple[str, list[Any]]]:
    """(field, accepted values) pairs from a Wix filter object."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        out.add("query.filter", "must be an object", "FORMAT")
        return []
    conditions: list[tuple[str, list[Any]]] = []
    for field, condition in raw.items():
        if field not in QUERY_FIELDS:
            out.add(
                "query.filter",
                f"cannot filter on {field!r}; use {', '.join(QUERY_FIELDS)}",
                "OTHER",
                "FILTER",
            )
        elif not isinstance(condition, dict):
            conditions.append((field, [condition]))
        elif set(condition) == {"$eq"}:
            conditions.append((field, [condition["$eq"]]))
        elif set(condition) == {"$in"} and isinstance(condition["$in"], list):
            conditions.append((field, condition["$in"]))
        else:
            out.add(f"query.filter.{field}", "supported operators: $eq, $in (a list)", "OTHER", "FILTER")
    return conditions


def run_query(query: dict[str, Any], entities: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Answer a Query request: filter, sort (oldest first by default), then one cursor page."""
    out = Violations()
    conditions = _query_filter(query.get("filter"), out)
    paging = query.get("cursorPaging") or {}
    if not isinstance(paging, dict):
        out.add("query.cursorPaging", "must be an object", "FORMAT")
        paging = {}
    limit = paging.get("limit", DEFAULT_QUERY_LIMIT)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_QUERY_LIMIT:
        out.add("query.cursorPaging.limit", f"must be an integer from 1 to {MAX_QUERY_LIMIT}", "MAX")
        limit = DEFAULT_QUERY_LIMIT
    offset = _cursor(paging.get("cursor"), out)
    items = sorted(entities, key=lambda entity: (entity["createdDate"], entity["id"]))
    sorts = query.get("sort") or []
    for sort in reversed(sorts if isinstance(sorts, list) else [sorts]):  # stable sorts: last key first
        field = sort.get("fieldName") if isinstance(sort, dict) else None
        if not isinstance(field, str) or field not in SORT_FIELDS:
            out.add("query.sort", f"cannot sort on {field!r}; use {', '.join(SORT_FIELDS)}", "OTHER", "SORT")
            continue
        reverse = str(sort.get("order", "ASC")).upper() == "DESC"
        items.sort(key=partial(_sort_value, path=field), reverse=reverse)
    out.raise_any()
    matches = [entity for entity in items if all(_lookup(entity, f) in ok for f, ok in conditions)]
    page, has_next = matches[offset : offset + limit], offset + limit < len(matches)
    cursors = {"next": base64.urlsafe_b64encode(str(offset + limit).encode()).decode()} if has_next else {}
    return {
        "marketingConsent": page,
        "pagingMetadata": {"count": len(page), "cursors": cursors, "hasNext": has_next},
    }
