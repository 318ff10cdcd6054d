"""Row ids: UUIDs that begin with the millisecond they were made (RFC 9562, version 7).

A random id (version 4) lands anywhere in its table's index, so a group of a thousand new rows
touches a thousand index pages and COMMIT writes them all to the log; ids made one after another
sit side by side, in a few pages. They are still opaque UUIDs to every caller. The clock here is
the machine's, not the gateway's injected one: only the ids' order on disk depends on it.
"""

from __future__ import annotations

import os
import time

VARIANT = {f"{n:x}": f"{n & 0x3 | 0x8:x}" for n in range(16)}
"""A hex digit with its top two bits made ``10``: RFC 9562's variant."""


def new_id() -> str:
    """48 bits of the Unix time in milliseconds, then random ones, with the version (7) and the
    variant written over theirs."""
    text = ((time.time_ns() // 1_000_000).to_bytes(6) + os.urandom(10)).hex()
    return f"{text[:8]}-{text[8:12]}-7{text[13:16]}-{VARIANT[text[16]]}{text[17:20]}-{text[20:]}"
