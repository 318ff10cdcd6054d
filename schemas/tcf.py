"""IAB TCF v2 (v2.2) core string: decode and encode, with no third-party dependency.

Field layout from IAB's "Consent string and vendor list formats v2" (core segment, big-endian
bits, base64url without padding). Only the core segment is interpreted. Any further
'.'-joined segments (disclosed vendors, allowed vendors, publisher TC) must be base64url and
are kept verbatim in ``CoreString.other_segments`` and written back after the core, so a
string survives a round trip without the gateway claiming to understand those parts.

The encoder writes vendor consents and vendor legitimate interests as a bitfield or as
ranges, whichever is shorter (a bitfield on a tie), and pads each segment with zeros to whole
groups of four characters (24 bits), as IAB's reference encoder (``@iabtechlabtcf/core``) does;
the decoder reads both encodings and ignores padding of any length. ``disclosed_vendors`` and
``publisher_tc`` write the two segments TCF v2.3 expects after a service-specific core.
MaxVendorId is not kept: the encoder writes the highest id present, so a bitfield that a CMP
padded with trailing zeros re-encodes shorter.
Times are whole deciseconds since the epoch: ``encode`` drops anything finer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import ClassVar

__all__ = [
    "CoreString",
    "PublisherRestriction",
    "RestrictionType",
    "TCFError",
    "decode",
    "disclosed_vendors",
    "encode",
    "publisher_tc",
]

VERSION = 2
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SEXTET = {char: index for index, char in enumerate(ALPHABET)}
_SEXTET_BITS = str.maketrans({char: f"{index:06b}" for char, index in _SEXTET.items()})
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DECISECOND = timedelta(milliseconds=100)
TIME_BITS = 36
VENDOR_ID_BITS = 16
MAX_VENDOR_ID = (1 << VENDOR_ID_BITS) - 1
NUM_ENTRIES_BITS = 12
PAD_BITS = 24  # a segment is whole base64 quads, as IAB's encoder writes it
SEGMENT_TYPE_BITS = 3
DISCLOSED_VENDORS, PUBLISHER_TC = 1, 3  # SegmentType values
MAX_EXPANDED_IDS = 4 * MAX_VENDOR_ID
"""Vendor ids that ranges may name in one string, repeats counted: a 2 kB string of ranges
over 1-65535 would otherwise expand to millions of ids (vendor consents, vendor legitimate
interests and a few publisher restrictions over every id still fit)."""


class TCFError(ValueError):
    """A string that is not an IAB TCF v2 core string, or a value no core string can hold."""


class RestrictionType(IntEnum):
    """A publisher restriction's type; 3 is undefined in the spec and kept as read."""

    NOT_ALLOWED = 0
    REQUIRE_CONSENT = 1
    REQUIRE_LEGITIMATE_INTEREST = 2
    UNDEFINED = 3


@dataclass(frozen=True)
class PublisherRestriction:
    """One publisher restriction: a purpose, a restriction type and the vendors it covers."""

    purpose_id: int
    restriction_type: RestrictionType
    vendor_ids: frozenset[int]


@dataclass(frozen=True)
class CoreString:
    """The core segment of a TC string; ids are 1-based numbers as in the Global Vendor List."""

    version: ClassVar[int] = VERSION
    created: datetime
    last_updated: datetime
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str
    vendor_list_version: int
    tcf_policy_version: int
    is_service_specific: bool = False
    use_non_standard_texts: bool = False
    special_feature_opt_ins: frozenset[int] = frozenset()
    purpose_consents: frozenset[int] = frozenset()
    purpose_legitimate_interests: frozenset[int] = frozenset()
    purpose_one_treatment: bool = False
    publisher_cc: str = "AA"
    vendor_consents: frozenset[int] = frozenset()
    vendor_legitimate_interests: frozenset[int] = frozenset()
    publisher_restrictions: tuple[PublisherRestriction, ...] = ()
    other_segments: tuple[str, ...] = ()


class BitReader:
    """Reads big-endian unsigned fields from base64url text, six bits per character."""

    def __init__(self, text: str) -> None:
        self._bits = text.translate(_SEXTET_BITS)  # one C call; a character not base64url stays as it was
        if len(self._bits) != 6 * len(text):
            bad = next(i for i, char in enumerate(text) if char not in _SEXTET)
            raise TCFError(f"not base64url: {text[bad]!r} at position {bad}")
        self._position = 0
        self._expanded = 0  # vendor ids listed by ranges so far: MAX_EXPANDED_IDS bounds the work

    def _take(self, width: int, name: str) -> str:
        end = self._position + width
        if end > len(self._bits):
            raise TCFError(f"truncated: {name} needs bits {self._position}-{end - 1}, the string has {len(self._bits)}")
        bits = self._bits[self._position : end]
        self._position = end
        return bits

    def uint(self, width: int, name: str) -> int:
        return int(self._take(width, name) or "0", 2)

    def flag(self, name: str) -> bool:
        return self.uint(1, name) == 1

    def letters(self, name: str) -> str:
        """Two letters of six bits each, 0 = 'A' (a language or country code)."""
        codes = [self.uint(6, name) for _ in range(2)]
        if max(codes) > ord("Z") - ord("A"):
            raise TCFError(f"{name} is not two letters A-Z (six-bit values {codes})")
        return "".join(chr(ord("A") + code) for code in codes)

    def time(self, name: str) -> datetime:
        return EPOCH + self.uint(TIME_BITS, name) * DECISECOND

    def bitfield(self, width: int, name: str) -> frozenset[int]:
        """The 1-based positions of the set bits among the next ``width``."""
        return frozenset(i for i, bit in enumerate(self._take(width, name), start=1) if bit == "1")

    def ranges(self, name: str) -> frozenset[int]:
        """NumEntries, then that many entries."""
        ids: set[int] = set()
        for _ in range(self.uint(NUM_ENTRIES_BITS, name)):
            start, end = self._range(name)
            ids.update(range(start, end + 1))
        return frozenset(ids)

    def _range(self, name: str) -> tuple[int, int]:
        """One entry: IsARange, a start id and, for a range, an end id; checked and counted."""
        is_range = self.flag(name)
        start = self.uint(VENDOR_ID_BITS, name)
        end = self.uint(VENDOR_ID_BITS, name) if is_range else start
        if start > end or start == 0:
            raise TCFError(f"{name}: {start}-{end} is not a range of vendor ids")
        self._expanded += end - start + 1
        if self._expanded > MAX_EXPANDED_IDS:
            raise TCFError(f"{name}: ranges name over {MAX_EXPANDED_IDS} vendor ids in all, more than a CMP writes")
        return start, end


class BitWriter:
    """Collects big-endian fields and renders them as base64url, padded with zeros to 24 bits."""

    def __init__(self) -> None:
        self._bits: list[str] = []

    def uint(self, value: int, width: int, name: str) -> None:
        if not 0 <= value < 1 << width:
            raise TCFError(f"{name} must be 0-{(1 << width) - 1}, not {value}")
        if width:
            self._bits.append(f"{value:0{width}b}")

    def flag(self, value: bool) -> None:
        self._bits.append("1" if value else "0")

    def letters(self, value: str, name: str) -> None:
        if len(value) != 2 or not all("A" <= char <= "Z" for char in value):
            raise TCFError(f"{name} must be two letters A-Z, not {value!r}")
        for char in value:
            self.uint(ord(char) - ord("A"), 6, name)

    def time(self, value: datetime, name: str) -> None:
        if value.tzinfo is None:
            raise TCFError(f"{name} must be timezone-aware")
        self.uint((value - EPOCH) // DECISECOND, TIME_BITS, name)

    def bitfield(self, ids: frozenset[int], width: int, name: str) -> None:
        if any(not 1 <= i <= width for i in ids):
            raise TCFError(f"{name} must be ids 1-{width}, not {sorted(ids)}")
        self._bits.append("".join("1" if i in ids else "0" for i in range(1, width + 1)))

    def ranges(self, ids: frozenset[int], name: str) -> None:
        _check_vendor_ids(ids, name)
        runs = list(_runs(ids))
        self.uint(len(runs), NUM_ENTRIES_BITS, f"the number of {name} ranges")
        for start, end in runs:
            self.flag(start != end)
            self.uint(start, VENDOR_ID_BITS, name)
            if start != end:
                self.uint(end, VENDOR_ID_BITS, name)

    def text(self) -> str:
        bits = "".join(self._bits)
        bits += "0" * (-len(bits) % PAD_BITS)
        return "".join(ALPHABET[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


def _check_vendor_ids(ids: frozenset[int], name: str) -> None:
    if any(not 1 <= i <= MAX_VENDOR_ID for i in ids):
        raise TCFError(f"{name} must be vendor ids 1-{MAX_VENDOR_ID}")


def _runs(ids: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Consecutive ids grouped as (first, last)."""
    ordered = sorted(ids)
    start = 0
    for index, value in enumerate(ordered):
        if index + 1 == len(ordered) or ordered[index + 1] != value + 1:
            yield ordered[start], value
            start = index + 1


def _range_bits(ids: frozenset[int]) -> int:
    return NUM_ENTRIES_BITS + sum(1 + VENDOR_ID_BITS * (1 + (a != b)) for a, b in _runs(ids))


def decode(text: str) -> CoreString:
    """Decode a TC string's core segment; raise ``TCFError`` saying why when it is not one."""
    core, *others = text.split(".")
    if not core:
        raise TCFError("empty: a TC string starts with its core segment")
    _check_segments(others)
    reader = BitReader(core)
    version = reader.uint(6, "Version")
    if version != VERSION:
        raise TCFError(f"IAB TCF version {version}, not {VERSION}")
    return CoreString(
        created=reader.time("Created"),
        last_updated=reader.time("LastUpdated"),
        cmp_id=reader.uint(12, "CmpId"),
        cmp_version=reader.uint(12, "CmpVersion"),
        consent_screen=reader.uint(6, "ConsentScreen"),
        consent_language=reader.letters("ConsentLanguage"),
        vendor_list_version=reader.uint(12, "VendorListVersion"),
        tcf_policy_version=reader.uint(6, "TcfPolicyVersion"),
        is_service_specific=reader.flag("IsServiceSpecific"),
        use_non_standard_texts=reader.flag("UseNonStandardTexts"),
        special_feature_opt_ins=reader.bitfield(12, "SpecialFeatureOptIns"),
        purpose_consents=reader.bitfield(24, "PurposesConsent"),
        purpose_legitimate_interests=reader.bitfield(24, "PurposesLITransparency"),
        purpose_one_treatment=reader.flag("PurposeOneTreatment"),
        publisher_cc=reader.letters("PublisherCC"),
        vendor_consents=_read_vendors(reader, "vendor consents"),
        vendor_legitimate_interests=_read_vendors(reader, "vendor legitimate interests"),
        publisher_restrictions=_read_restrictions(reader),
        other_segments=tuple(others),
    )


def _check_segments(segments: Iterable[str]) -> None:
    """Segments after the core are kept, not read: they need only be base64url."""
    for index, segment in enumerate(segments, start=2):
        if not segment or any(char not in _SEXTET for char in segment):
            raise TCFError(f"segment {index} is not base64url")


def _read_vendors(reader: BitReader, name: str) -> frozenset[int]:
    """MaxVendorId, IsRangeEncoding, then a bitfield or ranges."""
    max_id = reader.uint(VENDOR_ID_BITS, f"{name} MaxVendorId")
    if reader.flag(f"{name} IsRangeEncoding"):
        return reader.ranges(name)
    return reader.bitfield(max_id, name)


def _read_restrictions(reader: BitReader) -> tuple[PublisherRestriction, ...]:
    name = "publisher restrictions"
    return tuple(
        PublisherRestriction(
            purpose_id=reader.uint(6, f"{name} PurposeId"),
            restriction_type=RestrictionType(reader.uint(2, f"{name} RestrictionType")),
            vendor_ids=reader.ranges(name),
        )
        for _ in range(reader.uint(NUM_ENTRIES_BITS, f"{name} NumPubRestrictions"))
    )


def encode(core: CoreString) -> str:
    """The TC string for ``core``; raise ``TCFError`` naming a field no core string can hold."""
    writer = BitWriter()
    writer.uint(VERSION, 6, "Version")
    writer.time(core.created, "created")
    writer.time(core.last_updated, "last_updated")
    writer.uint(core.cmp_id, 12, "cmp_id")
    writer.uint(core.cmp_version, 12, "cmp_version")
    writer.uint(core.consent_screen, 6, "consent_screen")
    writer.letters(core.consent_language, "consent_language")
    writer.uint(core.vendor_list_version, 12, "vendor_list_version")
    writer.uint(core.tcf_policy_version, 6, "tcf_policy_version")
    writer.flag(core.is_service_specific)
    writer.flag(core.use_non_standard_texts)
    writer.bitfield(core.special_feature_opt_ins, 12, "special_feature_opt_ins")
    writer.bitfield(core.purpose_consents, 24, "purpose_consents")
    writer.bitfield(core.purpose_legitimate_interests, 24, "purpose_legitimate_interests")
    writer.flag(core.purpose_one_treatment)
    writer.letters(core.publisher_cc, "publisher_cc")
    _write_vendors(writer, core.vendor_consents, "vendor_consents")
    _write_vendors(writer, core.vendor_legitimate_interests, "vendor_legitimate_interests")
    _write_restrictions(writer, core.publisher_restrictions)
    _check_segments(core.other_segments)
    return ".".join((writer.text(), *core.other_segments))


def disclosed_vendors(ids: frozenset[int] = frozenset()) -> str:
    """The DisclosedVendors segment: the vendors the CMP showed the person (TCF v2.3 requires it
    after the core; none for a string that no CMP screen produced)."""
    writer = BitWriter()
    writer.uint(DISCLOSED_VENDORS, SEGMENT_TYPE_BITS, "SegmentType")
    _write_vendors(writer, ids, "disclosed vendors")
    return writer.text()


def publisher_tc(consents: frozenset[int] = frozenset(), legitimate_interests: frozenset[int] = frozenset()) -> str:
    """The Publisher TC segment, with no custom purposes: the publisher's own purposes 1-24."""
    writer = BitWriter()
    writer.uint(PUBLISHER_TC, SEGMENT_TYPE_BITS, "SegmentType")
    writer.bitfield(consents, 24, "publisher purpose consents")
    writer.bitfield(legitimate_interests, 24, "publisher purpose legitimate interests")
    writer.uint(0, 6, "NumCustomPurposes")
    return writer.text()


def _write_vendors(writer: BitWriter, ids: frozenset[int], name: str) -> None:
    """MaxVendorId, then ranges when they take fewer bits than a bitfield of MaxVendorId bits."""
    _check_vendor_ids(ids, name)
    max_id = max(ids, default=0)
    writer.uint(max_id, VENDOR_ID_BITS, name)
    use_ranges = _range_bits(ids) < max_id
    writer.flag(use_ranges)
    if use_ranges:
        writer.ranges(ids, name)
    else:
        writer.bitfield(ids, max_id, name)


def _write_restrictions(writer: BitWriter, restrictions: tuple[PublisherRestriction, ...]) -> None:
    writer.uint(len(restrictions), NUM_ENTRIES_BITS, "the number of publisher_restrictions")
    for restriction in restrictions:
        writer.uint(restriction.purpose_id, 6, "publisher_restrictions purpose_id")
        writer.uint(restriction.restriction_type, 2, "publisher_restrictions restriction_type")
        writer.ranges(restriction.vendor_ids, "publisher_restrictions vendor_ids")
