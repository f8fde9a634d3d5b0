"""`secure-pipeline run` (one secure training run, its terminal lines and exit code)
and `secure-pipeline serve` (the scheduled deployment)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from flows.cli.common import EXIT_BLOCKED, EXIT_CRASH, EXIT_OK, say
from tasks.common import environment
from tasks.common.audit import AuditLog
from tasks.common.errors import signal_number
from tasks.common.settings import ConfigError, Settings
from tasks.localstack import stack
from tasks.localstack.run_api import run_api
from tasks.sources import SourceRefused
from tasks.sources.local import MAX_LINKS, walk_inside
from tasks.trust.keys import ensure_keys, has_keys, require

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

RUN_EXIT_CODES = """exit codes:
  0        deployed: every gate passed, the release verified, the champion moved;
           or awaiting_approval: the same, but the champion waits for signed approvals
           ([governance] required_approvals, or a waiver): `approve`, then `promote`
           (a second line warns if the audit log's head could not be anchored)
  1        blocked by a gate (the line names it, what was measured and the threshold)
  2        bad usage or configuration (a missing key included)
  3        crashed (the line says the cause; the previous champion stays)
  130/143  interrupted by SIGINT/SIGTERM, to the command or its whole process group
           (Ctrl-C, `timeout`, systemd): recorded, the services it started stopped

Each stage prints one line as it finishes (gates passed, seconds), a long one says
every 10 s that it still runs; then the verdict line. --quiet prints only the verdict."""


def _data_arg(value: str | None) -> tuple[str | None, str | None]:
    """``--data`` as (source, data root) for the flow, which may run from another cwd.

    A path typed at the shell is the operator's choice: ingestion is confined to the
    directory it names (resolved once, as the operator's own links lead). The file
    itself is not resolved here: ingest checks it component by component inside that
    root, so a link leading out (``dir/new.csv`` -> ``/etc/passwd``) is refused before
    anything is read and never widens the root. A URI is passed on as it is.

    Raises:
        ConfigError: the path is a symlink loop (a usage error, not a data verdict).
    """
    if value is None or "://" in value:
        return value, None
    path = Path(os.path.abspath(Path(value).expanduser()))
    root = Path(os.path.realpath(path.parent))
    try:
        walk_inside(root, (path.name,))
    except SourceRefused as exc:  # any other refusal is ingest.source's, as a gate
        if exc.reason == "symlink_loop":
            raise ConfigError(
                f"--data {value}: a symlink loop (more than {MAX_LINKS} links); pass the "
                "data file itself"
            ) from None
    return str(root / path.name), str(root)


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    if has_keys(settings.keys_dir):
        require(settings.keys_dir)  # a key gone missing refuses the run before it starts
    elif AuditLog(settings.audit_path).recorded("keys.created"):  # they were removed (exit 2)
        ensure_keys(settings.keys_dir, had_runs=lambda: True)
    data, data_root = _data_arg(args.data)
    # Whatever the run writes (reports, logs, MLflow's store, Prefect's home) is the
    # operator's alone: 0600 files, 0700 directories.
    os.umask(0o077)
    # The temporary Prefect API runs in a session of its own, so that a signal to the
    # whole process group (Ctrl-C, `timeout`, systemd) stops the run, not its API.
    with run_api(
        settings,
        stack.prefect_api_url(settings),
        while_starting=preload(settings, args, "flows.training", "great_expectations"),
    ) as api:
        environment.configure(settings, prefect_api_url=api, quiet_console=not args.verbose)
        return _run(settings, args, data, data_root)


def preload(settings: Settings, args: argparse.Namespace, *modules: str) -> Any:
    """What the CLI does while the temporary Prefect API starts (it answers after about
    7 s): configure this process for that API (Prefect reads it when imported), then
    import `modules` (the flow and what its stages import late: about 5 s) on the
    core the server's start leaves free."""
    import importlib

    def load(api: str) -> None:
        environment.configure(settings, prefect_api_url=api, quiet_console=not args.verbose)
        for name in modules:
            importlib.import_module(name)

    return load


def _run(
    settings: Settings, args: argparse.Namespace, data: str | None, data_root: str | None
) -> int:
    from flows.training import run_tags, secure_training

    return run_flow(
        settings,
        args,
        secure_training,
        tags=run_tags(settings),
        parameters={"data": data, "data_root": data_root},
        exit_codes={"deployed": EXIT_OK, "awaiting_approval": EXIT_OK, "blocked": EXIT_BLOCKED},
    )


def run_flow(
    settings: Settings,
    args: argparse.Namespace,
    flow: Any,
    *,
    tags: list[str],
    parameters: dict[str, Any],
    exit_codes: dict[str, int],
    fail_word: str = "BLOCKED",
) -> int:
    """Run `flow` once in this process (on the temporary Prefect API the caller holds),
    print its stage lines and verdict, and return the exit code its report's status
    maps to in `exit_codes` (anything else: a crash, or the interrupting signal's)."""
    from prefect import tags as prefect_tags
    from prefect.exceptions import TerminationSignal

    from tasks.common import progress

    report_path = Path(args.report or settings.state_dir / "reports" / f"{uuid.uuid4()}.json")
    report_path = report_path.expanduser().resolve()
    report_path.unlink(missing_ok=True)
    console_log = settings.state_dir / "logs" / "last-run.log"
    console_log.parent.mkdir(parents=True, exist_ok=True)

    # Before stderr goes to the log.
    progress.attach(None if args.quiet else sys.stderr, fail_word=fail_word)

    signum: int | None = None
    try:
        with contextlib.ExitStack() as stack_:
            stack_.enter_context(prefect_tags(*tags))
            if not args.verbose:
                # Libraries print progress to stderr (MLflow, GX); keep it in a file so
                # the terminal gets one line. Prefect's UI holds the full run logs.
                sink = stack_.enter_context(console_log.open("w", encoding="utf-8"))
                stack_.enter_context(contextlib.redirect_stderr(sink))
            flow(
                config=str(settings.config_file),
                report_path=str(report_path),
                return_state=True,
                **parameters,
            )
    except (KeyboardInterrupt, TerminationSignal) as exc:  # Prefect wraps SIGTERM in the run
        signum = signal_number(exc)
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        if signum is not None:
            say(f"interrupted ({signal.Signals(signum).name}) before the run started")
            return 128 + signum
        say(f"failed: the run ended without a report; see {console_log} or rerun with --verbose")
        return EXIT_CRASH
    from tasks.common.report import RunReport

    say(RunReport(**report).reason)
    succeeded = [status for status, code in exit_codes.items() if code == EXIT_OK]
    if report["status"] in succeeded and not report.get("audit_anchor"):
        # The verdict stands (exit 0); the gap in the audit trail is said.
        say(
            "warning: the audit log's head could not be anchored in the bucket "
            "(audit.anchor_failed in the audit log): run `secure-pipeline audit verify` "
            "and check the store and its auditor identity; the next run anchors it"
        )
    if signum is not None:
        return 128 + signum
    return exit_codes.get(report["status"], EXIT_CRASH)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Serve both deployments from this process: training (``--cron``, nightly) and
    monitoring (``--monitor-cron``, default ``monitoring.schedule``: hourly)."""
    os.umask(0o077)  # as for run: the runs it serves write only owner-readable files
    api = stack.prefect_api_url(settings)
    if api is None:
        raise ConfigError("no Prefect server is running: start one with `secure-pipeline local up`")
    environment.configure(settings, prefect_api_url=api)
    from prefect import serve
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    from flows.kernel import CONFIG_DIRS
    from flows.monitoring import secure_monitoring
    from flows.training import run_tags, secure_training

    config = Path(str(settings.config_file)).resolve()
    # The deployment's runs may take their config from this directory (and data/).
    os.environ[CONFIG_DIRS] = os.pathsep.join(
        p for p in (os.environ.get(CONFIG_DIRS, ""), str(config.parent)) if p
    )
    training = secure_training.to_deployment(
        name="nightly",
        cron=args.cron,
        parameters={"config": str(config)},
        tags=run_tags(settings),
        # As in infra/prefect/prefect.yaml: one training run of the model at a time, the
        # next waits (AwaitingConcurrencySlot); the same deployment, whoever registers it.
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
        ),
    )
    monitoring = secure_monitoring.to_deployment(
        name="monitoring",
        cron=args.monitor_cron or settings.monitoring.schedule,
        parameters={"config": str(config)},
        tags=[*run_tags(settings), "monitoring"],
    )
    # `to_deployment` is sync-compatible: called here, outside an event loop, it returns
    # the deployment itself.
    serve(cast("RunnerDeployment", training), cast("RunnerDeployment", monitoring))
    return EXIT_OK
