"""Row ids: UUIDs that begin with the millisecond they were made (RFC 9562, version 7).

A random id (version 4) lands anywhere in its table's index, so a group of a thousand new rows
touches a thousand index pages and COMMIT writes them all to the log; ids made one after another
sit side by side, in a few pages. They are still opaque UUIDs to every caller. The clock here is
the machine's, not the gateway's injected one: only the ids' order on disk depends on it.
"""

from __future__ import annotations

import os
import time

RANDOM_BITS = 74  # 12 after the version, 62 after the variant


def new_id() -> str:
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10)) >> (80 - RANDOM_BITS)
    value = (millis & (1 << 48) - 1) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62 | rand & (1 << 62) - 1
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
