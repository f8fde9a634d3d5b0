"""`secure-pipeline monitor`: one monitoring run (`flows.monitoring`) on the deployed
champion and, given one, a batch of new data; its terminal lines and exit code."""

from __future__ import annotations

import argparse
import os

from flows.cli.common import EXIT_BLOCKED, EXIT_OK
from flows.cli.run import _data_arg, preload, run_flow
from tasks.common import environment
from tasks.common.settings import Settings
from tasks.localstack import stack
from tasks.localstack.run_api import run_api

MONITOR_EXIT_CODES = """exit codes:
  0        healthy: the champion verifies, the audit chain and its anchors hold, and
           (given a batch) no column drifted and the champion's quality holds
  1        alert: a gate failed (the line names the first one, what was measured and
           the threshold; the report lists every one), or the batch was refused by an
           ingestion or PII gate
  2        bad usage or configuration
  3        crashed (the line says the cause)
  130/143  interrupted by SIGINT/SIGTERM

The batch is --data, else monitoring.source in the config (none: integrity and audit
only). Each run writes a page (<state>/monitor/*.html, its path in the report), the
metrics file <state>/metrics/secure_pipeline_monitoring.prom, and an MLflow run."""


def cmd_monitor(settings: Settings, args: argparse.Namespace) -> int:
    data, data_root = _data_arg(args.data)
    os.umask(0o077)  # reports, logs and MLflow's store: the operator's alone
    with run_api(
        settings,
        stack.prefect_api_url(settings),
        while_starting=preload(settings, args, "flows.monitoring"),
    ) as api:
        environment.configure(settings, prefect_api_url=api, quiet_console=not args.verbose)
        from flows.monitoring import secure_monitoring
        from flows.training import run_tags

        return run_flow(
            settings,
            args,
            secure_monitoring,
            tags=[*run_tags(settings), "monitoring"],
            parameters={"data": data, "data_root": data_root},
            exit_codes={"healthy": EXIT_OK, "alert": EXIT_BLOCKED},
            fail_word="ALERT",
        )
