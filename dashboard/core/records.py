"""Reading and validating a records folder or workbook (records format v1).

Every problem is collected, not just the first, as a row of a report naming file, line, column, value and
what was expected. Records are only returned when there is no error: invalid input is never half-used.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pandera

from dashboard.core import limits
from dashboard.core.fast import factorize, isin
from dashboard.core.grades import MUSCLE_ROOTS, format_mrc, parse_mrc
from dashboard.core.schema import (
    BOOLEAN_TEXT,
    EXPECTED_BY_KIND,
    FILES,
    LUMBAR_SEGMENTS,
    STRENGTH,
    FileSpec,
    value_schemas,
)

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


# ---------------------------------------------------------------------------------------------- reading
def read_raw(path: str | Path) -> tuple[dict[str, pd.DataFrame | None], dict[str, str]]:
    """Read a records folder or .xlsx workbook as text, blank cells as missing.

    Returns the frames by file name (None where the file is absent) and the label each file has in
    messages ('strength.csv' in a folder, 'book.xlsx[strength]' in a workbook).
    """
    path = Path(path)
    if path.is_dir():
        frames = {spec.name: _read_csv(path / spec.name) for spec in FILES}
        return frames, {spec.name: spec.name for spec in FILES}
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return _read_workbook(path)
    if path.suffix.lower() == ".csv" and path.exists():
        raise ValueError(f"{path}: give the folder that holds the records files, not one CSV file")
    raise FileNotFoundError(f"{path}: not a records folder or an .xlsx workbook")


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    size = path.stat().st_size
    _check_size(path.name, size)
    if size == 0:
        return pd.DataFrame()
    content = path.read_bytes()
    _check_text(path.name, content)
    try:
        frame = pd.read_csv(io.BytesIO(content), dtype=str, keep_default_na=False, na_values=[""], engine="pyarrow",
                            encoding="utf-8")
    except Exception as problem:  # pyarrow/pandas parse errors: a message naming the file, not a traceback
        raise RecordsFileError(path.name, _csv_problem(content, problem)) from None
    return _normalise_headers(frame)


class RecordsFileError(ValueError):
    """A file that cannot be read as records text at all: names the file and says what to do."""

    def __init__(self, file: str, message: str) -> None:
        super().__init__(f"{file}: {message}")
        self.file = file
        self.message = message


SAVE_AS_UTF8 = "save it as UTF-8 (in Excel: 'CSV UTF-8 (comma delimited)')"
_WIDE_BOMS = {b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe\x00\x00": "UTF-32", b"\xff\xfe": "UTF-16",
              b"\xfe\xff": "UTF-16"}


def _check_size(name: str, size: int) -> None:
    limit = limits.max_file_bytes()
    if size > limit:
        raise RecordsFileError(name, f"is {size / limits.MB:,.1f} MB; the limit is {limit // limits.MB} MB per file "
                                     f"(setting {limits.MAX_UPLOAD_MB_ENV})")


def _check_text(name: str, content: bytes) -> None:
    """Records files are UTF-8 text: say which encoding problem a file has, and where, before parsing."""
    for bom, encoding in _WIDE_BOMS.items():
        if content.startswith(bom):
            raise RecordsFileError(name, f"is {encoding} text, not UTF-8: {SAVE_AS_UTF8}")
    if content.startswith(b"PK\x03\x04"):
        raise RecordsFileError(name, "is a zip file (an .xlsx workbook?), not CSV text: upload a workbook as .xlsx")
    if b"\x00" in content:
        line = content.count(b"\n", 0, content.index(b"\x00")) + 1
        raise RecordsFileError(name, f"is not a text file (a NUL byte on line {line}: binary data, or UTF-16 text "
                                     f"without a byte-order mark?): {SAVE_AS_UTF8}")
    decoder = codecs.getincrementaldecoder("utf-8")()
    view, step = memoryview(content), 1 << 22
    for start in range(0, len(content), step):  # in slices: no second copy of a large file in memory
        try:
            decoder.decode(view[start:start + step], final=start + step >= len(content))
        except UnicodeDecodeError as problem:
            offset = start + problem.start
            line = content.count(b"\n", 0, offset) + 1
            raise RecordsFileError(name, f"is not UTF-8 text (line {line} has the byte 0x{content[offset]:02X}, as "
                                         f"in Latin-1 or Windows-1252 'é'): {SAVE_AS_UTF8}") from None


def _csv_problem(content: bytes, problem: Exception) -> str:
    """What is wrong with a file the CSV parser refused, with the line when the row lengths differ."""
    text = str(problem).strip().splitlines()[0] if str(problem).strip() else type(problem).__name__
    if "No columns to parse" in text:
        return "has no header line (the first line must name the columns)"
    reader = csv.reader(io.StringIO(content.decode("utf-8-sig"), newline=""))
    try:
        header = next(reader, [])
        for row in reader:
            if row and len(row) != len(header):
                return (f"line {reader.line_num} has {len(row)} values but the header has {len(header)} columns "
                        "(a value with a comma or a line break must be in double quotes)")
    except csv.Error as failure:
        return f"cannot be read as CSV near line {reader.line_num} ({failure})"
    return f"cannot be read as CSV ({text[:120]})"


def _read_workbook(path: Path) -> tuple[dict[str, pd.DataFrame | None], dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such workbook")
    _check_size(path.name, path.stat().st_size)
    try:
        sheets = pd.read_excel(path, sheet_name=None, dtype=str, keep_default_na=False, na_values=[""],
                               engine="openpyxl")
    except Exception as problem:  # zipfile, openpyxl and XML errors on a damaged or renamed file
        raise RecordsFileError(path.name, f"cannot be read as an .xlsx workbook ({type(problem).__name__}): save it "
                                          "again from Excel as .xlsx, or upload the CSV files") from None
    by_name = {name.strip().lower().removesuffix(".csv"): frame for name, frame in sheets.items()}
    frames, labels = {}, {}
    for spec in FILES:
        frame = by_name.get(spec.stem)
        if frame is not None:
            # Excel date cells arrive as 'YYYY-MM-DD 00:00:00'; the format wants the date alone.
            frame = frame.apply(lambda s: s.str.replace(r"^(\d{4}-\d{2}-\d{2}) 00:00:00$", r"\1", regex=True))
            frame = _normalise_headers(frame)
        frames[spec.name] = frame
        labels[spec.name] = f"{path.name}[{spec.stem}]"
    return frames, labels


def _normalise_headers(frame: pd.DataFrame) -> pd.DataFrame:
    """Lower-case, trimmed headers; values are trimmed where they are parsed (see _clean)."""
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    return frame


def _clean(text: pd.Series) -> pd.Series:
    """Trim blanks; a cell of only blanks is missing."""
    return text.astype("string").str.strip().replace("", pd.NA)


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


def _row_keys(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """One int64 per row identifying its natural key, so duplicate checks hash integers, not strings."""
    key = np.zeros(len(frame), dtype=np.int64)
    for column in columns:
        values = frame[column]
        if values.dtype.kind == "M":  # dates: days since 1970, +1 so that missing (NaT) is 0
            days = values.to_numpy(dtype="datetime64[D]").astype(np.int64)
            codes, size = np.where(values.isna().to_numpy(), -1, days - days.min(initial=0)), 400_000
        else:
            codes, uniques = factorize(values)
            size = len(uniques)
        key = key * (size + 1) + (codes + 1)
    return key


def _lines(index: pd.Index) -> np.ndarray:
    """Line numbers in the file: the header is line 1, the first record line 2."""
    return np.asarray(index) + 2


def _via_uniques(raw: pd.Series, parse: Callable[[pd.Series], pd.Series]) -> tuple[pd.Series, np.ndarray]:
    """Trim and parse the distinct values only (a cohort has few distinct dates and codes).

    Returns the parsed values and where the cell is missing (blank or only spaces).
    """
    codes, uniques = factorize(raw)
    cleaned = _clean(uniques)
    parsed = parse(cleaned) if len(uniques) else parse(raw.astype("string"))
    if not len(uniques):
        return parsed, np.ones(len(raw), dtype=bool)
    result = parsed.take(np.where(codes >= 0, codes, 0)).reset_index(drop=True)
    missing = (codes < 0) | cleaned.isna().to_numpy()[np.where(codes >= 0, codes, 0)]
    result[missing] = pd.NA if parsed.dtype.kind not in "fM" else np.nan
    result.index = raw.index
    return result, missing


def _parse_date(raw: pd.Series) -> pd.Series:
    return pd.to_datetime(raw, format="%Y-%m-%d", errors="coerce")


def _parse_boolean(raw: pd.Series) -> pd.Series:
    return raw.str.lower().map(BOOLEAN_TEXT).astype("boolean")


def _parse_integer(raw: pd.Series) -> pd.Series:
    number = pd.to_numeric(raw, errors="coerce")
    whole = number.where(np.isfinite(number) & (number == np.round(number)))
    return whole.astype("Float64").astype("Int64")


def _parse_number(raw: pd.Series) -> pd.Series:
    number = pd.to_numeric(raw, errors="coerce").astype(float)
    return number.where(np.isfinite(number))


def _parse_levels(raw: pd.Series) -> pd.Series:
    def one(text: str) -> str | None:
        parts = [p.strip().upper() for p in str(text).split(";") if p.strip()]
        if not parts or any(p not in LUMBAR_SEGMENTS for p in parts):
            return None
        return ";".join(sorted(set(parts), key=LUMBAR_SEGMENTS.index))

    return raw.map(one, na_action="ignore").astype("string")


PARSERS: dict[str, Callable[[pd.Series], pd.Series]] = {
    "code": lambda text: text,
    "date": _parse_date,
    "boolean": _parse_boolean,
    "integer": _parse_integer,
    "number": _parse_number,
    "mrc": parse_mrc,
    "levels": _parse_levels,
}


def _parse_file(spec: FileSpec, raw: pd.DataFrame, label: str, out: _Collector) -> pd.DataFrame:
    """Type every column of one file; report values that do not parse and required values missing."""
    typed = pd.DataFrame(index=raw.index)
    for column in spec.columns:
        if column.name not in raw.columns:
            absent = pd.Series(pd.NA, index=raw.index, dtype="string")
            typed[column.name] = absent if column.kind in ("text", "code") else PARSERS[column.kind](absent)
            continue
        text = raw[column.name]
        if column.kind == "text":
            typed[column.name] = _clean(text)
            missing = typed[column.name].isna().to_numpy()
        else:
            parsed, missing = _via_uniques(text, PARSERS[column.kind])
            bad = ~missing & parsed.isna().to_numpy()
            out.add("error", label, _lines(raw.index[bad]), column.name, text[bad].to_numpy(),
                    f"is not {EXPECTED_BY_KIND[column.kind]}")
            typed[column.name] = parsed
        if column.required:
            out.add("error", label, _lines(raw.index[missing]), column.name, None, "is missing (required)")
    extras = [c for c in raw.columns if c not in {col.name for col in spec.columns}]
    for name in extras:
        typed[name] = _clean(raw[name])
    return typed


def _check_values(raw: pd.DataFrame, typed: pd.DataFrame, label: str, schema: pandera.DataFrameSchema,
                  out: _Collector) -> None:
    """Codes and ranges (pandera); messages show the value as written in the file."""
    try:
        schema.validate(typed, lazy=True)
    except pandera.errors.SchemaErrors as failure:
        cases = failure.failure_cases
        cases = cases[cases["check"] != "not_nullable"]  # required values are reported by the parser
        for (column, message), group in cases.groupby(["column", "check"], sort=False):
            index = group["index"].astype(int).to_numpy()
            out.add("error", label, index + 2, column, raw.loc[index, column].to_numpy(), message)


def validate(path: str | Path, today: date | None = None) -> tuple[Records | None, ValidationReport]:
    """Read and validate a records folder or workbook; records only when there is no error."""
    try:
        raw, labels = read_raw(path)
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
    schemas = value_schemas(today)
    typed: dict[str, pd.DataFrame] = {}
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
        frame = frame.loc[:, ~frame.columns.duplicated()]
        for column in spec.columns:
            if column.required and column.name not in frame.columns and raw.get(spec.name) is not None:
                out.add("error", label, 1, column.name, None, "is missing (required column)")
        known = {c.name for c in spec.columns}
        extras[spec.stem] = [c for c in frame.columns if c not in known]
        for name in extras[spec.stem]:
            out.add("warning", label, 1, name, None, "is not a column of the format; kept as an extra column")
        typed[spec.name] = _parse_file(spec, frame, label, out)
        _check_values(frame, typed[spec.name], label, schemas[spec.name], out)
    strength_key = _row_keys(typed["strength.csv"], list(STRENGTH.key))
    _check_across_files(typed, labels, today, out, strength_key)
    report = out.report()
    if not report.ok:
        return None, report
    strength = typed["strength.csv"]
    repeat = pd.Series(strength_key).duplicated().to_numpy()
    strength = strength[~repeat]  # identical repeats: warned, kept once
    records = Records(
        patients=typed["patients.csv"].reset_index(drop=True),
        surgeries=typed["surgeries.csv"].reset_index(drop=True),
        strength=strength.reset_index(drop=True),
        visits=typed["visits.csv"].reset_index(drop=True),
        extra_columns=extras,
    )
    return records, report


def _check_across_files(typed: dict[str, pd.DataFrame], labels: dict[str, str], today: date,
                        out: _Collector, strength_key: np.ndarray) -> None:
    label = {name: labels.get(name, name) for name in typed}
    patients, surgeries = typed["patients.csv"], typed["surgeries.csv"]
    strength, visits = typed["strength.csv"], typed["visits.csv"]

    _check_duplicates(patients, ["patient_id"], label["patients.csv"], out,
                      "is a duplicate patient_id (first on line {first})")
    _check_duplicates(surgeries, ["patient_id", "surgery_date"], label["surgeries.csv"], out,
                      "is a second operation for this patient on the same date (first on line {first})",
                      shown="surgery_date")
    _check_duplicates(visits, ["patient_id", "visit_date"], label["visits.csv"], out,
                      "is a second visit for this patient on the same date (first on line {first})",
                      shown="visit_date")
    _check_strength_repeats(strength, label["strength.csv"], out, strength_key)

    for name, frame in (("surgeries.csv", surgeries), ("strength.csv", strength), ("visits.csv", visits)):
        unknown = frame["patient_id"].notna() & ~isin(frame["patient_id"], patients["patient_id"])
        out.add("error", label[name], _lines(frame.index[unknown]), "patient_id",
                frame.loc[unknown, "patient_id"].to_numpy(), "is not a patient in patients.csv")

    limit = pd.Timestamp(today)
    for name, column in (("surgeries.csv", "surgery_date"), ("surgeries.csv", "deficit_onset_date"),
                         ("strength.csv", "exam_date"), ("visits.csv", "visit_date")):
        frame = typed[name]
        future = frame[column] > limit
        out.add("error", label[name], _lines(frame.index[future]), column,
                frame.loc[future, column].dt.strftime("%Y-%m-%d").to_numpy(),
                f"is in the future (today is {today.isoformat()})")

    late_onset = surgeries["deficit_onset_date"] > surgeries["surgery_date"]
    out.add("error", label["surgeries.csv"], _lines(surgeries.index[late_onset]), "deficit_onset_date",
            surgeries.loc[late_onset, "deficit_onset_date"].dt.strftime("%Y-%m-%d").to_numpy(),
            "is after the surgery_date of the same row")

    orphan = isin(strength["patient_id"], patients["patient_id"]) & \
        ~isin(strength["patient_id"], surgeries["patient_id"]) & strength["exam_date"].notna()
    out.add("error", label["strength.csv"], _lines(strength.index[orphan]), "exam_date",
            strength.loc[orphan, "exam_date"].dt.strftime("%Y-%m-%d").to_numpy(),
            "has no operation before or after it (the patient has no row in surgeries.csv)")


def _check_duplicates(frame: pd.DataFrame, key: list[str], label: str, out: _Collector, message: str,
                      shown: str | None = None) -> None:
    complete = frame[key].notna().all(axis=1)
    repeated = frame[complete & pd.Series(_row_keys(frame, key), index=frame.index).duplicated(keep=False)]
    if repeated.empty:
        return
    first_line = repeated.groupby(key, sort=False)[key[0]].transform(lambda s: s.index.min() + 2)
    later = repeated.index != (first_line.to_numpy() - 2)
    rows = repeated[later]
    firsts = first_line[later].astype(int)
    for first, group in rows.groupby(firsts.to_numpy()):
        values = group[shown or key[0]]
        if values.dtype.kind == "M":
            values = values.dt.strftime("%Y-%m-%d")
        out.add("error", label, _lines(group.index), shown or key[0], values.to_numpy(),
                message.format(first=first))


def _check_strength_repeats(strength: pd.DataFrame, label: str, out: _Collector, row_key: np.ndarray) -> None:
    """The same muscle, side and exam twice: an error when the grades differ, a warning when equal."""
    key = list(STRENGTH.key)
    complete = strength[key].notna().all(axis=1) & strength["mrc"].notna()
    repeated = strength[complete & pd.Series(row_key, index=strength.index).duplicated(keep=False)]
    if repeated.empty:
        return
    first_index = repeated.groupby(key, sort=False)["mrc"].transform(lambda s: s.index.min())
    later = repeated[repeated.index != first_index.to_numpy()]
    first_grade = strength.loc[first_index[later.index], "mrc"].to_numpy()
    first_lines = first_index[later.index].to_numpy() + 2
    differs = ~np.isclose(later["mrc"].to_numpy(), first_grade)
    for severity, mask, text in (("error", differs, "conflicts with line {line}, which grades the same muscle, "
                                  "side and exam {grade}"),
                                 ("warning", ~differs, "repeats line {line} (same grade); kept once")):
        for line, grade, index, value in zip(first_lines[mask], first_grade[mask], later.index[mask],
                                             later["mrc"].to_numpy()[mask], strict=True):
            out.add(severity, label, index + 2, "mrc", format_mrc(value),
                    text.format(line=line, grade=format_mrc(grade)))


def root_of(muscles: pd.Series) -> pd.Series:
    """Nerve root of each muscle code."""
    return muscles.map(MUSCLE_ROOTS)
