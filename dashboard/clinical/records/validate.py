"""Validating a records folder or workbook (records format v1).

Every problem is collected, not just the first, as a row of a report naming file, line, column, value and
what was expected. Records are only returned when there is no error: invalid input is never half-used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from dashboard.clinical.frames import one_array, rows_in
from dashboard.clinical.mrc import format_mrc
from dashboard.clinical.records import identity, limits
from dashboard.clinical.records.format import (
    EXPECTED_BY_KIND,
    FILES,
    PATIENTS,
    STRENGTH,
    FileSpec,
)
from dashboard.clinical.records.parse import Parsed, absent_column, key_codes, parse_column, repeated_rows
from dashboard.clinical.records.read import RecordsFileError, Source, read_raw

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
    #: Errors and warnings in all, by severity, with those left out of `issues` (by default: those listed).
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> pd.DataFrame:
        return self.issues[self.issues["severity"] == "error"]

    @property
    def warnings(self) -> pd.DataFrame:
        return self.issues[self.issues["severity"] == "warning"]

    @property
    def error_count(self) -> int:
        """Errors in all, also those past the first MAX_ERROR_LINES of a kind (listed as one count line)."""
        return self.totals.get("error", len(self.errors))

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


class RecordsConstructionError(TypeError):
    """`Records(...)` called by hand: records come only from validation or the store's loader."""


#: Why `Records(...)` is refused, and what to call instead.
NOT_BY_HAND = ("Records cannot be made by hand: they come only from validation (records.validate.validate "
               "or validate_frames) or from the store's loader (dashboard.store.loader.load_records), so every "
               "Records holds checked values; narrow valid records with Records.narrowed(...)")


class _Route:
    """The private construction token: how a Records came about (validation, the store's loader, narrowing)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<made by {self.name}>"


_VALIDATION, _STORE, _NARROWED = _Route("validation"), _Route("the store's loader"), _Route("narrowing")


@dataclass(frozen=True, init=False)
class Records:
    """Typed, validated records: one frame per file, columns as in the format, extra columns kept.

    Made only by validation (`validate`, `validate_frames`) or the store's loader (`Records.from_store`, called
    by `dashboard.store.loader.load_records`); `Records(...)` raises RecordsConstructionError, so code that
    receives Records may rely on their values having been checked. `narrowed` keeps some rows of valid records
    (a patient, a day's view); a pickled copy is the same records. Frozen: a frame is never swapped afterwards.
    `tests/clinical/test_architecture.py` checks that `from_store` is called by the loader alone.
    """

    patients: pd.DataFrame
    surgeries: pd.DataFrame
    strength: pd.DataFrame
    visits: pd.DataFrame
    extra_columns: dict[str, list[str]] = field(default_factory=dict)

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RecordsConstructionError(NOT_BY_HAND)

    @classmethod
    def _made(cls, route: _Route, frames: Mapping[str, pd.DataFrame], extra_columns: dict[str, list[str]]
              ) -> Records:
        """The one place a Records instance is created; `route` is the private token of records.py."""
        if not isinstance(route, _Route):
            raise RecordsConstructionError(NOT_BY_HAND)
        records = object.__new__(cls)
        for name in ("patients", "surgeries", "strength", "visits"):
            object.__setattr__(records, name, frames[name])
        object.__setattr__(records, "extra_columns", extra_columns)
        return records

    @classmethod
    def from_store(cls, frames: Mapping[str, pd.DataFrame], extra_columns: dict[str, list[str]]) -> Records:
        """The store's loader only: rows that were validated on import, read back with the same dtypes."""
        return cls._made(_STORE, frames, extra_columns)

    def narrowed(self, keep: Mapping[str, np.ndarray | pd.Series], *, renumber: bool = False) -> Records:
        """These records with only some rows of some files (a boolean mask per file named in `keep`; the
        other files whole): rows of valid records, not new values, so no second validation is needed.

        A file whose mask keeps every row keeps the very same frame (no copy). `renumber`: the kept rows of
        the narrowed files are indexed 0, 1, 2, … as a freshly validated frame is.
        """
        frames = self.frames()
        unknown = sorted(set(keep) - set(frames))
        if unknown:
            raise KeyError(f"no such records file: {', '.join(unknown)}")
        for name, mask in keep.items():
            rows = np.asarray(mask, dtype=bool)
            if len(rows) != len(frames[name]):
                raise ValueError(f"{name}: a mask of {len(rows)} rows for {len(frames[name])} rows")
            if not rows.all():
                frames[name] = frames[name][rows]
            if renumber:
                frames[name] = frames[name].reset_index(drop=True)
        return Records._made(_NARROWED, frames, self.extra_columns)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"patients": self.patients, "surgeries": self.surgeries, "strength": self.strength,
                "visits": self.visits}


# ------------------------------------------------------------------------------------------- validation
class _Collector:
    """The report's rows as they are found; of each kind (file, column, message) the first MAX_ERROR_LINES
    are kept and the rest counted."""

    def __init__(self) -> None:
        self.parts: list[pd.DataFrame] = []
        self.shown: dict[tuple, int] = {}
        self.left_out: dict[tuple, int] = {}

    def add(self, severity: str, file: str, lines, column, values, message, kind: str | None = None) -> None:
        """`lines` and `values`: one each, or arrays of them; `message`: one text, or one per line (then
        `kind` names what they have in common)."""
        if isinstance(lines, (np.ndarray, list, pd.Index)):
            lines = np.asarray(lines, dtype=float)
            values = np.full(len(lines), None, dtype=object) if values is None else np.asarray(values, dtype=object)
        else:
            lines, values = np.array([np.nan if pd.isna(lines) else lines], dtype=float), np.array([values], object)
        key = (severity, file, column, kind or message)
        room = max(limits.MAX_ERROR_LINES - self.shown.get(key, 0), 0)
        if len(lines) > room:
            self.left_out[key] = self.left_out.get(key, 0) + len(lines) - room
            lines, values = lines[:room], values[:room]
            message = message if isinstance(message, str) else message[:room]
        if not len(lines):
            return
        self.shown[key] = self.shown.get(key, 0) + len(lines)
        part = pd.DataFrame({"severity": severity, "file": file, "line": lines, "column": column,
                             "value": pd.Series(values, dtype=object).map(_shown_value), "message": message})
        self.parts.append(part[ISSUE_COLUMNS])

    def report(self) -> ValidationReport:
        totals: dict[str, int] = {}
        for counts in (self.shown, self.left_out):
            for (severity, *_), count in counts.items():
                totals[severity] = totals.get(severity, 0) + count
        for (severity, file, column, kind), count in self.left_out.items():
            more = pd.DataFrame({"severity": [severity], "file": [file], "line": [np.inf], "column": [column],
                                 "value": [pd.NA], "message": [f"… and {count:,} more of this kind ({kind})"]})
            self.parts.append(more)
        if not self.parts:
            return ValidationReport()
        issues = pd.concat(self.parts, ignore_index=True)
        order = {spec.name: i for i, spec in enumerate(FILES)}
        issues["_file_order"] = issues["file"].map(lambda f: next(
            (i for name, i in order.items() if f.endswith(name) or f.endswith(f"[{name[:-4]}]")), 99))
        issues = issues.sort_values(["_file_order", "line", "column"], na_position="first", kind="stable")
        issues["line"] = issues["line"].replace(np.inf, np.nan)  # the counts: after the lines, on none
        return ValidationReport(issues.drop(columns="_file_order").reset_index(drop=True), totals)


def _shown_value(value) -> object:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return pd.NA
    text = str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _lines(positions: np.ndarray | pd.Index) -> np.ndarray:
    """Line numbers in the file: the header is line 1, the first record line 2."""
    return np.asarray(positions) + 2


def _parse_file(spec: FileSpec, raw: pd.DataFrame, label: str, out: _Collector
                ) -> tuple[pd.DataFrame, dict[str, Parsed]]:
    """Type every column of one file; report values that do not parse and required values missing."""
    parsed: dict[str, Parsed] = {}
    for column in spec.columns:
        if column.name not in raw.columns:
            parsed[column.name] = absent_column(column.kind, raw.index)
            continue
        one = parsed[column.name] = parse_column(raw[column.name], column.kind)
        if one.bad.any():
            out.add("error", label, _lines(np.flatnonzero(one.bad)), column.name, raw[column.name][one.bad].to_numpy(),
                    f"is not {EXPECTED_BY_KIND[column.kind]}")
        if column.required and one.missing.any():
            out.add("error", label, _lines(np.flatnonzero(one.missing)), column.name, None, "is missing (required)")
    for name in (c for c in raw.columns if c not in {col.name for col in spec.columns}):
        parsed[name] = parse_column(raw[name], "text")  # extra columns: kept as trimmed text
    typed = pd.DataFrame({name: column.values for name, column in parsed.items()}, index=raw.index, copy=False)
    return typed, parsed


def _check_values(spec: FileSpec, raw: pd.DataFrame, parsed: dict[str, Parsed], label: str, today: date,
                  out: _Collector) -> None:
    """Code lists and ranges (the format's `Allowed`), each column checked on its own distinct values; messages
    show the value as written in the file."""
    for column in spec.columns:
        if column.allowed is None or column.name not in raw.columns:
            continue
        one = parsed[column.name]
        outside = column.allowed.outside(one.uniques, today)
        if outside.any():
            at_rows = one.rows_where(outside)
            out.add("error", label, _lines(np.flatnonzero(at_rows)), column.name, raw[column.name][at_rows].to_numpy(),
                    column.allowed.message(today))


def validate(source: Source, today: date | None = None) -> tuple[Records | None, ValidationReport]:
    """Read and validate records; records only when there is no error.

    `source`: a records folder or .xlsx workbook (path), a workbook's bytes, or uploaded files as a mapping of
    file name → bytes ('patients.csv', … or one 'name.xlsx'). Never raises: every problem is a report row.
    """
    try:
        read = read_raw(source)
    except Exception as problem:  # every reading problem is a report row, never a traceback
        out = _Collector()
        if isinstance(problem, RecordsFileError):
            out.add("error", problem.file, problem.line if problem.line else pd.NA, problem.column, problem.value,
                    problem.message)
        else:
            out.add("error", _source_name(source, full=True), pd.NA, "", None, _plain_reason(problem))
        return None, out.report()
    try:
        return validate_frames(read.frames, read.labels, today, read.issues)
    except Exception as problem:  # a bug on unforeseen input: still a report (the fuzz tests look for these)
        out = _Collector()
        out.add("error", _source_name(source), pd.NA, "", None, f"{INTERNAL_ERROR} ({type(problem).__name__})")
        return None, out.report()


def _source_name(source: Source, full: bool = False) -> str:
    if isinstance(source, (bytes, bytearray)):
        return "workbook.xlsx"
    if isinstance(source, Mapping):
        return ", ".join(sorted(str(name) for name in source)) or "upload"
    return str(source) if full else Path(source).name


#: Shown when validation itself failed on some input; the fuzz tests assert it never appears.
INTERNAL_ERROR = "could not be validated because of an internal error; nothing was stored — please report it"


def _plain_reason(problem: Exception) -> str:
    text = str(problem)
    if isinstance(problem, (FileNotFoundError, ValueError)):
        return text.split(": ", 1)[1] if ": " in text else text
    return f"cannot be read ({type(problem).__name__}: {text})"


def validate_frames(raw: dict[str, pd.DataFrame | None], labels: dict[str, str], today: date | None = None,
                    found: list[tuple] = ()) -> tuple[Records | None, ValidationReport]:
    """Validate frames of text (as read from files or typed into a form); `found`: problems the reader found
    (severity, file, line, column, value, message)."""
    today = today or date.today()
    out = _Collector()
    for severity, file, line, column, value, message in found:
        out.add(severity, file, pd.NA if line is None else line, column, value, message)
    raws, extras = _with_headers_checked(raw, labels, out)
    typed: dict[str, pd.DataFrame] = {}
    parsed: dict[str, dict[str, Parsed]] = {}
    patient_rows: dict[str, np.ndarray] = {}
    repeats = np.zeros(0, dtype=np.int64)  # strength rows that repeat an earlier one, grade and all
    for spec in FILES:  # patients.csv first: the others are checked against it
        label = labels.get(spec.name, spec.name)
        typed[spec.name], parsed[spec.name] = _parse_file(spec, raws[spec.name], label, out)
        _check_values(spec, raws[spec.name], parsed[spec.name], label, today, out)
        patient_rows[spec.name], repeated = _check_rows(spec, typed, parsed, labels, today, out)
        if spec is STRENGTH:
            repeats = repeated
        if spec is PATIENTS:
            _check_identity(typed[PATIENTS.name], label, out)
    _check_exams_have_operations(typed, parsed, patient_rows, labels, out)
    report = out.report()
    if not report.ok:
        return None, report
    records = Records._made(_VALIDATION, {
        "patients": typed["patients.csv"],
        "surgeries": typed["surgeries.csv"],
        "strength": _without(typed["strength.csv"], repeats),  # identical repeats: kept once
        "visits": typed["visits.csv"],
    }, extras)
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
        frame = frame.set_axis([str(name) for name in frame.columns], axis=1)  # the caller's frame is left alone
        for name in frame.columns[frame.columns.duplicated()].unique():
            out.add("error", label, 1, name, None, "appears twice in the header")
        for name in (name for name in frame.columns if _CONTROL.search(name)):
            out.add("error", label, 1, name.encode("unicode_escape").decode(), None,
                    "holds a control character (a NUL byte, a tab or a line break) in the header")
        frame = frame.loc[:, ~frame.columns.duplicated()].reset_index(drop=True)
        for column in spec.columns:
            if column.required and column.name not in frame.columns and raw.get(spec.name) is not None:
                out.add("error", label, 1, column.name, None, "is missing (required column)")
        known = {c.name for c in spec.columns}
        extras[spec.stem] = [c for c in frame.columns if c not in known]
        for name in extras[spec.stem]:
            if not _CONTROL.search(name):
                out.add("warning", label, 1, name, None, "is not a column of the format; kept as an extra column")
        raws[spec.name] = frame
    return raws, extras


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
                labels: dict[str, str], today: date, out: _Collector) -> tuple[np.ndarray, np.ndarray]:
    """One file's keys, patients and dates (patients.csv checked before the others).

    Returns where each of the file's distinct patient ids is in patients.csv's (-1: not there), and the
    strength rows that repeat an earlier row."""
    frame, columns, label = typed[spec.name], parsed[spec.name], labels.get(spec.name, spec.name)
    if spec is STRENGTH:
        repeats = _check_strength_repeats(frame, columns, label, out)
    else:
        later, first = repeated_rows(key_codes([columns[column] for column in spec.key]))
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
    """One error per repeating row, naming the line it repeats."""
    if not len(later):
        return
    order = np.argsort(later, kind="stable")
    later, first = later[order], first[order]
    values = frame[shown]
    values = _date_text(values) if values.dtype.kind == "M" else values.to_numpy()
    out.add("error", label, _lines(later), shown, values[later],
            [message.format(first=line) for line in _lines(first).tolist()], kind=message.format(first="…"))


_CONFLICTS = "conflicts with line {line}, which grades the same muscle, side and exam {grade}"
_SAME_GRADE = "repeats line {line} (same grade); kept once"


def _check_strength_repeats(strength: pd.DataFrame, parsed: dict[str, Parsed], label: str, out: _Collector
                            ) -> np.ndarray:
    """The same muscle, side and exam twice: an error when the grades differ, a warning when equal; rows with
    no grade take no part.

    Returns the rows that repeat an earlier one (to keep each exam once when the grades agree).
    """
    key = key_codes([parsed[column] for column in STRENGTH.key])
    key[parsed["mrc"].codes < 0] = -1
    later, first = repeated_rows(key)
    if not len(later):
        return later
    order = np.argsort(later, kind="stable")
    later, first = later[order], first[order]
    grades = strength["mrc"].to_numpy()
    differs = ~np.isclose(grades[later], grades[first])
    shown = {code: format_mrc(grade) for code, grade in enumerate(parsed["mrc"].uniques.to_numpy())}
    codes = parsed["mrc"].codes
    for severity, mask, text in (("error", differs, _CONFLICTS), ("warning", ~differs, _SAME_GRADE)):
        rows, firsts = later[mask], first[mask]
        out.add(severity, label, _lines(rows), "mrc", [shown[code] for code in codes[rows].tolist()],
                [text.format(line=line, grade=shown[code])
                 for line, code in zip(_lines(firsts).tolist(), codes[firsts].tolist(), strict=True)],
                kind=text.format(line="…", grade="…"))
    return later
