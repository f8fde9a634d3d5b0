"""A Prefect flow run that waits for its approvals as a paused run.

With ``[governance] pause_for_approval = true``, a run that ends awaiting approval
pauses (`pause_flow_run` with a `RunInput` form naming the release and its
waivers) for up to ``pause_timeout_s``. Resuming is only a prompt to look again:
the signed approvals on file decide (`promotion.shortfall`), never the click, and
the run stays ``awaiting_approval`` either way: moving the champion needs the
promoter's key, which the trainer's flow does not hold (`secure-pipeline promote`).
"""

from __future__ import annotations

from typing import Any

from prefect.input import RunInput

from tasks.common.context import RunContext
from tasks.governance import approvals, promotion


class ApprovalForm(RunInput):
    """The form of the paused run: what it waits for. Submitting it proves nothing."""

    release: str
    waivers: str
    note: str = "approve with `secure-pipeline approve`, then resume to re-check"


def wait_for_approval(ctx: RunContext, client: Any, waiting: dict[str, Any]) -> str:
    """Pause the flow run for approval; on resume re-check the signed approvals.

    Returns:
        A note for the report (what the re-check found), never a promotion.
    """
    from prefect.context import FlowRunContext
    from prefect.flow_runs import pause_flow_run

    if FlowRunContext.get() is None:
        return "not in a Prefect flow run, so not paused"
    settings = ctx.settings
    form = ApprovalForm.with_initial_data(
        description=f"Awaiting {waiting['required_approvals']} signed approval(s) of "
        f"{waiting['release']}",
        release=waiting["release"],
        waivers=", ".join(waiting["waivers"]) or "none",
    )
    ctx.audit.append("champion.paused", run_id=ctx.run_id, release=waiting["release"])
    try:
        pause_flow_run(wait_for_input=form, timeout=settings.governance.pause_timeout_s)
    except Exception as exc:  # noqa: BLE001 - a timeout (or an API error) leaves it waiting
        return f"paused, not resumed ({type(exc).__name__}); the release still awaits approval"
    release = approvals.inspect_release(client, settings, waiting["model"], waiting["version"])
    missing = promotion.shortfall(settings, release, approvals.collect(client, settings, release))
    ctx.audit.append(
        "champion.resume_checked", run_id=ctx.run_id, release=release.uri, complete=not missing
    )
    if missing:
        short = missing.split(". Ask an approver")[0]
        return f"resumed without the signed approvals it needs ({short})"
    return "resumed: the signed approvals are complete; a promoter moves the champion"
