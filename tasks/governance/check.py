"""What `verify models:/NAME@champion` (and `fetch`) check beyond the release itself:
the signed champion record, the MLflow alias that must agree with it, and the
approvals it rests on. Each is a ``(name, passed, detail)`` check, like the release's.
"""

from __future__ import annotations

from typing import Any

from tasks.common.settings import Settings
from tasks.governance import approvals, champion_record, promotion, roles

Check = tuple[str, bool, str]


def record_checks(
    client: Any, settings: Settings, name: str
) -> tuple[champion_record.Current | None, list[Check]]:
    """The champion record (signature by a listed promoter) and the alias beside it.

    Returns:
        The record (None when missing or not signed by a promoter) and the checks.
    """
    key = f"s3://{settings.storage.bucket}/{champion_record.record_key(settings, name)}"
    try:
        current = champion_record.read(client, settings, name)
    except champion_record.RecordError as exc:
        return None, [("champion.record", False, str(exc))]
    if current.payload is None:
        return None, [
            (
                "champion.record",
                False,
                f"no signed champion record at {key}: nothing was promoted (an MLflow alias "
                f"set by hand or by an earlier version is not a champion): `secure-pipeline "
                f"promote models:/{name}/VERSION --key KEY`",
            )
        ]
    p = current.payload
    checks: list[Check] = [
        (
            "champion.record",
            True,
            f"version {current.version}, signed by promoter key {roles.short(str(current.signer))}"
            f" ({p.get('action')} at {p.get('promoted_at')})",
        )
    ]
    from tasks.checks.champion import alias_version

    alias = alias_version(settings, name)
    same = alias == current.version
    checks.append(
        (
            "champion.alias",
            same,
            "MLflow's alias champion names the record's version"
            if same
            else f"MLflow's alias champion names version {alias}, the signed champion record "
            f"version {current.version}: the alias was moved outside `secure-pipeline promote`; "
            "find who moved it, then promote or roll back",
        )
    )
    return current, checks


def approval_checks(
    client: Any, settings: Settings, verified: Any, current: champion_record.Current
) -> tuple[list[Check], list[approvals.Approval]]:
    """The verified release is the one the record names, and the approvals the record
    cites still hold and suffice under today's rule.

    Returns:
        The checks and the approvals that hold (for `verify` to print who approved).
    """
    release = approvals.facts(client, verified)
    assert current.payload is not None  # noqa: S101 - record_checks returned it
    same = release.sha256 == current.payload["release"]["sha256"]
    checks: list[Check] = [
        (
            "champion.release",
            same,
            "the release record is the one the champion record names (sha256)"
            if same
            else "the release record differs from the one the champion record names",
        )
    ]
    if not same:
        return checks, []
    found = approvals.recheck(client, settings, release, current.payload.get("approvals", []))
    missing = promotion.shortfall(settings, release, found)
    if missing:
        checks.append(("champion.approvals", False, missing))
    else:
        who = ", ".join(roles.short(k) for k in found.key_ids) or "none needed"
        checks.append(
            (
                "champion.approvals",
                True,
                f"{len(found.key_ids)} valid approval(s) of {approvals.needed(settings, release)} "
                f"needed; approved by: {who}",
            )
        )
    return checks, found.valid
