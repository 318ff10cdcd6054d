"""Recorded provider interactions (cassettes) for offline, deterministic tests, and a pytest plugin.

Modules: ``cassette`` (format), ``scrub`` (secrets out), ``normalize`` (made-up ids and times
out), ``exchange`` (httpx ↔ cassette form), ``recorder``, ``matching`` + ``replay``,
``providers`` (settings from each adapter's model), ``library`` (finding and opening cassettes),
``harness`` (a whole gateway wired to replayed providers) and ``plugin`` (pytest).
Importing this package needs the ``testing`` extra (respx); the plugin itself needs only pytest.
"""
