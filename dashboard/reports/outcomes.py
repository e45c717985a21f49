"""The outcomes export (`python -m dashboard outcomes … --out FILE.html|.csv`, and the screen's download).

Aggregates only: no patient id, name or free text (the reasons given for 'not indicated' are counted, not
quoted: a reason could name a patient). The HTML is one self-contained page (inline SVG, no script, the same
Content Security Policy as the other reports); the CSV is one long table with a `table` column naming the
figure each row belongs to (docs/outcomes.md).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from dashboard.clinical.outcomes import DAYS_PER_MONTH, ENDPOINTS, GROUPINGS, SCHEDULE, Outcomes
from dashboard.outcome_charts import PALETTE
from dashboard.reports.html import CSP

CSV_TABLES = ("recovery", "band_coverage", "proms", "follow_up", "lost_to_follow_up", "prompt_performance")


def _recovery_all(outcomes: Outcomes, endpoint: str = "recovered") -> pd.DataFrame:
    parts = []
    for grouping in GROUPINGS:
        milestones = outcomes.recovery(grouping, endpoint)[1]
        parts.append(milestones.assign(grouping=grouping, endpoint=endpoint))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return frame[["grouping", "group", "endpoint", *[c for c in frame.columns
                                                     if c not in ("grouping", "group", "endpoint")]]]


def export_tables(outcomes: Outcomes, rules: pd.DataFrame, endpoint: str = "recovered") -> dict[str, pd.DataFrame]:
    """The exported figures as tables, by name (CSV_TABLES)."""
    return {
        "recovery": _recovery_all(outcomes, endpoint),
        "band_coverage": outcomes.coverage,
        "proms": outcomes.proms,
        "follow_up": outcomes.follow_up,
        "lost_to_follow_up": outcomes.lost,
        "prompt_performance": rules,
    }


def outcomes_csv(outcomes: Outcomes, rules: pd.DataFrame, reasons: pd.DataFrame | None = None,
                 endpoint: str = "recovered") -> str:
    """One long CSV: the `table` column names the figure; each table keeps its own columns (blank elsewhere)."""
    tables = export_tables(outcomes, rules, endpoint)
    frame = pd.concat([table.assign(table=name) for name, table in tables.items()], ignore_index=True)
    frame = frame[["table", *[c for c in frame.columns if c != "table"]]]
    return frame.to_csv(index=False, float_format="%.4g", lineterminator="\n")


def _svg_curves(curves: pd.DataFrame, width: int = 640, height: int = 300) -> str:
    """Kaplan-Meier steps (share recovered) per group, 0-25 months, as an inline SVG."""
    left, bottom, top, right = 50, 30, 10, 150
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(day: np.ndarray) -> np.ndarray:
        return left + np.clip(day / DAYS_PER_MONTH, 0, 25) / 25 * plot_w

    def y(share: np.ndarray) -> np.ndarray:
        return top + (1 - share) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    for share in (0.25, 0.5, 0.75):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(share):.1f}" y2="{y(share):.1f}" '
                     f'stroke="#ddd"/><text x="{left - 5}" y="{y(share) + 4:.1f}" font-size="11" '
                     f'text-anchor="end">{share:.0%}</text>')
    for months in (0, 3, 6, 12, 24):
        px = left + months / 25 * plot_w
        parts.append(f'<text x="{px:.1f}" y="{height - 10}" font-size="11" text-anchor="middle">{months}</text>')
    for k, (group, curve) in enumerate(curves.groupby("group", sort=True)):
        colour = PALETTE[k % len(PALETTE)]
        day, share = curve["day"].to_numpy(float), curve["share_recovered"].to_numpy(float)
        xs, ys = x(day), y(share)
        points = [f"{xs[0]:.1f},{ys[0]:.1f}"]
        for i in range(1, len(xs)):
            points += [f"{xs[i]:.1f},{ys[i - 1]:.1f}", f"{xs[i]:.1f},{ys[i]:.1f}"]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(points)}"/>')
        parts.append(f'<text x="{left + plot_w + 8}" y="{top + 14 + 16 * k}" font-size="12" fill="{colour}">'
                     f'{html.escape(str(group))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(frame: pd.DataFrame) -> str:
    shown = frame.copy()
    for column in shown.columns:
        if column.startswith("share") or column in ("low", "high", "imaging_yield"):
            shown[column] = [("—" if pd.isna(v) else f"{v:.1%}") for v in shown[column]]
    return shown.to_html(index=False, escape=True, na_rep="—", float_format=lambda v: f"{v:.1f}", border=0)


def outcomes_html(outcomes: Outcomes, rules: pd.DataFrame, reasons: pd.DataFrame | None = None,
                  reference_title: str = "", endpoint: str = "recovered") -> str:
    """The outcomes export as one self-contained HTML page."""
    tables = export_tables(outcomes, rules, endpoint)
    ops = outcomes.operations
    sections = [
        f"<h1>Cohort outcomes</h1><p>As known on {outcomes.as_of.isoformat()} · reference "
        f"{html.escape(reference_title or outcomes.reference_id)} · {len(ops):,} operations of "
        f"{ops['patient_id'].nunique():,} patients. Aggregates only: no patient is identified. Definitions and "
        "limits: docs/outcomes.md.</p>",
        f"<h2>Recovery of weak muscle-sides</h2><p>Recovery: {html.escape(ENDPOINTS[endpoint])}; Kaplan–Meier "
        "(lifelines) with 95% confidence intervals by resampling patients (a patient's muscles recover together); "
        "censored at the last exam. Muscle-sides left out: "
        + html.escape("; ".join(f"{n:,} {why}" for why, n in outcomes.left_out.items())) + ".</p>",
    ]
    for grouping in ("all", "severity"):
        curves = outcomes.recovery(grouping, endpoint)[0]
        if not curves.empty:
            sections.append(f"<h3>{html.escape(GROUPINGS[grouping])}</h3>" + _svg_curves(curves))
    sections.append(_table(tables["recovery"]))
    sections.append("<h2>Against the expected band</h2><p>Latest exam of each weak muscle-side in each follow-up "
                    "window: below, inside or above the band as the patient view shows it.</p>"
                    + _table(tables["band_coverage"]))
    sections.append("<h2>PROMs</h2><p>ODI, leg and back pain: median and quartiles per window ('before': the "
                    "latest visit before the operation).</p>" + _table(tables["proms"]))
    sections.append("<h2>Follow-up completeness</h2><p>Windows (days after the operation): " + html.escape("; ".join(
        f"{label} {first}–{last}" for label, _, first, last in SCHEDULE)) + ".</p>" + _table(tables["follow_up"])
        + "<h3>Lost to follow-up</h3>" + _table(tables["lost_to_follow_up"]))
    sections.append("<h2>How the prompts perform</h2><p>Per rule: prompts fired (ever logged, firing on the "
                    "assessment day or decided on), prompts on the assessment day, patients ever prompted, decisions "
                    "in force, days from the evidence to the first decision, prompts open past their urgency "
                    "(emergency 1 day, urgent 7, routine 42), logged prompts that went away with no decision on them "
                    "(and how many were emergencies: missed follow-through), imaging yield where visits record the "
                    "result. Reasons for 'not indicated' are counted, not quoted.</p>" + _table(rules))
    style = ("body{font-family:Arial,sans-serif;margin:24px;color:#1a1a1a}table{border-collapse:collapse;"
             "font-size:12px;margin:8px 0 20px}td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}"
             "th{background:#f2f2f2}h2{margin-top:28px}")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>Cohort outcomes {outcomes.as_of.isoformat()}</title><style>{style}</style></head><body>"
            + "".join(sections) + "</body></html>")


def write(path: str | Path, outcomes: Outcomes, rules: pd.DataFrame, reasons: pd.DataFrame | None = None,
          reference_title: str = "", endpoint: str = "recovered") -> Path:
    """Write the export as .html or .csv (by the file's suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        text = outcomes_html(outcomes, rules, reasons, reference_title, endpoint)
    elif suffix == ".csv":
        text = outcomes_csv(outcomes, rules, reasons, endpoint)
    else:
        raise ValueError(f"--out must end in .html or .csv: {path}")
    path.write_text(text, encoding="utf-8")
    return path
