"""The run report: one JSON document per run, also shown as a
Prefect markdown artifact. Other tooling parses it; keep its keys stable."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from tasks.common.files import write_atomic
from tasks.common.gates import GateResult


class RunReport(BaseModel):
    # awaiting_approval: every gate passed and the release is in the bucket, verified;
    # the champion did not move (`approval` says what the release waits for).
    # healthy / alert: a monitoring run's verdicts (alert: `blocked_by` names the gate).
    status: Literal[
        "deployed", "awaiting_approval", "blocked", "healthy", "alert", "failed", "interrupted"
    ] = "failed"
    blocked_by: str | None = None
    flow: Literal["training", "monitoring"] = "training"
    flow_run_id: str
    dataset: dict[str, Any] | None = None
    gates: list[dict[str, Any]] = Field(default_factory=list)
    model: dict[str, Any] | None = None
    deployment: dict[str, Any] | None = None
    error: str | None = None
    audit_anchor: str | None = None
    approval: dict[str, Any] | None = None
    # Gates weakened beyond their safe range by the config, each with its reason.
    waivers: list[dict[str, Any]] = Field(default_factory=list)
    # Wall seconds per stage, in the order they ran (a blocked stage included).
    stages: dict[str, float] = Field(default_factory=dict)
    # Wall seconds per check, by gate name, and per step of a stage that is no gate
    # (``evaluate.champion``: the champion fetched and scored; ``evaluate.mlflow``):
    # what a stage's time is made of. `make bench` reports them.
    checks: dict[str, float] = Field(default_factory=dict)
    # A monitoring run's measurements: champion, drift, quality, its page.
    monitor: dict[str, Any] | None = None
    # Where the run's Prometheus metrics went: the textfile, pushed or why not.
    metrics: dict[str, Any] | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one stage into `stages`, whether it passes, blocks or crashes."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = round(time.perf_counter() - started, 3)

    def add_gates(self, results: list[GateResult]) -> None:
        self.gates.extend(r.as_report() for r in results)

    @property
    def reason(self) -> str:
        """One line for the terminal and the Prefect state message."""
        return self._verdict() + self._waived()

    def _waived(self) -> str:
        if not self.waivers:
            return ""
        gates = ", ".join(sorted({w["gate"] for w in self.waivers}))
        return f" [WAIVED: {gates}]"

    def _verdict(self) -> str:
        if self.status == "deployed" and self.deployment:
            return f"deployed {self.deployment['uri']}"
        if self.status == "awaiting_approval" and self.approval:
            a = self.approval
            waived = f" (it carries waivers: {', '.join(a['waivers'])})" if a["waivers"] else ""
            note = f"; {a['note']}" if a.get("note") else ""
            return (
                f"awaiting approval: {a['release']} needs {a['required_approvals']} approval(s) "
                f"by listed approvers{waived}; the champion did not move{note}. Next: "
                f"`{a['approve']}`, then `{a['promote']}`"
            )
        if self.status in ("blocked", "alert"):
            gate = next(g for g in self.gates if not g["passed"])
            result = GateResult(
                **{k: gate[k] for k in ("name", "passed", "metrics", "threshold", "detail")}
            )
            failing = sum(not g["passed"] for g in self.gates)
            more = f" (and {failing - 1} more gate(s), in the report)" if failing > 1 else ""
            word = "blocked by" if self.status == "blocked" else "alert from"
            return f"{word} {result.name}: {result.explain()}{more}"
        if self.status == "healthy":
            champion = (self.monitor or {}).get("champion") or {}
            who = f"models:/{champion['name']}/{champion['version']}" if champion else "model"
            return f"healthy: {who}, {len(self.gates)} gates passed"
        if self.status == "interrupted":
            return f"interrupted: {self.error}"
        return f"failed: {self.error or 'unexpected error'}"

    def write(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.model_dump(), indent=2, default=str) + "\n")

    @property
    def _fail_word(self) -> str:
        return "ALERT" if self.flow == "monitoring" else "BLOCK"

    def gate_rows(self) -> list[dict[str, str]]:
        """The gate table as rows that read at a normal width: digests shortened to 12
        characters, long values cut (the full values are in the JSON report)."""
        return [
            {
                "gate": g["name"],
                "result": "pass" if g["passed"] else self._fail_word,
                "measured": cell(g["metrics"]),
                "threshold": cell(g["threshold"]),
                "detail": short(g["detail"], 160),
            }
            for g in self.gates
        ]

    def markdown(self) -> str:
        lines = [f"# Secure {self.flow} run: **{self.status}**", "", self.reason, ""]
        for w in self.waivers:
            lines.append(
                f"- **Waiver** for `{w['gate']}`: `{w['setting']} = {w['value']}` (safe "
                f"{w['safe']}): {w['reason']}"
            )
        if self.waivers:
            lines.append("")
        if self.dataset:
            lines += [
                f"Dataset `{self.dataset.get('uri')}`, sha256 "
                f"`{short(str(self.dataset.get('sha256')), 12)}`,"
                f" {self.dataset.get('rows')} rows",
                "",
            ]
        lines += ["| gate | result | measured | threshold | detail |", "|---|---|---|---|---|"]
        for row in self.gate_rows():
            verdict = "pass" if row["result"] == "pass" else f"**{row['result']}**"
            lines.append(
                f"| `{row['gate']}` | {verdict} | {row['measured']} | {row['threshold']} | "
                f"{row['detail'].replace('|', '/')} |"
            )
        if self.model:
            lines += [
                "",
                f"Model `{self.model['name']}` v{self.model['version']}, "
                f"MLflow run `{self.model['mlflow_run_id']}`",
            ]
        if self.deployment:
            lines += ["", f"Deployed to `{self.deployment['uri']}` (SSE {self.deployment['sse']})"]
        return "\n".join(lines) + "\n"


_HEX = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{20,}\b")


def short(text: str, limit: int) -> str:
    """Long hex digests cut to 12 characters, then the text to `limit` characters."""
    text = _HEX.sub(r"\1…", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cell(values: dict[str, Any]) -> str:
    """A table cell of ``k=v`` pairs that reads at a normal width (digests cut)."""
    return short(
        ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
        ),
        120,
    ).replace("|", "/")
