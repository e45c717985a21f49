"""Bounded input (issue 22, point 11): every limit checked while reading, with its exact message.

Each test here is named in docs/security.md, "Input limits".
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from datetime import date
from pathlib import Path

import openpyxl

from dashboard.clinical.records import limits
from dashboard.clinical.records.validate import validate
from tests.clinical.test_records import GOOD

TODAY = date(2026, 11, 1)
ROOT = Path(__file__).resolve().parents[2]
STRENGTH_HEADER = "patient_id,exam_date,muscle,side,mrc\n"


def files_with(**changes: str | bytes) -> dict[str, bytes]:
    """The good records as uploaded files (name → bytes), some replaced."""
    files = {**GOOD, **{f"{name}.csv": text for name, text in changes.items()}}
    return {name: text if isinstance(text, bytes) else text.encode("utf-8") for name, text in files.items()}


def errors(source) -> list[str]:  # noqa: ANN001
    records, report = validate(source, today=TODAY)
    assert records is None
    return report.error_lines()


def workbook(sheets: dict[str, list[list]], edit=None) -> bytes:  # noqa: ANN001
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    if edit:
        edit(book)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def good_sheets() -> dict[str, list[list]]:
    return {name.removesuffix(".csv"): [line.split(",") for line in text.splitlines()] for name, text in GOOD.items()}


# ------------------------------------------------------------------------------------------- CSV limits
def test_too_many_columns_are_refused_on_the_header():
    header = STRENGTH_HEADER.strip() + "," + ",".join(f"x{i}" for i in range(20_000))
    assert errors(files_with(strength=header + "\n")) == ["strength.csv:1: has 20,005 columns; the limit is 200"]


def test_too_many_rows_are_refused_while_reading(monkeypatch):
    monkeypatch.setenv(limits.MAX_ROWS_ENV, "3")
    rows = "".join(f"P1,2026-01-{day:02d},ankle_dorsiflexion,R,4\n" for day in range(1, 5))
    assert errors(files_with(strength=STRENGTH_HEADER + rows)) == [
        "strength.csv: has more than 3 rows; the limit is 3 per file (setting SPINE_DASHBOARD_MAX_ROWS)"]
    monkeypatch.setenv(limits.MAX_ROWS_ENV, "4")
    assert validate(files_with(strength=STRENGTH_HEADER + rows), today=TODAY)[1].ok


def test_a_cell_over_the_size_limit_is_an_error():
    visits = GOOD["visits.csv"].replace("Ann feels better", "x" * 10_001)
    assert errors(files_with(visits=visits)) == [
        "visits.csv:2: notes: holds 10,001 characters; the limit is 10,000 per cell"]
    assert validate(files_with(visits=GOOD["visits.csv"].replace("Ann feels better", "é" * 10_000)),
                    today=TODAY)[1].ok  # characters, not bytes


def test_an_unclosed_quote_that_would_swallow_the_file_names_the_line_it_opened():
    visits = (GOOD["visits.csv"].replace("Ann feels better", '"Ann feels better')
              + "".join(f"P1,2026-03-{day:02d},3,30,no,4.5,fine\n" for day in range(1, 20)))
    assert errors(files_with(visits=visits)) == [
        "visits.csv:2: has a quote opened on line 2 that is never closed: the rest of the file would be read as one "
        "value; close the quote, or remove it"]


def test_a_quote_closed_only_far_below_names_the_line_it_opened():
    lines = [f"P1,2026-03-{day:02d},3,30,no,4.5,fine" for day in range(1, 29)] * 3
    visits = (GOOD["visits.csv"] + 'P2,2026-02-21,3,30,no,4.5,"Dr B: see\n' + "\n".join(lines) + '" later\n')
    assert errors(files_with(visits=visits)) == [
        "visits.csv:3: notes: holds 84 line breaks in one value (the limit is 50): the quote opened on line 3 "
        "closes only on line 87; close it where the value ends"]


def test_quoted_line_breaks_and_a_quote_inside_a_value_are_fine():
    visits = GOOD["visits.csv"].replace("Ann feels better", '"Ann, 5"" incision\nfeels better"')
    records, report = validate(files_with(visits=visits), today=TODAY)
    assert report.ok, report.error_lines()
    assert records.visits["notes"].tolist() == ['Ann, 5" incision\nfeels better']
    visits = GOOD["visits.csv"].replace("Ann feels better", '5" incision')  # a quote inside an unquoted value
    records, report = validate(files_with(visits=visits), today=TODAY)
    assert report.ok and records.visits["notes"].tolist() == ['5" incision']


def test_a_nul_in_a_header_and_a_repeated_header_are_refused():
    assert errors(files_with(strength="patient_id,exam\x00date,muscle,side,mrc\n")) == [
        "strength.csv: is not a text file (a NUL byte on line 1: binary data, or UTF-16 text without a byte-order "
        "mark?): save it as UTF-8 (in Excel: 'CSV UTF-8 (comma delimited)')"]
    repeated = GOOD["strength.csv"].replace("side,mrc", "side,MRC,mrc").replace(",R,", ",R,4,")
    repeated = repeated.replace(",L,", ",L,4,")
    assert errors(files_with(strength=repeated)) == ["strength.csv:1: mrc: appears twice in the header"]


def test_a_control_character_in_a_workbook_header_is_refused():
    sheets = good_sheets()
    sheets["strength"][0][4] = "mrc\n"  # a line break in the header cell: it would name another column
    sheets["strength"][0].append("grade\tnote")
    assert errors({"book.xlsx": workbook(sheets)}) == [
        "book.xlsx[strength]:1: grade\\tnote: holds a control character (a NUL byte, a tab or a line break) in the "
        "header"]


def test_a_symlink_loop_for_an_optional_file_is_an_error_not_absent(tmp_path):
    for name, text in GOOD.items():
        if name != "visits.csv":
            (tmp_path / name).write_text(text)
    (tmp_path / "visits.csv").symlink_to(tmp_path / "visits.csv")
    assert errors(tmp_path) == [
        "visits.csv: cannot be opened (Too many levels of symbolic links): replace the link with the file, or "
        "remove it"]
    (tmp_path / "visits.csv").unlink()
    (tmp_path / "visits.csv").symlink_to(tmp_path / "gone.csv")
    assert errors(tmp_path) == [
        "visits.csv: is a link to a file that does not exist: replace the link with the file, or remove it"]


def test_a_million_empty_lines_print_a_bounded_number_of_lines():
    start = time.perf_counter()
    blank = validate(files_with(strength=GOOD["strength.csv"] + "\n" * 1_000_000), today=TODAY)[1]
    assert blank.ok  # empty lines are no records
    lines = errors(files_with(strength=STRENGTH_HEADER + ",,,,\n" * 1_000_000))
    assert time.perf_counter() - start < 60
    assert len(lines) == 5 * (limits.MAX_ERROR_LINES + 1)
    assert lines[:2] == ["strength.csv:2: exam_date: is missing (required)",
                         "strength.csv:2: mrc: is missing (required)"]
    assert lines[-5:] == [f"strength.csv: {column}: … and 999,000 more of this kind (is missing (required))"
                          for column in ("exam_date", "mrc", "muscle", "patient_id", "side")]
    assert validate(files_with(strength=STRENGTH_HEADER + ",,,,\n" * 3_000), today=TODAY)[1].error_count == 15_000


def test_identical_strength_rows_validate_fast_with_bounded_warnings():
    rows = "P1,2026-01-08,ankle_dorsiflexion,R,3\n" * 100_000
    start = time.perf_counter()
    records, report = validate(files_with(strength=STRENGTH_HEADER + rows), today=TODAY)
    assert time.perf_counter() - start < 10
    assert report.ok and len(records.strength) == 1
    assert report.warning_lines()[0] == "strength.csv:3: mrc: '3' repeats line 2 (same grade); kept once"
    assert report.warning_lines()[-1] == "strength.csv: mrc: … and 98,999 more of this kind (repeats line … (same " \
                                         "grade); kept once)"
    assert len(report.warning_lines()) == limits.MAX_ERROR_LINES + 1
    assert report.totals == {"warning": 99_999} and report.error_count == 0


# -------------------------------------------------------------------------------------------- workbooks
def test_a_zip_bomb_workbook_is_refused_before_it_is_opened():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bomb:
        bomb.writestr("xl/worksheets/sheet1.xml", b" " * (100 * limits.MB))
    assert len(out.getvalue()) < limits.MB // 4
    assert errors({"bomb.xlsx": out.getvalue()}) == [
        "bomb.xlsx: unpacks to 100 MB; the limit is 64 MB (larger records come as CSV files)"]


def test_a_hidden_sheet_never_wins_and_extra_sheets_are_named():
    sheets = good_sheets()
    sheets["Strength "] = [["patient_id", "exam_date", "muscle", "side", "mrc"], ["P1", "2026-01-08", "hip_flexion",
                                                                                 "L", "0"]]
    sheets["Notes"] = [["anything"]]

    def hide(book: openpyxl.Workbook) -> None:
        book["Strength "].sheet_state = "hidden"
        book["Notes"].sheet_state = "hidden"

    records, report = validate({"book.xlsx": workbook(sheets, hide)}, today=TODAY)
    assert records is None
    assert report.error_lines() == ["book.xlsx[strength]: is given by 2 sheets ('strength', 'Strength ' (hidden)): "
                                    "keep one and delete the others"]
    assert report.warning_lines() == ["book.xlsx[Notes]: is not a sheet of the format (a hidden sheet); ignored"]

    only_hidden = good_sheets()

    def hide_strength(book: openpyxl.Workbook) -> None:
        book["strength"].sheet_state = "hidden"

    assert errors({"book.xlsx": workbook(only_hidden, hide_strength)}) == [
        "book.xlsx[strength]: is a hidden sheet: unhide it in Excel if it holds the records, or delete it"]


def test_merged_cells_and_formulas_without_a_saved_value_are_errors():
    sheets = good_sheets()
    sheets["patients"][1][3] = "=1900+60"  # openpyxl saves formulas without a value, as some tools do

    def merge(book: openpyxl.Workbook) -> None:
        book["strength"].merge_cells("A2:A3")

    assert errors({"book.xlsx": workbook(sheets, merge)}) == [
        "book.xlsx[patients]:2: birth_year: '=1900+60' is a formula without a saved value: open the workbook in "
        "Excel and save it again, or paste the values",
        "book.xlsx[strength]:2: patient_id: 'A2:A3' are merged cells: unmerge them in Excel (a merge keeps its value "
        "in the first cell only)",
        "book.xlsx[strength]:3: patient_id: is missing (required)",
    ]


def test_a_cell_far_to_the_right_costs_nothing():
    sheets = good_sheets()

    def far(book: openpyxl.Workbook) -> None:
        for row in range(2, 2000):
            book["visits"].cell(row=row, column=16_000, value="x")

    start = time.perf_counter()
    records, report = validate({"book.xlsx": workbook(sheets, far)}, today=TODAY)
    assert time.perf_counter() - start < 30  # not 2,000 rows × 16,000 cells
    assert report.ok and len(records.visits) == 1  # cells with no header are not read: the rows are empty


def test_workbook_limits_on_columns_rows_and_cells(monkeypatch):
    sheets = good_sheets()
    sheets["visits"][0] += [f"x{i}" for i in range(300)]
    assert errors({"book.xlsx": workbook(sheets)}) == [
        "book.xlsx[visits]:1: has more than 200 columns; the limit is 200"]
    monkeypatch.setenv(limits.MAX_ROWS_ENV, "3")
    sheets = good_sheets()
    assert errors({"book.xlsx": workbook(sheets)}) == [
        "book.xlsx[strength]: has more than 3 rows; the limit is 3 per file (setting SPINE_DASHBOARD_MAX_ROWS)"]
    monkeypatch.delenv(limits.MAX_ROWS_ENV)
    sheets["visits"][1][6] = "y" * 10_001
    assert errors({"book.xlsx": workbook(sheets)}) == [
        "book.xlsx[visits]:2: notes: holds 10,001 characters; the limit is 10,000 per cell"]


def _row_xml(row: int, values: list[str]) -> str:
    return f'<row r="{row}">' + "".join(f'<c r="{"ABCDEFG"[column]}{row}" t="inlineStr"><is><t>{text}</t></is></c>'
                                        for column, text in enumerate(values)) + "</row>"


def _sheet_xml(rows: list[str], last_row: int | None = None) -> bytes:
    """A worksheet of five columns with its used range declared, as Excel writes it (`<dimension>`): without
    one, openpyxl reads the whole sheet once more just to find its size (a seventh of this validation's time).
    `last_row` declares a larger range (to reserve its digits while sizing a sheet)."""
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns='
            f'"http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
            f'<dimension ref="A1:E{last_row or len(rows)}"/><sheetData>{"".join(rows)}</sheetData>'
            '</worksheet>').encode()


def largest_workbook(path: Path) -> int:
    """A valid workbook just under the unpacked limit: its sheets written as XML directly (openpyxl would take
    minutes). Returns its strength rows."""
    patients = 6_000
    ids = [f"P{p:05d}" for p in range(patients)]
    template = zipfile.ZipFile(io.BytesIO(workbook({"patients": [["patient_id"]] + [[i] for i in ids],
                                                    "surgeries": [], "strength": []})))
    surgeries = [_row_xml(1, ["patient_id", "surgery_date", "procedure", "levels", "instrumented"])] + [
        _row_xml(r, [i, "2026-01-10", "TLIF", "L4-L5", "yes"]) for r, i in enumerate(ids, start=2)]
    budget = limits.MAX_WORKBOOK_UNPACKED_MB * limits.MB - sum(len(template.read(item)) for item in
                                                               template.namelist()) - len(_sheet_xml(surgeries))
    muscles = ("hip_flexion", "knee_extension", "ankle_dorsiflexion", "great_toe_extension", "ankle_plantarflexion")
    rows = [_row_xml(1, ["patient_id", "exam_date", "muscle", "side", "mrc"])]
    size = len(_sheet_xml(rows, last_row=patients * 200 + 1))
    for exam in range(patients * 20):  # each patient examined on 20 days, ten muscles each
        patient, day = divmod(exam, 20)
        block = [_row_xml(len(rows) + 1 + k, [ids[patient], f"2026-02-{1 + day:02d}", muscle, side, "4+"])
                 for k, (muscle, side) in enumerate((m, s) for m in muscles for s in "LR")]
        size += sum(len(row) for row in block)
        if size > budget:
            break
        rows += block
    members = {"xl/worksheets/sheet2.xml": _sheet_xml(surgeries), "xl/worksheets/sheet3.xml": _sheet_xml(rows)}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as book:
        for item in template.infolist():
            book.writestr(item.filename, members.get(item.filename, template.read(item.filename)))
    with zipfile.ZipFile(path) as book:
        assert sum(item.file_size for item in book.infolist()) <= limits.MAX_WORKBOOK_UNPACKED_MB * limits.MB
    return len(rows) - 1


_MEASURE = """
import json, sys, time
from datetime import date
from dashboard.clinical.records.validate import validate
start = time.perf_counter()
records, report = validate(sys.argv[1], today=date(2026, 11, 1))
# VmHWM is this program's own peak; ru_maxrss would also count the parent's size when it started us (Linux
# keeps the larger of the two across exec), so under a long pytest run it measured the test runner.
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"ok": report.ok, "errors": report.error_lines()[:3], "strength": len(records.strength) if records
                  is not None else 0, "seconds": time.perf_counter() - start, "peak_mb": peak_kb / 1024}))
"""


def test_the_largest_accepted_workbook_validates_under_one_gib(tmp_path):
    book = tmp_path / "largest.xlsx"
    rows = largest_workbook(book)
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(book)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    result = json.loads(done.stdout)
    assert result["ok"], result["errors"]
    assert result["strength"] == rows > 200_000
    assert result["peak_mb"] < 1024, result
    print(result)


def test_a_formula_with_a_saved_value_gives_that_value():
    sheets = good_sheets()
    sheets["patients"][1][3] = "=1900+60"
    saved = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(workbook(sheets))) as book, zipfile.ZipFile(saved, "w") as out:
        for item in book.infolist():  # as Excel saves it: the formula and its value
            out.writestr(item, book.read(item).replace(b"<f>1900+60</f><v />", b"<f>1900+60</f><v>1960</v>"))
    records, report = validate(saved.getvalue(), today=TODAY)  # a workbook's bytes alone
    assert report.ok, report.error_lines()
    assert records.patients["birth_year"].tolist()[0] == 1960


def test_uploaded_bytes_give_what_the_folder_gives(tmp_path):
    for name, text in GOOD.items():
        (tmp_path / name).write_text(text)
    from_folder, _ = validate(tmp_path, today=TODAY)
    from_bytes, report = validate(files_with(), today=TODAY)
    assert report.ok
    for name, frame in from_folder.frames().items():
        assert frame.equals(from_bytes.frames()[name]), name
    _, report = validate({"../../etc/patients.csv": b"patient_id\nP1\n"}, today=TODAY)  # a name, never a path
    assert report.error_lines() == ["surgeries.csv: is missing (required file)", "strength.csv: is missing "
                                    "(required file)"]
