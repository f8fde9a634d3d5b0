"""PII guard: find columns that look like personal data, and handle the declared ones.

A column looks like PII by its **name** (matched on whole tokens, so "fractal
dimension" is not a "name") or by its **values** (a sample of each text column is
tested for e-mail addresses, phone numbers, US SSNs, payment cards with a valid
Luhn digit, IBANs with a valid mod-97 check, IPv4/IPv6 addresses). Undeclared
PII-looking columns block the run; declared ones (``dataset.pii``) are dropped or
pseudonymised with HMAC-SHA256 under a secret key that never lives in the repo.
Findings name columns and kinds of PII, never values.

About 360 lines, a third of them the name-pattern table: data a reviewer reads in
one place, so it stays beside the matchers that use it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.common.gates import GateResult, check
from tasks.trust.keys import active_secret, read_secret

SAMPLE_VALUES = 200  # non-null values tested per text column
MIN_MATCH_SHARE = 0.05  # a column is flagged when more than this share of them match
_MIN_KEY_BYTES = 32

# Token sequences per kind; a name matches when its tokens contain a sequence.
_NAME_PATTERNS: dict[str, tuple[str, ...]] = {
    "email": ("email", "emails", "e mail", "mail", "emailaddress", "mailaddress"),
    "phone": (
        "phone",
        "phones",
        "telephone",
        "tel",
        "mobile",
        "cellphone",
        "cell phone",
        "phonenumber",
        "mobilenumber",
        "fax",
        "msisdn",
    ),
    "national_id": (
        "ssn",
        "social security",
        "socialsecurity",
        "national id",
        "nationalid",
        "national insurance",
        "nino",
        "tax id",
        "taxid",
        "driver license",
        "drivers license",
        "driving licence",
        "driverslicense",
    ),
    "person_name": (
        "name",
        "names",
        "firstname",
        "lastname",
        "fullname",
        "surname",
        "forename",
        "givenname",
        "familyname",
        "middlename",
        "maidenname",
        "username",
        "nickname",
    ),
    "address": (
        "address",
        "addr",
        "street",
        "zip",
        "zipcode",
        "postcode",
        "postalcode",
        "postal code",
        "streetaddress",
        "homeaddress",
    ),
    "birth_date": (
        "dob",
        "birthdate",
        "birthday",
        "dateofbirth",
        "birth date",
        "date of birth",
        "born on",
    ),
    "ip_address": ("ip", "ipaddress", "ipaddr", "ipv4", "ipv6", "ip address"),
    "iban": ("iban", "bank account", "bankaccount", "account number", "accountnumber"),
    "payment_card": (
        "credit card",
        "creditcard",
        "card number",
        "cardnumber",
        "cc number",
        "ccnumber",
        "ccnum",
        "cvv",
        "cvc",
        "pan number",
    ),
    "passport": ("passport", "passportnumber", "passport number"),
    "health_id": ("mrn", "medical record", "medicalrecordnumber", "patient id", "patientid"),
}
# A more specific kind wins: "ip address" is an ip_address, not an address.
_KIND_ORDER = (
    "ip_address",
    "email",
    "birth_date",
    "payment_card",
    "iban",
    "passport",
    "national_id",
    "health_id",
    "phone",
    "person_name",
    "address",
)

# A match may start only where a run of address characters starts, and a local part
# holds at most 64 of them (RFC 5321), so a search stays linear in the text's length
# (without both, a 64 KiB run of letters took 3 s per value).
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
_SSN = re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}[- ](?!00)\d{2}[- ](?!0000)\d{4}(?!\d)")
_PHONE = re.compile(r"\+?(?:\(\d{1,4}\)|\d{1,4})(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){1,5}")
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
_CARD = re.compile(r"\d(?:[ -]?\d){12,18}")
_IBAN = re.compile(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}")


def name_tokens(column: str) -> list[str]:
    """Lower-case word tokens: "firstName" -> [first, name], "IPAddress" -> [ip, address]."""
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", column)
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", spaced)
    return re.findall(r"[a-z]+|[0-9]+", spaced.lower())


def _contains(tokens: list[str], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(tuple(tokens[i : i + n]) == phrase for i in range(len(tokens) - n + 1))


def kinds_by_name(column: str) -> list[str]:
    """PII kinds suggested by a column's name (token matches, compounds joined too)."""
    tokens = [t for t in name_tokens(column) if not t.isdigit()]
    joined = [
        "".join(tokens[i:j])
        for i in range(len(tokens))
        for j in range(i + 2, min(len(tokens), i + 4) + 1)
    ]
    found = []
    for kind in _KIND_ORDER:
        for pattern in _NAME_PATTERNS[kind]:
            words = tuple(pattern.split())
            if _contains(tokens, words) or (len(words) == 1 and words[0] in joined):
                found.append(kind)
                break
    if "ip_address" in found and "address" in found and "ip" in tokens:
        found.remove("address")
    return found


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _card_brand_ok(d: str) -> bool:
    n = len(d)
    return (
        (d[0] == "4" and n in (13, 16, 19))
        or (n == 16 and 51 <= int(d[:2]) <= 55)
        or (n == 16 and 2221 <= int(d[:4]) <= 2720)
        or (n == 15 and d[:2] in ("34", "37"))
        or (n in (16, 19) and (d[:4] == "6011" or d[:2] == "65"))
        or (n in (16, 19) and 3528 <= int(d[:4]) <= 3589)
    )


def iban_ok(value: str) -> bool:
    s = value[4:] + value[:4]
    return int("".join(str(int(c, 36)) for c in s)) % 97 == 1


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def value_kinds(value: str) -> set[str]:
    """PII kinds one text value looks like."""
    v = value.strip()
    found = set()
    if _EMAIL.search(v):
        found.add("email")
    if _SSN.fullmatch(v):
        found.add("national_id")
    compact = v.replace(" ", "").upper()
    if _IBAN.fullmatch(compact) and iban_ok(compact):
        found.add("iban")
    if _CARD.fullmatch(v):
        digits = re.sub(r"\D", "", v)
        if _card_brand_ok(digits) and luhn_ok(digits):
            found.add("payment_card")
    try:
        ipaddress.ip_address(v)
        found.add("ip_address")
    except ValueError:
        pass
    if (
        not found
        and _PHONE.fullmatch(v)
        and not _DATE.fullmatch(v)
        and (8 if v.startswith("+") else 10) <= sum(c.isdigit() for c in v) <= 15
        and (v.startswith("+") or not _is_float(v))
    ):
        found.add("phone")
    return found


def kinds_by_value(
    values: pd.Series,
    *,
    sample: int = SAMPLE_VALUES,
    min_share: float = MIN_MATCH_SHARE,
    seed: int = 0,
) -> list[str]:
    """PII kinds matched by more than `min_share` of up to `sample` non-null values."""
    present = values.dropna()
    if present.empty:
        return []
    if len(present) > sample:
        present = present.sample(n=sample, random_state=seed)
    counts: dict[str, int] = {}
    for v in present.astype(str):
        for kind in value_kinds(v):
            counts[kind] = counts.get(kind, 0) + 1
    return sorted(k for k, c in counts.items() if c / len(present) > min_share)


def _is_text(series: pd.Series) -> bool:
    return (
        pd.api.types.is_object_dtype(series)
        or pd.api.types.is_string_dtype(series)
        or isinstance(series.dtype, pd.CategoricalDtype)
    )


@dataclass(frozen=True)
class Finding:
    column: str
    kinds: tuple[str, ...]
    by: tuple[str, ...]  # "name", "value"

    def report(self) -> dict[str, object]:
        return {"column": self.column, "kinds": list(self.kinds), "by": list(self.by)}


def scan(frame: pd.DataFrame, *, seed: int = 0) -> list[Finding]:
    """Every column that looks like PII by name, or by value for text columns."""
    findings = []
    for col in frame.columns:
        by_name = kinds_by_name(str(col))
        by_value = kinds_by_value(frame[col], seed=seed) if _is_text(frame[col]) else []
        if by_name or by_value:
            by = tuple(b for b, hit in (("name", by_name), ("value", by_value)) if hit)
            findings.append(Finding(str(col), tuple(dict.fromkeys(by_name + by_value)), by))
    return findings


def check_pii(
    findings: list[Finding], declared: Mapping[str, str], *, columns: list[str], target: str
) -> GateResult:
    """`screen.pii`: no undeclared PII-looking column; the label is never declared PII."""
    present = set(columns)
    undeclared = [f.column for f in findings if f.column not in declared]
    missing = sorted(c for c in declared if c not in present)
    bad_target = target in declared
    ok = not undeclared and not bad_target
    metrics = {
        "flagged": [f.report() for f in findings],
        "undeclared": undeclared,
        "dropped": sorted(c for c, a in declared.items() if a == "drop" and c in present),
        "pseudonymized": sorted(
            c for c, a in declared.items() if a == "pseudonymize" and c in present
        ),
        "declared_missing": missing,
        "columns_scanned": len(columns),
    }
    detail = (
        "the label column cannot be declared PII"
        if bad_target
        else f"{len(undeclared)} column(s) look like personal data: {', '.join(undeclared)}; "
        'declare each in dataset.pii as "drop" or "pseudonymize", or remove it'
        if undeclared
        else ""
    )
    return check(
        "screen.pii",
        metrics=metrics,
        ok=ok,
        detail=detail,
        threshold={
            "undeclared_pii_columns": 0,
            "min_match_share": MIN_MATCH_SHARE,
            "sample_values": SAMPLE_VALUES,
        },
    )


def pseudonymize(values: pd.Series, key: bytes) -> pd.Series:
    """HMAC-SHA256 (hex) of each value's text; missing stays missing. Same key, same output."""
    if len(key) < 16:
        raise ValueError("pseudonymisation key is too short")
    uniques = values.dropna().astype(str).unique()
    table = {u: hmac.new(key, u.encode(), hashlib.sha256).hexdigest() for u in uniques}
    out = values.astype(str).map(table).astype(object)
    out[values.isna().to_numpy()] = None
    return out


def apply_pii(
    frame: pd.DataFrame, declared: Mapping[str, str], *, key: bytes | None
) -> pd.DataFrame:
    """Drop or pseudonymise the declared columns that are present (a new frame)."""
    present = [c for c in declared if c in frame.columns]
    out = frame.drop(columns=[c for c in present if declared[c] == "drop"])
    for col in (c for c in present if declared[c] == "pseudonymize"):
        if key is None:
            raise ValueError("a pseudonymisation key is needed")
        out[col] = pseudonymize(out[col], key)
    return out


def pii_key(key_file: Path | None, keys_dir: Path) -> bytes:
    """The HMAC key: the configured file (must exist, 0600), or the keyring's
    ``<keys>/pii-hmac.key`` (32 random bytes, made with the other keys)."""
    key = read_secret(key_file) if key_file is not None else active_secret(keys_dir, "pii")
    if len(key) < _MIN_KEY_BYTES:
        raise ValueError("pseudonymisation key shorter than 32 bytes")
    return key
