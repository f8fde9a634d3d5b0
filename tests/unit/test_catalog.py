"""The gate catalog is the single list of gates: the README table, the check functions
the stages call and the settings holding the thresholds must all agree with it."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from tasks.common.catalog import BY_NAME, GATES, Gate
from tasks.common.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
STAGES = ("ingest", "screen", "validate", "train", "evaluate", "sign", "deploy", "monitor")


def readme_gate_rows() -> list[tuple[str, ...]]:
    """Rows of the README table whose first cell is a `stage.gate` name."""
    rows = []
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        stage = cells[0].strip("`").split(".")[0]
        if (
            line.startswith("|")
            and stage in STAGES
            and re.fullmatch(r"`[a-z_]+\.[a-z_]+`", cells[0])
        ):
            rows.append((cells[0].strip("`"), *cells[1:]))
    return rows


def test_readme_table_lists_every_gate_as_declared() -> None:
    declared = [(g.name, g.threat, g.measured, g.threshold) for g in GATES]
    assert readme_gate_rows() == declared


def test_names_are_unique_and_staged() -> None:
    assert len(BY_NAME) == len(GATES)
    for gate in GATES:
        assert re.fullmatch(r"[a-z]+\.[a-z_]+", gate.name), gate.name
        assert gate.stage in STAGES, gate.name


@pytest.mark.parametrize("gate", GATES, ids=lambda g: g.name)
def test_check_is_the_function_its_stage_calls(gate: Gate) -> None:
    module_name, _, attr = gate.check.partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attr)), gate.check
    assert module_name == f"tasks.{gate.stage}", "a gate's check is called by its own stage"


@pytest.mark.parametrize("gate", [g for g in GATES if g.setting], ids=lambda g: g.name)
def test_setting_exists_and_numeric_defaults_match(gate: Gate) -> None:
    section, _, key = str(gate.setting).partition(".")
    model = Settings.model_fields[section].annotation
    field = model.model_fields[key]  # type: ignore[union-attr]
    try:
        stated = float(gate.threshold)
    except ValueError:
        return  # a described threshold (e.g. "pinned in config")
    assert field.default == pytest.approx(stated), gate.name
