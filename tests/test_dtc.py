"""The DTC catalogue is complete, unique, and uses generic SAE codes where they exist."""

from __future__ import annotations

import pytest

from carlightd.core.domain import Kind
from carlightd.core.dtc import CatalogueError, catalogue, parse_catalogue
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
        'standard = true\ndescription = "x"\nlamps = []\n'
    )
    with pytest.raises(CatalogueError, match="no DTC for: lamp/open_circuit"):
        parse_catalogue(text)
