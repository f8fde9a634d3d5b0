"""The `secure-pipeline` command: run, monitor, verify, fetch, audit, init, suite,
profile, keys, local, serve, refresh, approve, promote, rollback.

Exit codes of `run`: 0 deployed, 1 blocked by a gate, 2 bad usage or
configuration, 3 crashed, 128 + the signal when interrupted (130 SIGINT, 143
SIGTERM: the run is recorded as interrupted and the services it started are
stopped). This module holds the parser and the entry point `main`; the commands live by
duty in `run` (run, serve), `monitor` (monitor), `release` (verify, fetch, audit),
`onboard` (init, suite, profile, refresh), `admin` (keys, local) and `governance`
(approve, promote, rollback). Heavy imports (Prefect, MLflow) happen only after the
environment is configured, because they read it at import time.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import NoReturn

from flows.cli import governance
from flows.cli.admin import cmd_keys, cmd_local
from flows.cli.common import EXIT_BLOCKED, EXIT_CRASH, EXIT_OK, EXIT_USAGE, mute, say
from flows.cli.monitor import MONITOR_EXIT_CODES, cmd_monitor
from flows.cli.onboard import cmd_init, cmd_profile, cmd_refresh, cmd_suite
from flows.cli.release import cmd_audit, cmd_fetch, cmd_verify
from flows.cli.run import RUN_EXIT_CODES, cmd_run, cmd_serve
from tasks.common.errors import Interrupted, explain, signal_number
from tasks.common.settings import ConfigError, load_settings
from tasks.localstack import stack
from tasks.trust.keys import KeyFileError

STEWARD_KEY_HELP = (
    "sign as the data steward with this private key (PEM, ECDSA P-256, 0600; its public "
    "half listed in dataset.profile_signers) instead of the pipeline's key"
)

__all__ = [
    "EXIT_BLOCKED",
    "EXIT_CRASH",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "entry",
    "main",
]


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

    monitor = sub.add_parser(
        "monitor",
        parents=[common],
        help="check the deployed champion, the audit trail and a batch of new data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=MONITOR_EXIT_CODES,
    )
    monitor.add_argument("--data", help="the batch (path or URI); default: monitoring.source")
    monitor.add_argument("--report", help="write the JSON run report here")
    monitor.add_argument("--verbose", action="store_true", help="show Prefect's console logs")
    monitor.add_argument(
        "--quiet", action="store_true", help="print only the verdict line (for scripts)"
    )
    monitor.set_defaults(func=cmd_monitor)

    verify = sub.add_parser("verify", parents=[common], help="verify a deployed model")
    verify.add_argument(
        "model_ref",
        metavar="MODEL_REF",
        help="s3://BUCKET/.../release.dsse.json, models:/NAME@champion or models:/NAME/VERSION",
    )
    verify.add_argument("--report", help="write the JSON verification report here")
    _consumer_options(verify)
    verify.set_defaults(func=cmd_verify)

    fetch = sub.add_parser(
        "fetch", parents=[common], help="verify and decrypt a deployed model into a directory"
    )
    fetch.add_argument("model_ref", metavar="MODEL_REF", help="as for verify")
    fetch.add_argument(
        "--out", required=True, help="a new (or empty) directory for the release's files"
    )
    _consumer_options(fetch)
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
    profile.add_argument("--key", help=STEWARD_KEY_HELP)
    profile.add_argument(
        "--reference-models",
        action="store_true",
        help="also train the config's estimators on DATA, write them next to OUT and "
        "list them in the signed profile (the backdoor probe's clean comparison)",
    )
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
    suite.add_argument("--key", help=STEWARD_KEY_HELP + " (writes OUT.sig)")
    suite.set_defaults(func=cmd_suite)

    refresh = sub.add_parser(
        "refresh",
        parents=[common],
        help="after editing column roles: re-derive the suite and signed profile, re-pin",
    )
    refresh.add_argument(
        "--data", help="the trusted CSV or Parquet file (default: the config's dataset.source)"
    )
    refresh.set_defaults(func=cmd_refresh)

    keys_cmd = sub.add_parser(
        "keys", parents=[common], help="the pipeline's signing and master keys"
    )
    keys_cmd.add_argument("action", choices=["init", "rotate", "status"])
    keys_cmd.add_argument("kind", nargs="?", choices=["signing", "master"], help="key to rotate")
    keys_cmd.set_defaults(func=cmd_keys)

    serve = sub.add_parser(
        "serve", parents=[common], help="serve the scheduled deployments (training, monitoring)"
    )
    serve.add_argument(
        "--cron", default="0 2 * * *", help="training's schedule (default: nightly 02:00)"
    )
    serve.add_argument(
        "--monitor-cron", help="monitoring's schedule (default: monitoring.schedule, hourly)"
    )
    serve.set_defaults(func=cmd_serve)
    governance.add_commands(sub, common)
    return parser


def _consumer_options(parser: argparse.ArgumentParser) -> None:
    """The trust options of a consumer of releases (`verify`, `fetch`)."""
    parser.add_argument(
        "--trusted-keys",
        nargs="+",
        metavar="PEM",
        help="the trainer's public keys (your own copy): trust only these, never the state "
        "directory's keyring (default: [trust] signers, else the keyring)",
    )
    parser.add_argument(
        "--no-waivers",
        action="store_true",
        help="refuse a release made with a waiver (exit 1); default: [trust] refuse_waivers",
    )


def _interrupt(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, run the command, return its exit code (never raise a traceback)."""
    args = build_parser().parse_args(argv)
    # SIGTERM as SIGINT: unwind, so that `with` blocks stop the services they started.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        code = _dispatch(args)
    finally:
        _flush_outputs()
    return code


def entry() -> NoReturn:
    """The ``secure-pipeline`` console script: `main`, then end the process at once.

    The interpreter's own finalisation (freeing every module and object of a run with
    pandas, scikit-learn, MLflow and Prefect loaded) took 6 s of CPU on a busy 2-core
    machine, after the verdict was printed and everything was recorded: a SIGTERM from
    systemd or `timeout` must end the command within seconds. Logs are flushed first;
    every file the command writes is closed by then, and the services it started are
    stopped (the `with` blocks have exited).
    """
    code = main()
    if "prefect" in sys.modules:  # what its workers still hold (a `run` drained already)
        from tasks.localstack.run_api import drain_workers

        drain_workers()
    logging.shutdown()
    _flush_outputs()
    os._exit(code)


def _flush_outputs() -> None:
    """Flush stdout and stderr now, muting a closed one: Python flushes them again at
    exit, where a BrokenPipeError would print a traceback and change the exit code."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            mute(stream)
        except (OSError, ValueError):  # closed by the caller: nothing left to flush
            pass


def _dispatch(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        return int(args.func(settings, args))
    except BrokenPipeError:
        # Written by something other than say/emit (a library): the command stopped
        # half-way, which is a crash, not a verdict.
        _flush_outputs()  # mutes whichever one closed
        say(
            "error: an output pipe closed before the command finished (BrokenPipeError); "
            "rerun with its output kept open, e.g. into a file"
        )
        return EXIT_CRASH
    except ConfigError as exc:
        say(f"configuration error: {exc}")
        return EXIT_USAGE
    except KeyFileError as exc:  # a setup problem the operator fixes, not a crash
        say(f"key error: {exc}")
        return EXIT_USAGE
    except stack.StackError as exc:
        say(f"local stack error: {exc}")
        return EXIT_CRASH
    except KeyboardInterrupt as exc:
        signum = signal_number(exc)
        name = signal.Signals(signum).name
        say(f"interrupted ({name}); the services this command started are stopped")
        return 128 + signum
    except Exception as exc:  # noqa: BLE001 - one readable line, never a traceback
        say(f"error: {explain(exc)}")
        return EXIT_CRASH
