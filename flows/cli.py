"""The `secure-pipeline` command: run, verify, fetch, audit, init, suite, profile, keys,
local, serve.

Exit codes of `run`: 0 deployed, 1 blocked by a gate, 2 bad usage or
configuration, 3 crashed, 128 + the signal when interrupted (130 SIGINT, 143
SIGTERM: the run is recorded as interrupted and the services it started are
stopped). One function per command, then the parser (about 460 lines: the commands
are short and read best side by side). Heavy imports (Prefect, MLflow) happen only after
the environment is configured, because they read it at import time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from tasks.common import environment
from tasks.common.environment import PREFECT_START_TIMEOUT
from tasks.common.errors import Interrupted, explain, signal_number
from tasks.common.files import PUBLIC, write_json
from tasks.common.settings import ConfigError, Settings, load_settings
from tasks.localstack import stack
from tasks.trust.keys import KeyFileError, has_keys, require

EXIT_OK, EXIT_BLOCKED, EXIT_USAGE, EXIT_CRASH = 0, 1, 2, 3
RUN_EXIT_CODES = """exit codes:
  0        deployed: every gate passed, the release verified, the champion moved
  1        blocked by a gate (the line names it, what was measured and the threshold)
  2        bad usage or configuration (a missing key included)
  3        crashed (the line says the cause; the previous champion stays)
  130/143  interrupted by SIGINT/SIGTERM (recorded; the services it started stopped)

Each stage prints one line as it finishes (gates passed, seconds), a long one says
every 10 s that it still runs; then the verdict line. --quiet prints only the verdict."""


def _say(message: str) -> None:
    sys.stderr.write(message.rstrip() + "\n")


def _write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        write_json(Path(path), payload, mode=PUBLIC)


def _data_arg(value: str | None) -> str | None:
    if value is None or "://" in value:
        return value
    return str(Path(value).expanduser().resolve())  # the flow may run from another cwd


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    if has_keys(settings.keys_dir):
        require(settings.keys_dir)  # a key gone missing refuses the run before it starts
    data = _data_arg(args.data)
    # A path typed at the shell is the operator's choice: confine ingestion to its
    # directory. Deployment parameters stay confined to dataset.data_root.
    data_root = str(Path(data).parent) if data and "://" not in data else None
    environment.configure(
        settings, prefect_api_url=stack.prefect_api_url(settings), quiet_console=not args.verbose
    )
    from prefect import tags
    from prefect.exceptions import TerminationSignal

    from flows.training import run_tags, secure_training
    from tasks.common import progress

    report_path = Path(args.report or settings.state_dir / "reports" / f"{uuid.uuid4()}.json")
    report_path = report_path.expanduser().resolve()
    report_path.unlink(missing_ok=True)
    console_log = settings.state_dir / "logs" / "last-run.log"
    console_log.parent.mkdir(parents=True, exist_ok=True)

    progress.attach(None if args.quiet else sys.stderr)  # before stderr goes to the log

    def attempt() -> None:
        with contextlib.ExitStack() as stack_:
            stack_.enter_context(tags(*run_tags(settings)))
            if not args.verbose:
                # Libraries print progress to stderr (MLflow, GX); keep it in a file so
                # the terminal gets one line. Prefect's UI holds the full run logs.
                sink = stack_.enter_context(console_log.open("w", encoding="utf-8"))
                stack_.enter_context(contextlib.redirect_stderr(sink))
            secure_training(
                config=str(settings.config_file),
                data=data,
                report_path=str(report_path),
                data_root=data_root,
                return_state=True,
            )

    signum: int | None = None
    try:
        try:
            attempt()
        except RuntimeError as exc:
            if not _prefect_start_timeout(exc):
                raise
            _say("the temporary Prefect API was slow to start (a busy machine?); retrying once")
            attempt()
    except RuntimeError as exc:
        if not _prefect_start_timeout(exc):
            raise
        _say(
            "failed: the temporary Prefect API did not start in "
            f"{os.environ.get(PREFECT_START_TIMEOUT)} s, twice: wait for the machine to be "
            f"less busy, raise {PREFECT_START_TIMEOUT}, or keep a server up with "
            "`secure-pipeline local up`"
        )
        return EXIT_CRASH
    except (KeyboardInterrupt, TerminationSignal) as exc:  # Prefect wraps SIGTERM in the run
        signum = signal_number(exc)
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        if signum is not None:
            _say(f"interrupted ({signal.Signals(signum).name}) before the run started")
            return 128 + signum
        _say(f"failed: the run ended without a report; see {console_log} or rerun with --verbose")
        return EXIT_CRASH
    from tasks.common.report import RunReport

    _say(RunReport(**report).reason)
    if signum is not None:
        return 128 + signum
    return {"deployed": EXIT_OK, "blocked": EXIT_BLOCKED}.get(report["status"], EXIT_CRASH)


def _prefect_start_timeout(exc: BaseException) -> bool:
    return "attempting to connect to ephemeral Prefect API" in str(exc)


def _verified(settings: Settings, model_ref: str, workdir: Path) -> Any:
    """Resolve MODEL_REF, then verify the release it names (rebuilt in `workdir`)."""
    environment.configure(settings)
    from tasks.common.s3 import s3_client
    from tasks.trust import release
    from tasks.trust.envelope import key_provider
    from tasks.trust.signing import trusted_keys

    uri, expected, registry = model_ref, None, None
    if uri.startswith("models:/"):  # the registry only says where to look: all is checked
        from tasks.common.tracking import ModelRegistry

        name, version, uri = ModelRegistry.resolve(settings, model_ref)
        expected, registry = (
            {"name": name, "version": version},
            ModelRegistry.for_settings(settings),
        )
    try:
        bucket, key = release.parse_s3_uri(uri)
    except release.ReleaseError as exc:
        raise ConfigError(str(exc)) from None
    with stack.s3_service(settings) as endpoint:
        result = release.verify_release(
            s3_client(endpoint),
            bucket=bucket,
            release_key=key,
            public_key=trusted_keys(settings.keys_dir),
            key_provider=key_provider(settings, purpose="decrypt"),
            max_bytes=settings.dataset.max_bytes,
            workdir=workdir,
            expected=expected,
        )
    if registry is not None and expected is not None and result.ok:
        result.checks.append(
            registry.check_files(expected["version"], signed=result.model["files"])
        )
    return result


def _print_verification(result: Any) -> None:
    """Every check, then what the provenance says: the waivers and the gates."""
    from tasks.trust import provenance

    for name, ok, detail in result.checks:
        _say(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    recorded = provenance.internal(result.provenance) if result.provenance else {}
    for w in recorded.get("waivers", []):
        _say(f"WAIVED {w['gate']}: {w['setting']} = {w['value']} (safe {w['safe']}): {w['reason']}")
    gates = recorded.get("gates", [])
    if gates:
        passed = sum(bool(g["passed"]) for g in gates)
        _say(f"gates in the signed provenance: {passed}/{len(gates)} passed")
    if not recorded.get("waivers") and gates:
        _say("waivers in the signed provenance: none")


def _verification_report(result: Any) -> dict[str, Any]:
    return {
        "uri": result.uri,
        "verified": result.ok,
        "checks": [{"name": n, "passed": ok, "detail": d} for n, ok, d in result.checks],
        "model": result.release.get("model"),
        "provenance": result.provenance or None,
    }


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="verify-") as workdir:
        result = _verified(settings, args.model_ref, Path(workdir))
    _print_verification(result)
    _write_json(args.report, _verification_report(result))
    _say(f"verified {result.uri}" if result.ok else f"NOT verified: {result.uri}")
    return EXIT_OK if result.ok else EXIT_BLOCKED


def cmd_fetch(settings: Settings, args: argparse.Namespace) -> int:
    """Verify, decrypt and write the release directory to --out (nothing on failure)."""
    import shutil
    import tempfile

    out = Path(args.out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty directory: choose a new one")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        result = _verified(settings, args.model_ref, staging)
        _print_verification(result)
        if not result.ok:
            _say(f"NOT verified: {result.uri}; nothing written to {out}")
            return EXIT_BLOCKED
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    sys.stdout.write(f"{out}\n")
    _say(
        f"fetched {result.uri} into {out}: "
        f"{', '.join(sorted(p.name for p in out.iterdir()))}; check it without this project: "
        f"model_signing verify key {out} --signature {out}/model.sig --public_key "
        f"{settings.keys_dir / 'signing.pub'}"
    )
    return EXIT_OK


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    from tasks.common.audit import AuditLog

    status = AuditLog(settings.audit_path).verify()
    _say(f"audit log {settings.audit_path}: {status.detail}; head {status.head[:16]}")
    if not status.intact:
        return EXIT_BLOCKED
    # Always against the bucket: a deleted or emptied log is exactly what anchors catch.
    environment.configure(settings)
    from tasks.common.anchors import check_anchors
    from tasks.common.s3 import s3_client
    from tasks.trust.release import scan_releases

    st = settings.storage
    try:
        with stack.s3_service(settings) as endpoint:
            client = s3_client(endpoint)
            anchored, detail = check_anchors(settings, client)
            incomplete, deleted = scan_releases(client, bucket=st.bucket, prefix=st.prefix)
    except Exception as exc:  # noqa: BLE001 - unverifiable anchors are a failed verification
        anchored, detail, incomplete, deleted = False, f"cannot read them ({explain(exc)})", [], []
    _say(f"anchors in s3://{st.bucket}: {detail}")
    if incomplete:
        _say(
            f"incomplete releases (a deploy stopped before its release record; never "
            f"released, nothing points at them): {', '.join(incomplete)}"
        )
    if deleted:
        _say(f"release objects hidden by delete markers: {', '.join(deleted)}")
    return EXIT_OK if anchored and not deleted else EXIT_BLOCKED


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    """`keys init` (first setup), `keys rotate KIND` (audited), `keys status`."""
    from tasks.common.audit import AuditLog
    from tasks.trust import keys

    kd, audit = settings.keys_dir, AuditLog(settings.audit_path)
    if args.action == "init":
        ring = keys.create(kd)
        audit.append("keys.created", keys=keys.key_ids(ring), by="keys init")
        _say(f"created the pipeline's keys under {kd}: back this directory up now")
    elif args.action == "rotate":
        if args.kind is None:
            raise ConfigError(
                "say which key to rotate: `keys rotate signing` or `keys rotate master`"
            )
        old, new = keys.rotate(kd, args.kind)
        audit.append("keys.rotated", kind=args.kind, retired=old, active=new)
        _say(f"rotated the {args.kind} key: {old[:24]} retired (kept to verify), {new[:24]} active")
    ring = keys.require(kd)
    sys.stdout.write(json.dumps({k: ring[k] for k in keys.FILES}, indent=2) + "\n")
    return EXIT_OK


def cmd_local(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "up":
        info = stack.local_up(settings, ui=not args.no_ui)
    elif args.action == "down":
        info = stack.local_down(settings)
    else:
        info = stack.local_status(settings)
    sys.stdout.write(json.dumps(info, indent=2, default=str) + "\n")
    return EXIT_OK


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    api = stack.prefect_api_url(settings)
    if api is None:
        raise ConfigError("no Prefect server is running: start one with `secure-pipeline local up`")
    environment.configure(settings, prefect_api_url=api)
    from flows.training import CONFIG_DIRS, run_tags, secure_training

    config = Path(str(settings.config_file)).resolve()
    # The deployment's runs may take their config from this directory (and data/).
    os.environ[CONFIG_DIRS] = os.pathsep.join(
        p for p in (os.environ.get(CONFIG_DIRS, ""), str(config.parent)) if p
    )
    secure_training.serve(
        name="nightly",
        cron=args.cron,
        parameters={"config": str(config)},
        tags=run_tags(settings),
    )
    return EXIT_OK


def _signer(settings: Settings) -> Any:
    """The pipeline's signer; a new state directory gets its keyring first (audited)."""
    from tasks.common.audit import AuditLog
    from tasks.trust import keys
    from tasks.trust.signing import Signer

    ring, created = keys.ensure_keys(
        settings.keys_dir, had_runs=lambda: settings.audit_path.exists()
    )
    if created:
        AuditLog(settings.audit_path).append("keys.created", keys=keys.key_ids(ring), by="init")
        _say(f"created the pipeline's keys under {settings.keys_dir}: back this directory up")
    return Signer.local(settings.keys_dir)


def cmd_init(settings: Settings, args: argparse.Namespace) -> int:
    from tasks.onboarding import InitError, init_dataset, parse_pii

    try:
        result = init_dataset(
            Path(args.data),
            target=args.target,
            name=args.name,
            pii=parse_pii(args.pii),
            out_dir=Path(args.out) if args.out else None,
            signer=_signer(settings),
            force=args.force,
        )
    except InitError as exc:
        raise ConfigError(str(exc)) from None
    cols = result.columns
    _say(
        f"wrote {result.config}, {result.suite.name} and {result.profile.name} (+ .sig): "
        f"{len(cols.numeric)} numeric, {len(cols.categorical)} categorical, "
        f"{len(cols.ignored)} ignored column(s), {len(cols.missing)} imputed; review the "
        "config, then run:"
    )
    sys.stdout.write(f"secure-pipeline run --config {result.config}\n")
    return EXIT_OK


def cmd_suite(settings: Settings, args: argparse.Namespace) -> int:
    from tasks.checks.profile import read_table
    from tasks.checks.suite_builder import derive_suite, write_suite

    ds = settings.dataset
    try:
        frame = read_table(Path(args.data).expanduser().resolve())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {args.data}: {exc}") from None
    numeric, categorical = ds.inputs([str(c) for c in frame.columns])
    seen = frame.drop(columns=[c for c, a in ds.pii.items() if a == "drop" and c in frame])
    suite = derive_suite(
        seen,
        name=ds.name,
        target=ds.target,
        numeric=numeric,
        categorical=categorical,
        ignored=ds.ignored,
        missing={c: ds.missing_policy(c) for c in [*numeric, *categorical]},
        exclude=[c for c, a in ds.pii.items() if a == "pseudonymize"],
        notes=args.notes or f"derived from {Path(args.data).name}",
    )
    out = Path(args.out).expanduser().resolve()
    digest = write_suite(suite, out)
    _say(f"wrote {out} ({len(suite['expectations'])} expectations); review it, then pin:")
    sys.stdout.write(f'suite_sha256 = "{digest}"\n')
    return EXIT_OK


def cmd_profile(settings: Settings, args: argparse.Namespace) -> int:
    from tasks.checks.profile import build_profile, read_table, write_profile

    ds = settings.dataset
    out = Path(args.out).expanduser().resolve()
    try:
        frame = read_table(Path(args.data).expanduser().resolve())  # read once
        numeric, categorical = ds.inputs([str(c) for c in frame.columns])
        profile = build_profile(
            frame,
            target=ds.target,
            numeric=numeric,
            categorical=categorical,
            exclude=[*ds.pii, *ds.ignored],
        )
        digest = write_profile(profile, out, signer=_signer(settings))
    except (OSError, ValueError, KeyError) as exc:
        _say(f"cannot profile {args.data}: {type(exc).__name__}: {exc}")
        return EXIT_USAGE
    _say(
        f"wrote {out} and {out}.sig (signed by {settings.keys_dir / 'signing.pub'}); "
        f"sha256 {digest}: set dataset.reference_profile and, optionally, "
        "dataset.reference_profile_sha256 in your config"
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="secure-pipeline", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="pipeline config (TOML); default: the bundled one")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        parents=[common],
        help="one secure training run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=RUN_EXIT_CODES,
    )
    run.add_argument("--data", help="dataset path overriding the configured source")
    run.add_argument("--report", help="write the JSON run report here")
    run.add_argument("--verbose", action="store_true", help="show Prefect's console logs")
    run.add_argument(
        "--quiet", action="store_true", help="print only the verdict line (for scripts)"
    )
    run.set_defaults(func=cmd_run)

    verify = sub.add_parser("verify", parents=[common], help="verify a deployed model")
    verify.add_argument(
        "model_ref",
        metavar="MODEL_REF",
        help="s3://BUCKET/.../release.dsse.json, models:/NAME@champion or models:/NAME/VERSION",
    )
    verify.add_argument("--report", help="write the JSON verification report here")
    verify.set_defaults(func=cmd_verify)

    fetch = sub.add_parser(
        "fetch", parents=[common], help="verify and decrypt a deployed model into a directory"
    )
    fetch.add_argument("model_ref", metavar="MODEL_REF", help="as for verify")
    fetch.add_argument(
        "--out", required=True, help="a new (or empty) directory for the release's files"
    )
    fetch.set_defaults(func=cmd_fetch)

    audit = sub.add_parser("audit", parents=[common], help="the hash-chained audit log")
    audit.add_argument("action", choices=["verify"])
    audit.set_defaults(func=cmd_audit)

    local = sub.add_parser("local", parents=[common], help="the embedded services")
    local.add_argument("action", choices=["up", "down", "status"])
    local.add_argument("--no-ui", action="store_true", help="SeaweedFS only, no UIs")
    local.set_defaults(func=cmd_local)

    profile = sub.add_parser(
        "profile", parents=[common], help="build and sign a reference profile from trusted data"
    )
    profile.add_argument("data", metavar="DATA", help="trusted CSV or Parquet file")
    profile.add_argument("--out", required=True, help="profile path (signature: OUT.sig)")
    profile.set_defaults(func=cmd_profile)

    init = sub.add_parser(
        "init",
        parents=[common],
        help="from a trusted table: config, expectation suite, signed profile, pinned",
    )
    init.add_argument("data", metavar="DATA", help="trusted CSV or Parquet file")
    init.add_argument("--target", required=True, help="the label column")
    init.add_argument("--name", help="dataset name (default: from the file name)")
    init.add_argument(
        "--pii",
        action="append",
        default=[],
        metavar="COL=drop|pseudonymize",
        help="a personal-data column and what to do with it (repeatable)",
    )
    init.add_argument("--out", help="directory for the files (default: the data's directory)")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.set_defaults(func=cmd_init)

    suite = sub.add_parser(
        "suite", parents=[common], help="derive an expectation suite from trusted data"
    )
    suite.add_argument("data", metavar="DATA", help="trusted CSV or Parquet file")
    suite.add_argument("--out", required=True, help="suite path (JSON)")
    suite.add_argument("--notes", help="notes stored in the suite")
    suite.set_defaults(func=cmd_suite)

    keys_cmd = sub.add_parser(
        "keys", parents=[common], help="the pipeline's signing and master keys"
    )
    keys_cmd.add_argument("action", choices=["init", "rotate", "status"])
    keys_cmd.add_argument("kind", nargs="?", choices=["signing", "master"], help="key to rotate")
    keys_cmd.set_defaults(func=cmd_keys)

    serve = sub.add_parser("serve", parents=[common], help="serve the scheduled deployment")
    serve.add_argument("--cron", default="0 2 * * *", help="schedule (default: nightly 02:00)")
    serve.set_defaults(func=cmd_serve)
    return parser


def _interrupt(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM as SIGINT: unwind, so that `with` blocks stop the services they started.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        settings = load_settings(args.config)
        return int(args.func(settings, args))
    except ConfigError as exc:
        _say(f"configuration error: {exc}")
        return EXIT_USAGE
    except KeyFileError as exc:  # a setup problem the operator fixes, not a crash
        _say(f"key error: {exc}")
        return EXIT_USAGE
    except stack.StackError as exc:
        _say(f"local stack error: {exc}")
        return EXIT_CRASH
    except KeyboardInterrupt as exc:
        signum = signal_number(exc)
        name = signal.Signals(signum).name
        _say(f"interrupted ({name}); the services this command started are stopped")
        return 128 + signum
    except Exception as exc:  # noqa: BLE001 - one readable line, never a traceback
        _say(f"error: {explain(exc)}")
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main())
