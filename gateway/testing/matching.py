"""What makes a live request the same as a recorded one.

Method, relative path, query (secret parameters left out: their values are placeholders in
the cassette) and the JSON body in canonical form, minus the cassette's volatile fields (the
decision's own time, which a downstream test cannot repeat). Headers never count.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection, Sequence
from typing import Any

from gateway.testing.cassette import RecordedRequest
from gateway.testing.scrub import SECRET_PARAMS

VOLATILE = "<volatile>"


def _without(value: Any, volatile: Collection[str]) -> Any:
    if isinstance(value, dict):
        return {key: VOLATILE if key in volatile else _without(item, volatile) for key, item in value.items()}
    if isinstance(value, list):
        return [_without(item, volatile) for item in value]
    return value


def key(request: RecordedRequest, volatile: Collection[str]) -> str:
    """The request's matching form, as canonical JSON text (also what a miss shows)."""
    form = {
        "method": request.method.upper(),
        "path": request.path,
        "query": sorted([name, value] for name, value in request.query if name.lower() not in SECRET_PARAMS),
        "body": _without(request.body, volatile),
        "text": request.text,
    }
    return json.dumps(form, indent=2, sort_keys=True, ensure_ascii=False)


def nearest(wanted: str, recorded: Sequence[str]) -> int | None:
    """The index of the recorded key closest to ``wanted``."""
    if not recorded:
        return None
    scores = [difflib.SequenceMatcher(None, wanted, candidate).ratio() for candidate in recorded]
    return max(range(len(recorded)), key=scores.__getitem__)


def diff(recorded: str, wanted: str) -> str:
    lines = difflib.unified_diff(recorded.splitlines(), wanted.splitlines(), "recorded", "requested", lineterm="", n=20)
    return "\n".join(lines)
