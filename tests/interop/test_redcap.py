"""REDCap: the shipped example export is the demo cohort; errors name record and field; bad mappings are refused."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sqlalchemy import func, select

from dashboard.cli import main
from dashboard.interop.redcap import (
    MappingError,
    event_and_arm,
    export_to_records,
    load_mapping,
    mapping_from_dict,
    read_csv_text,
    read_export,
    records_to_export,
)
from dashboard.interop.uploads import REDCAP_EXPORT, check_interop_uploads
from dashboard.store import get_engine, import_history, load_records
from dashboard.store.models import Patient
from tests.interop_helpers import REDCAP, ROOT, assert_same_records, demo_records

EXPORT, MAPPING = REDCAP / "redcap_export.csv", REDCAP / "mapping.yaml"


@pytest.fixture(scope="module")
def export() -> pd.DataFrame:
    return read_csv_text(EXPORT.read_bytes())


@pytest.fixture(scope="module")
def mapping():
    return load_mapping(MAPPING)


def mapping_dict() -> dict:
    return yaml.safe_load(MAPPING.read_text(encoding="utf-8"))


def row(frame: pd.DataFrame, record: str, instrument: str | None, nth: int = 0) -> int:
    repeat = frame["redcap_repeat_instrument"]
    mask = (frame["record_id"] == record) & (repeat.isna() if instrument is None else repeat == instrument)
    return frame.index[mask][nth]


def counts(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Patient.__table__)).scalar_one()


# ------------------------------------------------------------------------------------------------ example
def test_example_export_reads_back_as_the_demo_cohort():
    records, report = read_export(EXPORT, MAPPING)
    assert report.issues.empty, report.error_lines() + report.warning_lines()
    assert_same_records(records, demo_records())


def test_example_export_is_made_from_the_demo_cohort(mapping):
    """The shipped file equals a fresh export of data/demo, in REDCap's flat shape."""
    fresh = io.StringIO()
    records_to_export(demo_records(), mapping).to_csv(fresh, index=False, lineterminator="\n")
    assert fresh.getvalue() == EXPORT.read_text(encoding="utf-8")
    frame = pd.read_csv(EXPORT, dtype=str, keep_default_na=False)
    assert list(frame.columns[:4]) == ["record_id", "redcap_event_name", "redcap_repeat_instrument",
                                       "redcap_repeat_instance"]
    assert sorted(frame["record_id"].unique(), key=int) == [str(i) for i in range(1, 201)]
    plain = frame[frame["redcap_repeat_instrument"] == ""]
    assert set(plain["redcap_event_name"]) == {"enrolment_arm_1"} and plain["record_id"].is_unique
    repeated = frame[frame["redcap_repeat_instrument"] != ""]
    assert set(repeated["redcap_repeat_instrument"]) == {"surgery", "motor_exam", "clinic_visit"}
    first_exams = repeated[(repeated["record_id"] == "1") & (repeated["redcap_repeat_instrument"] == "motor_exam")]
    assert first_exams["redcap_repeat_instance"].tolist()[:3] == ["1", "2", "3"]
    assert {"4-", "4+", "5-"} <= set(frame["ta_r_grade"]) | set(frame["ehl_l_grade"]) | set(frame["pf_r_grade"])


def test_command_line_imports_the_example(tmp_path: Path, capsys):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["import-redcap", str(EXPORT), "--mapping", str(MAPPING), "--database", url]) == 0
    assert "patients: 200 new" in capsys.readouterr().err
    engine = get_engine(url)
    assert_same_records(load_records(engine), demo_records())
    assert import_history(engine)["source_kind"].iloc[0] == "redcap"


# ---------------------------------------------------------------------------------------------- bad data
def test_errors_name_the_record_and_the_field(export, mapping):
    frame = export.copy()
    frame.loc[row(frame, "17", "motor_exam", 2), "ta_r_grade"] = "7"
    frame.loc[row(frame, "17", None), "sex"] = "9"
    visit = row(frame, "18", "clinic_visit")
    frame.loc[visit, ["odi", "visit_date"]] = ["140", "2024-13-01"]
    surgery = row(frame, "19", "surgery")
    frame.loc[surgery, [f"surg_levels___{i}" for i in range(1, 6)]] = "0"
    frame.loc[surgery, "surg_instr"] = pd.NA
    frame.loc[row(frame, "20", "surgery"), "surg_levels___2"] = "yes"
    records, report = export_to_records(frame, mapping)
    assert records is None
    assert report.error_lines() == [
        "redcap_export.csv: record 17, field sex [enrolment_arm_1]: '9' is not one of this field's codes (1, 2, 3)",
        "redcap_export.csv: record 20, field surg_levels___2 [follow_up_arm_1, surgery #1]: 'yes' is not a "
        "checkbox value (1 ticked, 0 or blank not)",
        "redcap_export.csv: record 19, field surg_instr [follow_up_arm_1, surgery #1]: is missing (required)",
        "redcap_export.csv: record 19, field surg_levels___* [follow_up_arm_1, surgery #1]: is missing (required)",
        "redcap_export.csv: record 17, field ta_r_grade [follow_up_arm_1, motor_exam #3]: '7' is not an MRC grade "
        "(0–5, 4-, 4+, 5-)",
        "redcap_export.csv: record 18, field odi [follow_up_arm_1, clinic_visit #1]: '140' is not an ODI score "
        "(0–100)",
        "redcap_export.csv: record 18, field visit_date [follow_up_arm_1, clinic_visit #1]: '2024-13-01' is not "
        "a date YYYY-MM-DD",
    ]


def test_a_repeated_record_and_a_missing_patient_id_are_named(export, mapping):
    frame = export.copy()
    frame.loc[row(frame, "5", None), "study_id"] = pd.NA
    frame.loc[row(frame, "6", None), "study_id"] = "P00007"
    records, report = export_to_records(frame, mapping)
    assert records is None
    lines = report.error_lines()
    assert "redcap_export.csv: record 5, field study_id: is missing (required: the record's patient id)" in lines
    assert ("redcap_export.csv: record 7, field study_id [enrolment_arm_1]: 'P00007' is a duplicate patient_id "
            "(first on redcap_export.csv: record 6, field study_id [enrolment_arm_1])") in lines


def test_invalid_export_stores_nothing_and_exits_2(export, tmp_path: Path, capsys):
    frame = export.copy()
    frame.loc[row(frame, "17", "motor_exam", 2), "ta_r_grade"] = "7"
    path = tmp_path / "redcap_export.csv"
    frame.to_csv(path, index=False)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["import-redcap", str(path), "--mapping", str(MAPPING), "--database", url]) == 2
    err = capsys.readouterr().err
    assert "redcap_export.csv: record 17, field ta_r_grade [follow_up_arm_1, motor_exam #3]: '7' is not an MRC" in err
    engine = get_engine(url)
    assert counts(engine) == 0 and (import_history(engine)["status"] == "succeeded").sum() == 0


def test_mapped_fields_missing_from_the_export_are_named(export, mapping):
    records, report = export_to_records(export.drop(columns=["surg_date", "pf_r_grade"]), mapping)
    assert records is None
    assert report.error_lines() == [
        "redcap_export.csv: 'surg_date' is not a column of the export (files.surgeries.columns.surgery_date in "
        "mapping.yaml)",
        "redcap_export.csv: 'pf_r_grade' is not a column of the export (files.strength.grades.pf_r_grade in "
        "mapping.yaml)",
    ]


def test_fields_the_mapping_does_not_use_are_listed_once(export, mapping):
    records, report = export_to_records(export.assign(bmi="27"), mapping)
    assert records is not None
    assert report.warning_lines() == ["redcap_export.csv: 1 field(s) not in mapping.yaml, ignored: bmi"]


# -------------------------------------------------------------------------------------------- bad mappings
def edited(path: list[str], value) -> dict:
    raw = mapping_dict()
    node = raw
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return raw


@pytest.mark.parametrize(("path", "value", "message"), [
    (["record_id_field"], KeyError, "mapping.yaml: record_id_field: is missing"),
    (["files", "strength", "grades", "ta_r_grade", "muscle"], "tibialis",
     "mapping.yaml: files.strength.grades.ta_r_grade.muscle: 'tibialis' is not a muscle code (hip_flexion, "),
    (["files", "strength", "grades", "ta_r_grade", "side"], "left",
     "mapping.yaml: files.strength.grades.ta_r_grade.side: 'left' is not a side code (L, R)"),
    (["files", "patients", "columns", "sex"], {"field": "sex", "codes": "1 F | 2, M"},
     "mapping.yaml: files.patients.columns.sex.codes: '1 F' is not 'code, value'"),
    (["files", "patients", "columns", "sex"], {"field": "sex", "codes": "1, F | 1, M"},
     "mapping.yaml: files.patients.columns.sex.codes: code '1' appears twice"),
    (["files", "patients", "columns", "gender"], "sex",
     "mapping.yaml: files.patients.columns.gender: is not a column of patients.csv"),
    (["files", "surgeries", "columns", "instrumented"], KeyError,
     "mapping.yaml: files.surgeries: column 'instrumented' is required by surgeries.csv but not mapped"),
    (["files", "surgeries", "columns", "levels"], {"checkbox": "surg_levels"},
     "mapping.yaml: files.surgeries.columns.levels: a checkbox needs its 'codes'"),
    (["files", "visits", "columns", "odi"], {"field": "odi", "checkbox": "odi"},
     "mapping.yaml: files.visits.columns.odi: give exactly one of 'field' or 'checkbox'"),
    (["files", "visits", "grades"], {"x": {"muscle": "hip_flexion", "side": "L"}},
     "mapping.yaml: files.visits.grades: only strength can be recorded"),
    (["files", "labs"], {"columns": {}}, "mapping.yaml: files.labs: is not a records file"),
    (["files", "strength"], KeyError, "mapping.yaml: files.strength: is missing (the records format requires"),
    (["files", "patients", "columns", "patient_id"], "study_id",
     "mapping.yaml: files.patients.columns.patient_id: patient_id comes from 'patient_id_field'"),
    (["version"], 2, "mapping.yaml: version: '2' is not a supported version (1)"),
    (["missing_data_codes"], "UNK Unknown", "mapping.yaml: missing_data_codes: 'UNK Unknown' is not 'code, value'"),
    (["files", "visits", "arm"], "two", "mapping.yaml: files.visits.arm: must be an arm number (1, 2, …)"),
    (["files", "visits", "event"], [], "mapping.yaml: files.visits.event: must be a REDCap event name or a list"),
])
def test_bad_mappings_are_refused_naming_the_entry(path: list[str], value, message: str):
    with pytest.raises(MappingError) as failure:
        mapping_from_dict(edited(path, value))
    assert str(failure.value).startswith(message), str(failure.value)


def test_bad_mapping_file_stores_nothing_and_exits_2(tmp_path: Path, capsys):
    bad = tmp_path / "mapping.yaml"
    bad.write_text(yaml.safe_dump(edited(["files", "strength", "grades", "ta_r_grade", "muscle"], "tibialis")),
                   encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["import-redcap", str(EXPORT), "--mapping", str(bad), "--database", url]) == 2
    err = capsys.readouterr().err
    assert "files.strength.grades.ta_r_grade.muscle: 'tibialis' is not a muscle code" in err
    assert "nothing was stored" in err
    unreadable = tmp_path / "broken.yaml"
    unreadable.write_text("files: [unclosed", encoding="utf-8")
    assert main(["import-redcap", str(EXPORT), "--mapping", str(unreadable), "--database", url]) == 2
    assert "broken.yaml: cannot be read" in capsys.readouterr().err
    assert counts(get_engine(url)) == 0


# ------------------------------------------------------------------------------------------ other shapes
def test_long_strength_codes_as_a_mapping_and_record_id_as_patient_id():
    """A classic (non-longitudinal) project: record ids are the patient ids, strength one instance per muscle."""
    mapping = mapping_from_dict({
        "record_id_field": "pid",
        "files": {
            "patients": {"columns": {"sex": {"field": "sex", "codes": {1: "F", 2: "M"}}}},
            "surgeries": {"repeat_instrument": "op", "columns": {
                "surgery_date": "op_date", "procedure": "op_name", "levels": "op_levels",
                "instrumented": "op_instr"}},
            "strength": {"repeat_instrument": "mrc", "columns": {
                "exam_date": "mrc_date", "muscle": "mrc_muscle", "side": {"field": "mrc_side",
                                                                          "codes": "1, L | 2, R"},
                "mrc": "mrc_grade"}},
        },
    })
    text = ("pid,redcap_repeat_instrument,redcap_repeat_instance,sex,op_date,op_name,op_levels,op_instr,mrc_date,"
            "mrc_muscle,mrc_side,mrc_grade\n"
            "A1,,,1,,,,,,,,\n"
            "A1,op,1,,2026-01-10,TLIF,L4-L5,1,,,,\n"
            "A1,mrc,1,,,,,,2026-01-08,ankle_dorsiflexion,2,4-\n"
            "A1,mrc,2,,,,,,2026-02-20,ankle_dorsiflexion,2,5-\n")
    records, report = export_to_records(read_csv_text(text.encode()), mapping, "project.csv")
    assert report.issues.empty, report.error_lines()
    assert records.patients["sex"].tolist() == ["F"]
    assert [round(v, 2) for v in records.strength["mrc"]] == [3.67, 4.67]
    assert records.strength["side"].tolist() == ["R", "R"]
    bad = text.replace("2026-02-20,ankle_dorsiflexion,2,5-", "2026-02-20,tibialis,3,5-")
    records, report = export_to_records(read_csv_text(bad.encode()), mapping, "project.csv")
    assert report.error_lines() == [
        "project.csv: record A1, field mrc_side [mrc #2]: '3' is not one of this field's codes (1, 2)",
        "project.csv: record A1, field mrc_muscle [mrc #2]: 'tibialis' is not a muscle code (hip_flexion, "
        "knee_extension, ankle_dorsiflexion, great_toe_extension, ankle_plantarflexion)",
    ]


def test_upload_on_the_import_page_uses_the_example_mapping_by_default(export):
    checked = check_interop_uploads(REDCAP_EXPORT, [("redcap_export.csv", EXPORT.read_bytes())])
    assert checked.records is not None and checked.source_kind == "redcap"
    bad_mapping = yaml.safe_dump(edited(["files", "labs"], {"columns": {}})).encode()
    from dashboard.app.uploads import UploadRejected

    with pytest.raises(UploadRejected, match="files.labs: is not a records file"):
        check_interop_uploads(REDCAP_EXPORT, [("redcap_export.csv", EXPORT.read_bytes()), ("m.yaml", bad_mapping)])
    with pytest.raises(UploadRejected, match="one REDCap export"):
        check_interop_uploads(REDCAP_EXPORT, [("notes.txt", b"x")])


# ------------------------------------------------------------- projects shaped as REDCap really exports them
def two_arms(export: pd.DataFrame) -> pd.DataFrame:
    """The example as a two-arm project: even records in arm 2 (`enrolment_arm_2`, `follow_up_arm_2`), and the
    data access group column REDCap adds after the repeat instance (as in the PyCap two-arm project, whose
    events are `enrollment_arm_1` … `enrollment_arm_2` …: tests/fixtures/redcap/pycap_test_long_project.xml)."""
    frame = export.copy()
    even = frame["record_id"].astype(int) % 2 == 0
    frame.loc[even, "redcap_event_name"] = frame.loc[even, "redcap_event_name"].str.replace("_arm_1", "_arm_2")
    frame.insert(4, "redcap_data_access_group", "clinic_a")
    return frame


def test_the_pycap_project_is_a_two_arm_project_with_arm_suffixed_events():
    text = (ROOT / "tests" / "fixtures" / "redcap" / "pycap_test_long_project.xml").read_text(encoding="utf-8")
    events = set(re.findall(r'redcap:UniqueEventName="([^"]+)"', text))
    assert {"enrollment_arm_1", "enrollment_arm_2"} <= events
    assert {event_and_arm(e)[1] for e in events} == {1, 2}
    assert event_and_arm("deadline_to_opt_ou_arm_2") == ("deadline_to_opt_ou", 2)


def test_a_two_arm_project_is_read_whole(export, mapping):
    frame = two_arms(export)
    assert set(frame["redcap_event_name"]) == {"enrolment_arm_1", "follow_up_arm_1", "enrolment_arm_2",
                                               "follow_up_arm_2"}
    records, report = export_to_records(frame, mapping)  # the mapping names the arm-1 events only
    assert report.issues.empty, report.error_lines() + report.warning_lines()
    assert_same_records(records, demo_records())
    # Restricting to one arm is explicit, and what is left out is said, never silent.
    raw = mapping_dict()
    for name in ("patients", "surgeries", "strength", "visits"):
        raw["files"][name]["arm"] = 1
    records, report = export_to_records(frame, mapping_from_dict(raw))
    warnings = report.warning_lines()
    assert ("redcap_export.csv: 'follow_up_arm_2' 102 row(s) of this event hold surgery data (records 2, 4, 6, 8, 10, "
            "12, 14, 16, 18, 20, …) but files.surgeries.event in mapping.yaml reads follow_up (arm 1) only: not read"
            ) in warnings
    assert report.ok and sorted(records.patients["patient_id"]) == [f"P{i:05d}" for i in range(1, 201, 2)]


def test_repeating_events_datetimes_and_labels(export, mapping):
    frame = export.copy()
    visits = frame["redcap_repeat_instrument"] == "clinic_visit"
    frame.loc[visits, "redcap_event_name"] = "visit_arm_1"  # a repeating event: no instrument, an instance
    frame.loc[visits, "redcap_repeat_instrument"] = pd.NA
    raw = mapping_dict()
    raw["files"]["visits"].pop("repeat_instrument")
    raw["files"]["visits"].update(instrument="clinic_visit", event="visit_arm_1")
    first = row(frame, "18", None, 1)
    frame.loc[first, "visit_date"] = frame.loc[first, "visit_date"] + " 14:30"  # a datetime field
    exam = row(frame, "18", "motor_exam")
    frame.loc[exam, "exam_date"] = frame.loc[exam, "exam_date"] + " 09:05:00"
    records, report = export_to_records(frame, mapping_from_dict(raw))
    assert report.issues.empty, report.error_lines() + report.warning_lines()
    assert_same_records(records, demo_records())
    frame.loc[first, "odi"] = "140"
    _, report = export_to_records(frame, mapping_from_dict(raw))
    assert report.error_lines() == ["redcap_export.csv: record 18, field odi [visit_arm_1 #1]: '140' is not an ODI "
                                    "score (0–100)"]


def test_missing_data_codes_are_blank_with_a_warning_naming_field_and_code(export, tmp_path: Path, capsys):
    frame = export.copy()
    frame.loc[row(frame, "3", None), "yob"] = "UNK"
    frame.loc[row(frame, "4", "clinic_visit"), "odi"] = "NASK"
    frame.loc[row(frame, "5", "motor_exam"), "ta_l_grade"] = "-999"
    frame.loc[row(frame, "6", "clinic_visit"), "crp"] = "UNK"
    path = tmp_path / "redcap_export.csv"
    frame.to_csv(path, index=False)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["import-redcap", str(path), "--mapping", str(MAPPING), "--database", url]) == 2  # not configured
    assert "record 3, field yob [enrolment_arm_1]: 'UNK' is not a whole number" in capsys.readouterr().err
    raw = mapping_dict()
    raw["missing_data_codes"] = "UNK, Unknown | NASK, Not asked | -999, Not recorded"
    configured = tmp_path / "mapping.yaml"
    configured.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main(["import-redcap", str(path), "--mapping", str(configured), "--database", url]) == 0
    err = capsys.readouterr().err
    for line in ("warning: redcap_export.csv: field crp: 'UNK' is a Missing Data Code (Unknown) in 1 row(s) "
                 "(records 6): read as blank",
                 "warning: redcap_export.csv: field odi: 'NASK' is a Missing Data Code (Not asked) in 1 row(s) "
                 "(records 4): read as blank",
                 "warning: redcap_export.csv: field ta_l_grade: '-999' is a Missing Data Code (Not recorded) in 1 "
                 "row(s) (records 5): read as blank",
                 "warning: redcap_export.csv: field yob: 'UNK' is a Missing Data Code (Unknown) in 1 row(s) "
                 "(records 3): read as blank"):
        assert line in err, err
    stored = load_records(get_engine(url))
    assert pd.isna(stored.patients.set_index("patient_id").loc["P00003", "birth_year"])
    assert len(stored.strength) == len(demo_records().strength) - 1
    # A checkbox's Missing Data Code column (REDCap adds one per code, lower case): blank, then required.
    surgery = row(frame, "7", "surgery")
    frame["surg_levels___unk"] = frame["surg_levels___1"].where(frame["surg_levels___1"].isna(), "0")
    frame.loc[surgery, [f"surg_levels___{i}" for i in range(1, 6)]] = "0"
    frame.loc[surgery, "surg_levels___unk"] = "1"
    records, report = export_to_records(frame, load_mapping(configured))
    assert "redcap_export.csv: field surg_levels: 'UNK' is a Missing Data Code (Unknown) in 1 row(s) (records 7): " \
           "read as blank" in report.warning_lines()
    assert report.error_lines() == ["redcap_export.csv: record 7, field surg_levels___* [follow_up_arm_1, "
                                    "surgery #1]: is missing (required)"]


def test_a_ticked_checkbox_choice_outside_the_mapping_is_named(export, mapping, tmp_path: Path, capsys):
    frame = export.copy()
    frame["surg_levels___6"] = frame["surg_levels___5"].where(frame["surg_levels___5"].isna(), "0")
    frame["surg_levels___7"] = frame["surg_levels___6"]
    surgery = row(frame, "9", "surgery")
    frame.loc[surgery, "surg_levels___6"] = "1"
    records, report = export_to_records(frame, mapping)
    assert records is None
    assert report.error_lines() == [
        "redcap_export.csv: record 9, field surg_levels___6 [follow_up_arm_1, surgery #1]: '6' is a ticked choice of "
        "checkbox surg_levels that files.surgeries.columns.levels.codes in mapping.yaml does not map (1, 2, 3, 4, "
        "5): add it there, or untick it in REDCap"]
    assert report.warning_lines() == [
        "redcap_export.csv: 'surg_levels___7' is choice '7' of checkbox surg_levels, not in "
        "files.surgeries.columns.levels.codes of mapping.yaml; never ticked in this export"]
    path = tmp_path / "redcap_export.csv"
    frame.to_csv(path, index=False)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["import-redcap", str(path), "--mapping", str(MAPPING), "--database", url]) == 2
    assert "1 error(s): nothing was stored." in capsys.readouterr().err
    assert counts(get_engine(url)) == 0
