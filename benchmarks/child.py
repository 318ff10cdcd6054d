"""A part's work in a process of its own (``python -m MODULE ARGS…``), which prints one JSON value:
the load generator, the drift view, the group commits. Its own process, so nothing of the harness's
(its imports, its loop, its memory) is measured with it. Imports nothing heavy: the load generator
uses it too."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any


async def json_from(what: str, module: str, *args: str) -> Any:
    """What ``python -m module *args`` printed, as JSON; RuntimeError naming ``what`` and the end of
    its stderr when it exits non-zero."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await child.communicate()
    if child.returncode:
        raise RuntimeError(f"{what} failed (exit {child.returncode}): {err.decode()[-2000:]}")
    return json.loads(out)
