"""Supply-chain check of the sign stage: the environment that trained the model
is the one the lock file pins.

`requirements.lock` pins every dependency with hashes, and pip verified them at
install time. A package upgraded, downgraded or added by hand afterwards (an
insider, a compromised tool, a stray `pip install`) would still run; this gate
compares what is installed with what is pinned before the model is signed, and
the installed set goes into the signed provenance as a small SBOM.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from tasks.common.gates import GateResult, check

DEPENDENCIES = "sign.dependencies"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def normalise(name: str) -> str:
    """PEP 503 name normalisation: `Great_Expectations` == `great-expectations`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(lock_text: str) -> dict[str, str]:
    """Every `name==version` pin of a hash-pinned requirements file."""
    return {normalise(n): v for n, v in _PIN.findall(lock_text)}


def installed() -> dict[str, str]:
    """Every distribution installed in this environment (name -> version)."""
    return {normalise(d.metadata["Name"]): d.version for d in metadata.distributions()}


def check_dependencies(lock_file: Path, *, present: dict[str, str] | None = None) -> GateResult:
    """Every pinned package is installed at exactly its pinned version."""
    pins = pinned(lock_file.read_text(encoding="utf-8"))
    have = installed() if present is None else present
    drift = sorted(n for n, v in pins.items() if have.get(n) != v)
    return check(
        DEPENDENCIES,
        ok=bool(pins) and not drift,
        metrics={"pinned": len(pins), "drifted": len(drift), "packages": drift[:20]},
        threshold={"drifted": 0},
        detail=""
        if pins and not drift
        else "installed packages differ from requirements.lock: reinstall with "
        "`make clean install` and find out who changed the environment",
    )


def sbom(present: dict[str, str] | None = None) -> list[str]:
    """The installed packages as sorted `name==version` lines."""
    return sorted(f"{n}=={v}" for n, v in (installed() if present is None else present).items())
