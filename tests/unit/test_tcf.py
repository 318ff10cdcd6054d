"""The TCF v2 core string codec: published examples, round trips, encoding choice, errors,
and agreement with the ``iab_tcf`` decoder (a test-only dependency)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iab_tcf import decode_v2

from schemas.tcf import (
    ALPHABET,
    EPOCH,
    CoreString,
    PublisherRestriction,
    RestrictionType,
    TCFError,
    decode,
    encode,
)

MASIVO = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"  # Masivo's OpenAPI example (seeds)
# The v2 example of the iab-tcf package's test seeds, with its decoded fields listed there.
IAB_TCF_SEED = (
    "CG6MJgNIvJb0TAUAEBENAzCMAFvAAG7AAAJYGUlUcVlfByPiu55Ad8JQeAgftrYDE6QzDgEJs8wJQB9WxJwQpEMgKBX4BoIIiRYEsnLAAAYk"
    "HAFcDQAAQIkVqSCsYkyMCyFCJJJEghIKM2ZYGG0OkcVQIRAY4wMsHeYAA2OrevzrigZOQCYQFYAAkJQwEg0KRQIgQADAgUA4AIKEYUiSQ0JH"
    "BDMjAINAAAAEBiAhAgAAgCgBgAAAgAASEBACACAgEAAAAgABACNAQgAAkAQSAEAQBAAKgIEgBEEEoAgBgMBACgAARIpFBIIDQgAWAAEAAwAP"
    "gArAB3AH4AToA8QCEgEtAKSCgBwABABSAFwAXYAzAB_QFTBAEIACAAFAAcAA8AC0AGQAOwApgBzAD0AIaASoBLACaAGGAMgAewA-AB9gEIAI0"
    "AVAA4AB8gEVAI7ATEAmUBSIC2AF5AL-AYMAwggAJAAWAEEAWIBnADqAK-AW0AuABk4cAUAA4AEQAJwAkgDnAL8AtEBcQDIgGSBgB4AEgAngCJ"
    "AHkARgAkwBKwCvAG8AOOAeoBJYCbAFigLoJQCAAKACIAI4AWkAxQBuAEXgJECQAwAKgKwAYeUAIAAXAAyACoALgAiwBJgCjAFKAVsBJACmwF"
    "bALkAXcAxkBkBSAKACAAGgA0gChgLtHAEAAUQBGAEcALAAmABsgDvAJaAdMBQgChwFLgKsAWyAxIBjEDHAMdGAAQAWEgBYAMQAhABMACgAG0"
    "ApoBZwFUgLxAXmAx4dAPAB5AEMARAAqgCEAFIANEAcQA_QCUgFiALyAYQA2gC7wGGlQAIATSYAIAKgCmRIAYALYAYgA3gFZANQAusWACADMA"
    "joUAEADwAMoAfIBaBUAEARw0AIAJkAaoA4AEgjwBgArQBZQDjAOQAdYA8QDbAHtASiAq8BYgCyQF2BoA4AywBqAFLAKuAawBDYCdiEAUAb4B"
    "AwC5gHoAU0RADgEuAJwAV-A_YD-AIiAS8AvYRACAYEAwkA.IGVtd_X9fb2vj-_599_t0eY1f9_63t-wzjheNs-8NyZ_X_J4Xv2MyvB34pqYKm"
    "R4kunbBAQdtHGncTQgBwIlVqTLsYk2MjzNKJ7JEmlsbe2dYGH9Pn8XT_ZKZ70-v___7v3______7oA"
)
# A four-segment string (core, disclosed vendors, allowed vendors... publisher TC) from a Go codec's tests.
MULTI_SEGMENT = (
    "COxR03kOxR1CqBcABCENAgCMAP_AAH_AAAqIF3EXySoGY2thI2YVFxBEIYwfJxyigMgChgQIsSwNQIeFLBoGLiAAHBGYJAQAGBAEEACBAQIk"
    "HGBMCQAAgAgBiRCMQEGMCzNIBIBAggEbY0FACCVmHkHSmZCY7064O__QLuIJEFQMAkSBAIACLECIQwAQDiAAAYAlAAABAhIaAAgIWBQEeAAA"
    "ACAwAAgAAABBAAACAAQAAICIAAABAAAgAiAQAAAAGgIQAACBABACRIAAAEANCAAgiCEAQg4EAo4AAA.IF3EXySoGY2tho2YVFzBEIYwfJxyig"
    "MgShgQIsS0NQIeFLBoGPiAAHBGYJAQAGBAkkACBAQIsHGBMCQABgAgRiRCMQEGMDzNIBIBAggkbY0FACCVmnkHS3ZCY70-6u__QA.elAAAAAA"
    "AWA"
)
V1 = "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"
PUBLISHED = [MASIVO, IAB_TCF_SEED, MULTI_SEGMENT]
RANGE_FLAG_BIT = 213 + 16  # IsRangeEncoding of vendor consents: after the fixed fields and MaxVendorId


def core(**fields: Any) -> CoreString:
    when = datetime(2025, 6, 1, 12, 30, 15, 700000, tzinfo=UTC)
    base: dict[str, Any] = {
        "created": when,
        "last_updated": when,
        "cmp_id": 300,
        "cmp_version": 2,
        "consent_screen": 1,
        "consent_language": "EN",
        "vendor_list_version": 80,
        "tcf_policy_version": 4,
    }
    return CoreString(**(base | fields))


def bit(text: str, index: int) -> int:
    return ALPHABET.index(text[index // 6]) >> (5 - index % 6) & 1


def test_masivo_example_decodes_to_its_fields() -> None:
    decoded = decode(MASIVO)
    assert decoded.created == decoded.last_updated == datetime(2020, 2, 20, 23, 57, 39, 300000, tzinfo=UTC)
    assert (decoded.cmp_id, decoded.cmp_version, decoded.consent_screen) == (27, 0, 0)
    assert (decoded.consent_language, decoded.publisher_cc) == ("EN", "AA")
    assert (decoded.vendor_list_version, decoded.tcf_policy_version) == (15, 2)
    assert decoded.purpose_consents == {1, 2, 3} and decoded.purpose_legitimate_interests == set()
    assert decoded.vendor_consents == decoded.vendor_legitimate_interests == {2, 6, 8}
    assert decoded.publisher_restrictions == () and decoded.other_segments == ()
    # IAB's encoder pads a segment to whole groups of four characters: the example's 47 become 48
    assert encode(decoded) == MASIVO + "A", "the example is what our encoder writes, bit for bit"


def test_iab_tcf_seed_decodes_to_its_documented_fields() -> None:
    decoded = decode(IAB_TCF_SEED)
    # the seed lists created 1993-07-05T11:23:32 (whole seconds; the string holds deciseconds)
    assert decoded.created == datetime(1993, 7, 5, 11, 23, 32, 500000, tzinfo=UTC)
    assert decoded.last_updated.replace(microsecond=0) == datetime(1999, 9, 23, 13, 34, 57, tzinfo=UTC)
    assert (decoded.cmp_id, decoded.cmp_version, decoded.consent_screen, decoded.consent_language) == (20, 4, 1, "EN")
    assert (decoded.vendor_list_version, decoded.tcf_policy_version, decoded.publisher_cc) == (51, 2, "BL")
    assert not decoded.is_service_specific and not decoded.use_non_standard_texts
    assert decoded.special_feature_opt_ins == {1, 2}
    assert decoded.purpose_consents == {2, 4, 5, 7, 8, 9, 10}
    assert decoded.purpose_legitimate_interests == {2, 3, 5, 6, 7, 9, 10}
    assert max(decoded.vendor_consents) == 809 and {2, 4, 6, 8, 12} <= decoded.vendor_consents
    assert max(decoded.vendor_legitimate_interests) == 807 and {2, 11, 14, 15} <= decoded.vendor_legitimate_interests
    restricted = {(r.purpose_id, r.restriction_type, v) for r in decoded.publisher_restrictions for v in r.vendor_ids}
    # the seed: vendor 1, purpose 4 not allowed; vendor 2, purpose 2 legitimate interest required
    assert {(4, RestrictionType.NOT_ALLOWED, 1), (2, RestrictionType.REQUIRE_LEGITIMATE_INTEREST, 2)} <= restricted
    assert len(decoded.other_segments) == 1


def test_other_segments_are_kept_verbatim() -> None:
    decoded = decode(MULTI_SEGMENT)
    assert decoded.other_segments == tuple(MULTI_SEGMENT.split(".")[1:])
    assert encode(decoded).split(".")[1:] == MULTI_SEGMENT.split(".")[1:]
    assert (decoded.cmp_id, decoded.consent_language, decoded.publisher_cc) == (92, "EN", "FR")


@pytest.mark.parametrize("text", PUBLISHED)
def test_published_strings_re_encode_stably(text: str) -> None:
    once = encode(decode(text))
    assert decode(once) == decode(text)
    assert encode(decode(once)) == once


def test_encoder_picks_ranges_when_shorter() -> None:
    many = encode(core(vendor_consents=frozenset(range(1, 1001))))
    few = encode(core(vendor_consents=frozenset({2, 6, 8})))
    assert (bit(many, RANGE_FLAG_BIT), bit(few, RANGE_FLAG_BIT)) == (1, 0)
    assert len(many) < 60, "one range of 33 bits, not a 1000-bit field"
    assert decode(many).vendor_consents == frozenset(range(1, 1001))


def test_ranges_and_bitfield_tie_goes_to_bitfield() -> None:
    # one lone id at 29: a bitfield of 29 bits vs 12 + 1 + 16 = 29 bits of ranges
    assert bit(encode(core(vendor_consents=frozenset({29}))), RANGE_FLAG_BIT) == 0
    assert bit(encode(core(vendor_consents=frozenset({30}))), RANGE_FLAG_BIT) == 1


def test_ranges_over_every_vendor_are_bounded() -> None:
    everyone = frozenset(range(1, 65536))

    def over_everyone(restrictions: int) -> str:
        """Vendor consents, vendor LIs and ``restrictions`` restrictions, each a range over every id."""
        restricted = (PublisherRestriction(p, RestrictionType.NOT_ALLOWED, everyone) for p in range(restrictions))
        return encode(
            core(
                vendor_consents=everyone, vendor_legitimate_interests=everyone, publisher_restrictions=tuple(restricted)
            )
        )

    assert decode(over_everyone(2)).publisher_restrictions[1].vendor_ids == everyone
    with pytest.raises(TCFError, match="publisher restrictions: ranges name over 262140 vendor ids in all"):
        decode(over_everyone(3))


def test_encode_drops_time_finer_than_deciseconds() -> None:
    when = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert decode(encode(core(created=when))).created == when.replace(microsecond=100000)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("CO vF", "not base64url: ' ' at position 2"),
        ("COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA=", "'=' at position 47"),
        (V1, "IAB TCF version 1, not 2"),
        ("CO" + "A" * 18, "truncated: VendorListVersion needs bits 120-131, the string has 120"),
        (MASIVO[:36], "truncated: vendor consents"),
        (MASIVO + ".", "segment 2 is not base64url"),
        (MASIVO + ".a+b", "segment 2 is not base64url"),
        ("C" + "A" * 17 + "_" + "A" * 40, "ConsentLanguage is not two letters"),
    ],
)
def test_undecodable_strings_say_why(text: str, reason: str) -> None:
    with pytest.raises(TCFError, match=reason.replace("+", r"\+")):
        decode(text)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"cmp_id": 4096}, "cmp_id must be 0-4095, not 4096"),
        ({"consent_language": "en"}, "consent_language must be two letters"),
        ({"publisher_cc": "FRA"}, "publisher_cc must be two letters"),
        ({"purpose_consents": frozenset({25})}, "purpose_consents must be ids 1-24"),
        ({"special_feature_opt_ins": frozenset({0})}, "special_feature_opt_ins must be ids 1-12"),
        ({"vendor_consents": frozenset({0})}, "vendor_consents must be vendor ids 1-65535"),
        ({"vendor_legitimate_interests": frozenset({70000})}, "vendor ids 1-65535"),
        ({"created": datetime(2025, 1, 1)}, "created must be timezone-aware"),
        ({"last_updated": datetime(1969, 12, 31, tzinfo=UTC)}, "last_updated must be 0-"),
        ({"other_segments": ("a.b",)}, "segment 2 is not base64url"),
    ],
)
def test_unencodable_values_name_the_field(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(TCFError, match=reason):
        encode(core(**fields))


def test_tcf_error_is_a_value_error() -> None:
    assert issubclass(TCFError, ValueError)


# --- properties ---------------------------------------------------------------------------

TIMES = st.integers(0, (1 << 36) - 1).map(lambda ds: EPOCH + timedelta(milliseconds=100 * ds))
LETTERS = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)
RUNS = st.lists(st.tuples(st.integers(1, 65535), st.integers(0, 300)), max_size=4).map(
    lambda runs: frozenset(i for start, length in runs for i in range(start, min(start + length, 65535) + 1))
)
VENDORS = st.one_of(st.frozensets(st.integers(1, 600), max_size=40), RUNS)


def ids(high: int) -> st.SearchStrategy[frozenset[int]]:
    return st.frozensets(st.integers(1, high))


RESTRICTIONS = st.lists(
    st.builds(PublisherRestriction, st.integers(0, 63), st.sampled_from(RestrictionType), VENDORS), max_size=3
).map(tuple)


def cores(other_segments: st.SearchStrategy[tuple[str, ...]]) -> st.SearchStrategy[CoreString]:
    return st.builds(
        CoreString,
        created=TIMES,
        last_updated=TIMES,
        cmp_id=st.integers(0, 4095),
        cmp_version=st.integers(0, 4095),
        consent_screen=st.integers(0, 63),
        consent_language=LETTERS,
        vendor_list_version=st.integers(0, 4095),
        tcf_policy_version=st.integers(0, 63),
        is_service_specific=st.booleans(),
        use_non_standard_texts=st.booleans(),
        special_feature_opt_ins=ids(12),
        purpose_consents=ids(24),
        purpose_legitimate_interests=ids(24),
        purpose_one_treatment=st.booleans(),
        publisher_cc=LETTERS,
        vendor_consents=VENDORS,
        vendor_legitimate_interests=VENDORS,
        publisher_restrictions=RESTRICTIONS,
        other_segments=other_segments,
    )


SEGMENTS = st.lists(st.text(ALPHABET, min_size=1, max_size=12), max_size=2).map(tuple)


@settings(max_examples=300)
@given(cores(SEGMENTS))
def test_decode_inverts_encode(value: CoreString) -> None:
    text = encode(value)
    assert decode(text) == value
    assert encode(decode(text)) == text


@settings(max_examples=300)
@given(cores(st.just(())), st.integers(0, 20), st.text(ALPHABET, max_size=8))
def test_cut_or_extended_strings_fail_clearly_or_re_encode_stably(value: CoreString, cut: int, tail: str) -> None:
    """Trailing characters beyond the core are padding to the decoder; a cut is a TCFError."""
    text = encode(value)
    try:
        decoded = decode(text[: len(text) - cut] + tail)
    except TCFError:
        return
    once = encode(decoded)
    assert decode(once) == decoded and encode(decode(once)) == once


@given(cores(SEGMENTS))
def test_encoded_strings_are_base64url_without_padding(value: CoreString) -> None:
    text = encode(value).split(".")[0]
    assert text.startswith("C") and set(text) <= set(ALPHABET)
    assert len(text) % 4 != 1, "a whole number of bytes: standard base64 decoders read it too"


def iab_tcf_view(text: str) -> dict[str, Any]:
    """What ``iab_tcf`` reads, in our terms.

    It is compared on strings our encoder writes, which carry every field: on a shorter
    string it reads missing bits as ``True`` (an empty bitarray's ``all()``). Its times are
    naive and cut to whole seconds (``int(deciseconds / 10)``), so ours are cut the same way.
    """
    theirs = decode_v2(text)

    def vendors(ranged: bool, ranges: list[tuple[int, int]] | None, bits: dict[int, bool] | None) -> set[int]:
        if ranged:
            return {i for start, end in ranges or [] for i in range(start, end + 1)}
        return {i for i, on in (bits or {}).items() if on}

    return {
        "created": theirs.created,
        "last_updated": theirs.last_updated,
        "numbers": (
            theirs.version,
            theirs.cmp_id,
            theirs.cmp_version,
            theirs.consent_screen,
            theirs.vendor_list_version,
            theirs.tcf_policy_version,
        ),
        "letters": (theirs.consent_language.decode(), theirs.publisher_cc.decode()),
        "flags": (theirs.is_service_specific, theirs.use_non_standard_stacks, theirs.purpose_one_treatment),
        "special_features": {i for i, on in theirs.special_features_optin.items() if on},
        "purposes": {i for i, on in theirs.purposes_consent.items() if on},
        "purpose_lis": {i for i, on in theirs.purposes_legitimate_interests.items() if on},
        "vendors": vendors(
            theirs.is_consent_range_encoding,
            getattr(theirs, "consented_vendors_range", None),
            getattr(theirs, "consented_vendors", None),
        ),
        "vendor_lis": vendors(
            theirs.is_interests_range_encoding,
            getattr(theirs, "interests_vendors_range", None),
            getattr(theirs, "interests_vendors", None),
        ),
        "restrictions": [
            (entry.purpose_id, entry.restriction_type, vendors(True, entry.restrictions_range, None))
            for entry in theirs.pub_restriction_entries
        ],
    }


def our_view(value: CoreString) -> dict[str, Any]:
    def seconds(when: datetime) -> datetime:
        return when.astimezone(UTC).replace(microsecond=0, tzinfo=None)

    return {
        "created": seconds(value.created),
        "last_updated": seconds(value.last_updated),
        "numbers": (
            value.version,
            value.cmp_id,
            value.cmp_version,
            value.consent_screen,
            value.vendor_list_version,
            value.tcf_policy_version,
        ),
        "letters": (value.consent_language, value.publisher_cc),
        "flags": (value.is_service_specific, value.use_non_standard_texts, value.purpose_one_treatment),
        "special_features": set(value.special_feature_opt_ins),
        "purposes": set(value.purpose_consents),
        "purpose_lis": set(value.purpose_legitimate_interests),
        "vendors": set(value.vendor_consents),
        "vendor_lis": set(value.vendor_legitimate_interests),
        "restrictions": [
            (restriction.purpose_id, int(restriction.restriction_type), set(restriction.vendor_ids))
            for restriction in value.publisher_restrictions
        ],
    }


@pytest.mark.parametrize("text", PUBLISHED)
def test_published_strings_agree_with_iab_tcf(text: str) -> None:
    assert our_view(decode(text)) == iab_tcf_view(text)


@settings(max_examples=150)
@given(cores(st.just(())))
def test_every_encoded_string_agrees_with_iab_tcf(value: CoreString) -> None:
    assert iab_tcf_view(encode(value)) == our_view(value)


def test_core_string_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        core().cmp_id = 1  # type: ignore[misc]
