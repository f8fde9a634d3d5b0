"""`audit verify` and the monitoring flow's ``monitor.audit`` gate: the audit chain, its
anchors in the object-locked bucket, the releases' version histories and the bucket
policy, read as the ``reader`` identity.

A deleted or emptied log is exactly what the anchors catch, so the bucket is always
read; a bucket that cannot be read is a failed verification, never a pass.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tasks.common.errors import explain
from tasks.common.settings import Settings
from tasks.localstack import stack

if TYPE_CHECKING:
    from tasks.common.s3 import S3Endpoint


@dataclass
class AuditFindings:
    """What `audit_findings` saw; `ok` only when every part is clean."""

    chain_intact: bool
    chain: str  # the chain's verdict in words, with its head
    anchored: bool = False
    anchors: str = ""
    incomplete: list[str] = field(default_factory=list)  # deploys that stopped (no verdict)
    deleted: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    policy_drift: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.chain_intact
            and self.anchored
            and not self.deleted
            and not self.replaced
            and not self.policy_drift
        )

    def lines(self, settings: Settings) -> list[str]:
        """What `audit verify` prints, one finding per line."""
        st = settings.storage
        out = [f"audit log {settings.audit_path}: {self.chain}"]
        if not self.chain_intact:
            return out
        out.append(f"anchors in s3://{st.bucket}: {self.anchors}")
        if self.incomplete:
            out.append(
                "incomplete releases (a deploy stopped before its release record; never "
                f"released, nothing points at them): {', '.join(self.incomplete)}"
            )
        if self.deleted:
            out.append(f"release objects hidden by delete markers: {', '.join(self.deleted)}")
        if self.replaced:
            out.append(f"releases changed after release: {'; '.join(self.replaced)}")
        if self.policy_drift:
            out.append(
                f"the bucket policy is not the one the pipeline sets "
                f"({', '.join(self.policy_drift)}): someone with the admin identity changed "
                "it; find who, then restart the store to restore it"
            )
        return out

    def problem(self) -> str:
        """The first thing wrong, in one sentence ("" when `ok`)."""
        if not self.chain_intact:
            return f"the audit chain is broken: {self.chain}"
        if not self.anchored:
            return f"the anchors do not match: {self.anchors}"
        if self.deleted:
            return f"release objects hidden by delete markers: {', '.join(self.deleted)}"
        if self.replaced:
            return f"releases changed after release: {'; '.join(self.replaced)}"
        if self.policy_drift:
            return f"the bucket policy was changed ({', '.join(self.policy_drift)})"
        return ""


def audit_findings(settings: Settings, endpoint: S3Endpoint | None = None) -> AuditFindings:
    """Verify the audit chain, then (if intact) everything the bucket says about it, as
    the ``reader`` identity on `endpoint` (a store the caller holds open; None: opened
    for the call)."""
    from tasks.common.audit import AuditLog

    status = AuditLog(settings.audit_path).verify()
    found = AuditFindings(status.intact, f"{status.detail}; head {status.head[:16]}")
    if not status.intact:
        return found
    from tasks.common.anchors import check_anchors
    from tasks.common.s3 import s3_client
    from tasks.trust.release import OBJECTS, OPTIONAL_FILES, scan_releases
    from tasks.trust.versions import scan_release_histories

    st = settings.storage
    try:
        with contextlib.ExitStack() as opened:
            if endpoint is None:
                endpoint = opened.enter_context(stack.s3_service(settings, role="reader"))
            client = s3_client(stack.role_endpoint(settings, endpoint, "reader"))
            found.anchored, found.anchors = check_anchors(settings, client)
            found.incomplete, found.deleted = scan_releases(
                client, bucket=st.bucket, prefix=st.prefix
            )
            found.replaced = scan_release_histories(
                client, bucket=st.bucket, prefix=st.prefix, names=OBJECTS, optional=OPTIONAL_FILES
            )
            if settings.embedded_s3:
                from tasks.localstack.bucket import policy_drift
                from tasks.localstack.seaweedfs import expected_policy

                found.policy_drift = policy_drift(
                    client, bucket=st.bucket, expected=expected_policy(settings, endpoint.url)
                )
    except Exception as exc:  # noqa: BLE001 - unverifiable anchors are a failed verification
        found.anchored, found.anchors = False, f"cannot read them ({explain(exc)})"
        found.incomplete, found.deleted = [], []
    return found
