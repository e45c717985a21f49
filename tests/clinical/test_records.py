"""Records format v1: every error class with its exact message, all at once; CSV and workbook agree."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from dashboard.clinical.mrc import MUSCLE_ROOTS, format_mrc, parse_mrc
from dashboard.clinical.records.validate import validate

TODAY = date(2026, 11, 1)
GOOD = {
    "patients.csv": "patient_id,name,mrn,birth_year,sex,diabetes,smoker,surgeon\n"
                    "P1,Ann Example,MRN0000001,1960,F,yes,no,Dr A\n"
                    "P2,,,1971,M,,N,Dr B\n",
    "surgeries.csv": "patient_id,surgery_date,procedure,levels,instrumented,revision,deficit_onset_date\n"
                     "P1,2026-01-10,TLIF,L4-L5,yes,no,2025-12-01\n"
                     "P2,2026-02-01,decompression,L3-L4;L4-L5,no,,\n",
    "strength.csv": "patient_id,exam_date,muscle,side,mrc\n"
                    "P1,2026-01-08,ankle_dorsiflexion,R,3\n"
                    "P1,2026-02-20,ankle_dorsiflexion,R,4+\n"
                    "P2,2026-01-30,great_toe_extension,L,4-\n"
                    "P2,2026-03-01,great_toe_extension,L,4.5\n",
    "visits.csv": "patient_id,visit_date,leg_pain_nrs,odi,radicular_pain,crp_mg_l,notes\n"
                  "P1,2026-02-20,3,30,no,4.5,Ann feels better\n",
}


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def errors_for(tmp_path: Path, **changes: str) -> list[str]:
    files = {**GOOD, **{f"{k}.csv": v for k, v in changes.items()}}
    records, report = validate(write(tmp_path / "records", files), today=TODAY)
    assert records is None
    return report.error_lines()


def test_valid_folder_gives_typed_records(tmp_path):
    records, report = validate(write(tmp_path, GOOD), today=TODAY)
    assert report.ok and report.warning_lines() == []
    assert records.strength["mrc"].round(2).tolist() == [3.0, 4.33, 3.67, 4.5]
    assert records.patients["diabetes"].tolist() == [True, pd.NA]
    assert records.patients["smoker"].tolist() == [False, False]
    assert records.surgeries["levels"].tolist() == ["L4-L5", "L3-L4;L4-L5"]
    assert records.surgeries["surgery_date"].iloc[0] == pd.Timestamp("2026-01-10")


def test_grades_parse_to_one_scale():
    assert parse_mrc(pd.Series(["0", "4-", "4", "4+", "5-", "5", "2.5", "5.5", "x", None])).round(2).tolist()[:7] \
        == [0.0, 3.67, 4.0, 4.33, 4.67, 5.0, 2.5]
    assert parse_mrc(pd.Series(["5.5", "x", "-1"])).isna().all()
    assert [format_mrc(v) for v in (11 / 3, 13 / 3, 14 / 3, 2.5, None)] == ["4-", "4+", "5-", "2.5", "—"]
    assert MUSCLE_ROOTS["great_toe_extension"] == "L5" and MUSCLE_ROOTS["ankle_plantarflexion"] == "S1"


def test_missing_file_and_column(tmp_path):
    folder = write(tmp_path / "r", {k: v for k, v in GOOD.items() if k != "surgeries.csv"})
    (folder / "strength.csv").write_text("patient_id,exam_date,muscle,side\nP1,2026-01-08,ankle_dorsiflexion,R\n")
    records, report = validate(folder, today=TODAY)
    assert records is None
    assert "surgeries.csv: is missing (required file)" in report.error_lines()
    assert "strength.csv:1: mrc: is missing (required column)" in report.error_lines()


def test_every_error_class_has_its_exact_message_and_all_are_reported(tmp_path):
    lines = errors_for(
        tmp_path,
        patients="patient_id,birth_year,sex,diabetes\nP1,1960,F,yes\nP1,1850,Q,maybe\nP2,1970,M,\n",
        surgeries="patient_id,surgery_date,procedure,levels,instrumented\nP1,2026-01-10,TLIF,L4-L5,yes\n"
                  "P9,2026-13-01,TLIF,L4-L5;T12-L1,perhaps\nP2,2027-01-01,TLIF,L5-S1,yes\n",
        strength="patient_id,exam_date,muscle,side,mrc\nP1,2026-01-08,ankle_dorsiflexion,R,3\n"
                 "P1,2026-01-08,ankle_dorsiflexion,R,4\nP1,2026-02-01,toe,X,7\nP1,08/02/2026,hip_flexion,L,4++\n"
                 "P7,2026-02-01,hip_flexion,L,5\n",
        visits="patient_id,visit_date,leg_pain_nrs,odi,fever,crp_mg_l\nP1,2026-02-01,11,101,hot,-3\n"
               "P1,2026-02-01,2,10,no,1\n",
    )
    assert lines == [
        "patients.csv:3: birth_year: '1850' is not a birth year (1900–2026)",
        "patients.csv:3: diabetes: 'maybe' is not a boolean (yes/no, true/false, y/n, 1/0)",
        "patients.csv:3: patient_id: 'P1' is a duplicate patient_id (first on line 2)",
        "patients.csv:3: sex: 'Q' is not a sex code (F, M, X)",
        "surgeries.csv:3: instrumented: 'perhaps' is not a boolean (yes/no, true/false, y/n, 1/0)",
        "surgeries.csv:3: levels: 'L4-L5;T12-L1' is not lumbar segments L1-L2 … L5-S1 separated by ';'",
        "surgeries.csv:3: patient_id: 'P9' is not a patient in patients.csv",
        "surgeries.csv:3: surgery_date: '2026-13-01' is not a date YYYY-MM-DD",
        "surgeries.csv:4: surgery_date: '2027-01-01' is in the future (today is 2026-11-01)",
        "strength.csv:3: mrc: '4' conflicts with line 2, which grades the same muscle, side and exam 3",
        "strength.csv:4: mrc: '7' is not an MRC grade (0–5, 4-, 4+, 5-)",
        "strength.csv:4: muscle: 'toe' is not a muscle code (hip_flexion, knee_extension, ankle_dorsiflexion, "
        "great_toe_extension, ankle_plantarflexion)",
        "strength.csv:4: side: 'X' is not a side code (L, R)",
        "strength.csv:5: exam_date: '08/02/2026' is not a date YYYY-MM-DD",
        "strength.csv:5: mrc: '4++' is not an MRC grade (0–5, 4-, 4+, 5-)",
        "strength.csv:6: patient_id: 'P7' is not a patient in patients.csv",
        "visits.csv:2: crp_mg_l: '-3' is not a CRP in mg/L (≥ 0)",
        "visits.csv:2: fever: 'hot' is not a boolean (yes/no, true/false, y/n, 1/0)",
        "visits.csv:2: leg_pain_nrs: '11' is not a pain score (0–10)",
        "visits.csv:2: odi: '101' is not an ODI score (0–100)",
        "visits.csv:3: visit_date: '2026-02-01' is a second visit for this patient on the same date "
        "(first on line 2)",
    ]


def test_exam_without_any_operation_and_onset_after_surgery(tmp_path):
    lines = errors_for(
        tmp_path,
        surgeries="patient_id,surgery_date,procedure,levels,instrumented,deficit_onset_date\n"
                  "P1,2026-01-10,TLIF,L4-L5,yes,2026-02-01\n",
        strength="patient_id,exam_date,muscle,side,mrc\nP2,2026-01-08,ankle_dorsiflexion,R,3\n",
    )
    assert lines == [
        "surgeries.csv:2: deficit_onset_date: '2026-02-01' is after the surgery_date of the same row",
        "strength.csv:2: exam_date: '2026-01-08' has no operation before or after it "
        "(the patient has no row in surgeries.csv)",
    ]


def test_missing_required_value(tmp_path):
    lines = errors_for(tmp_path, strength="patient_id,exam_date,muscle,side,mrc\nP1,2026-01-08,ankle_dorsiflexion,R,\n")
    assert lines == ["strength.csv:2: mrc: is missing (required)"]


def test_extra_columns_and_identical_repeats_are_warnings_and_kept(tmp_path):
    files = {**GOOD, "patients.csv": GOOD["patients.csv"].replace("surgeon\n", "surgeon,Ward\n")
             .replace("Dr A\n", "Dr A,5B\n").replace("Dr B\n", "Dr B,\n"),
             "strength.csv": GOOD["strength.csv"] + "P1,2026-02-20,ankle_dorsiflexion,R,4+\n"}
    records, report = validate(write(tmp_path, files), today=TODAY)
    assert report.ok
    assert report.warning_lines() == [
        "patients.csv:1: ward: is not a column of the format; kept as an extra column",
        "strength.csv:6: mrc: '4+' repeats line 3 (same grade); kept once",
    ]
    assert records.patients["ward"].tolist() == ["5B", pd.NA]
    assert len(records.strength) == 4


def test_repeats_name_the_earliest_line_in_any_file_order(tmp_path):
    """Keys compare parsed values (a padded id or grade is the same one); the first line is the earliest."""
    lines = errors_for(
        tmp_path,
        strength="patient_id,exam_date,muscle,side,mrc\n"
                 "P2,2026-03-01,great_toe_extension,L,4\n"
                 "P1,2026-02-20,ankle_dorsiflexion,R,3\n"
                 " P1 ,2026-02-20,ankle_dorsiflexion,R,4\n"
                 "P2,2026-01-30,great_toe_extension,L,4-\n"
                 "P1,2026-02-20,ankle_dorsiflexion, R,2\n"
                 "P1,2026-02-20,ankle_dorsiflexion,R, 3\n",
        visits="patient_id,visit_date\nP1,2026-02-20\nP2,2026-02-20\nP1, 2026-02-20\n",
    )
    assert lines == [
        "strength.csv:4: mrc: '4' conflicts with line 3, which grades the same muscle, side and exam 3",
        "strength.csv:6: mrc: '2' conflicts with line 3, which grades the same muscle, side and exam 3",
        "visits.csv:4: visit_date: '2026-02-20' is a second visit for this patient on the same date "
        "(first on line 2)",
    ]


def test_headers_are_case_insensitive_and_blank_is_unknown(tmp_path):
    files = {**GOOD, "patients.csv": "Patient_ID,Diabetes\nP1, \nP2,Y\n"}
    records, report = validate(write(tmp_path, files), today=TODAY)
    assert report.ok, report.error_lines()
    assert records.patients["diabetes"].tolist() == [pd.NA, True]


def test_an_error_shows_the_value_as_written(tmp_path):
    visits = GOOD["visits.csv"].replace("P1,2026-02-20,3,30,no,4.5", "P1,2026-02-20,11.0,30,NO,+4.50")
    assert errors_for(tmp_path, visits=visits) == ["visits.csv:2: leg_pain_nrs: '11.0' is not a pain score (0–10)"]


def test_a_nul_byte_in_a_text_cell_refuses_the_file(tmp_path):
    notes = GOOD["visits.csv"].replace("Ann feels better", "Ann\x00feels better")
    assert errors_for(tmp_path, visits=notes) == [
        "visits.csv: is not a text file (a NUL byte on line 2: binary data, or UTF-16 text without a byte-order "
        "mark?): save it as UTF-8 (in Excel: 'CSV UTF-8 (comma delimited)')"]


def test_workbook_gives_the_same_records_as_csv(tmp_path):
    folder = write(tmp_path / "csv", GOOD)
    book = tmp_path / "records.xlsx"
    with pd.ExcelWriter(book) as writer:
        for name in GOOD:
            frame = pd.read_csv(folder / name, dtype=str, keep_default_na=False)
            if "surgery_date" in frame:  # a real date cell, as Excel users type it
                frame["surgery_date"] = pd.to_datetime(frame["surgery_date"])
            frame.to_excel(writer, sheet_name=name.removesuffix(".csv"), index=False)
    from_csv, _ = validate(folder, today=TODAY)
    from_book, report = validate(book, today=TODAY)
    assert report.ok, report.error_lines()
    for name, frame in from_csv.frames().items():
        pd.testing.assert_frame_equal(frame, from_book.frames()[name])


def test_workbook_errors_name_the_sheet(tmp_path):
    book = tmp_path / "clinic.xlsx"
    with pd.ExcelWriter(book) as writer:
        pd.DataFrame({"patient_id": ["P1"]}).to_excel(writer, sheet_name="patients", index=False)
    _, report = validate(book, today=TODAY)
    assert "clinic.xlsx[surgeries]: is missing (required file)" in report.error_lines()


def test_not_a_records_path(tmp_path):
    _, report = validate(tmp_path / "nowhere", today=TODAY)
    assert report.error_lines() == [f"{tmp_path / 'nowhere'}: not a records folder or an .xlsx workbook"]


@pytest.mark.parametrize("text", ["", "patient_id\n"])
def test_empty_files_are_errors_not_crashes(tmp_path, text):
    records, report = validate(write(tmp_path, {**GOOD, "strength.csv": text}), today=TODAY)
    assert records is None
    assert "strength.csv:1: patient_id: is missing (required column)" in report.error_lines() or \
        "strength.csv:1: mrc: is missing (required column)" in report.error_lines()


def test_sepsis_and_cauda_equina_sign_columns_are_checked_and_blank_is_unknown(tmp_path):
    """The optional visit columns of the format extension: exact messages, and a blank stays unknown."""
    lines = errors_for(
        tmp_path,
        visits="patient_id,visit_date,respiratory_rate,systolic_bp,altered_mentation,anal_tone_reduced,"
               "perianal_sensation_reduced\nP1,2026-02-01,120,high,confused,reduced,\n",
    )
    assert lines == [
        "visits.csv:2: altered_mentation: 'confused' is not a boolean (yes/no, true/false, y/n, 1/0)",
        "visits.csv:2: anal_tone_reduced: 'reduced' is not a boolean (yes/no, true/false, y/n, 1/0)",
        "visits.csv:2: respiratory_rate: '120' is not a respiratory rate in breaths/min (0–80)",
        "visits.csv:2: systolic_bp: 'high' is not a number",
    ]
    files = {**GOOD, "visits.csv": "patient_id,visit_date,respiratory_rate,systolic_bp,anal_tone_reduced\n"
                                   "P1,2026-02-20,24,,yes\nP2,2026-03-01,,95,\n"}
    records, report = validate(write(tmp_path / "good", files), today=TODAY)
    assert report.ok, report.error_lines()
    visits = records.visits.sort_values("patient_id")
    assert visits["anal_tone_reduced"].tolist() == [True, pd.NA]
    assert visits["systolic_bp"].isna().tolist() == [True, False]
    assert visits["perianal_sensation_reduced"].isna().all()  # an absent column is unknown, not "no"
