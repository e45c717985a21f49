"""The hazard log (docs/hazard-log.md) and the rules stay linked: every rule names hazards of the log, and
every hazard names tests (or clinical stories) that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from dashboard.clinical.imaging.checklist import load_rules

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "docs" / "hazard-log.md"
CASES = ROOT / "tests" / "clinical_cases"
REQUIRED = ("Cause", "Effect", "Initial risk", "Tests", "Residual risk")


def hazards() -> dict[str, dict[str, str]]:
    """Each hazard's id and its table rows (field → text), from the log's '### Hnn — title' sections."""
    text = LOG.read_text(encoding="utf-8")
    sections = re.split(r"^### (H\d\d) — .*$", text, flags=re.MULTILINE)
    found = {}
    for hazard, body in zip(sections[1::2], sections[2::2], strict=True):
        rows = dict(re.findall(r"^\| ([^|]+?) \| (.+) \|$", body, flags=re.MULTILINE))
        found[hazard] = rows
    return found


def defined_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def test_every_hazard_has_its_fields_and_tests_that_exist():
    log = hazards()
    assert [f"H{n:02d}" for n in range(1, 13)] == sorted(log), "the log lists hazards H01–H12"
    for hazard, rows in log.items():
        for field in REQUIRED:
            assert any(key.startswith(field) for key in rows), f"{hazard}: no '{field}' row"
        tests = next(text for key, text in rows.items() if key.startswith("Tests"))
        references = re.findall(r"`([^`]+)`", tests)
        assert references or "to be linked" in tests, f"{hazard}: names no test"
        for reference in references:
            if reference.startswith("case:"):
                assert (CASES / f"{reference[5:]}.yaml").exists(), f"{hazard}: no clinical case {reference}"
                continue
            file, _, name = reference.partition("::")
            assert (ROOT / file).exists(), f"{hazard}: no test file {file}"
            assert name.split("[")[0] in defined_functions(ROOT / file), f"{hazard}: no test {reference}"


def test_every_rule_names_hazards_of_the_log():
    known = set(hazards())
    for rule in load_rules().rules:
        assert rule.hazards, rule.id
        assert set(rule.hazards) <= known, f"{rule.id} names hazards not in the log: {set(rule.hazards) - known}"


def test_every_hazard_a_rule_controls_is_named_by_a_clinical_story():
    import yaml  # noqa: PLC0415

    named = {hazard for path in CASES.glob("*.yaml") for hazard in yaml.safe_load(path.read_text())["hazards"]}
    controlled = {hazard for rule in load_rules().rules for hazard in rule.hazards}
    assert controlled <= named, controlled - named
