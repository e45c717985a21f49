"""Follow-up report for one patient's chart: identified (name, MRN, dates), as HTML and PDF.

The same page style as the handout, but nothing is removed: it documents what the dashboard showed on the
assessment day (every muscle against its band, PROMs, timeline, checklist, decisions with who, when and why,
visits with their notes) for the record. Meant for the patient's chart, not for a conference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from dashboard.charts import image_spec, prom_spec, strength_spec, timeline_spec
from dashboard.clinical.assessment import Assessment
from dashboard.clinical.decisions import DECISION_LABELS
from dashboard.clinical.imaging.checklist import no_prompt_text
from dashboard.clinical.patient_view import PatientView, patient_view
from dashboard.reports import html as h
from dashboard.reports.render import data_uri, html_to_pdf, render_pngs

FINDINGS = ["radicular_pain", "numbness", "saddle_anesthesia", "urinary_retention", "fecal_incontinence", "fever",
            "wound_drainage", "calf_swelling", "screw_lucency", "implant_migration", "rod_fracture"]


@dataclass
class FollowUpReport:
    """A rendered follow-up report; `pdf()` prints it."""

    html: str
    file_stem: str  # e.g. "follow-up-P00017": for download names (patient id, no name)

    def pdf(self) -> bytes:
        return html_to_pdf(self.html)


def build_report(assessment: Assessment, patient_id: str, prompts: pd.DataFrame | None = None,
                 exams: pd.DataFrame | None = None) -> FollowUpReport:
    """The report for one patient; `prompts` are the patient's prompts with decisions when known."""
    view = patient_view(assessment, patient_id, exams)
    prompts = view.prompts if prompts is None else prompts[prompts["patient_id"] == patient_id]
    figures = [image_spec(spec) for spec in (strength_spec(view), prom_spec(view), timeline_spec(view))]
    images = [data_uri(png) for png in render_pngs(figures)]
    return FollowUpReport(report_html(assessment, view, prompts.reset_index(drop=True), images),
                          f"follow-up-{patient_id}")


def _date(value) -> str:
    return "not recorded" if value is None or pd.isna(value) else f"{pd.Timestamp(value):%Y-%m-%d}"


def _decision(prompt: dict) -> str:
    decision = prompt.get("decision")
    if not isinstance(decision, str):
        return '<p class="decision none"><b>Decision:</b> none recorded yet.</p>'
    when = pd.Timestamp(prompt["decided_at"]).strftime("%Y-%m-%d %H:%M UTC")
    reason = prompt.get("decision_reason")
    reason = f" — {h.esc(reason)}" if isinstance(reason, str) and reason.strip() else ""
    who = h.esc(prompt.get("decided_by"))
    if prompt.get("decision_current"):
        return (f'<p class="decision"><b>Decision:</b> {h.esc(DECISION_LABELS.get(decision, decision))}{reason} '
                f"({who}, {when})</p>")
    return (f'<p class="decision stale"><b>New evidence since the last decision</b> '
            f"({h.esc(DECISION_LABELS.get(decision, decision))}{reason}, {who}, {when}): to review again.</p>")


def _visits_table(view: PatientView) -> str:
    if view.visits.empty:
        return '<p class="muted">No visits recorded.</p>'
    rows = []
    for visit in view.visits.to_dict("records"):
        findings = ", ".join(f.replace("_", " ") for f in FINDINGS if _present(visit.get(f)))
        crp = visit.get("crp_mg_l")
        if crp is not None and not pd.isna(crp):
            findings = ", ".join(filter(None, [findings, f"CRP {crp:g} mg/L"]))
        scores = [visit.get("leg_pain_nrs"), visit.get("back_pain_nrs"), visit.get("odi")]
        cells = ["—" if s is None or pd.isna(s) else f"{s:g}" for s in scores]
        rows.append(f"<tr><td class=\"nowrap\">{_date(visit.get('visit_date'))}</td>"
                    f"<td class=\"nowrap\">{h.esc(_day(visit.get('day')))}</td>"
                    f"<td>{cells[0]}</td><td>{cells[1]}</td><td>{cells[2]}</td><td>{h.esc(findings or '—')}</td>"
                    f"<td>{h.esc(visit.get('notes')) if isinstance(visit.get('notes'), str) else ''}</td></tr>")
    return ("<table><thead><tr><th>Date</th><th>Day</th><th>Leg pain</th><th>Back pain</th><th>ODI</th>"
            f"<th>Findings</th><th>Notes</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _present(value) -> bool:
    return value is not None and not pd.isna(value) and bool(value)


def _day(day) -> str:
    return "—" if day is None or pd.isna(day) else f"day {int(day)}"


def _sources(view: PatientView) -> str:
    if view.curve_sources.empty:
        return ""
    items = "".join(f"<li><b>{h.esc(s['label'])}</b> ({h.esc(s['confidence'])}): {h.esc(s['citation'])}</li>"
                    for s in view.curve_sources.to_dict("records"))
    return f'<h3>Where the expected curves come from</h3><ul class="small">{items}</ul>'


def report_html(assessment: Assessment, view: PatientView, prompts: pd.DataFrame, images: list[str]) -> str:
    """The report as one self-contained HTML document (images: strength, PROMs, timeline data URIs)."""
    head = view.header
    yes_no = h.yes_no
    identity = (
        "<table><tbody>"
        f"<tr><th>Name</th><td>{h.esc(head['name'])}</td><th>MRN</th><td>{h.esc(head['mrn'])}</td>"
        f"<th>Patient id</th><td>{h.esc(view.patient_id)}</td></tr>"
        f"<tr><th>Age</th><td>{h.esc(head['age'])}</td><th>Sex</th><td>{h.esc(head['sex'])}</td>"
        f"<th>Surgeon</th><td>{h.esc(head['surgeon'])}</td></tr>"
        f"<tr><th>Operation</th><td colspan=\"3\">{h.esc(head['procedure'])} "
        f"{h.esc(str(head['levels'] or '').replace(';', ', '))} on {_date(head['surgery_date'])} · instrumented "
        f"{yes_no(head['instrumented'])} · revision {yes_no(head['revision'])}</td>"
        f"<th>Days since</th><td>{h.esc(head['days_since_surgery'])}</td></tr>"
        f"<tr><th>Diabetes</th><td>{yes_no(head['diabetes'])}</td><th>Smoker</th><td>{yes_no(head['smoker'])}</td>"
        f"<th>Assessed as of</th><td>{_date(head['as_of'])}</td></tr>"
        "</tbody></table>")
    checklist = "".join(h.prompt_card(p, _decision(p)) for p in prompts.to_dict("records")) or (
        f'<p class="muted">{h.esc(no_prompt_text())}</p>')
    body = (
        f'<div class="case-head"><h1>Follow-up report</h1>{h.badge(head["top_urgency"])}</div>'
        f"{identity}{h.missing_block(view.missing)}"
        f"<h3>Imaging checklist</h3>{checklist}"
        f"<h3>Strength</h3>{h.figure(images[0], 'Strength against the expected recovery band')}"
        f"{h.muscle_table(view.muscles, 'latest_date', 'Latest exam', _date, band_label=view.band_label)}"
        f"{h.figure(images[1], 'Pain and disability')}{h.figure(images[2], 'Timeline')}"
        f"<h3>Visits</h3>{_visits_table(view)}{_sources(view)}"
        f'<p class="note">Reference curves: {h.esc(assessment.reference.title)} '
        f"({h.esc(assessment.reference.reference_id)}). Decision support only: the clinician decides. "
        "Contains patient identifiers: file it in the patient's chart, do not circulate.</p>")
    return h.page(f"Follow-up report {view.patient_id}", body)


def report_for(assessment: Assessment, patient_id: str, prompts: pd.DataFrame | None = None,
               exams: Callable[[str], pd.DataFrame] | None = None) -> FollowUpReport:
    """build_report with a per-patient exam lookup (patient_view.ExamIndex.exams) for large cohorts."""
    return build_report(assessment, patient_id, prompts, exams(patient_id) if exams else None)
