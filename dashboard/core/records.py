"""Validating a records folder or workbook (records format v1).

Every problem is collected, not just the first, as a row of a report naming file, line, column, value and
what was expected. Records are only returned when there is no error: invalid input is never half-used.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pandera
import pyarrow as pa

from dashboard.core import identity
from dashboard.core.grades import MUSCLE_ROOTS, format_mrc
from dashboard.core.joins import one_array, remember_codes, rows_in
from dashboard.core.parsed_columns import Parsed, absent_column, key_codes, parse_column, repeated_rows
from dashboard.core.reading import RecordsFileError, read_raw
from dashboard.core.schema import (
    EXPECTED_BY_KIND,
    FILES,
    PATIENTS,
    STRENGTH,
    FileSpec,
    value_schemas,
)
from dashboard.core.workers import workers

ISSUE_COLUMNS = ["severity", "file", "line", "column", "value", "message"]
MAX_VALUE_CHARS = 60


class RecordsError(Exception):
    """Input that cannot be used; carries the full report."""

    def __init__(self, report: ValidationReport):
        super().__init__("\n".join(report.error_lines()))
        self.report = report


@dataclass
class ValidationReport:
    """All errors and warnings of one input, one row each."""

    issues: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ISSUE_COLUMNS))

    @property
    def errors(self) -> pd.DataFrame:
        return self.issues[self.issues["severity"] == "error"]

    @property
    def warnings(self) -> pd.DataFrame:
        return self.issues[self.issues["severity"] == "warning"]

    @property
    def ok(self) -> bool:
        return self.errors.empty

    def error_lines(self) -> list[str]:
        return _format_lines(self.errors)

    def warning_lines(self) -> list[str]:
        return _format_lines(self.warnings)


def _format_lines(issues: pd.DataFrame) -> list[str]:
    lines = []
    for row in issues.itertuples(index=False):
        where = row.file if pd.isna(row.line) else f"{row.file}:{int(row.line)}"
        column = "" if pd.isna(row.column) or not row.column else f" {row.column}:"
        value = "" if pd.isna(row.value) else f" '{row.value}'"
        lines.append(f"{where}:{column}{value} {row.message}")
    return lines


@dataclass
class Records:
    """Typed, validated records: one frame per file, columns as in the format, extra columns kept."""

    patients: pd.DataFrame
    surgeries: pd.DataFrame
    strength: pd.DataFrame
    visits: pd.DataFrame
    extra_columns: dict[str, list[str]] = field(default_factory=dict)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"patients": self.patients, "surgeries": self.surgeries, "strength": self.strength,
                "visits": self.visits}


# ------------------------------------------------------------------------------------------- validation
class _Collector:
    def __init__(self) -> None:
        self.parts: list[pd.DataFrame] = []

    def add(self, severity: str, file: str, lines, column, values, message) -> None:
        if isinstance(lines, (np.ndarray, list, pd.Index)):
            part = pd.DataFrame({"line": np.asarray(lines, dtype=float), "value": values})
        else:
            part = pd.DataFrame({"line": [lines], "value": [values]}, dtype=object)
        if part.empty:
            return
        part["value"] = part["value"].map(_shown_value)
        part.insert(0, "severity", severity)
        part.insert(1, "file", file)
        part.insert(3, "column", column)
        part["message"] = message
        self.parts.append(part[ISSUE_COLUMNS])

    def report(self) -> ValidationReport:
        if not self.parts:
            return ValidationReport()
        issues = pd.concat(self.parts, ignore_index=True)
        order = {spec.name: i for i, spec in enumerate(FILES)}
        issues["_file_order"] = issues["file"].map(lambda f: next(
            (i for name, i in order.items() if f.endswith(name) or f.endswith(f"[{name[:-4]}]")), 99))
        issues = issues.sort_values(["_file_order", "line", "column"], na_position="first", kind="stable")
        return ValidationReport(issues.drop(columns="_file_order").reset_index(drop=True))


def _shown_value(value) -> object:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return pd.NA
    text = str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _lines(positions: np.ndarray | pd.Index) -> np.ndarray:
    """Line numbers in the file: the header is line 1, the first record line 2."""
    return np.asarray(positions) + 2


#: Columns at least this long are parsed by the workers.
_LARGE_COLUMN = 200_000


@dataclass
class _Started:
    """The work handed to the workers: each large file's columns, and the rows that repeat a key in it."""

    columns: dict[tuple[str, str], Future] = field(default_factory=dict)  # by (file, column)
    repeats: dict[str, Future] = field(default_factory=dict)  # by file: what `repeated_rows` gives, or None


def _start_large_files(frames: dict[str, pd.DataFrame]) -> _Started:
    """Hand the large files to the workers, to be parsed while the small files are checked."""
    started, pool = _Started(), workers()
    for spec in FILES:
        frame = frames[spec.name]
        if len(frame) < _LARGE_COLUMN:
            continue
        for column in spec.columns:
            if column.name in frame.columns:
                started.columns[(spec.name, column.name)] = pool.submit(
                    parse_column, frame[column.name], column.kind, column.name in spec.key)
        if all((spec.name, name) in started.columns for name in spec.key):
            started.repeats[spec.name] = pool.submit(
                _repeats_once_parsed, [started.columns[(spec.name, name)] for name in spec.key])
    return started


def _repeats_once_parsed(key_columns: list[Future]) -> tuple[np.ndarray, np.ndarray] | None:
    """`repeated_rows` of a file's key once its columns are parsed; None when one was parsed in the calling thread.

    Queued after those columns, so when a worker takes it each of them has begun (or been taken back by the
    calling thread): waiting for them cannot hold up the queue."""
    try:
        columns = [column.result() for column in key_columns]
    except CancelledError:
        return None
    return repeated_rows(key_codes(columns))


def _in_checking_order(frames: dict[str, pd.DataFrame]) -> tuple[list[FileSpec], list[FileSpec]]:
    """The files in two rounds: patients.csv and the small files, then the large ones (their columns are being
    parsed by the workers meanwhile)."""
    small = [spec for spec in FILES if spec is PATIENTS or len(frames[spec.name]) < _LARGE_COLUMN]
    return small, [spec for spec in FILES if spec not in small]


def _parse_file(spec: FileSpec, raw: pd.DataFrame, label: str, out: _Collector,
                started: dict[tuple[str, str], Future], patient_ids: pd.Series | None = None
                ) -> tuple[pd.DataFrame, dict[str, Parsed]]:
    """Type every column of one file; report values that do not parse and required values missing.

    `patient_ids`: patients.csv's, which the file's patient_id column probably lists in the same order."""
    parsed: dict[str, Parsed] = {}
    for column in spec.columns:
        if column.name not in raw.columns:
            parsed[column.name] = absent_column(column.kind, raw.index)
            continue
        work = started.get((spec.name, column.name))
        if work is not None and not work.cancel():  # running or done; one not begun yet is parsed here
            one = parsed[column.name] = work.result()
        else:
            one = parsed[column.name] = parse_column(raw[column.name], column.kind, column.name in spec.key,
                                                     patient_ids if column.name == "patient_id" else None)
        if one.bad.any():
            out.add("error", label, _lines(np.flatnonzero(one.bad)), column.name, raw[column.name][one.bad].to_numpy(),
                    f"is not {EXPECTED_BY_KIND[column.kind]}")
        if column.required and one.missing.any():
            out.add("error", label, _lines(np.flatnonzero(one.missing)), column.name, None, "is missing (required)")
    for name in (c for c in raw.columns if c not in {col.name for col in spec.columns}):
        parsed[name] = parse_column(raw[name], "text")  # extra columns: kept as trimmed text
    typed = pd.DataFrame({name: column.values for name, column in parsed.items()}, index=raw.index, copy=False)
    return typed, parsed


#: Joins a file's name and a column's in the name of that column in the one frame pandera checks.
_FILE_COLUMN = "\x1f"


@functools.lru_cache(maxsize=4)
def _files_schema(today: date) -> pandera.DataFrameSchema:
    """The files' value schemas as one, over columns named file + _FILE_COLUMN + column: one pandera run."""
    columns = {f"{file}{_FILE_COLUMN}{name}": copy.deepcopy(column)  # pandera renames the column it is given
               for file, schema in value_schemas(today).items() for name, column in schema.columns.items()}
    for column in columns.values():
        column.dtype = None  # the parser gave each column its type; pandera checks the values
    return pandera.DataFrameSchema(columns)


def _check_values(raws: dict[str, pd.DataFrame], column_of: Callable[[str, str], Parsed], labels: dict[str, str],
                  today: date, out: _Collector) -> None:
    """Codes and ranges (pandera) on every checked column's distinct values, all files in one frame (shorter
    columns padded); messages show the value as written in the file. `column_of(file, column)`: parsed."""
    schema = _files_schema(today)
    checked = [(name, *name.split(_FILE_COLUMN)) for name in schema.columns]
    checked = [(name, file, column) for name, file, column in checked if column in raws[file].columns]
    if not checked:
        return
    rows = max(len(column_of(file, column).uniques) for _, file, column in checked)
    distinct = pd.DataFrame({name: _padded(column_of(file, column).uniques, rows) for name, file, column in checked})
    try:
        schema.validate(distinct, lazy=True)
    except pandera.errors.SchemaErrors as failure:
        cases = failure.failure_cases
        cases = cases[cases["check"] != "not_nullable"]  # required values are reported by the parser
        for (name, message), group in cases.groupby(["column", "check"], sort=False):
            file, column = name.split(_FILE_COLUMN)
            one = column_of(file, column)
            failing = np.zeros(len(one.uniques), dtype=bool)
            at = group["index"].astype(int).to_numpy()
            failing[at[at < len(failing)]] = True  # the padding repeats a value already checked
            at_rows = one.rows_where(failing)
            out.add("error", labels.get(file, file), _lines(np.flatnonzero(at_rows)), column,
                    raws[file][column][at_rows].to_numpy(), message)


def _padded(uniques: pd.Series, rows: int) -> pd.Series:
    """Distinct values made `rows` long by repeating the last, so that padding never fails a check."""
    if len(uniques) in (0, rows):
        return uniques.reset_index(drop=True)
    return pd.Series(uniques.array.take(np.minimum(np.arange(rows), len(uniques) - 1)))


def validate(path: str | Path, today: date | None = None, *, typed: bool = True
             ) -> tuple[Records | None, ValidationReport]:
    """Read and validate a records folder or workbook; records only when there is no error.

    A folder is first read typed (fast, see `read_raw`); when that finds any error it is read again as text,
    so that every message shows the value as written in the file. `typed=False` reads as text at once: the
    same answer, slower (the tests hold the two routes equal).
    """
    records, report = _read_and_validate(path, today, typed=typed)
    if typed and not report.ok and Path(path).is_dir():
        records, report = _read_and_validate(path, today, typed=False)
    return records, report


def _read_and_validate(path: str | Path, today: date | None, typed: bool) -> tuple[Records | None, ValidationReport]:
    try:
        raw, labels = read_raw(path, typed=typed)
    except Exception as problem:  # every reading problem is a report row, never a traceback
        out = _Collector()
        if isinstance(problem, RecordsFileError):
            out.add("error", problem.file, pd.NA, "", None, problem.message)
        else:
            out.add("error", str(path), pd.NA, "", None, _plain_reason(problem))
        return None, out.report()
    try:
        return validate_frames(raw, labels, today)
    except Exception as problem:  # a bug on unforeseen input: still a report (the fuzz tests look for these)
        out = _Collector()
        out.add("error", Path(path).name, pd.NA, "", None, f"{INTERNAL_ERROR} ({type(problem).__name__})")
        return None, out.report()


#: Shown when validation itself failed on some input; the fuzz tests assert it never appears.
INTERNAL_ERROR = "could not be validated because of an internal error; nothing was stored — please report it"


def _plain_reason(problem: Exception) -> str:
    text = str(problem)
    return text.split(": ", 1)[1] if ": " in text and isinstance(problem, (FileNotFoundError, ValueError)) \
        else f"cannot be read ({type(problem).__name__}: {text})"


def validate_frames(raw: dict[str, pd.DataFrame | None], labels: dict[str, str],
                    today: date | None = None) -> tuple[Records | None, ValidationReport]:
    """Validate frames of text (as read from files or typed into a form)."""
    today = today or date.today()
    out = _Collector()
    raws, extras = _with_headers_checked(raw, labels, out)
    started = _start_large_files(raws)
    typed: dict[str, pd.DataFrame] = {}
    parsed: dict[str, dict[str, Parsed]] = {}
    patient_rows: dict[str, np.ndarray] = {}
    repeated: dict[str, np.ndarray] = {}  # rows whose key repeats an earlier row's (kept for strength only)

    def parse(specs: list[FileSpec]) -> None:
        for spec in specs:
            patient_ids = parsed[PATIENTS.name]["patient_id"].uniques if PATIENTS.name in parsed else None
            typed[spec.name], parsed[spec.name] = _parse_file(spec, raws[spec.name], labels.get(spec.name, spec.name),
                                                              out, started.columns, patient_ids)

    def check_rows(specs: list[FileSpec]) -> None:
        for spec in specs:
            found = started.repeats[spec.name].result() if spec.name in started.repeats else None
            patient_rows[spec.name], repeated[spec.name] = _check_rows(spec, typed, parsed, labels, today, out, found)

    def column_of(file: str, column: str) -> Parsed:  # a large file's columns: from the workers
        return parsed[file][column] if file in parsed else started.columns[(file, column)].result()

    small, large = _in_checking_order(raws)
    parse(small)
    _check_values(raws, column_of, labels, today, out)  # every file's checked columns in one pandera run
    check_rows(small)
    _check_identity(typed[PATIENTS.name], labels.get(PATIENTS.name, PATIENTS.name), out)
    parse(large)
    check_rows(large)
    _check_exams_have_operations(typed, parsed, patient_rows, labels, out)
    report = out.report()
    if not report.ok:
        return None, report
    repeats = repeated[STRENGTH.name]
    records = Records(
        patients=typed["patients.csv"],
        surgeries=typed["surgeries.csv"],
        strength=_without(typed["strength.csv"], repeats),  # identical repeats: kept once
        visits=typed["visits.csv"],
        extra_columns=extras,
    )
    _remember_key_codes(records, parsed, repeats, patient_rows)
    return records, report


def _with_headers_checked(raw: dict[str, pd.DataFrame | None], labels: dict[str, str], out: _Collector
                          ) -> tuple[dict[str, pd.DataFrame], dict[str, list[str]]]:
    """Every file's frame (an empty one for a missing file), its header checked; and each file's extra columns."""
    raws: dict[str, pd.DataFrame] = {}
    extras: dict[str, list[str]] = {}
    for spec in FILES:
        label = labels.get(spec.name, spec.name)
        frame = raw.get(spec.name)
        if frame is None:
            if spec.required:
                out.add("error", label, pd.NA, "", None, "is missing (required file)")
            frame = pd.DataFrame(columns=[c.name for c in spec.columns], dtype="string")
        duplicated_headers = frame.columns[frame.columns.duplicated()].unique()
        for name in duplicated_headers:
            out.add("error", label, 1, name, None, "appears twice in the header")
        if len(duplicated_headers) or not isinstance(frame.index, pd.RangeIndex) or frame.index.start != 0:
            frame = frame.loc[:, ~frame.columns.duplicated()].reset_index(drop=True)
        for column in spec.columns:
            if column.required and column.name not in frame.columns and raw.get(spec.name) is not None:
                out.add("error", label, 1, column.name, None, "is missing (required column)")
        known = {c.name for c in spec.columns}
        extras[spec.stem] = [c for c in frame.columns if c not in known]
        for name in extras[spec.stem]:
            out.add("warning", label, 1, name, None, "is not a column of the format; kept as an extra column")
        raws[spec.name] = frame
    return raws, extras


def _remember_key_codes(records: Records, parsed: dict[str, dict[str, Parsed]], repeats: np.ndarray,
                        patient_rows: dict[str, np.ndarray]) -> None:
    """Hand the codes of the text key columns (patient_id, muscle, side) on to whatever encodes them next.

    patient_id is coded the same way in every file, by the patient's place in patients.csv (`patient_rows`
    maps a file's distinct ids there), so that joining files on it later compares no text."""
    patient_ids = one_array(parsed["patients.csv"]["patient_id"].uniques).cast(pa.string())
    for spec in FILES:
        frame = records.frames()[spec.stem]
        kept = slice(None)  # all rows, but for the repeated exams left out
        if spec is STRENGTH and len(repeats):
            kept = np.ones(len(parsed[spec.name]["patient_id"].codes), dtype=bool)
            kept[repeats] = False
        for column in spec.columns:
            if column.kind in ("text", "code") and (column.name in spec.key or column.name == "patient_id"):
                one = parsed[spec.name][column.name]
                if column.name != "patient_id":
                    remember_codes(frame[column.name], one.codes[kept], one_array(one.uniques).cast(pa.string()))
                elif spec.name == "patients.csv":  # its own codes: the place in patients.csv
                    remember_codes(frame[column.name], one.codes, patient_ids)
                elif np.array_equal(patient_rows[spec.name], np.arange(len(patient_ids))):
                    remember_codes(frame[column.name], one.codes[kept], patient_ids)  # coded in patients' order
                else:
                    codes = np.append(patient_rows[spec.name], -1).astype(np.int32)[one.codes[kept]]
                    remember_codes(frame[column.name], codes, patient_ids)


def _check_identity(patients: pd.DataFrame, label: str, out: _Collector) -> None:
    """One id is one person: ids that read the same, mixed-script ids and one MRN under two ids are errors."""
    for column, problems in (("patient_id", identity.id_problems(patients["patient_id"])),
                             ("mrn", identity.mrn_problems(patients))):
        for position, message in problems:
            out.add("error", label, int(_lines(np.array([position]))[0]), column, patients[column].iloc[position],
                    message)


def _date_text(dates: pd.Series) -> np.ndarray:
    return dates.dt.strftime("%Y-%m-%d").to_numpy()


def _without(frame: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    return frame.drop(index=rows).reset_index(drop=True) if len(rows) else frame


#: What a row is told when its file's key repeats an earlier row's (strength: see _check_strength_repeats).
_REPEATED = {
    "patients.csv": "is a duplicate patient_id (first on line {first})",
    "surgeries.csv": "is a second operation for this patient on the same date (first on line {first})",
    "visits.csv": "is a second visit for this patient on the same date (first on line {first})",
}
#: The date columns that may not be after today, by file.
_NOT_AFTER_TODAY = {"surgeries.csv": ("surgery_date", "deficit_onset_date"), "strength.csv": ("exam_date",),
                    "visits.csv": ("visit_date",)}


def _check_rows(spec: FileSpec, typed: dict[str, pd.DataFrame], parsed: dict[str, dict[str, Parsed]],
                labels: dict[str, str], today: date, out: _Collector,
                found: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One file's keys, patients and dates (patients.csv checked before the others); `found`: the repeats of
    its key, when a worker has worked them out.

    Returns where each of the file's distinct patient ids is in patients.csv's (-1: not there), and the
    strength rows that repeat an earlier row."""
    frame, columns, label = typed[spec.name], parsed[spec.name], labels.get(spec.name, spec.name)
    if spec is STRENGTH:
        repeats = _check_strength_repeats(frame, columns, label, out, found)
    else:
        later, first = found or repeated_rows(key_codes([columns[column] for column in spec.key]))
        _report_repeats(frame, later, first, spec.key[-1], label, out, _REPEATED[spec.name])
        repeats = np.zeros(0, dtype=np.int64)

    ids = columns["patient_id"]
    if spec is PATIENTS:
        patient_rows = np.arange(len(ids.uniques))
    else:
        patient_rows = rows_in(one_array(ids.uniques), parsed[PATIENTS.name]["patient_id"].uniques) \
            if len(ids.uniques) else np.zeros(0, dtype=np.int64)
        unknown = ids.rows_where(patient_rows < 0)
        if unknown.any():
            out.add("error", label, _lines(np.flatnonzero(unknown)), "patient_id",
                    frame["patient_id"][unknown].to_numpy(), "is not a patient in patients.csv")

    limit = np.datetime64(today)
    for column in _NOT_AFTER_TODAY.get(spec.name, ()):
        dates = columns[column]
        future = dates.rows_where(dates.uniques.to_numpy() > limit)
        if future.any():
            out.add("error", label, _lines(np.flatnonzero(future)), column,
                    _date_text(frame[column][future]), f"is in the future (today is {today.isoformat()})")

    if spec.name == "surgeries.csv":
        late_onset = frame["deficit_onset_date"].to_numpy() > frame["surgery_date"].to_numpy()  # NaT: False
        if late_onset.any():
            out.add("error", label, _lines(np.flatnonzero(late_onset)), "deficit_onset_date",
                    _date_text(frame["deficit_onset_date"][late_onset]), "is after the surgery_date of the same row")
    return patient_rows, repeats


def _check_exams_have_operations(typed: dict[str, pd.DataFrame], parsed: dict[str, dict[str, Parsed]],
                                 patient_rows: dict[str, np.ndarray], labels: dict[str, str], out: _Collector) -> None:
    """A strength exam of a known patient with no row in surgeries.csv has no operation to be measured from."""
    operated = np.zeros(len(parsed[PATIENTS.name]["patient_id"].uniques) + 1, dtype=bool)  # the last: not there
    operated[patient_rows["surgeries.csv"]] = True
    examined = patient_rows["strength.csv"]
    orphan = parsed["strength.csv"]["patient_id"].rows_where((examined >= 0) & ~operated[examined]) & \
        ~parsed["strength.csv"]["exam_date"].missing
    if orphan.any():
        out.add("error", labels.get("strength.csv", "strength.csv"), _lines(np.flatnonzero(orphan)), "exam_date",
                _date_text(typed["strength.csv"]["exam_date"][orphan]),
                "has no operation before or after it (the patient has no row in surgeries.csv)")


def _report_repeats(frame: pd.DataFrame, later: np.ndarray, first: np.ndarray, shown: str, label: str,
                    out: _Collector, message: str) -> None:
    """One error per repeating row, grouped by the line it repeats."""
    if not len(later):
        return
    values = frame[shown]
    values = _date_text(values) if values.dtype.kind == "M" else values.to_numpy()
    for first_row in np.unique(first):
        rows = later[first == first_row]
        out.add("error", label, _lines(rows), shown, values[rows],
                message.format(first=int(first_row) + 2))


def _check_strength_repeats(strength: pd.DataFrame, parsed: dict[str, Parsed], label: str, out: _Collector,
                            found: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The same muscle, side and exam twice: an error when the grades differ, a warning when equal; rows with
    no grade take no part (`found`, the repeats of the key alone, holds when every row has one).

    Returns the rows that repeat an earlier one (to keep each exam once when the grades agree).
    """
    graded = parsed["mrc"].codes >= 0
    if found is None or not graded.all():
        key = key_codes([parsed[column] for column in STRENGTH.key])
        key[~graded] = -1
        found = repeated_rows(key)
    later, first = found
    if not len(later):
        return later
    grades = strength["mrc"].to_numpy()
    differs = ~np.isclose(grades[later], grades[first])
    for severity, mask, text in (("error", differs, "conflicts with line {line}, which grades the same muscle, "
                                  "side and exam {grade}"),
                                 ("warning", ~differs, "repeats line {line} (same grade); kept once")):
        for row, first_row in zip(later[mask], first[mask], strict=True):
            out.add(severity, label, row + 2, "mrc", format_mrc(grades[row]),
                    text.format(line=first_row + 2, grade=format_mrc(grades[first_row])))
    return later


def root_of(muscles: pd.Series) -> pd.Series:
    """Nerve root of each muscle code."""
    return muscles.map(MUSCLE_ROOTS)
