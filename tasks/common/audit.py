"""Append-only, hash-chained audit log (JSON lines).

Each line holds the sha256 of the previous line's entry, so editing,
reordering or deleting any line breaks the chain at that point; `verify`
finds the first broken line. At the end of every run the head is also anchored
in the object-locked bucket (tasks/common/anchors.py), so rewriting the
chain or truncating its tail is detectable too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

GENESIS = "0" * 64


def _digest(entry: dict[str, Any]) -> str:
    body = json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def _last_line(fh: BinaryIO, block: int = 1 << 16) -> str | None:
    """The last non-empty line of the file, read backwards from its end."""
    pos = fh.seek(0, os.SEEK_END)
    data = b""
    while pos > 0:
        step = min(block, pos)
        pos -= step
        fh.seek(pos)
        data = fh.read(step) + data
        body = data.rstrip(b"\n")
        if b"\n" in body or pos == 0:
            return body.rsplit(b"\n", 1)[-1].decode() if body else None
    return None


@dataclass(frozen=True)
class ChainStatus:
    intact: bool
    entries: int
    head: str
    detail: str


class AuditLog:
    """The audit trail of every stage; safe to share between processes."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, event: str, **fields: Any) -> str:
        """Append one entry and return its hash."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # serialise writers: the chain is linear
            seq, prev = 0, GENESIS
            last = _last_line(fh)  # the tail only: appends cost the same on a long log
            if last:
                head = json.loads(last)
                seq, prev = head["seq"] + 1, head["hash"]
            entry = {
                "seq": seq,
                "ts": datetime.now(UTC).isoformat(),
                "event": event,
                "prev": prev,
                **fields,
            }
            entry["hash"] = _digest(entry)
            fh.write((json.dumps(entry, sort_keys=True, default=str) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())
        return str(entry["hash"])

    def recorded(self, event: str) -> bool:
        """Whether any entry is of kind `event` (a plain scan: for a decision such as
        "keys were created here", not a verification; `verify` checks the chain)."""
        needle = json.dumps({"event": event})[1:-1].encode()  # '"event": "<event>"'
        try:
            with self.path.open("rb") as fh:
                return any(needle in line for line in fh)
        except FileNotFoundError:
            return False

    def verify(self) -> ChainStatus:
        """Recompute the chain; report the first line that does not hold."""
        if not self.path.exists():
            return ChainStatus(True, 0, GENESIS, "no audit log yet")
        prev, count = GENESIS, 0
        with self.path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    return ChainStatus(False, count, prev, f"line {lineno}: blank line")
                try:
                    entry = json.loads(line)
                    claimed = entry.pop("hash")
                except (ValueError, KeyError, AttributeError):
                    return ChainStatus(False, count, prev, f"line {lineno}: not an audit entry")
                if entry.get("seq") != count or entry.get("prev") != prev:
                    return ChainStatus(
                        False,
                        count,
                        prev,
                        f"line {lineno}: sequence or link to previous entry broken",
                    )
                if _digest(entry) != claimed:
                    return ChainStatus(
                        False, count, prev, f"line {lineno}: content does not match its hash"
                    )
                prev, count = claimed, count + 1
        return ChainStatus(True, count, prev, f"{count} entries, chain intact")
