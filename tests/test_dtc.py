"""The DTC catalogue is complete, unique, and uses generic SAE codes where they exist."""

from __future__ import annotations

from importlib import resources

import pytest

from carlightd.core.domain import Kind
from carlightd.core.dtc import (
    CatalogueError,
    by_uds_code,
    catalogue,
    decode_j2012,
    encode_j2012,
    lookup,
    parse_catalogue,
)
from carlightd.core.kinds import FAILURES


def test_every_failure_has_one_code() -> None:
    table = catalogue()
    assert set(table) == {(k, f) for k, fs in FAILURES.items() for f in fs}
    codes = [entry.code for entry in table.values()]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize(
    ("kind", "failure", "code"),
    [
        (Kind.BATTERY, "discharged", "P0562"),
        (Kind.ALTERNATOR, "overcharging", "P0563"),
        (Kind.ALTERNATOR, "no_output", "P0620"),
        (Kind.CONTROLLER, "no_response", "U0140"),
    ],
)
def test_generic_codes_where_they_exist(kind: Kind, failure: str, code: str) -> None:
    entry = catalogue()[(kind, failure)]
    assert entry.code == code
    assert entry.standard


def test_standard_flag_matches_the_code_range() -> None:
    # SAE J2012: P0 and P2 are generic, P1 the manufacturer's; for B, C and U, 0 is generic.
    for entry in catalogue().values():
        generic = {"P": "02"}.get(entry.code[0], "0")
        assert entry.standard == (entry.code[1] in generic), entry.code


def test_a_catalogue_with_a_gap_is_refused() -> None:
    text = (
        '[[dtc]]\nkind = "controller"\nfailure = "no_response"\ncode = "U0140"\n'
        'failure_type = 0x87\nemission_related = false\nstandard = true\ndescription = "x"\n'
        "lamps = []\n"
    )
    with pytest.raises(CatalogueError, match="no DTC for: lamp/open_circuit"):
        parse_catalogue(text)


def test_an_unnamed_failure_type_is_refused() -> None:
    text = (
        '[[dtc]]\nkind = "controller"\nfailure = "no_response"\ncode = "U0140"\n'
        'failure_type = 0x42\nemission_related = false\nstandard = true\ndescription = "x"\n'
        "lamps = []\n"
    )
    with pytest.raises(CatalogueError, match="U0140: failure_type 0x42 is not in FAILURE_TYPES"):
        parse_catalogue(text)


@pytest.mark.parametrize(
    ("code", "encoded"),
    [
        ("P0000", 0x0000),
        ("P0562", 0x0562),
        ("C0123", 0x4123),
        ("B1200", 0x9200),
        ("U0140", 0xC140),
        ("U3FFF", 0xFFFF),
        ("P2503", 0x2503),
    ],
)
def test_j2012_two_byte_encoding(code: str, encoded: int) -> None:
    # SAE J2012: two bits for the letter (P C B U), two for the first digit, then three hex digits.
    assert encode_j2012(code) == encoded
    assert decode_j2012(encoded) == code


def test_every_entry_has_a_three_byte_dtc_that_finds_it_again() -> None:
    entries = list(catalogue().values())
    assert len({e.uds_code for e in entries}) == len(entries)
    for entry in entries:
        assert entry.uds_code >> 8 == encode_j2012(entry.code)
        assert entry.uds_code & 0xFF == entry.failure_type
        assert by_uds_code()[entry.uds_code] is entry
    assert lookup(Kind.LAMP, "open_circuit").uds_code == 0x920013  # B1200, circuit open


def test_obd_modes_03_and_07_see_the_powertrain_codes_and_every_mil_code() -> None:
    # As on a real car: a generic OBD-II tool sees the P codes and whatever lights the MIL (the
    # lost body controller, U0140); the body codes stay UDS-only.
    for entry in catalogue().values():
        mil = "check_engine" in entry.lamps
        assert entry.emission_related == (entry.code.startswith("P") or mil), entry.code


def test_a_mil_code_that_obd_cannot_read_is_refused() -> None:
    text = (carlightd_catalogue_text()).replace(
        'code = "U0140"\nfailure_type = 0x87\nemission_related = true',
        'code = "U0140"\nfailure_type = 0x87\nemission_related = false',
    )
    with pytest.raises(CatalogueError, match=r"U0140 lights check_engine .* not emission_related"):
        parse_catalogue(text)


def carlightd_catalogue_text() -> str:
    return (resources.files("carlightd.core") / "dtc_catalogue.toml").read_text("utf-8")
