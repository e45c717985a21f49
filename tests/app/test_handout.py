"""Conference handout of the whole demo cohort (PDF and HTML), follow-up report and the CLI commands.

The handout is searched for every name, MRN, patient id, note and calendar date of the cohort; the PDF must
have one section per case with its chart images; the HTML must open with the network cut off. Identifiers planted
in the procedure and surgeon fields (tests/planted.py) reach neither the HTML, the PDF nor the CLI's export;
short names ("Li") and a forged image slot make a handout. Needs Debian's
Chromium (Kaleido and print-to-PDF); under CI=true a missing browser fails instead of skipping.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from dashboard.cli import main as cli
from dashboard.clinical.assessment import assess
from dashboard.clinical.conference import select_cases, visible_text
from dashboard.clinical.decisions import with_decisions
from dashboard.clinical.imaging.checklist import evidence_hash
from dashboard.clinical.patient_view import ExamIndex
from dashboard.clinical.records.validate import Records, validate
from dashboard.reports import ReportError, build_handout, build_report
from dashboard.reports import handout as handout_module
from dashboard.reports import html as h
from tests.builders import edited_records, with_columns
from tests.live_server import CHROMIUM, require_chromium
from tests.pdf_pages import pdf_metadata, pdf_pages, pdf_text
from tests.planted import NEEDLES, found, plant

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"
ANCHOR = date(2026, 11, 20)
IMAGE_DATA = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")
ISO = re.compile(r"\d{4}-\d{2}-\d{2}")
SECTION = re.compile(r"^Case (\d+) (?:Emergency|Urgent|Routine|No open prompt)")
REASON = "{name} prefers to wait; discussed on 2026-11-18"


@pytest.fixture(scope="module", autouse=True)
def chromium():
    require_chromium("Kaleido and PDFs need it")


@pytest.fixture(scope="module")
def cohort():
    records, report = validate(DEMO)
    assert records is not None, report.error_lines()
    assessment = assess(records, as_of=ANCHOR)
    # Decisions whose free-text reasons name the patient and a date: neither may reach the handout.
    names = records.patients.set_index("patient_id")["name"]
    chosen = assessment.prompts.drop_duplicates("patient_id").head(3)
    decisions = pd.DataFrame([{
        "patient_id": p.patient_id, "rule_id": p.rule_id, "evidence_hash": evidence_hash(list(p.evidence)),
        "decision": decision, "reason": REASON.format(name=names[p.patient_id]), "clinician": "Dr Reviewer",
        "decided_at": pd.Timestamp(datetime(2026, 11, 19, 8, 0, tzinfo=UTC))}
        for p, decision in zip(chosen.itertuples(), ("not_indicated", "ordered", "deferred"), strict=True)])
    return records, assessment, with_decisions(assessment.prompts, decisions), decisions


#: A valid 1×1 PNG: what the recording renderer below gives for every chart.
DOT_PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0g"
                           "AAAABJRU5ErkJggg==")


def recording(specs: list) -> object:
    """A chart renderer that keeps every figure specification a handout would have Kaleido draw (searched like the
    text) and gives a dot for each: for tests whose subject is the text (real_handout and the CLI test draw)."""
    def render(figures, **_options):  # noqa: ANN001, ANN003 — as render_pngs
        drawn = list(figures)
        specs.extend(drawn)
        return [DOT_PNG] * len(drawn)
    return render


@pytest.fixture(scope="module")
def handout(cohort):
    """The whole cohort's handout (200 cases) and its PDF, made once for the module.

    Its charts are not drawn (Chromium would take a minute and a half for the 500 images): every figure
    specification the handout would have Kaleido draw is kept instead and searched like the text, which
    also checks the words inside the charts (titles, axes, notes). `real_handout` draws a few cases for real.
    """
    _, assessment, prompts, _ = cohort
    ids = select_cases(assessment, prompts, filter="all")
    assert len(ids) == 200
    specs: list[dict] = []

    def recording_renderer(figures):
        for figure in figures:
            specs.append(figure)
        return [DOT_PNG] * len(specs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(handout_module, "render_pngs", recording_renderer)
        result = build_handout(assessment, ids, prompts, ExamIndex(assessment.records.strength).exams)
    assert len(specs) == sum(result.charts)
    return result, result.pdf(), specs


@pytest.fixture(scope="module")
def real_handout(cohort):
    """A handout of six cases whose charts Kaleido draws: the four most urgent and the last two of the list."""
    _, assessment, prompts, _ = cohort
    every = select_cases(assessment, prompts, filter="all")
    ids = [*every[:4], *every[-2:]]
    result = build_handout(assessment, ids, prompts, ExamIndex(assessment.records.strength).exams)
    return result, result.pdf()


@pytest.fixture(scope="module")
def handout_pages(handout):
    return pdf_pages(handout[1])


def _needles(records: Records, decisions: pd.DataFrame) -> dict[str, set[str]]:
    """Everything identifying in the cohort: names, MRNs, patient ids, notes, reasons and calendar dates."""
    patients = records.patients
    stamps = pd.concat([records.surgeries["surgery_date"], records.surgeries["deficit_onset_date"],
                        records.strength["exam_date"], records.visits["visit_date"],
                        pd.to_datetime(decisions["decided_at"]).dt.tz_localize(None)]).dropna().unique()
    dates = set()
    for stamp in map(pd.Timestamp, stamps):
        dates |= {f"{stamp:%Y-%m-%d}", f"{stamp:%d %b %Y}", f"{stamp.day} {stamp:%b %Y}", f"{stamp:%Y/%m/%d}"}
    return {
        "name": set(patients["name"].dropna()),
        "mrn": set(patients["mrn"].dropna()),
        "patient id": set(patients["patient_id"]),
        "note": {n.strip() for n in records.visits["notes"].dropna() if n.strip()},
        "decision reason or clinician": set(decisions["reason"]) | {"prefers to wait", "Dr Reviewer"},
        "calendar date": dates,
    }


def _assert_clean(text: str, needles: dict[str, set[str]], where: str) -> None:
    flat = re.sub(r"\s+", " ", text)
    lowered = flat.lower()
    for kind, values in needles.items():
        hits = [v for v in values if re.sub(r"\s+", " ", v).lower() in lowered]
        assert not hits, f"{len(hits)} {kind}(s) found in the {where}"  # counts only: no value in the log
    assert not ISO.search(flat), f"an ISO date pattern in the {where}"


@pytest.mark.parametrize("made", ["handout", "real_handout"])
def test_pdf_has_one_section_per_case_with_its_charts(made, request):
    result, pdf, *_ = request.getfixturevalue(made)
    pages = request.getfixturevalue("handout_pages") if made == "handout" else pdf_pages(pdf)
    starts = [(i, int(m[1])) for i, (text, _) in enumerate(pages) if (m := SECTION.match(text))]
    assert [number for _, number in starts] == list(range(1, result.cases + 1))
    bounds = [i for i, _ in starts] + [len(pages)]
    for k, (first, last) in enumerate(zip(bounds, bounds[1:], strict=False)):
        images = sum(count for _, count in pages[first:last])
        assert images == result.charts[k] >= 1, f"case {k + 1}: {images} images, {result.charts[k]} charts"
        section = " ".join(text for text, _ in pages[first:last])
        assert "Imaging checklist" in section
    assert sum(count for _, count in pages[:bounds[0]]) == 0  # the cover has no chart
    metadata = pdf_metadata(pdf)
    assert metadata["Title"] == "Case conference handout"
    assert all(metadata[key].startswith("D:1970") for key in ("CreationDate", "ModDate"))  # no export day


def test_handout_html_pdf_and_charts_carry_no_identifier_note_or_date(cohort, handout, handout_pages):
    records, _, _, decisions = cohort
    result, _, specs = handout
    needles = _needles(records, decisions)
    assert len(needles["mrn"]) == len(needles["patient id"]) == 200 and len(needles["name"]) > 150  # a few share a name
    assert needles["note"] and len(needles["calendar date"]) > 1000
    text_part = IMAGE_DATA.sub("data:image/png;base64,", result.html)
    assert text_part.count("data:image/png;base64,") == sum(result.charts) == len(specs)  # one image per chart
    _assert_clean(text_part, needles, "HTML handout")
    _assert_clean("\n".join(text for text, _ in handout_pages), needles, "PDF handout")
    _assert_clean(json.dumps(specs, default=str), needles, "charts (titles, axes, notes, data)")
    assert "Not indicated" in text_part and "A reason is recorded in the patient's chart" in text_part


def test_handout_html_opens_with_no_network(real_handout, tmp_path):
    result, _ = real_handout
    html = result.html
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", html, re.IGNORECASE)
    path = tmp_path / "handout.html"
    path.write_text(html, encoding="utf-8")
    from playwright.sync_api import sync_playwright

    outside: list[str] = []

    def only_local(route) -> None:
        url = route.request.url
        if url.startswith(("file://", "data:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.route("**/*", only_local)
            page.goto(path.as_uri(), wait_until="load", timeout=180_000)
            sizes = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        finally:
            browser.close()
    assert outside == []
    assert len(sizes) == sum(result.charts)
    assert all(complete and width > 0 for complete, width in sizes)


def _inject_name(monkeypatch, field: str = "surgeon") -> None:
    """A future change that let the patient's name into a shown field (nothing does today: the guard's test)."""
    make = handout_module.deidentify_patient

    def leaky(assessment, pid, *args, **kwargs):
        case = make(assessment, pid, *args, **kwargs)
        case.header[field] = assessment.patients.set_index("patient_id").loc[pid, "name"]
        return case

    monkeypatch.setattr(handout_module, "deidentify_patient", leaky)


def test_a_leak_stops_the_export_without_naming_it(cohort, monkeypatch):
    records, assessment, prompts, _ = cohort
    pid = assessment.prompts["patient_id"].iloc[0]
    name = records.patients.set_index("patient_id").loc[pid, "name"]
    _inject_name(monkeypatch)
    with pytest.raises(ReportError) as problem:
        build_handout(assessment, [pid], prompts)
    assert name not in str(problem.value)
    assert str(problem.value) == ("The handout was not written: it would contain patient identifier (id, name or "
                                  "MRN)." + handout_module.NAME_IS_A_WORD)


def test_a_short_name_that_does_leak_is_still_refused(cohort, monkeypatch):
    _, assessment, prompts, _ = cohort
    pid = assessment.prompts["patient_id"].iloc[0]
    patients = assessment.patients.copy()
    patients.loc[patients["patient_id"] == pid, "name"] = "Li"
    _inject_name(monkeypatch)
    with pytest.raises(ReportError, match=r"^The handout was not written: it would contain patient identifier"):
        build_handout(dataclasses.replace(assessment, patients=patients), [pid], prompts)


SHORT_NAMES = ("Li", "Al", "O", "Ahn", "Bo", "Ng", "Wu", "Jo", "Ed", "Liu")


@pytest.fixture(scope="module")
def planted(cohort):
    """The demo cohort with identifiers planted in every procedure and surgeon field, and short names
    ("Li", and "Al", "O", "Ahn", which are also words of the rules' citations) on the cases of a handout."""
    records, _, _, _ = cohort
    records = plant(records)
    assessment = assess(records, as_of=ANCHOR)
    ids = select_cases(assessment, filter="urgent")[:len(SHORT_NAMES)]  # emergencies (cauda equina: Ahn) first
    names = records.patients["name"].astype("string").copy()
    for pid, name in zip(ids, SHORT_NAMES, strict=True):
        names[records.patients["patient_id"] == pid] = name
    records = with_columns(records, {"patients.csv": {"name": names}})
    assessment = assess(records, as_of=ANCHOR)
    specs: list = []  # the charts are kept, not drawn: their words are searched too
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(handout_module, "render_pngs", recording(specs))
        result = build_handout(assessment, ids)
    assert len(specs) == sum(result.charts)
    return records, assessment, ids, result, result.pdf(), specs


def test_identifiers_planted_in_procedure_and_surgeon_reach_no_handout(planted):
    records, assessment, ids, result, pdf, specs = planted
    chosen = records.surgeries["patient_id"].isin(ids)
    recorded = "\n".join([*records.surgeries.loc[chosen, "procedure"],
                          *records.patients.loc[records.patients["patient_id"].isin(ids), "surgeon"]])
    assert found(recorded) == list(NEEDLES)  # every kind is planted in the cases of this handout
    shown = visible_text(IMAGE_DATA.sub("", result.html))
    assert found(shown) == []
    assert found(IMAGE_DATA.sub("", result.html)) == []  # not in the markup either (alt texts, attributes)
    printed = pdf_text(pdf)
    assert "Case 10" in printed and found(printed) == []
    assert specs and found(json.dumps(specs, default=str)) == []  # nor the charts' titles, axes and notes
    assert shown.count("other procedure") >= len(ids)  # cover and case pages: the operation as a term
    shown_surgeons = set(re.findall(r"\bSurgeon [A-Z]+\b", shown))
    assert shown_surgeons and shown_surgeons <= {f"Surgeon {letter}" for letter in "ABCDE"}  # 5 planted surgeons


def test_short_names_and_a_forged_image_slot_make_a_handout(planted):
    """A patient named "Li" was refused and "@@image-999@@" in a procedure crashed the handout."""
    _, assessment, ids, result, pdf, _ = planted
    assert result.cases == len(ids) == len(SHORT_NAMES)
    shown = visible_text(IMAGE_DATA.sub("", result.html))
    assert re.search(r"\bet al\b", shown) and re.search(r"\bAhn\b", shown)  # the citations are there ...
    assert not any(re.search(rf"(?<![\w.]){name}(?![\w.])", shown.replace("et al.", "")
                             .replace("Ahn UM, Ahn NU", "").replace(" O,", "")) for name in ("Li", "Liu", "Bo"))
    assert result.html.count("data:image/png;base64,") == sum(result.charts)  # every slot got its image
    assert "@@image" not in result.html and "<@image" not in result.html
    assert pdf.startswith(b"%PDF")


def test_a_one_word_name_that_is_a_word_of_the_handout_is_refused_with_a_way_forward(cohort):
    _, assessment, prompts, _ = cohort
    pid = next(p for p in select_cases(assessment, prompts, filter="all")
               if any(" an " in line for line in
                      sum(assessment.prompts.loc[assessment.prompts["patient_id"] == p, "evidence"].map(list), [])))
    patients = assessment.patients.copy()
    patients.loc[patients["patient_id"] == pid, "name"] = "An"
    with pytest.raises(ReportError) as problem:
        build_handout(dataclasses.replace(assessment, patients=patients), [pid], prompts)
    assert str(problem.value) == ("The handout was not written: it would contain patient identifier (id, name or "
                                  "MRN). No record text is shown as written, so this is most likely a patient whose "
                                  "whole recorded name is one ordinary word of the handout (\"An\"): record the full "
                                  "name and make the handout again.")


def test_image_slots_cannot_be_forged_by_record_text():
    text = f"<p>{h.esc('@@image-0@@ <@image-0@>')}</p>{h.figure(h.IMAGE_SLOT.format(0), 'chart')}"
    filled = h.fill_images(text, ["data:image/png;base64,AAAA"])
    assert filled == ('<p>@@image-0@@ &lt;@image-0@&gt;</p>'
                      '<figure><img class="chart" src="data:image/png;base64,AAAA" alt="chart"></figure>')
    with pytest.raises(ValueError, match=r"^image slot 1 has no rendered image \(1 rendered\)$"):
        h.fill_images(h.IMAGE_SLOT.format(1), ["data:image/png;base64,AAAA"])


def test_cli_handout_of_planted_records_is_clean(tmp_path, capsys, monkeypatch):
    """The de-identified export from the command line, from a records folder with planted identifiers; the
    surgeon filter there takes the recorded name (surgeons run it), and prints no record text either. Its charts
    are kept and searched, not drawn (real_handout draws a handout's, the follow-up report test a report's)."""
    specs: list = []
    monkeypatch.setattr(handout_module, "render_pngs", recording(specs))
    folder = tmp_path / "records"
    folder.mkdir()
    for path in DEMO.glob("*.csv"):
        shutil.copy(path, folder / path.name)
    records, report = validate(DEMO)
    assert records is not None, report.error_lines()
    planted_records = plant(records)
    for name, frame, column in (("patients.csv", planted_records.patients, "surgeon"),
                                ("surgeries.csv", planted_records.surgeries, "procedure")):
        table = pd.read_csv(folder / name, dtype=str, keep_default_na=False)
        table[column] = frame[column].to_numpy()
        table.to_csv(folder / name, index=False)
    out = tmp_path / "handout.html"
    surgeon = planted_records.patients["surgeon"].iloc[2]  # "Dr Okafor, ward 7 bed 12B, brother …"
    assert cli(["handout", str(folder), "--as-of", ANCHOR.isoformat(), "--filter", "all", "--surgeon", surgeon,
                "--out", str(out)]) == 0
    html = IMAGE_DATA.sub("", out.read_text(encoding="utf-8"))
    expected = int((planted_records.patients["surgeon"] == surgeon).sum())
    assert f"{expected} cases" in visible_text(html) and found(html) == []
    assert specs and found(json.dumps(specs, default=str)) == []
    streams = capsys.readouterr()
    assert found(streams.out + streams.err) == [] and f"wrote {expected} de-identified cases" in streams.err


def test_follow_up_report_is_identified_and_escapes_free_text(cohort, tmp_path):
    records, _, _, _ = cohort
    visits = records.visits
    pid = visits.loc[visits["notes"].notna(), "patient_id"].iloc[0]
    row = visits.index[visits["patient_id"] == pid][-1]
    changed = edited_records(records, "visits.csv", row, "notes", "<script>alert('x')</script> & <b>bold</b>")
    assessment = assess(changed, as_of=ANCHOR)
    report = build_report(assessment, pid)
    patient = records.patients.set_index("patient_id").loc[pid]
    surgery = records.surgeries[records.surgeries["patient_id"] == pid]["surgery_date"].max()
    assert patient["name"] in report.html and patient["mrn"] in report.html
    assert f"{surgery:%Y-%m-%d}" in report.html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in report.html
    assert "<script" not in report.html and "<b>bold" not in report.html
    assert report.html.count("data:image/png;base64,") == 3
    pages = pdf_pages(report.pdf())
    text = " ".join(text for text, _ in pages)
    assert patient["name"] in text and "Follow-up report" in text
    assert sum(images for _, images in pages) == 3


def test_cli_handout_and_report(cohort, tmp_path, capsys, monkeypatch):
    """The commands' options, files and exit codes. The charts are not drawn: the command line builds them as
    build_handout and build_report do, which real_handout and the follow-up report test draw with Kaleido; the
    report's PDF is printed by Chromium all the same."""
    from dashboard.reports import follow_up  # noqa: PLC0415

    specs: list = []
    for module in (handout_module, follow_up):
        monkeypatch.setattr(module, "render_pngs", recording(specs))
    _, assessment, _, _ = cohort
    ids = select_cases(assessment, filter="emergency")[:2]
    out = tmp_path / "handout.html"
    assert cli(["handout", str(DEMO), "--as-of", ANCHOR.isoformat(), "--patients", ",".join(ids),
                "--out", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert "Case 2" in html and "Case 3" not in html and not ISO.search(IMAGE_DATA.sub("", html))
    assert not any(pid in html for pid in ids)
    assert "2 de-identified cases" in capsys.readouterr().err
    report = tmp_path / "report.pdf"
    assert cli(["report", str(DEMO), ids[0], "--as-of", ANCHOR.isoformat(), "--out", str(report)]) == 0
    assert report.read_bytes().startswith(b"%PDF")
    assert specs  # the charts were made (and would have been drawn)
    assert cli(["handout", str(DEMO), "--out", str(tmp_path / "handout.txt")]) == 2
    assert cli(["report", str(DEMO), "P99999", "--out", str(tmp_path / "r.html")]) == 2


def test_kaleido_draws_figure_after_figure_in_its_tabs_without_reloading_plotly_each_time(monkeypatch):
    """The one private hook of a library the project keeps (issue 19), and the gain it is kept for.

    Stock Kaleido 1.5 reloads its page, plotly.js included, after every figure it draws (its
    `_return_kaleido_tab`): about 0.4 s a figure, most of a small chart's cost — 10 s of a 25-chart handout,
    3 minutes of the 200-case one. The project's Kaleido reloads every RELOAD_EVERY figures instead
    (benchmarks/bench.py times the handout and report as run). If an upgrade renames the hook or stops calling
    it, this fails, rather than every report silently slowing down again.
    """
    import inspect

    import kaleido
    import plotly.graph_objects as go

    from dashboard.reports import render

    assert "reload" in inspect.getsource(kaleido.Kaleido._return_kaleido_tab)  # stock: a reload per figure
    assert render._kaleido_class() is render._ReusingKaleido
    seen = {"returned": 0, "reloads": 0}

    class Counting(render._ReusingKaleido):
        async def _return_kaleido_tab(self, tab) -> None:  # noqa: ANN001 — kaleido's private tab type
            seen["returned"] += 1
            reload = tab.reload

            async def counted() -> None:
                seen["reloads"] += 1
                await reload()

            tab.reload = counted
            try:
                await super()._return_kaleido_tab(tab)
            finally:
                tab.reload = reload

    monkeypatch.setattr(render, "_kaleido_class", lambda: Counting)
    monkeypatch.setattr(render, "RELOAD_EVERY", 3)
    figures = [go.Figure(go.Scatter(x=[0, 1], y=[value, value + 1])) for value in range(7)]
    images = render.render_pngs(figures, width=200)
    assert len(images) == 7 and all(image.startswith(b"\x89PNG") for image in images)
    assert seen == {"returned": 7, "reloads": 2}  # every tab came back through the hook; reloaded after 3 and 6
