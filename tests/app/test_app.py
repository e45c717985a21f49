"""Every page of the Streamlit app through Streamlit's own AppTest, on a store seeded with the demo cohort."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import charts
from dashboard.app import widgets
from dashboard.app.data import DEMO_ANCHOR
from dashboard.app.uploads import UploadRejected, check_uploads
from dashboard.clinical.assessment import assess
from dashboard.clinical.patient_view import CohortIndex, patient_view
from dashboard.clinical.records.validate import validate
from dashboard.store import decision_history, get_engine, load_records
from tests.app_fixtures import entries, run_app

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app" / "main.py")
SCENARIOS = pd.read_csv(ROOT / "data" / "demo" / "scenarios.csv", dtype=str)


def demo_patient(scenario: str) -> str:
    return SCENARIOS.loc[SCENARIOS["scenario"] == scenario, "patient_id"].iloc[0]


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    """One store for the module: the app's engine is cached for the whole process."""
    url = f"sqlite:///{tmp_path_factory.mktemp('app') / 'app.db'}"
    patcher = pytest.MonkeyPatch()
    patcher.setenv("SPINE_DASHBOARD_DB_URL", url)
    patcher.setenv("SPINE_DASHBOARD_MODE", "demo")
    from dashboard.app import data

    data.engine.clear()
    data.clear_caches()
    yield url
    data.engine.clear()
    data.clear_caches()
    patcher.undo()


def app(page: str | None = None, **state) -> AppTest:
    """The app signed in as the demo surgeon (issue 8)."""
    return run_app(page, user="surgeon", role="surgeon", **state)


def texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
                     + [s.value for s in at.subheader] + [w.value for w in at.warning] + [i.value for i in at.info]
                     + [t.value for t in at.get("text")] + [e.value for e in at.error]
                     + [s.value for s in at.success])


def banner(at: AppTest) -> list[str]:
    """The patient banner's lines (plain text elements), in order."""
    return [t.value for t in at.get("text")]


def test_clinic_lists_every_patient_in_follow_up_by_urgency(store_url):
    at = app()
    assert at.title[0].value == "Clinic follow-up"
    labels = {m.label: m.value for m in at.metric}
    assert int(labels[":material/emergency: Emergency — now, within hours"]) >= 1
    table = at.dataframe[-1].value
    assert len(table) == 200
    order = {"Emergency": 0, "Urgent": 1, "Routine": 2, "—": 3}
    ranks = table["urgency"].map(order).tolist()
    assert ranks == sorted(ranks)


def test_clinic_search_filters_by_patient_id(store_url):
    at = app()
    target = demo_patient("plateau_behind")
    at.text_input[0].input(target).run()
    assert at.dataframe[-1].value["patient_id"].tolist() == [target]


def test_patient_page_shows_strength_panels_band_and_prompts(store_url):
    patient = demo_patient("plateau_behind")
    at = app("screens/patient.py", patient_id=patient)
    assert f"Id {patient}" in texts(at)
    figures = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    strength = figures[0]
    names = {trace.get("name") for trace in strength["data"]}
    assert {"Expected range (expert estimate from published series, mostly decompression)", "Expected (median)",
            "Measured grade", "Pre-operative grade"} <= names
    assert not any("percentile" in str(name) for name in names)  # no source reports percentiles
    assert strength["layout"]["title"]["text"] == "Strength against the expected recovery band"
    assert any("Behind expected" in a["text"] for a in strength["layout"]["annotations"])
    assert figures[1]["layout"]["title"]["text"] == "Pain and disability"
    page = texts(at)
    assert "Possible residual compression (no gain in strength by about 3 months)?" in page
    assert "**Suggested imaging:** MRI lumbar spine" in page


def patient_picker(at: AppTest):
    return next(box for box in at.selectbox if box.label == "Patient")


def picker_ids(at: AppTest) -> list[str]:
    """The picker's options are listed as 'Name · MRN · id': the ids."""
    return [option.rsplit(" · ", 1)[-1] for option in patient_picker(at).options]


def test_typing_a_whole_patient_id_opens_that_patient(store_url):
    first, target = demo_patient("plateau_behind"), demo_patient("calf_swelling")
    at = app("screens/patient.py", patient_id=first)
    assert f"Id {first}" in texts(at)
    at.text_input(key="patient_search").input(f"  {target.lower()} ").run()  # any case, spaces ignored
    assert not at.exception, at.exception
    assert f"Id {target}" in texts(at) and f"Id {first}" not in texts(at)
    assert patient_picker(at).value == target
    assert at.query_params["patient"] == target  # the page's link now opens this patient
    assert at.session_state["patient_id"] == target
    assert "**Suggested imaging:** Venous duplex ultrasound of the leg" in texts(at)


def test_part_of_an_id_lists_the_matches_and_picking_one_opens_it(store_url, monkeypatch):
    monkeypatch.setattr(widgets, "PICKER_OPTIONS", 5)  # as on a large cohort: a short list, not every patient
    first = demo_patient("plateau_behind")
    at = app("screens/patient.py", patient_id=first)
    options = picker_ids(at)
    assert first in options and len(options) in (5, 6)  # the 5 most urgent, and the patient shown
    at.text_input(key="patient_search").input("P001").run()
    options = picker_ids(at)
    assert f"Id {first}" in texts(at)  # a partial id opens nobody: the patient shown stays
    matches = [o for o in options if o != first]
    assert len(matches) == 5 and all("P001" in o for o in matches)
    assert any("The 5 most urgent matches are listed" in c.value for c in at.caption)
    patient_picker(at).set_value(matches[2]).run()
    assert not at.exception, at.exception
    assert f"Id {matches[2]}" in texts(at)
    assert at.query_params["patient"] == matches[2]
    at.text_input(key="patient_search").input("Q9").run()
    assert any("No patient name, MRN or id contains “Q9”" in c.value for c in at.caption)
    assert f"Id {matches[2]}" in texts(at)


def test_a_link_with_a_patient_id_opens_that_patient(store_url):
    """?patient=ID (as in a link or the browser's address) wins over the patient the session showed last."""
    first, target = demo_patient("plateau_behind"), demo_patient("normal_recovery")
    at = app("screens/patient.py", patient_id=first)
    at.query_params["patient"] = target
    at.run()
    assert not at.exception, at.exception
    assert f"Id {target}" in texts(at)
    assert patient_picker(at).value == target
    assert at.session_state["patient_id"] == target
    at.query_params["patient"] = "P99999"  # unknown: the most urgent patient instead, never an error
    at.run()
    assert not at.exception, at.exception
    assert patient_picker(at).value == picker_ids(at)[0] != "P99999"


def test_recording_a_decision_stores_it_and_marks_the_prompt(store_url):
    """Issue 20: nothing pre-selected (one click used to record "Imaging ordered"); the clinician is the signed-in
    user, not an editable box; a reason is required for "not indicated" and "deferred"."""
    patient = demo_patient("calf_swelling")
    at = app("screens/patient.py", patient_id=patient, display_name="Dr Test")
    key = f"{patient}-red-venous-thrombosis"
    assert at.radio(key=f"choice-{key}").value is None  # nothing pre-selected
    assert not [box for box in at.text_input if box.key == f"who-{key}"]  # no clinician box
    assert any(c.value == "Recorded as Dr Test" for c in at.caption)
    at.button[0].click().run()  # nothing chosen: refused, nothing stored
    assert any("Choose a decision first" in e.value for e in at.error)
    assert decision_history(get_engine(store_url), patient).empty
    for decision, words in (("not_indicated", "imaging is not indicated"), ("deferred", "the decision is deferred")):
        at.radio(key=f"choice-{key}").set_value(decision)
        at.button[0].click().run()  # without a reason: refused
        assert any(f"A reason is required when {words}" in e.value for e in at.error), [e.value for e in at.error]
    assert decision_history(get_engine(store_url), patient).empty
    at.text_input(key=f"reason-{key}").input("Duplex done yesterday at the GP")
    at.radio(key=f"choice-{key}").set_value("already_done")
    at.button[0].click().run()
    history = decision_history(get_engine(store_url), patient)
    assert history[["rule_id", "decision", "reason", "clinician"]].values.tolist() == [
        ["red-venous-thrombosis", "already_done", "Duplex done yesterday at the GP", "Dr Test"]]
    at = app("screens/patient.py", patient_id=patient)
    assert any(i.value.startswith("Decision: **Already done**") for i in at.info)
    # Record text as plain text (never Markdown): the reason and the clinician.
    assert "By Dr Test · Reason: Duplex done yesterday at the GP" in banner(at)


def test_the_clinician_defaults_to_the_configured_display_name(store_url):
    at = app("screens/patient.py", patient_id=demo_patient("wound_infection"))  # no display_name in the session
    assert any(c.value == "Recorded as Demo Surgeon" for c in at.caption)


def test_patient_banner_names_the_patient_and_the_operation(store_url):
    patient = demo_patient("plateau_behind")
    people = pd.read_csv(ROOT / "data" / "demo" / "patients.csv", dtype=str).set_index("patient_id")
    surgeries = pd.read_csv(ROOT / "data" / "demo" / "surgeries.csv", dtype=str)
    operation = surgeries[surgeries["patient_id"] == patient].iloc[0]
    for page in ("screens/patient.py", "screens/add_exam.py"):
        at = app(page, patient_id=patient)
        lines = banner(at)
        row = people.loc[patient]
        assert lines[0] == row["name"] and lines[1] == row["mrn"]
        age = date(2026, 11, 20).year - int(row["birth_year"])  # demo mode: assessed as of the demo's day
        assert lines[2] == f"Born {row['birth_year']} (age {age})"
        assert lines[3] == {"F": "Female", "M": "Male", "X": "Other"}[row["sex"]]
        assert lines[4] == f"Id {patient}"
        day = pd.Timestamp(operation["surgery_date"])
        assert lines[5].startswith(f"Operation: {operation['procedure']}, levels ")
        assert f"{day:%d %b %Y} — day {(pd.Timestamp(2026, 11, 20) - day).days} after the operation" in lines[5]
        assert not any("unsafe" in str(m.proto) and patient in m.value for m in at.markdown)
    at = app()
    table = at.dataframe[-1].value
    assert {"name", "mrn"} <= set(table.columns)
    assert table.set_index("patient_id").loc[patient, "name"] == people.loc[patient, "name"]


#: Code words the issue found on screen: record codes (snake_case), rule ids in code font.
CODE_WORD = re.compile(r"`|(?<!:material/)\b[a-z]+_[a-z_]+\b")


def test_no_code_words_on_the_patient_and_conference_pages(store_url):
    for scenario in ("cauda_equina", "wound_infection", "new_deficit_instrumented", "recurrent_radicular"):
        at = app("screens/patient.py", patient_id=demo_patient(scenario))
        shown = texts(at)
        assert not CODE_WORD.findall(shown), CODE_WORD.findall(shown)
        rule_ids = [c.value for c in at.caption if c.value.startswith("Checklist rule ")]
        assert rule_ids  # the rule id is still there, in the source details
    at = run_app("screens/conference.py", user="conference", role="conference")
    shown = texts(at)
    assert not CODE_WORD.findall(shown.replace("Checklist rule", "")), CODE_WORD.findall(shown)
    assert not at.date_input  # no calendar day control for the conference role
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b|\b\d{1,2} [A-Z][a-z]{2} 20\d\d\b", shown)


def test_add_exam_saves_valid_grades_and_refuses_invalid_ones(store_url):
    patient = demo_patient("normal_recovery")
    at = app("screens/add_exam.py", patient_id=patient)
    at.selectbox(key="g-ankle_dorsiflexion-R").set_value("4+")
    at.text_input(key="v-leg_pain_nrs").input("11")  # leg pain out of range
    at.button[0].click().run()
    # In words, at the field (issue 20: it read "file form (visit) line 11 column leg_pain_nrs")
    assert [e.value for e in at.error] == ["Leg pain: '11' is not a pain score 0–10",
                                           "Not saved: please correct the fields marked above."]
    assert not (load_records(get_engine(store_url)).strength["patient_id"].eq(patient)
                & load_records(get_engine(store_url)).strength["mrc"].round(2).eq(4.33)
                & load_records(get_engine(store_url)).strength["exam_date"].eq(pd.Timestamp(DEMO_ANCHOR))).any()
    at.text_input(key="v-leg_pain_nrs").input("3")
    at.button[0].click().run()
    assert not at.error
    assert at.success and at.success[0].value.startswith("Saved 1 grade and the visit of ")
    stored = load_records(get_engine(store_url)).strength
    # Demo mode: dated the demo's day (the form's default), not the real today.
    saved = stored[(stored["patient_id"] == patient) & (stored["exam_date"] == pd.Timestamp(DEMO_ANCHOR))]
    assert saved[["muscle", "side"]].values.tolist() == [["ankle_dorsiflexion", "R"]]
    assert round(saved["mrc"].iloc[0], 2) == 4.33


def test_add_exam_records_cauda_equina_and_sepsis_signs_the_red_flag_rules_read(store_url):
    """Issue 17: anal tone and the qSOFA signs are visit columns; the form must be able to record them."""
    patient = demo_patient("slow_severe")  # a patient no other test of this module writes to
    at = app("screens/add_exam.py", patient_id=patient)
    at.selectbox(key="f-anal_tone_reduced").set_value("yes")
    at.text_input(key="v-respiratory_rate").input("90")  # out of range
    at.text_input(key="v-systolic_bp").input("95")
    at.button[0].click().run()
    assert [e.value for e in at.error] == [RESPIRATORY_RATE_ERROR, "Not saved: please correct the fields marked above."]
    at.text_input(key="v-respiratory_rate").input("24")
    at.button[0].click().run()
    assert not at.error and at.success[0].value.startswith("Saved the visit of ")
    visits = load_records(get_engine(store_url)).visits
    saved = visits[(visits["patient_id"] == patient) & (visits["visit_date"] == pd.Timestamp(DEMO_ANCHOR))]
    assert saved[["anal_tone_reduced", "respiratory_rate", "systolic_bp"]].values.tolist() == [[True, 24.0, 95.0]]
    shown = app("screens/patient.py", patient_id=patient)
    assert any("anal tone" in text for text in texts(shown).splitlines())


RESPIRATORY_RATE_ERROR = "Respiratory rate: '90' is not a respiratory rate in breaths/min (0–80)"


DEMO_DAY_NOTE = "Demo data: the date starts on 20 Nov 2026, the demo's day, not today (synthetic patients)."


def test_add_exam_starts_on_the_demo_day_in_demo_mode_and_says_so(store_url):
    """Issue 20: the form opened on today's date while every other screen showed the demo's day."""
    assert DEMO_ANCHOR == date(2026, 11, 20) and DEMO_ANCHOR != date.today()
    at = app("screens/add_exam.py", patient_id=demo_patient("normal_recovery"))
    assert at.date_input(key="ae-date").value == DEMO_ANCHOR
    assert DEMO_DAY_NOTE in [c.value for c in at.caption]


def test_add_exam_starts_on_today_outside_demo_mode(store_url, monkeypatch):
    from dashboard.app import data

    monkeypatch.setattr(data, "demo_mode", lambda: False)  # the day's rule only; the demo users still sign in
    at = app("screens/add_exam.py", patient_id=demo_patient("normal_recovery"))
    assert at.date_input(key="ae-date").value == date.today()
    assert not [c.value for c in at.caption if c.value.startswith("Demo data")]


def test_import_page_renders_with_its_history(store_url):
    at = app("screens/import_records.py")
    assert at.title[0].value == "Import records"
    history = at.dataframe[-1].value  # readable columns (issue 20: they were the database's)
    assert list(history.columns) == ["When", "Source", "How", "By", "Result", "Patients", "Added", "Updated"]
    first = history.iloc[-1]  # the first import: the demo cohort seeded at start
    assert first["Source"] == "demo" and first["By"] == "demo-seed" and first["Result"] == "Imported"
    assert first["Patients"] == "200 new, 0 changed, 0 unchanged"
    assert "strength grades" in first["Added"]


def test_the_demo_folder_imports_as_it_is_zipped_or_as_files(store_url):
    """Issue 20: the shipped data/demo folder (with scenarios.csv and README.md) is taken as it is, as files or
    as a zip; the other files are ignored and named; after the import the preview and its button go away."""
    import io
    import zipfile

    folder = ROOT / "data" / "demo"
    files = [(path.name, path.read_bytes()) for path in sorted(folder.iterdir()) if path.is_file()]
    checked = check_uploads(files)
    assert checked.records is not None and set(checked.ignored) == {"scenarios.csv", "README.md"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files:
            archive.writestr(f"demo/{name}", content)
    zipped = check_uploads([("demo.zip", buffer.getvalue())])
    assert zipped.records is not None and set(zipped.ignored) == {"scenarios.csv", "README.md"}
    assert len(zipped.records.strength) == len(checked.records.strength)
    with pytest.raises(UploadRejected, match="more than once"):
        check_uploads([*files, ("demo.zip", buffer.getvalue())])


def test_uploaded_bad_file_gives_every_error_and_nothing_to_store():
    files = [(name, (ROOT / "data" / "demo" / name).read_bytes()) for name in ("patients.csv", "surgeries.csv")]
    files.append(("strength.csv", b"patient_id,exam_date,muscle,side,mrc\nP00001,2026-01-01,toe,L,7\n"))
    checked = check_uploads(files)
    assert checked.records is None
    assert checked.report.error_lines() == [
        "strength.csv:2: mrc: '7' is not an MRC grade (0–5, 4-, 4+, 5-)",
        "strength.csv:2: muscle: 'toe' is not a muscle code (hip_flexion, knee_extension, ankle_dorsiflexion, "
        "great_toe_extension, ankle_plantarflexion)",
    ]
    with pytest.raises(UploadRejected, match="Not a records file: notes.txt"):
        check_uploads([("notes.txt", b"hello")])
    with pytest.raises(UploadRejected, match="the limit is 1 MB"):
        check_uploads([("strength.csv", b"x" * (2 * 1024 * 1024))], max_mb=1)


def test_reference_page_draws_the_band_and_lists_sources(store_url):
    at = app("screens/reference.py")
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [t["name"] for t in figure["data"]] == [
        "Expected range (expert estimate from published series, mostly decompression)", "Expected",
        "Pre-operative grade"]
    assert any("Asian Spine J" in m.value or "Eur Spine J" in m.value for m in at.markdown)
    at.select_slider[0].set_value("1").run()
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert figure["layout"]["title"]["text"].startswith("Severe deficit")


# ------------------------------------------------------------------ the patient figures' specifications
@pytest.fixture(scope="module")
def demo_views():
    records, report = validate(ROOT / "data" / "demo")
    assert report.ok
    assessment = assess(records, as_of=date(2026, 11, 20))
    index = CohortIndex(assessment)
    ids = [*SCENARIOS["patient_id"].unique(), *assessment.patients["patient_id"].iloc[::25]]
    return assessment, index, [patient_view(assessment, patient_id, index=index) for patient_id in ids]


def test_patient_views_from_the_index_are_the_views_from_the_cohort(demo_views):
    assessment, index, views = demo_views
    for view in views:
        plain = patient_view(assessment, view.patient_id)
        assert plain.header == view.header and plain.missing == view.missing
        for name in ("muscles", "exams", "curves", "visits", "prompts", "curve_sources"):
            pd.testing.assert_frame_equal(getattr(plain, name).reset_index(drop=True),
                                          getattr(view, name).reset_index(drop=True))
    assert index.exams(views[0].patient_id).equals(
        assessment.records.strength[assessment.records.strength["patient_id"] == views[0].patient_id]
        .sort_values("exam_date", kind="stable"))


def test_every_kind_of_figure_is_valid_plotly_for_every_demo_scenario(demo_views):
    """Plotly validates each figure as it is made: a property it does not know or a bad value raises."""
    _, _, views = demo_views
    one_each = set(SCENARIOS.drop_duplicates("scenario")["patient_id"])  # the 12 clinical stories
    for view in (v for v in views if v.patient_id in one_each):
        for spec in (charts.strength_spec(view), charts.strength_spec(view, show_all=True),
                     charts.strength_spec(view, large=True), charts.prom_spec(view),
                     charts.prom_spec(view, large=True), charts.timeline_spec(view)):
            assert charts.figure_from_spec(spec).to_plotly_json()["data"]
    weak = next(v for v in views if charts.muscles_with_weakness(v))
    spec = charts.strength_spec(weak)
    assert [a["text"] for a in spec["layout"]["annotations"][:2]] == [
        charts.panel_title(charts.muscles_with_weakness(weak)[0], side) for side in ("L", "R")]
    assert "template" in charts.strength_figure(weak).to_dict()["layout"]  # the theme's template, as before


def test_a_calibrated_file_in_the_reference_folder_is_not_the_default(store_url, tmp_path, monkeypatch):
    """Issue 20: a calibrated file sorting before published.yaml silently became everyone's reference."""
    from dashboard.app import data

    text = (ROOT / "data" / "reference" / "published.yaml").read_text(encoding="utf-8")
    (tmp_path / "a-calibrated.yaml").write_text(
        text.replace("reference_id: published-v2", "reference_id: clinic-2026")
        .replace("title: Published motor-recovery reference", "title: A clinic calibration"), encoding="utf-8")
    monkeypatch.setattr(data, "CALIBRATED_DIR", tmp_path)
    data.reference_files.clear()
    try:
        files = data.reference_files()
        assert len(files) == 2 and Path(next(iter(files.values()))).name == "published.yaml"
        at = app()
        chosen = next(box for box in at.selectbox if box.label == "Expected-recovery reference")
        assert chosen.value.startswith("Published motor-recovery reference")
        assert "reference: Published motor-recovery reference" in at.caption[0].value
        assert any("Demo data: shown as of 20 Nov 2026" in c.value for c in at.caption)  # the demo's day, said
    finally:
        data.reference_files.clear()


@pytest.fixture
def calibrated(tmp_path, monkeypatch):
    """A calibrated reference file beside the published one (the sidebar then offers the choice)."""
    from dashboard.app import data

    text = (ROOT / "data" / "reference" / "published.yaml").read_text(encoding="utf-8")
    (tmp_path / "a-calibrated.yaml").write_text(
        text.replace("reference_id: published-v2", "reference_id: clinic-2026")
        .replace("title: Published motor-recovery reference", "title: A clinic calibration"), encoding="utf-8")
    monkeypatch.setattr(data, "CALIBRATED_DIR", tmp_path)
    data.reference_files.clear()
    yield tmp_path / "a-calibrated.yaml"
    data.reference_files.clear()


def reference_box(at: AppTest):
    return next(box for box in at.selectbox if box.label == "Expected-recovery reference")


def titled(at: AppTest, start: str) -> str:
    return next(title for title in reference_box(at).options if title.startswith(start))


def test_changing_the_reference_is_audited_once_per_change(store_url, calibrated):
    """Issue 20: the reference choice was shown but not audited. A change writes one `setting` entry (who, role,
    which file); reruns without a change write none; going back is a change too."""
    before = len(entries(store_url, actions=["setting"]))
    at = app()
    at.run()
    assert len(entries(store_url, actions=["setting"])) == before  # the published default: no choice made
    reference_box(at).select(titled(at, "A clinic calibration")).run()
    assert "reference: A clinic calibration" in at.caption[0].value
    at.run()  # a rerun is not a change
    reference_box(at).select(titled(at, "Published")).run()
    made = entries(store_url, actions=["setting"])[:len(entries(store_url, actions=["setting"])) - before]
    assert [(e["user_name"], e["role"], e["details"]) for e in reversed(made)] == [
        ("surgeon", "surgeon", {"kind": "reference", "file": "a-calibrated.yaml"}),
        ("surgeon", "surgeon", {"kind": "reference", "file": "published.yaml"})]


def test_a_reference_change_that_cannot_be_audited_is_not_made(store_url, calibrated, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(widgets, "audit_event", refuse)
    at = app()
    reference_box(at).select(titled(at, "A clinic calibration")).run()
    assert at.session_state["reference_path"].endswith("published.yaml")
    assert "reference: Published motor-recovery reference" in at.caption[0].value
    assert [e.value for e in at.sidebar.error] == [
        "The reference was not changed: the change could not be written to the audit log."]


def test_the_plain_language_renderer_says_the_issue_examples_in_words():
    from dashboard.clinical.wording import plain, status_words

    assert plain("2026-11-18 (day 7) saddle_anesthesia, urinary_retention: yes") == (
        "2026-11-18 (day 7) saddle anaesthesia and urinary retention present")
    assert plain("2026-11-15 (day 27) wound_drainage, fever, crp_rise_from_nadir") == (
        "2026-11-15 (day 27) wound drainage, fever, CRP rising again from its lowest")
    assert plain("2026-11-18 (day 43) great_toe_extension L (L5) 3; baseline 5 on 2026-09-17") == (
        "2026-11-18 (day 43) left great-toe extension (L5): grade 3; baseline 5 on 2026-09-17")
    assert plain("Never examined: hip_flexion L, hip_flexion R.") == (
        "Never examined: left hip flexion, right hip flexion.")
    assert status_words("behind") == "Behind expected" and status_words(None) == "Not examined"


def test_the_html_and_pdf_downloads_of_a_report_share_one_build_and_one_print(monkeypatch):
    """The handout and the follow-up report are built once per key for both downloads (charts drawn once), the
    PDF printed once, and both rebuilt when the key (cases or patient, day, decisions) changes."""
    from dashboard.app import widgets

    monkeypatch.setattr(widgets.st, "session_state", {})
    made = {"builds": 0, "prints": 0}

    class Report:
        html = "<p>report</p>"

        def pdf(self) -> bytes:
            made["prints"] += 1
            return b"%PDF-report"

    def build() -> Report:
        made["builds"] += 1
        return Report()

    html, pdf = widgets.session_document("reports", ("P1", "2026-11-20"), build)
    assert (html(), pdf(), pdf(), html()) == (b"<p>report</p>", b"%PDF-report", b"%PDF-report", b"<p>report</p>")
    assert made == {"builds": 1, "prints": 1}
    html, pdf = widgets.session_document("reports", ("P1", "2026-11-21"), build)  # the next rerun, a new day
    assert pdf() == b"%PDF-report" and made == {"builds": 2, "prints": 2}
