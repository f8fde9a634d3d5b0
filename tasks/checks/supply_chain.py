"""Supply-chain check of the sign stage, and the SBOM that goes with the signed model.

What is compared: the *name and version* of every installed distribution (from its
``.dist-info`` metadata, as `importlib.metadata` reports it) against the
``name==version`` pins of the two lock files:

- ``requirements.lock``, the runtime set (what trains the model): every pin must be
  installed at exactly its version (**drifted** otherwise, a missing package included);
- ``requirements-dev.lock``, the test and lint tools: allowed beside the runtime set (a
  dev or CI machine) and counted as ``dev_installed`` (a production image shows 0), but
  one installed at a version other than its pin is **drifted** too;
- anything installed that neither lock lists is **unlisted** (a stray ``pip install``).
  Exempt by design: the project itself (installed editable from the checkout) and
  ``pip`` at the version ``python -m venv`` bootstraps (the interpreter's bundled
  ensurepip wheel; no lock pins the installer). Any other ``pip`` counts as unlisted.

File contents and files outside any distribution are checked too, against each
distribution's RECORD, and the lock files against the recorded commit: see
`tasks.checks.installed_files` (its exceptions, its cost, why nothing is cached).

`cyclonedx_sbom` describes the installed runtime set as a CycloneDX 1.6 JSON document
(the dev tools are left out: they do not make the model), deterministic for the same
environment so that a rebuild gives the same bytes; `validate_sbom` checks a document
against the strict CycloneDX 1.6 schema shipped with cyclonedx-python-lib (offline).
"""

from __future__ import annotations

import json
import re
import uuid
from functools import cache
from importlib import metadata
from pathlib import Path

from cyclonedx import __version__ as cyclonedx_version
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.dependency import Dependency
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL
from packaging.requirements import InvalidRequirement, Requirement

from tasks.checks.installed_files import FileScan, LockComparison
from tasks.common.errors import PipelineError
from tasks.common.gates import GateResult, check

DEPENDENCIES = "sign.dependencies"
PROJECT = "secure-ml-pipeline"  # this project's distribution: installed editable, in no lock
SBOM_SCHEMA = SchemaVersion.V1_6
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)
_SHOWN = 20  # names listed per offending list in the gate's metrics
_SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:secure-ml-pipeline:sbom")


class SbomError(PipelineError, ValueError):
    """An SBOM that is not a valid CycloneDX 1.6 JSON document."""


def normalise(name: str) -> str:
    """PEP 503 name normalisation: `Great_Expectations` == `great-expectations`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(lock_text: str) -> dict[str, str]:
    """Every `name==version` pin of a hash-pinned requirements file."""
    return {normalise(n): v for n, v in _PIN.findall(lock_text)}


def _distributions() -> dict[str, tuple[str, metadata.Distribution]]:
    """Installed distributions by normalised name, with their versions; of two with one
    name, the first on sys.path (the one `import` and `importlib.metadata` find)."""
    found: dict[str, tuple[str, metadata.Distribution]] = {}
    for dist in metadata.distributions():
        meta = dist.metadata  # parsed on every access: once here, for name and version
        found.setdefault(normalise(meta["Name"]), (meta["Version"], dist))
    return found


def installed() -> dict[str, str]:
    """Every distribution installed in this environment (name -> version)."""
    return {name: version for name, (version, _) in _distributions().items()}


@cache
def _bootstrapped_pip() -> str | None:
    """The pip version `python -m venv` installs: the interpreter's bundled wheel."""
    try:
        import ensurepip  # absent from, or stubbed in, some distributions' Pythons

        return ensurepip.version()
    except (ImportError, OSError, KeyError):  # no bundled pip: pip counts as unlisted
        return None


def _exempt(name: str, version: str) -> bool:
    return name == PROJECT or (name == "pip" and version == _bootstrapped_pip())


def check_dependencies(
    lock_file: Path,
    dev_lock_file: Path | None = None,
    *,
    present: dict[str, str] | None = None,
    files: FileScan | None = None,
    lock: LockComparison | None = None,
) -> GateResult:
    """The installed set is the runtime lock's, plus (optionally) dev tools at their pins;
    with `files`, every installed file is its RECORD's; with `lock`, the lock files are
    the committed ones (`tasks.checks.installed_files`).

    Args:
        lock_file: The runtime lock (`requirements.lock`).
        dev_lock_file: The dev lock (`requirements-dev.lock`); None: no dev tool may be
            installed (each counts as unlisted). Given but unreadable: the check raises,
            which `run_check` turns into a failed gate.
        present: The installed set (name -> version); default: this environment's.
        files: What `scan_installed` found; None: files not checked.
        lock: What `compare_with_commit` found; None: not compared.
    """
    runtime = pinned(lock_file.read_text(encoding="utf-8"))
    dev = pinned(dev_lock_file.read_text(encoding="utf-8")) if dev_lock_file else {}
    have = installed() if present is None else {normalise(n): v for n, v in present.items()}
    drifted = sorted(
        {n for n, v in runtime.items() if have.get(n) != v}
        | {n for n, v in dev.items() if n in have and have[n] != v}
    )
    unlisted = sorted(
        n for n, v in have.items() if n not in runtime and n not in dev and not _exempt(n, v)
    )
    dev_installed = sorted(n for n in dev if n in have and n not in runtime)
    ok = bool(runtime) and not drifted and not unlisted
    metrics: dict[str, object] = {
        "pinned": len(runtime),
        "drifted": len(drifted),
        "unlisted": len(unlisted),
        "dev_installed": len(dev_installed),
        "drifted_packages": drifted[:_SHOWN],
        "unlisted_packages": unlisted[:_SHOWN],
    }
    threshold: dict[str, object] = {"drifted": 0, "unlisted": 0}
    detail = _detail(lock_file, dev_lock_file, runtime, drifted, unlisted, dev_installed)
    extra = []
    if files is not None:
        ok = ok and not files.modified and not files.unrecorded
        metrics |= {
            "files_checked": files.files,
            "files_modified": len(files.modified),
            "files_unrecorded": len(files.unrecorded),
            "modified_files": files.modified[:_SHOWN],
            "unrecorded_files": files.unrecorded[:_SHOWN],
            "files_seconds": files.seconds,
        }
        threshold |= {"files_modified": 0, "files_unrecorded": 0}
        extra += _files_detail(files)
    if lock is not None:
        ok = ok and not lock.differing
        metrics |= {
            "lock_compared_with": f"commit {lock.commit}" if lock.commit else lock.why_not,
            "lock_differs_from_commit": lock.differing,
        }
        threshold |= {"lock_differs_from_commit": []}
        if lock.differing:
            extra.append(
                f"{', '.join(lock.differing)} differ(s) from the recorded commit "
                f"{str(lock.commit)[:12]}: commit the reviewed lock change, or restore it "
                "(`git checkout -- requirements*.lock`) and reinstall with `make clean install`"
            )
    return check(
        DEPENDENCIES,
        ok=ok,
        metrics=metrics,
        threshold=threshold,
        detail="; ".join(p for p in (*extra, detail) if p),
    )


def _files_detail(files: FileScan) -> list[str]:
    parts = []
    if files.unrecorded:
        pth = [f for f in files.unrecorded if f.endswith(".pth")]  # run at every start-up
        named = ", ".join(pth[:3]) if pth else files.unrecorded[0]
        parts.append(
            f"{len(files.unrecorded)} file(s) in site-packages belong to no installed "
            f"distribution (no RECORD lists them; {named}): a "
            "dropped-in .pth or module runs code nobody pinned; delete them, or rebuild "
            "with `make clean install`, and find out who wrote them"
        )
    if files.modified:
        parts.append(
            f"{len(files.modified)} installed file(s) differ from their distribution's "
            f"RECORD hash (first: {files.modified[0]}): rebuild with `make clean install` "
            "and find out who changed them"
        )
    return parts


def _detail(
    lock_file: Path,
    dev_lock_file: Path | None,
    runtime: dict[str, str],
    drifted: list[str],
    unlisted: list[str],
    dev_installed: list[str],
) -> str:
    locks = lock_file.name + (f" or {dev_lock_file.name}" if dev_lock_file else "")
    if not runtime:
        return f"{lock_file.name} pins no package: regenerate it; refusing to sign"
    parts = []
    if drifted:
        parts.append(
            f"{len(drifted)} installed package(s) differ from their pins in {locks} "
            "(or are missing): reinstall with `make clean install` and find out who "
            "changed the environment"
        )
    if unlisted:
        parts.append(
            f"{len(unlisted)} installed package(s) are in no lock file ({locks}), e.g. a "
            "stray `pip install`: add a needed one to pyproject.toml and re-lock, or "
            "uninstall it; and find out who changed the environment"
        )
    if not parts and dev_installed:
        parts.append(
            f"{len(dev_installed)} dev tool(s) installed beside the runtime set: fine on "
            "a dev or CI machine, a production image has none"
        )
    return "; ".join(parts)


def runtime_packages(lock_file: Path, *, present: dict[str, str] | None = None) -> dict[str, str]:
    """The installed packages the runtime lock pins (name -> installed version), by name.

    A pinned package that is not installed is left out; one installed at another
    version is listed at the installed one (the gate blocks that environment anyway).
    """
    return _runtime(lock_file, installed() if present is None else present)


def _runtime(lock_file: Path, have: dict[str, str]) -> dict[str, str]:
    pins = pinned(lock_file.read_text(encoding="utf-8"))
    have = {normalise(n): v for n, v in have.items()}
    return {n: have[n] for n in sorted(pins) if n in have}


def _requires(
    dists: dict[str, tuple[str, metadata.Distribution]], name: str, version: str
) -> set[str]:
    """The names `name` requires (`Requires-Dist`) in this environment, no extras.

    Markers are evaluated for this interpreter and platform with no extra, so a
    requirement that only an extra brings (jsonschema, through the `json-validation`
    extra of cyclonedx-python-lib) is no edge here; every package hangs off the root.
    Nothing is derived for a package installed at another version than the one
    described (a `present` set that is not this environment).
    """
    if name not in dists or dists[name][0] != version:
        return set()
    names = set()
    for line in dists[name][1].requires or ():
        try:
            req = Requirement(line)
        except InvalidRequirement:  # malformed metadata: no edge rather than no SBOM
            continue
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.add(normalise(req.name))
    return names


def cyclonedx_sbom(
    lock_file: Path, *, root_name: str, root_version: str, present: dict[str, str] | None = None
) -> bytes:
    """A CycloneDX 1.6 JSON SBOM of the runtime packages (`runtime_packages`).

    `metadata.component` is the project (an application); each runtime package is a
    library component with a `pkg:pypi` purl as its bom-ref; the root depends on every
    component, and each component on the others its installed `Requires-Dist` names.

    Deterministic for one environment (the same bytes on every call): components and
    dependencies sorted by the library, no timestamp (the signed provenance carries the
    time), and a serial number that is a uuid5 of the content rather than random (the
    spec would rather have a new serial per generated BOM: reproducibility wins here).

    Component hashes are left out on purpose: the lock lists one sha256 per
    distribution file of a release (the sdist and a wheel per platform: 1 to 172 per
    package, most often 2), and neither pip nor the installed metadata records which of
    them was installed. A component's hashes name its one artifact (Dependency-Track, for one,
    keeps a single sha256 per component), so listing them all would be misleading; the
    signed provenance binds the whole lock file, every allowed hash with it, by digest.
    """
    dists = _distributions()
    have = {n: v for n, (v, _) in dists.items()} if present is None else present
    packages = _runtime(lock_file, have)
    components = {
        name: Component(
            type=ComponentType.LIBRARY,
            name=name,
            version=version,
            purl=(purl := PackageURL(type="pypi", name=name, version=version)),
            bom_ref=purl.to_string(),
        )
        for name, version in packages.items()
    }
    edges = {
        name: sorted((_requires(dists, name, version) - {name}) & components.keys())
        for name, version in packages.items()
    }
    root = Component(
        type=ComponentType.APPLICATION,
        name=root_name,
        version=root_version,
        bom_ref=f"{root_name}@{root_version}",
    )
    generator = Component(
        type=ComponentType.APPLICATION,
        name=PROJECT,
        version=dists[PROJECT][0] if PROJECT in dists else None,
        description="sign stage SBOM (tasks/checks/supply_chain.py)",
    )
    # The library by name and version only: its own `this_component()` adds eight URLs,
    # and their iri-reference format check (an Earley parser) makes validate_sbom four
    # times slower.
    serialiser = Component(
        type=ComponentType.LIBRARY, name="cyclonedx-python-lib", version=cyclonedx_version
    )
    seed = "\n".join(
        [f"{root_name}@{root_version} {generator.version} {serialiser.version}"]
        + [f"{components[n].bom_ref.value} -> {' '.join(edges[n])}" for n in sorted(components)]
    )
    bom = Bom(
        serial_number=uuid.uuid5(_SERIAL_NAMESPACE, seed),
        metadata=BomMetaData(
            component=root, tools=ToolRepository(components=[generator, serialiser])
        ),
        components=components.values(),
        # Built whole: Bom.register_dependency scans the graph on every call (quadratic).
        dependencies=[
            Dependency(root.bom_ref, [Dependency(c.bom_ref) for c in components.values()]),
            *(
                Dependency(c.bom_ref, [Dependency(components[d].bom_ref) for d in edges[n]])
                for n, c in components.items()
            ),
        ],
    )
    # BomMetaData always stamps "now"; None makes the outputter leave the field out.
    bom.metadata.timestamp = None  # type: ignore[assignment]
    text = make_outputter(bom, OutputFormat.JSON, SBOM_SCHEMA).output_as_string(indent=2)
    return (text + "\n").encode("utf-8")


@cache
def _validator() -> JsonStrictValidator:
    # The library loads its bundled schema files and resolves their $refs from a
    # registry of those files alone: no retrieval, so no network (a test checks it).
    return JsonStrictValidator(SBOM_SCHEMA)


def validate_sbom(document: bytes) -> None:
    """Raise `SbomError` unless `document` is valid CycloneDX 1.6 JSON (strict schema:
    no unknown properties), naming the first schema error.

    The 1.6 schema types `specVersion` as any string, so "1.6" is checked here.
    """
    spec = SBOM_SCHEMA.to_version()
    try:
        text = document.decode("utf-8")
        doc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SbomError(f"the SBOM is not UTF-8 JSON ({type(exc).__name__})") from None
    error = _validator().validate_str(text)
    if error is not None:
        data = error.data
        where = getattr(data, "json_path", "$")
        message = str(getattr(data, "message", data))
        if len(message) > 300:
            message = message[:300] + "..."
        raise SbomError(f"the SBOM is not valid CycloneDX {spec}: {where}: {message}")
    if doc["specVersion"] != spec:  # a dict with the key: the schema requires both
        raise SbomError(
            f"the SBOM is not valid CycloneDX {spec}: $.specVersion: "
            f"{str(doc['specVersion'])[:20]!r}, expected {spec!r}"
        )
