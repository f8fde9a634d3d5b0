"""Ports for the services tests start, kept apart between pytest-xdist workers.

Every port a test sets itself (and its SeaweedFS gRPC twin, port + 10000) comes
from ``POOL``:

- below the kernel's ephemeral range (32768+), so an outgoing connection from
  another test can never hold the port between "found free" and "bound";
- apart from the ports on-demand stacks draw for SeaweedFS's internal
  components (10000-15999, twins 20000-25999), so the product and the tests
  never race for one;
- under pytest-xdist, each worker only takes ports in its own residue class
  modulo ``STRIDE``, so two workers never pick the same port. ``STRIDE``
  divides 10000: a port and its gRPC twin are in the same class.
"""

from __future__ import annotations

import os
import secrets
import socket

STRIDE = 8  # up to 8 workers get disjoint ports; 10000 % STRIDE == 0
POOL = range(16000, 20000)  # gRPC twins 26000-29999
GRPC_OFFSET = 10000


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


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_handed_out: set[int] = set()


def free_port() -> int:
    """A port from ``POOL`` (this worker's share) that is free with its gRPC twin.

    Never one handed out recently in this process: a stack's three ports are
    drawn before any is bound, and must not be drawn twice.
    """
    if len(_handed_out) >= len(POOL) // STRIDE // 2:
        _handed_out.clear()
    while True:
        port = POOL.start + secrets.randbelow(len(POOL))
        if port in _handed_out or not ours(port):
            continue
        if _bindable(port) and _bindable(port + GRPC_OFFSET):
            _handed_out.add(port)
            return port
