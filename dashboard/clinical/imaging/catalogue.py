"""The rule catalogue (docs/rule-catalogue.md), generated from the rules file so it cannot drift."""

from __future__ import annotations

from pathlib import Path

from dashboard.clinical.imaging.checklist import RuleSet, load_rules

CATALOGUE_PATH = Path(__file__).resolve().parents[3] / "docs" / "rule-catalogue.md"
_OPERATORS = {"eq": "=", "ne": "≠", "lt": "<", "le": "≤", "gt": ">", "ge": "≥", "in": "is one of", "is": "is"}


def _item(item: dict) -> str:
    """A condition, or a group of conditions that must all hold, in the catalogue's words."""
    if "all" in item:
        return "(" + " and ".join(_condition(c) for c in item["all"]) + ")"
    return _condition(item)


def _condition(condition: dict) -> str:
    (operator, value), = ((k, v) for k, v in condition.items() if k not in ("field", "label"))
    if isinstance(value, bool):
        value = "yes" if value else "no"
    elif isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return f"`{condition['field']}` {_OPERATORS[operator]} {value}"


def render_catalogue(rules: RuleSet) -> str:
    """Markdown: one section per rule with its conditions, action, rationale and sources."""
    lines = [
        "# Imaging checklist: rule catalogue",
        "",
        f"Generated from `{rules.path.relative_to(rules.path.parents[2])}` by `python -m dashboard rules-doc`; "
        "do not edit by hand. A test fails when this file and the rules differ.",
        "",
        "Red flags sort first and override the rest. A missing value never satisfies a condition: unknown is "
        "not normal. Scopes: *visit* (one visit after the index operation), *muscle* (one muscle-side "
        "trajectory), *muscle_visit* (a trajectory with a visit within the window of its latest exam).",
        "",
        "Two rules asking one patient for the same scan give one prompt with both reasons (MRI with and "
        "without gadolinium answers an MRI prompt too); a decision on it is matched by patient and scan, so it "
        "stays when another of its rules becomes the most urgent.",
        "",
        "| rule | category | modality | urgency | escalates to emergency | scope | hazards |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| [{r.id}](#{r.id}) | {r.category} | {r.modality} | {r.urgency} | "
              f"{'yes' if r.escalate_if else '—'} | {r.scope} | {', '.join(r.hazards)} |" for r in rules.rules]
    for rule in rules.rules:
        lines += ["", f"## {rule.id}", "", f"**{rule.summary}** — {rule.modality}, {rule.urgency}.", ""]
        lines.append("Fires when all of:")
        lines += [f"- {_item(c)}" for c in rule.conditions]
        if rule.scope == "muscle_visit":
            lines.append(f"- a visit within {rule.window_days} days of the latest exam")
        if rule.any_of:
            lines.append("- and at least one of: " + "; ".join(_item(c) for c in rule.any_of))
        if rule.escalate_if:
            lines += ["", "Emergency (now, within hours) instead when any of: "
                      + "; ".join(_item(c) for c in rule.escalate_if)]
        if rule.note_if:
            lines += ["", "Otherwise, an intermediate step (an evidence line saying what to do within the "
                      "rule's urgency) when any of: " + "; ".join(_item(c) for c in rule.note_if)]
        lines += ["", "Hazards controlled: " + ", ".join(rule.hazards) + " ([hazard log](hazard-log.md))"]
        lines += ["", "Evidence shown: " + " / ".join(f"`{t}`" for t in rule.evidence), ""]
        if rule.rationale:
            lines += [rule.rationale, ""]
        lines.append("Sources:")
        lines += [f"- {rules.sources[key]['citation']} <{rules.sources[key].get('url', '')}>"
                  for key in rule.source_keys]
    lines += ["", "## When no rule fires", "", rules.no_prompt_text]
    return "\n".join(lines) + "\n"


def write_catalogue(path: Path | None = None, rules: RuleSet | None = None) -> Path:
    path = path or CATALOGUE_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_catalogue(rules or load_rules()), encoding="utf-8")
    return path
