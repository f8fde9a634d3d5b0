"""PII guard pure functions: name and value detection, the gate, HMAC pseudonymisation
and its key file. Detection through the whole screen stage is in test_screen.py."""

from __future__ import annotations

import stat
from pathlib import Path

import pandas as pd
import pytest

from tasks.checks.pii import (
    Finding,
    apply_pii,
    check_pii,
    iban_ok,
    kinds_by_name,
    kinds_by_value,
    luhn_ok,
    name_tokens,
    pii_key,
    pseudonymize,
    scan,
    value_kinds,
)
from tasks.trust import keys as keyring
from tasks.trust.keys import KeyFileError
from tests.conftest import BUNDLED_CSV

# --- by name ---------------------------------------------------------------------------------


def test_name_tokens() -> None:
    assert name_tokens("firstName") == ["first", "name"]
    assert name_tokens("IPAddress") == ["ip", "address"]
    assert name_tokens("E-Mail_2") == ["e", "mail", "2"]
    assert name_tokens("mean fractal dimension") == ["mean", "fractal", "dimension"]


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        ("email", "email"),
        ("E-Mail", "email"),
        ("contact_email_address", "email"),
        ("phone", "phone"),
        ("mobileNumber", "phone"),
        ("Telephone", "phone"),
        ("ssn", "national_id"),
        ("social security number", "national_id"),
        ("name", "person_name"),
        ("first_name", "person_name"),
        ("lastName", "person_name"),
        ("full_name", "person_name"),
        ("Surname", "person_name"),
        ("address", "address"),
        ("street", "address"),
        ("zip", "address"),
        ("post_code", "address"),
        ("postcode", "address"),
        ("birth_date", "birth_date"),
        ("date of birth", "birth_date"),
        ("DOB", "birth_date"),
        ("ip address", "ip_address"),
        ("client_ip", "ip_address"),
        ("iban", "iban"),
        ("credit card", "payment_card"),
        ("card_number", "payment_card"),
        ("passport", "passport"),
        ("passport_no", "passport"),
    ],
)
def test_pii_names_flagged(column: str, kind: str) -> None:
    assert kind in kinds_by_name(column)


def test_ip_address_is_not_also_a_postal_address() -> None:
    assert kinds_by_name("ip_address") == ["ip_address"]


@pytest.mark.parametrize(
    "column",
    [
        "mean radius",
        "mean fractal dimension",
        "worst fractal dimension",
        "area error",
        "concave points error",
        "target",
        "hotel",
        "filename",
        "zipper_count",
        "shipping",
        "dimensions",
        "tip",
        "iptc",
        "domain",
        "renamed",
    ],
)
def test_innocent_names_not_flagged(column: str) -> None:
    assert kinds_by_name(column) == []


# --- by value --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("jane.doe@example.org", "email"),
        ("write to a.b+c@mail.example.co.uk please", "email"),
        ("+1 415 555 2671", "phone"),
        ("(415) 555-2671", "phone"),
        ("+441632960961", "phone"),
        ("123-45-6789", "national_id"),
        ("4111 1111 1111 1111", "payment_card"),
        ("5555555555554444", "payment_card"),
        ("378282246310005", "payment_card"),
        ("GB82 WEST 1234 5698 7654 32", "iban"),
        ("DE89370400440532013000", "iban"),
        ("192.168.1.20", "ip_address"),
        ("2001:db8::1", "ip_address"),
    ],
)
def test_pii_values_detected(value: str, kind: str) -> None:
    assert kind in value_kinds(value)


@pytest.mark.parametrize(
    "value",
    [
        "2020-01-15",
        "15/01/2020",
        "3.14159",
        "1234.5678",
        "12345",
        "4155552671",
        "hello world",
        "000-12-3456",
        "666-12-3456",
        "4111 1111 1111 1112",
        "GB82 WEST 1234 5698 7654 33",
        "999.1.1.1",
        "not@an",
        "M",
        "benign",
    ],
)
def test_non_pii_values_not_detected(value: str) -> None:
    assert value_kinds(value) == set()


def test_check_digits() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB83WEST12345698765432")


def test_value_share_threshold() -> None:
    few = pd.Series(["a@example.org"] * 3 + ["plain text"] * 97)  # 3%: not a PII column
    many = pd.Series(["a@example.org"] * 10 + ["plain text"] * 90)  # 10%: flagged
    assert kinds_by_value(few) == [] and kinds_by_value(many) == ["email"]
    assert kinds_by_value(pd.Series([None, None], dtype=object)) == []


def test_value_sampling_is_capped() -> None:
    column = pd.Series([f"user{i}@example.org" for i in range(5000)])
    assert kinds_by_value(column, sample=50) == ["email"]


def test_scan_bundled_data_has_no_findings() -> None:
    assert scan(pd.read_csv(BUNDLED_CSV)) == []


def test_scan_reports_name_and_value() -> None:
    frame = pd.DataFrame(
        {
            "x": [1.0, 2.0],
            "email": ["a@x.org", "b@x.org"],
            "notes": ["call +1 415 555 2671", "ring +1 415 555 2672"],
            "contact": ["a@x.org", "b@y.org"],
        }
    )
    found = {f.column: f for f in scan(frame)}
    assert set(found) == {"email", "contact"}  # phones inside free text are not matched
    assert found["email"].by == ("name", "value") and found["email"].kinds == ("email",)
    assert found["contact"].by == ("value",)


def test_numeric_columns_are_not_value_scanned() -> None:
    assert scan(pd.DataFrame({"n": [4111111111111111, 5555555555554444]})) == []


# --- the gate --------------------------------------------------------------------------------

FINDINGS = [Finding("email", ("email",), ("name", "value"))]


def test_check_pii_undeclared_blocks() -> None:
    g = check_pii(FINDINGS, {}, columns=["x", "email", "target"], target="target")
    assert not g.passed and g.metrics["undeclared"] == ["email"]
    assert g.metrics["flagged"] == [
        {"column": "email", "kinds": ["email"], "by": ["name", "value"]}
    ]
    assert "dataset.pii" in g.detail


def test_check_pii_declared_passes_and_reports_missing() -> None:
    g = check_pii(
        FINDINGS,
        {"email": "pseudonymize", "phone": "drop"},
        columns=["x", "email", "target"],
        target="target",
    )
    assert g.passed and g.metrics["pseudonymized"] == ["email"]
    assert g.metrics["dropped"] == [] and g.metrics["declared_missing"] == ["phone"]


def test_check_pii_refuses_declared_label() -> None:
    g = check_pii([], {"target": "drop"}, columns=["x", "target"], target="target")
    assert not g.passed and "label" in g.detail


def test_check_pii_no_findings_passes() -> None:
    assert check_pii([], {}, columns=["x"], target="x").passed


# --- pseudonymisation and its key ------------------------------------------------------------


def test_pseudonymize_is_keyed_and_stable() -> None:
    values = pd.Series(["a@x.org", "b@x.org", None, "a@x.org"])
    one, again = pseudonymize(values, b"k" * 32), pseudonymize(values, b"k" * 32)
    other = pseudonymize(values, b"j" * 32)
    assert one.tolist() == again.tolist()
    assert one[0] == one[3] and one[0] != one[1] and one[2] is None
    assert len(one[0]) == 64 and "a@x.org" not in one.tolist()
    assert other[0] != one[0] and other[1] != one[1]


def test_pseudonymize_refuses_short_key() -> None:
    with pytest.raises(ValueError):
        pseudonymize(pd.Series(["a"]), b"short")


def test_apply_pii() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0], "email": ["a@x.org", "b@x.org"], "name": ["Ann", "Bob"]})
    out = apply_pii(frame, {"email": "pseudonymize", "name": "drop", "ssn": "drop"}, key=b"k" * 32)
    assert list(out.columns) == ["x", "email"]
    assert not set(out["email"]) & {"a@x.org", "b@x.org"}
    assert list(frame.columns) == ["x", "email", "name"]  # input untouched
    with pytest.raises(ValueError):
        apply_pii(frame, {"email": "pseudonymize"}, key=None)


def test_pii_key_comes_from_the_keyring_0600_and_stable(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    with pytest.raises(KeyFileError, match="keys init"):
        pii_key(None, keys)  # never created on first use: only with the other keys
    keyring.create(keys)
    key = pii_key(None, keys)
    path = keys / "pii-hmac.key"
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pii_key(None, keys) == key
    keyring.create(tmp_path / "other")
    assert pii_key(None, tmp_path / "other") != key


def test_configured_pii_key(tmp_path: Path) -> None:
    path = tmp_path / "pii.key"
    with pytest.raises(KeyFileError):
        pii_key(path, tmp_path)  # a configured key is never created silently
    path.write_bytes(b"s" * 32)
    path.chmod(0o644)
    with pytest.raises(KeyFileError):
        pii_key(path, tmp_path)  # readable by others: refused
    path.chmod(0o600)
    assert pii_key(path, tmp_path) == b"s" * 32
    path.write_bytes(b"s" * 8)
    with pytest.raises(ValueError):
        pii_key(path, tmp_path)
