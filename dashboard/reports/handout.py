"""Conference handout: a de-identified case list as one self-contained HTML file and as a PDF.

Per case: the strength panels against the expected bands and the PROMs as static PNG images (Kaleido, all
figures of the handout from one Chromium start), the muscle table, the checklist with evidence (dates as
weeks since the operation), imaging, urgency, source and the decision taken.

The PDF is Chromium's print of the same HTML rather than a second layout in ReportLab: one layout to keep
right, CSS page breaks give one section per case, and Chromium is needed for Kaleido anyway.
Free-text fields arrive as controlled values (procedure terms, lumbar segments, "Surgeon A": the core's
dashboard.clinical.controlled_terms); this module shows them and never the record as written. Before the
images go in, the text is checked for the cases' names, MRNs, patient ids, calendar dates and e-mail
addresses; a leak stops the export instead of writing it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dashboard.charts import image_spec, muscles_with_weakness, prom_spec, strength_spec
from dashboard.clinical.assessment import Assessment
from dashboard.clinical.conference import (
    IDENTIFIER_LEAK,
    ConferenceCase,
    deidentify_patient,
    identifiers,
    leaks,
    surgeon_pseudonyms,
    week_label,
)
from dashboard.clinical.imaging.checklist import no_prompt_text
from dashboard.reports import html as h
from dashboard.reports.render import ReportError, data_uri, html_to_pdf, render_pngs

TITLE = "Case conference handout"
DEIDENTIFIED_NOTE = (
    "De-identified for the case conference: cases are numbered in the order of the case list; times are "
    "weeks or months since the index operation; ages are 5-year bands; operations are named by a controlled "
    "list of procedures (anything else reads \"other procedure\") and surgeons by pseudonyms (Surgeon A, B, …); "
    "names, MRNs, patient ids, free-text notes, decision reasons and calendar dates are left out. "
    "Decision support only: the clinician decides.")

NAME_IS_A_WORD = (" No record text is shown as written, so this is most likely a patient whose whole recorded name "
                  "is one ordinary word of the handout (\"An\"): record the full name and make the handout again.")


@dataclass
class Handout:
    """A rendered handout: the HTML document, how many cases, and where the time went (seconds)."""

    html: str
    cases: int
    timings: dict[str, float] = field(default_factory=dict)
    charts: list[int] = field(default_factory=list)  # chart images per case, in case order

    def pdf(self) -> bytes:
        started = time.perf_counter()
        document = html_to_pdf(self.html, neutral_dates=True)
        self.timings["pdf"] = time.perf_counter() - started
        return document


def build_handout(assessment: Assessment, patient_ids: Sequence[str], prompts: pd.DataFrame | None = None,
                  exams: Callable[[str], pd.DataFrame] | None = None, *, title: str = TITLE) -> Handout:
    """The handout for a case list (patient ids in case order); `prompts` with decisions when known.

    Each case's text is checked for its patient's identifiers as soon as it is made (a leak stops the
    export before more is rendered), and the whole text once more before the images go in.
    """
    if not patient_ids:
        raise ValueError("the case list is empty: no handout to make")
    started = time.perf_counter()
    prompts = assessment.prompts if prompts is None else prompts
    by_patient = {pid: group for pid, group in prompts.groupby("patient_id", sort=False)}
    patients = assessment.patients.set_index("patient_id", drop=False)
    surgeons = surgeon_pseudonyms(assessment)
    cases: list[ConferenceCase] = []
    sections: list[str] = []
    charts_per_case: list[int] = []

    def figures() -> Iterator:
        # De-identify and draw case by case, while Chromium renders the previous figures.
        count = 0
        for number, pid in enumerate(patient_ids, start=1):
            case = deidentify_patient(assessment, pid, number, by_patient.get(pid, prompts.iloc[:0]), exams,
                                      surgeons=surgeons)
            charts = case_figures(case)
            slots = {name: h.IMAGE_SLOT.format(count + i) for i, (name, _) in enumerate(charts)}
            count += len(charts)
            section = _case_section(case, slots)
            _refuse_leaks(section, identifiers(patients.loc[[pid]]), rule_wording([case]))
            cases.append(case)
            sections.append(section)
            charts_per_case.append(len(charts))
            for _, figure in charts:
                yield figure

    images = render_pngs(figures())
    rendered = time.perf_counter()
    text = h.page(title, "\n".join([_cover(cases, title), *sections]))
    _refuse_leaks(text, identifiers(assessment.patients, patient_ids), rule_wording(cases))
    document = h.fill_images(text, [data_uri(png) for png in images])
    return Handout(document, len(cases), {"render": rendered - started, "html": time.perf_counter() - rendered},
                   charts_per_case)


def rule_wording(cases: Sequence[ConferenceCase]) -> set[str]:
    """The cases' prompt summaries and sources: the rules file's text, not records, left out of the leak
    check (a citation's "Ahn UM", "et al." must not stop the handout of a patient named Ahn or Al)."""
    return {text for case in cases for column in ("summary", "source") for text in case.prompts[column]}


def _refuse_leaks(text: str, identifying: list[str], wording: set[str]) -> None:
    found = leaks(text, identifying, wording)
    if not found:
        return
    message = "The handout was not written: it would contain " + " and ".join(found) + "."
    if found[0] == IDENTIFIER_LEAK:  # kinds only: the values themselves are never logged or shown
        message += NAME_IS_A_WORD
    raise ReportError(message)


def case_figures(case: ConferenceCase) -> list[tuple[str, dict]]:
    """The charts of a case, large (projector fonts), as specifications for the image export. No strength chart
    when no muscle was ever below 5: ten flat panels say less than one sentence (the section says it)."""
    charts = []
    if muscles_with_weakness(case.view):
        charts.append(("strength", image_spec(strength_spec(case.view, large=True))))
    charts.append(("proms", image_spec(prom_spec(case.view, large=True))))
    return charts


def _operation(header: dict) -> str:
    """'TLIF L4–L5, L5–S1, instrumented': controlled values only (the core made them from the record)."""
    parts = [h.esc(header["procedure"]), h.esc(header["levels"])]
    if header.get("instrumented") is not None:
        parts.append("instrumented" if header["instrumented"] else "not instrumented")
    if header.get("revision"):
        parts.append("revision")
    return " ".join(parts[:2]) + "".join(f", {p}" for p in parts[2:])


def _cover(cases: Sequence[ConferenceCase], title: str) -> str:
    rows = []
    for case in cases:
        head = case.header
        open_prompts = int((~case.prompts["decision_current"] | (case.prompts["decision"] == "deferred")).sum())
        cells = [f"<b>{h.esc(case.label)}</b>", h.esc(head["age_band"]), h.esc(head["sex"]), _operation(head),
                 h.esc(head["follow_up"]), h.badge(head["top_urgency"]), f"{open_prompts} of {len(case.prompts)}"]
        rows.append("<tr>" + "".join(f'<td class="nowrap">{c}</td>' if i in (0, 1, 2, 5) else f"<td>{c}</td>"
                                     for i, c in enumerate(cells)) + "</tr>")
    table = ("<table><thead><tr><th>Case</th><th>Age</th><th>Sex</th><th>Operation</th><th>Follow-up</th>"
             "<th>Most urgent prompt</th><th>Open prompts</th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>")
    return (f'<section class="cover"><h1>{h.esc(title)}</h1>'
            f'<p class="lead">{len(cases)} case{"s" if len(cases) != 1 else ""}</p>'
            f'<p class="muted">{h.esc(DEIDENTIFIED_NOTE)}</p>{table}</section>')


def _decision(prompt: dict) -> str:
    if prompt["decision"] is None:
        return '<p class="decision none"><b>Decision:</b> none recorded yet.</p>'
    when = f", {h.esc(prompt['decision_week'])}" if prompt["decision_week"] else ""
    reason = " A reason is recorded in the patient's chart." if prompt["decision_has_reason"] else ""
    if prompt["decision_current"]:
        return f'<p class="decision"><b>Decision:</b> {h.esc(prompt["decision_label"])}{when}.{reason}</p>'
    return (f'<p class="decision stale"><b>New evidence since the last decision</b> '
            f"({h.esc(prompt['decision_label'])}{when}): to review again.{reason}</p>")


def _case_section(case: ConferenceCase, images: dict[str, str]) -> str:
    head = case.header
    facts = (f"<b>{h.esc(head['age_band'])}</b> · {h.esc(head['sex'])} · {_operation(head)} · "
             f"<b>{h.esc(head['follow_up'])}</b> · {h.esc(head['surgeon'])}")
    factors = (f"Diabetes {h.yes_no(head['diabetes'])} · smoker {h.yes_no(head['smoker'])} · "
               + ("duration of weakness before the operation not recorded" if head["weakness_before_operation"]
                  is None else f"weak for {h.esc(head['weakness_before_operation'])} before the operation"))
    checklist = "".join(h.prompt_card(p, _decision(p)) for p in case.prompts.to_dict("records")) or (
        f'<p class="muted">{h.esc(no_prompt_text())}</p>')
    if "strength" in images:
        strength = h.figure(images["strength"], f"{case.label}: strength against the expected recovery band")
    elif case.view.exams.empty:
        strength = '<p class="muted">No strength examination recorded.</p>'
    else:
        strength = "<p><b>No motor deficit:</b> every examined muscle graded 5 at every examination.</p>"
    muscles = h.muscle_table(case.view.muscles, "latest_day", "Latest exam", _week_or_dash, compact=True,
                             band_label=case.view.band_label)
    return (f'<section class="case" id="case-{case.number}">'
            f'<div class="case-head"><h2>{h.esc(case.label)}</h2>{h.badge(head["top_urgency"])}</div>'
            f'<p class="facts">{facts}</p><p class="small muted">{factors}</p>'
            f"{h.missing_block(case.missing)}"
            f"<h3>Imaging checklist</h3>{checklist}"
            f"{strength}"
            f"{muscles}"
            f"{h.figure(images['proms'], f'{case.label}: pain and disability')}"
            "</section>")


def _week_or_dash(day) -> str:
    return "—" if day is None or pd.isna(day) else h.esc(week_label(day))


def write(path: str | Path, handout: Handout) -> Path:
    """Write the handout as .html or .pdf (by the file's suffix)."""
    path = Path(path)
    if path.suffix.lower() == ".pdf":
        path.write_bytes(handout.pdf())
    elif path.suffix.lower() in (".html", ".htm"):
        path.write_text(handout.html, encoding="utf-8")
    else:
        raise ValueError(f"write the handout as .pdf or .html, not {path.suffix or 'no suffix'}")
    return path
