"""Every object of a release is the version its signed record names, and nothing else.

A release is written once, each object with If-None-Match. Someone who can delete
(a delete marker) and then write again, or who writes a new version over an object,
can replace a live release with another and sign a new record for it: the newest
objects then agree with each other. What they cannot do is leave no trace in the
version history, so a release is checked against it: under the release's prefix
every object has exactly one version, no delete marker, and that version is the one
the signed record names (the record itself included: a second version of it is a
replaced release). `verify`, `fetch`, the deploy round trip and `audit verify` use
this.
"""

from __future__ import annotations

from typing import Any

# Beside the releases of NAME, written by the governance roles (never a release):
CHAMPION_RECORD = "champion.dsse.json"  # <prefix>/NAME/champion.dsse.json, the promoter's
APPROVALS = "approvals"  # <prefix>/NAME/approvals/<digest>/<key-id>.dsse.json, approvers'


def release_history(client: Any, *, bucket: str, base: str) -> dict[str, dict[str, list[Any]]]:
    """Per object name under ``base/``: its versions and delete markers (newest first)."""
    found: dict[str, dict[str, list[Any]]] = {}
    pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=f"{base}/")
    for page in pages:
        for kind in ("Versions", "DeleteMarkers"):
            for v in page.get(kind, []):
                name = v["Key"].removeprefix(f"{base}/")
                if "/" in name:
                    continue  # not an object of this release
                found.setdefault(name, {"Versions": [], "DeleteMarkers": []})[kind].append(v)
    return found


def version_problems(
    history: dict[str, dict[str, list[Any]]],
    expected: dict[str, str | None],
) -> list[str]:
    """What differs between the bucket's history and the signed record.

    Args:
        history: `release_history` of the release's prefix.
        expected: Object name -> the version id the signed record names (None: the
            record itself, which must have exactly one version).

    Returns:
        One sentence per object that was hidden, replaced or added, naming it.
    """
    problems = []
    for name in sorted(set(history) | set(expected)):
        seen = history.get(name, {"Versions": [], "DeleteMarkers": []})
        ids = [v["VersionId"] for v in seen["Versions"]]
        markers = seen["DeleteMarkers"]
        if name not in expected:
            problems.append(f"{name} is not part of the signed release (added afterwards)")
            continue
        want = expected[name]
        if markers:
            when = max(m["LastModified"] for m in markers)
            problems.append(
                f"{name} was deleted (a delete marker of {when:%Y-%m-%d %H:%M} UTC hides it)"
            )
        if len(ids) > 1:
            newest = max(v["LastModified"] for v in seen["Versions"])
            problems.append(
                f"{name} has {len(ids)} versions (newest written {newest:%Y-%m-%d %H:%M} UTC): "
                "the release was replaced in place"
            )
        elif want is not None and ids and ids[0] != want:
            problems.append(f"{name}'s only version is not the one the signed release names")
        elif not ids:
            problems.append(f"{name}: no version of it is stored")
    return problems


def check_release_versions(
    client: Any, *, bucket: str, release_key: str, record: dict[str, Any]
) -> tuple[bool, str]:
    """`release.versions`: the release's objects against the bucket's version history.

    Returns:
        (ok, detail naming every object that was hidden, replaced or added).
    """
    base = release_key.rsplit("/", 1)[0]
    expected: dict[str, str | None] = {release_key.rsplit("/", 1)[1]: None}
    expected[record["artifact"]["key"].rsplit("/", 1)[1]] = record["artifact"]["version_id"]
    for name, entry in record["files"].items():
        expected[name] = entry["version_id"]
    problems = version_problems(release_history(client, bucket=bucket, base=base), expected)
    if problems:
        return False, "; ".join(problems)
    return True, (
        f"each of the {len(expected)} release objects has one version, the signed one, "
        "and no delete marker"
    )


def scan_release_histories(
    client: Any, *, bucket: str, prefix: str, names: tuple[str, ...], optional: tuple[str, ...] = ()
) -> list[str]:
    """`audit verify`'s sweep: every release (a prefix holding a release record) whose
    objects were hidden, replaced or added to, with what happened to each.

    Args:
        names: The object names of a release (`tasks.trust.release`).
        optional: Names a release made before they existed lacks (never stored is
            fine; stored, then hidden or replaced, is named like any other).
    """
    record = names[-1]
    bases: dict[str, dict[str, dict[str, list[Any]]]] = {}
    root = prefix.strip("/") + "/" if prefix.strip("/") else ""
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=root):
        for kind in ("Versions", "DeleteMarkers"):
            for v in page.get(kind, []):
                base, _, name = v["Key"].rpartition("/")
                entry = bases.setdefault(base, {}).setdefault(
                    name, {"Versions": [], "DeleteMarkers": []}
                )
                entry[kind].append(v)
    found = []
    for base, history in sorted(bases.items()):
        if record not in history:
            continue  # not a release (an incomplete one, a champion record, approvals)
        kept = (n for n in names if n not in optional or n in history)
        problems = version_problems(history, dict.fromkeys(kept))
        found += [f"{base}/{p}" for p in problems]
    return found
