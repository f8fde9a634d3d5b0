"""Ports for the services tests start, kept apart between pytest-xdist workers.

Each worker only takes ports in its own residue class modulo ``STRIDE``, so two
workers never pick the same port between "found free" and "bound by the service".
``STRIDE`` divides SeaweedFS's gRPC offset (10000): a port and its gRPC twin are
in the same class. Without xdist (one process) every port is allowed.
"""

from __future__ import annotations

import os

STRIDE = 8  # up to 8 workers get disjoint ports; 10000 % STRIDE == 0


def worker_slot() -> int | None:
    """This worker's residue class (``gw3`` -> 3), or None outside pytest-xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not worker[2:].isdigit():
        return None
    return int(worker[2:]) % STRIDE


def ours(port: int) -> bool:
    """Whether this worker may take ``port`` (always true outside xdist)."""
    slot = worker_slot()
    return slot is None or port % STRIDE == slot
