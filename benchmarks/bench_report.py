"""The training section's summary, targets, tables and chart (`benchmarks.run`).

Every number is a median over the repeats, shown with its min and max; every target
is a ratio of two things measured in the same run (`benchmarks.verdict`).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.verdict import Target, table

STAGES = ("ingest", "pii", "validate", "screen", "train", "evaluate", "sign", "deploy")
PLAIN_TASKS = ("load", "fit", "log_to_mlflow", "upload")
CRYPTO_MIB = 64
# FORK: the bounds. Wall time and memory of the secure run against the plain flow's.
WALL_1M, WALL_100K, RSS_1M, EVALUATE_FLAT, CRYPTO = 1.25, 1.5, 1.3, 0.10, 0.30


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _medians(runs: list[dict[str, Any]], key: str, names: tuple[str, ...] | None = None):
    """Median seconds of each stage / task / check over the runs (0 where one is absent)."""
    names = names or tuple(dict.fromkeys(n for r in runs for n in r.get(key, {})))
    return {n: statistics.median(r.get(key, {}).get(n, 0.0) for r in runs) for n in names}


def summarise(results: dict[str, Any], repeats: int) -> dict[str, Any]:
    sizes: dict[str, Any] = {}
    for rows, runs in results["runs"].items():
        plain, secure = runs["plain"], runs["secure"]
        s = sizes[rows] = {
            "plain_wall": _spread([r["wall"] for r in plain]),
            "secure_wall": _spread([r["wall"] for r in secure]),
            "plain_peak_mb": _spread([r["peak_mb"] for r in plain]),
            "secure_peak_mb": _spread([r["peak_mb"] for r in secure]),
            "plain_stages": _medians(plain, "stages", PLAIN_TASKS),
            "secure_stages": _medians(secure, "stages", STAGES),
            "checks": _medians(secure, "checks"),
            "membership": secure[-1].get("membership", {}),
            "adversarial": secure[-1].get("adversarial", {}),
        }
        s["wall_ratio"] = s["secure_wall"]["median"] / s["plain_wall"]["median"]
        s["rss_ratio"] = s["secure_peak_mb"]["median"] / s["plain_peak_mb"]["median"]
    return {
        "sizes": sizes,
        "repeats": repeats,
        "crypto": results["crypto"],
        "load": results.get("load"),
    }


def targets(summary: dict[str, Any], small: str, large: str) -> list[Target]:
    s = summary["sizes"]
    eva = s[large]["secure_stages"]["evaluate"] / s[small]["secure_stages"]["evaluate"]
    crypto = summary["crypto"]["release_mb_s"] / summary["crypto"]["raw_mb_s"]
    return [
        Target(f"wall time, secure / plain, {int(large):,} rows", s[large]["wall_ratio"], "<=",
               WALL_1M),
        Target(f"wall time, secure / plain, {int(small):,} rows", s[small]["wall_ratio"], "<=",
               WALL_100K),
        Target(f"peak RSS, secure / plain, {int(large):,} rows", s[large]["rss_ratio"], "<=",
               RSS_1M),
        Target(f"evaluate stage, {int(large):,} / {int(small):,} rows", eva, "within",
               EVALUATE_FLAT),
        Target("release encryption / raw AES-GCM throughput", crypto, ">=", CRYPTO),
    ]  # fmt: skip


def _wall(w: dict[str, float]) -> str:
    return f"{w['median']:.1f} s ({w['min']:.1f}-{w['max']:.1f})"


def _checks(s: dict[str, Any], stage: str, top: int | None = None) -> list[str]:
    """Per-check medians of one stage at every size (largest first at the largest size)."""
    rows = list(s)
    names = {n for m in s.values() for n in m["checks"] if n.startswith(stage + ".")}
    order = sorted(names, key=lambda n: -s[rows[-1]]["checks"].get(n, 0.0))[:top]
    lines = [
        "| check | " + " | ".join(f"{int(r):,} rows" for r in rows) + " |",
        "|---|" + "---|" * len(rows),
    ]
    for n in order:
        cells = " | ".join(f"{s[r]['checks'].get(n, 0.0):.2f}" for r in rows)
        lines.append(f"| {n} | {cells} |")
    return lines


def markdown(summary: dict[str, Any], checks: list[Target], *, margin: float, loaded: bool) -> str:
    s = summary["sizes"]
    load = summary.get("load") or {}
    lines = [
        f"Medians of {summary['repeats']} runs each (min-max in brackets), alternating, "
        "fresh processes. "
        + ("Taken beside other work (`--loaded`): targets must hold at the bound. "
           if loaded else f"Targets must hold with a {margin:.0%} margin. ")
        + f"Load average (1, 5, 15 min) at the start {load.get('start')}, at the end "
        f"{load.get('end')}.",
        "",
        "| rows | plain flow | secure run | ratio | plain peak RSS | secure peak RSS | ratio |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for rows, m in s.items():
        lines.append(
            f"| {int(rows):,} | {_wall(m['plain_wall'])} | {_wall(m['secure_wall'])} | "
            f"{m['wall_ratio']:.2f} | {m['plain_peak_mb']['median']:,.0f} MB | "
            f"{m['secure_peak_mb']['median']:,.0f} MB | {m['rss_ratio']:.2f} |"
        )
    lines += [
        "",
        "Secure run, seconds per stage (validate and screen run side by side; the rest of "
        "the wall time: start-up, settings, the Prefect API server, audit anchor, report):",
        "",
        "| rows | " + " | ".join(STAGES) + " |",
        "|---|" + "---|" * len(STAGES),
    ]
    for rows, m in s.items():
        cells = " | ".join(f"{m['secure_stages'][n]:.2f}" for n in STAGES)
        lines.append(f"| {int(rows):,} | {cells} |")
    lines += ["", "Plain flow, seconds per task:", ""]
    lines += ["| rows | " + " | ".join(PLAIN_TASKS) + " |", "|---|" + "---|" * len(PLAIN_TASKS)]
    for rows, m in s.items():
        cells = " | ".join(f"{m['plain_stages'][n]:.2f}" for n in PLAIN_TASKS)
        lines.append(f"| {int(rows):,} | {cells} |")
    lines += ["", "Evaluate stage, seconds per check (the run report's `checks`):", ""]
    lines += _checks(s, "evaluate")
    lines += ["", "Validate and screen, the five costliest checks:", ""]
    lines += _checks(s, "validate") + _checks(s, "screen", top=5)[2:]
    lines += ["", "Evaluation budgets (fixed for every size; from the last secure run):", ""]
    for rows, m in s.items():
        mi, adv = m["membership"], m["adversarial"]
        lines.append(
            f"- {int(rows):,} rows: membership inference on {mi.get('members')} members + "
            f"{mi.get('non_members')} non-members, advantage {mi.get('advantage', 0):.3f} "
            f"(95% CI {mi.get('advantage_ci_low', 0):.3f} to {mi.get('advantage_ci_high', 0):.3f});"
            f" {adv.get('attack')} attack on {adv.get('samples')} rows"
        )
    c = summary["crypto"]
    lines += [
        "",
        f"Encryption, {CRYPTO_MIB} MiB: raw AES-256-GCM {c['raw_mb_s']:.0f} MB/s, release path "
        f"{c['release_mb_s']:.0f} MB/s.",
        "",
        *table(checks, margin),
    ]
    return "\n".join(lines) + "\n"


# One hue per flow, shades per stage: the plain flow in blues, the secure run in
# oranges, the time outside the stages in grey.
_HUES = {"plain": "Blues", "secure": "Oranges"}


def chart(summary: dict[str, Any], path: Path) -> None:
    """Stacked bars: seconds per stage (secure) and per task (plain), both sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.8))
    labels, x = [], 0
    legend: dict[str, Any] = {}
    for rows, m in summary["sizes"].items():
        for kind, parts, wall in (
            ("plain", m["plain_stages"], m["plain_wall"]["median"]),
            ("secure", m["secure_stages"], m["secure_wall"]["median"]),
        ):
            if kind == "secure":  # side by side: the longer of the two is their time
                parts = {**parts}
                both = max(parts.pop("validate"), parts.pop("screen"))
                order = list(parts)
                order.insert(order.index("train"), "validate | screen")
                parts = {n: both if n == "validate | screen" else parts[n] for n in order}
            shades = plt.get_cmap(_HUES[kind])
            bottom = 0.0
            other = max(wall - sum(parts.values()), 0.0)
            names = [*parts, "start-up and the rest"]
            for i, (name, value) in enumerate(zip(names, [*parts.values(), other], strict=True)):
                rest = name.startswith("start-up")
                color = "#cccccc" if rest else shades(0.35 + 0.6 * i / max(len(parts) - 1, 1))
                key = name if rest else f"{kind}: {name}"
                legend[key] = ax.bar(
                    x, value, bottom=bottom, color=color, width=0.7, edgecolor="white"
                )
                bottom += value
            labels.append(f"{kind}\n{int(rows):,} rows")
            x += 1
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("seconds (median)")
    ax.set_title("Secure run (oranges) vs plain Prefect + MLflow + S3 flow (blues)")
    ax.legend(legend.values(), legend.keys(), fontsize=7, loc="upper left", ncols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
