"""Reading and validating a records folder or workbook (records format v1).

Every problem is collected, not just the first, as a row of a report naming file, line, column, value and
what was expected. Records are only returned when there is no error: invalid input is never half-used.
"""

from __future__ import annotations

import codecs
import copy
import csv
import functools
import io
import mmap
import os
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pandera
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from dashboard.core import limits
from dashboard.core.fast import factorize
from dashboard.core.grades import MUSCLE_ROOTS, format_mrc, parse_mrc
from dashboard.core.joins import codes_by_runs, one_array, remember_codes, rows_in, text_array
from dashboard.core.schema import (
    BOOLEAN_TEXT,
    EXPECTED_BY_KIND,
    FILES,
    LUMBAR_SEGMENTS,
    PATIENTS,
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
def read_raw(path: str | Path, typed: bool = True) -> tuple[dict[str, pd.DataFrame | None], dict[str, str]]:
    """Read a records folder or .xlsx workbook, blank cells as missing.

    With `typed`, Arrow's CSV reader parses the dates, booleans and numbers of a CSV file itself, which is far
    faster on a large cohort; a file it cannot type that way (a value it refuses, 'nan', odd headers) is
    read as text. Without it every column is text, so that a value that does not parse can be shown exactly
    as written. A folder's files are read at once, by the worker threads. Returns the frames by file name
    (None where the file is absent) and the label each file has in messages ('strength.csv' in a folder,
    'book.xlsx[strength]' in a workbook).
    """
    path = Path(path)
    if path.is_dir():  # the files at once: a small file is read by one thread, a large one's blocks by two
        read = _workers(os.getpid()).map(lambda spec: _read_csv(path / spec.name, spec if typed else None), FILES)
        return dict(zip((spec.name for spec in FILES), read, strict=True)), {spec.name: spec.name for spec in FILES}
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return _read_workbook(path)
    if path.suffix.lower() == ".csv" and path.exists():
        raise ValueError(f"{path}: give the folder that holds the records files, not one CSV file")
    raise FileNotFoundError(f"{path}: not a records folder or an .xlsx workbook")


def _read_csv(path: Path, spec: FileSpec | None) -> pd.DataFrame | None:
    if not path.exists():
        return None
    size = path.stat().st_size
    _check_size(path.name, size)
    if size == 0:
        return pd.DataFrame()
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as content:
        _check_start(path.name, content)  # mapped, not copied into Python
        header = _header(content) if spec is not None else None
    if header is not None:
        frame = _read_typed(path, spec, header)
        if frame is not None:
            return _normalise_headers(frame)
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as content:
        _check_no_nul(path.name, content)
    try:  # the parser checks UTF-8 itself; the slower check below only runs to explain a failure
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], engine="pyarrow", encoding="utf-8")
    except Exception as problem:  # pyarrow/pandas parse errors: a message naming the file, not a traceback
        content = path.read_bytes()
        _check_utf8(path.name, content)
        raise RecordsFileError(path.name, _csv_problem(content, str(problem))) from None
    return _normalise_headers(frame)


#: How Arrow's reader types each kind of column; anything else is read as text.
_ARROW_TYPES = {"date": pa.date32(), "boolean": pa.bool_(), "integer": pa.int64(), "number": pa.float64()}
_TEXT = pa.large_string()  # as pandas keeps text: no conversion when the frame is made
_PANDAS_TYPES = {pa.int64(): pd.Int64Dtype()}  # booleans: see _booleans
#: The column types of a typed read, by kind: a column of another type is parsed as text.
_READ_AS = {"date": lambda t: t.kind == "M", "boolean": lambda t: isinstance(t, pd.BooleanDtype),
            "integer": lambda t: isinstance(t, pd.Int64Dtype), "number": lambda t: t.kind == "f"}


def _header(content: mmap.mmap) -> list[str] | None:
    """The header's column names as written (None when the first line is not plain UTF-8 CSV)."""
    end = content.find(b"\n")
    try:
        first = bytes(content[: end if end >= 0 else len(content)]).decode("utf-8-sig")
        return next(csv.reader([first.rstrip("\r")]), None)
    except (UnicodeDecodeError, csv.Error):
        return None


def _read_typed(path: Path, spec: FileSpec, header: list[str]) -> pd.DataFrame | None:
    """The file typed by Arrow's reader, or None when it refuses a value (the text route then names it)."""
    if len(set(header)) < len(header) or not all(name.strip() for name in header):
        return None  # blank or repeated names: the text route names them as pandas does ('Unnamed: 2')
    kinds = {column.name: column.kind for column in spec.columns}
    types = {name: _ARROW_TYPES.get(kinds.get(name.strip().lower(), "text"), _TEXT) for name in header}
    options = pcsv.ConvertOptions(column_types=types, null_values=[""], strings_can_be_null=True,
                                  quoted_strings_can_be_null=True, true_values=_SPELLINGS[True],
                                  false_values=_SPELLINGS[False])
    try:
        table = pcsv.read_csv(path, convert_options=options)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
        return None
    if table.column_names != header or any(table.schema.field(i).type != types[name]
                                           for i, name in enumerate(header)):
        return None  # a header the first line did not show as it is (quoted line breaks): read as text
    if any(_holds_nul(table.column(i)) for i, name in enumerate(header) if types[name] == _TEXT):
        return None  # binary data, or UTF-16 without a byte-order mark: the text route says which line
    numbers = [table.column(i) for i, name in enumerate(header) if types[name] == pa.float64()]
    if any(pc.any(pc.invert(pc.is_finite(column))).as_py() for column in numbers):
        return None  # 'nan' or 'inf': not a number in the records format; the text route says so
    for i, name in enumerate(header):
        if types[name] == pa.date32():  # the records' date type, in one conversion
            table = table.set_column(i, name, table.column(i).cast(pa.timestamp(DATE_UNIT)))
    booleans = {name: _booleans(table.column(name)) for name in header if types[name] == pa.bool_()}
    others = table.drop_columns(list(booleans)).to_pandas(types_mapper=_PANDAS_TYPES.get, split_blocks=True)
    return pd.DataFrame({name: booleans[name] if name in booleans else others[name] for name in header}, copy=False)


def _booleans(column: pa.ChunkedArray) -> pd.arrays.BooleanArray:
    """An Arrow boolean column as pandas' nullable booleans, its bits unpacked at once (pandas converts chunk by
    chunk, ten times slower on a visits file)."""
    one = column.combine_chunks()
    if one.offset:  # not what the reader makes; pandas' own conversion takes it
        return pd.BooleanDtype().__from_arrow__(column)
    validity, bits = one.buffers()[:2]
    values = np.unpackbits(np.frombuffer(bits, np.uint8), count=len(one), bitorder="little").view(bool)
    missing = np.zeros(len(one), dtype=bool) if validity is None or not one.null_count else \
        ~np.unpackbits(np.frombuffer(validity, np.uint8), count=len(one), bitorder="little").view(bool)
    return pd.arrays.BooleanArray(values, missing)


def _holds_nul(text: pa.ChunkedArray) -> bool:
    """Whether a text column holds a NUL byte (other columns do not: a typed value with one does not parse)."""
    return any(len(data) and np.frombuffer(data, np.uint8).min() == 0
               for data in (chunk.buffers()[2] for chunk in text.chunks) if data is not None)


#: The boolean words the reader takes, as written in lower, upper or title case (others: the text route).
_SPELLINGS = {truth: [spelling for word, value in BOOLEAN_TEXT.items() if value is truth
                      for spelling in dict.fromkeys((word, word.upper(), word.capitalize()))]
              for truth in (True, False)}


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


def _check_start(name: str, content: bytes | mmap.mmap) -> None:
    """Say what a file is when its first bytes show it is not UTF-8 text (wide Unicode, a zip)."""
    start = content[:4]
    for bom, encoding in _WIDE_BOMS.items():
        if start.startswith(bom):
            raise RecordsFileError(name, f"is {encoding} text, not UTF-8: {SAVE_AS_UTF8}")
    if start.startswith(b"PK\x03\x04"):
        raise RecordsFileError(name, "is a zip file (an .xlsx workbook?), not CSV text: upload a workbook as .xlsx")


def _check_no_nul(name: str, content: bytes | mmap.mmap) -> None:
    """Say that a file is binary, or wide Unicode without a byte-order mark, when it holds a NUL byte."""
    nul = content.find(b"\x00")
    if nul >= 0:
        line = content[:nul].count(b"\n") + 1
        raise RecordsFileError(name, f"is not a text file (a NUL byte on line {line}: binary data, or UTF-16 text "
                                     f"without a byte-order mark?): {SAVE_AS_UTF8}")


def _check_utf8(name: str, content: bytes) -> None:
    """Where a file is not UTF-8: the line and byte, so that the user can find it."""
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


def _csv_problem(content: bytes, problem: str) -> str:
    """What is wrong with a file the CSV parser refused, with the line when the row lengths differ."""
    text = problem.strip().splitlines()[0] if problem.strip() else "no reason given"
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


def _lines(positions: np.ndarray | pd.Index) -> np.ndarray:
    """Line numbers in the file: the header is line 1, the first record line 2."""
    return np.asarray(positions) + 2


class _Parsed:
    """One column parsed through its distinct values: a cohort has few distinct dates, codes and grades.

    `codes` gives each row's position in `uniques` (the distinct parsed values, equal values once), -1 where
    the cell is missing or does not parse; `missing` marks blank cells and `bad` cells that do not parse.
    A column typed by the reader works its codes out only when a check asks for them.
    """

    def __init__(self, values: pd.Series, missing: np.ndarray, bad: np.ndarray,
                 encoding: tuple[np.ndarray, pd.Series] | Callable[[], tuple[np.ndarray, pd.Series]]) -> None:
        self.values, self.missing, self.bad = values, missing, bad
        self._encoding = encoding

    @cached_property
    def _encoded(self) -> tuple[np.ndarray, pd.Series]:
        return self._encoding() if callable(self._encoding) else self._encoding

    @property
    def codes(self) -> np.ndarray:
        return self._encoded[0]

    @property
    def uniques(self) -> pd.Series:
        return self._encoded[1]

    def rows_where(self, unique_mask: np.ndarray) -> np.ndarray:
        """Rows whose value is one of the distinct values selected by `unique_mask`."""
        unique_mask = np.asarray(unique_mask, dtype=bool)
        if not unique_mask.any():  # what a valid file gives: no row to look at
            return np.zeros(len(self.codes), dtype=bool)
        return (self.codes >= 0) & unique_mask[np.maximum(self.codes, 0)]


def _parse_column(raw: pd.Series, kind: str, keyed: bool = False, likely: pd.Series | None = None) -> _Parsed:
    """Parse a column; `keyed`: part of its file's key, so coded at once (in the thread that parses it);
    `likely`: the distinct values it probably holds, in order (patient ids: those of patients.csv)."""
    if kind in _READ_AS and _READ_AS[kind](raw.dtype):
        parsed = _typed_column(raw, kind)
    elif kind == "text" and not keyed and _as_written(raw):
        parsed = _Parsed(raw.astype("string"), raw.isna().to_numpy(), np.zeros(len(raw), dtype=bool),
                         lambda: factorize(raw))  # coded only if a check asks
    else:
        parsed = _parse_distinct(raw, kind, likely)
    if keyed:
        parsed.codes  # noqa: B018 - worked out and kept now
    return parsed


def _as_written(text: pd.Series) -> bool:
    """Whether a text column needs no trimming and has no blank cell: then it is its own parsed value."""
    values = text_array(text)
    return pc.min(pc.binary_length(values)).as_py() != 0 and \
        pc.all(pc.equal(pc.utf8_trim_whitespace(values), values)).as_py() is not False


def _parse_distinct(raw: pd.Series, kind: str, likely: pd.Series | None = None) -> _Parsed:
    """Trim and parse the distinct values only, then spread them back to the rows by integer codes."""
    in_runs = None if likely is None or not len(raw) else codes_by_runs(raw, one_array(likely))
    raw_codes, raw_uniques = factorize(raw) if in_runs is None else (in_runs, likely)
    if kind in ("text", "code") and _as_written(raw_uniques):  # every distinct text is a distinct valid value
        values = raw.astype("string")  # the column as read, no copy
        return _Parsed(values, raw_codes < 0, np.zeros(len(raw_codes), dtype=bool), (raw_codes, raw_uniques))
    cleaned = _clean(raw_uniques)
    blank = cleaned.isna().to_numpy()
    parsed = cleaned if kind in ("text", "code") else PARSERS[kind](cleaned)
    # Dates are numbered in time order, so a file sorted by patient and date gives increasing keys.
    canonical, uniques = pd.factorize(parsed.reset_index(drop=True), sort=kind == "date", use_na_sentinel=True)
    uniques = pd.Series(uniques, dtype=parsed.dtype)
    if np.array_equal(canonical, np.arange(len(canonical))):
        codes = raw_codes  # the codes as they are
    else:
        codes = np.append(canonical, -1)[raw_codes]  # raw code -1 (missing) picks the appended -1
    missing = (raw_codes < 0) | blank[raw_codes] if blank.any() else raw_codes < 0
    bad_unique = ~blank & (canonical < 0)
    bad = ~missing & (codes < 0) if bad_unique.any() else np.zeros(len(codes), dtype=bool)
    values = pd.Series(pd.api.extensions.take(uniques.array, codes, allow_fill=True), dtype=parsed.dtype)
    values.index = raw.index
    return _Parsed(values, missing, bad, (codes, uniques))


def _typed_column(values: pd.Series, kind: str) -> _Parsed:
    """A column Arrow's reader has typed (dates, booleans, numbers): every value parsed, none bad."""
    missing = values.isna().to_numpy()
    return _Parsed(values, missing, np.zeros(len(values), dtype=bool),
                   lambda: _days_encoding(values, missing) if kind == "date" else factorize(values))


def _days_encoding(dates: pd.Series, missing: np.ndarray) -> tuple[np.ndarray, pd.Series]:
    """Dates coded by their day, counted from the earliest: codes follow time order, as for dates read as text."""
    codes = dates.to_numpy().astype("datetime64[D]").view(np.int64)  # one new array, changed in place below
    gaps = missing.any()
    known = codes[~missing] if gaps else codes
    first = int(known.min()) if len(known) else 0
    codes -= first
    if gaps:
        codes[missing] = -1
    span = int(codes.max(initial=-1)) + 1
    return codes, pd.Series(np.arange(first, first + span).astype("datetime64[D]").astype(dates.dtype))


def _absent(kind: str, index: pd.Index) -> _Parsed:
    """A column the file does not have: missing everywhere, typed like a present one."""
    text = pd.Series(pd.NA, index=index, dtype="string")
    values = text if kind in ("text", "code") else PARSERS[kind](text)
    none = np.zeros(len(index), dtype=bool)
    return _Parsed(values, ~none, none, (np.full(len(index), -1, dtype=np.int64), values.iloc[:0]))


def _key(columns: list[_Parsed]) -> np.ndarray:
    """One int64 per row for a natural key over parsed columns (-1 where any part is missing)."""
    key = columns[0].codes.astype(np.int64)  # a copy: combined in place below
    room = 2**62 // max(len(columns[0].uniques), 1)
    for column in columns[1:]:
        size = max(len(column.uniques), 1)
        if size > room:  # keep the combined key inside int64: renumber what is combined so far
            key = pd.factorize(key)[0].astype(np.int64)
            room = 2**62 // max(int(key.max(initial=0)) + 1, 1)
        key *= size
        key += column.codes
        room //= size
    gaps = [column.codes < 0 for column in columns if column.codes.min(initial=0) < 0]  # none in a valid file
    if gaps:
        key[np.logical_or.reduce(gaps)] = -1
    return key


def _repeats(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose complete key repeats an earlier row's, and the first row with that key.

    A stable sort, not a hash: records files are mostly in key order already, which the sort runs through.
    """
    in_order = bool((key[1:] >= key[:-1]).all())  # a file sorted by patient and date: no sort
    order = None if in_order else np.argsort(key, kind="stable")
    ordered = key if in_order else key[order]
    same = ordered[1:] == ordered[:-1]
    if not same.any() or not (same := same & (ordered[1:] >= 0)).any():
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    run_start = np.maximum.accumulate(np.where(np.concatenate(([True], ~same)), np.arange(len(key)), 0))
    later = np.flatnonzero(np.concatenate(([False], same)))
    first = run_start[later]
    return (later, first) if in_order else (order[later], order[first])


#: Dates in records frames, whatever the route or the file (pandas picks seconds for an empty column).
DATE_UNIT = "us"
DATE_DTYPE = f"datetime64[{DATE_UNIT}]"


def _parse_date(raw: pd.Series) -> pd.Series:
    return pd.to_datetime(raw, format="%Y-%m-%d", errors="coerce").astype(DATE_DTYPE)


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


@functools.lru_cache(maxsize=1)
def _workers(process: int) -> ThreadPoolExecutor:
    """Threads that read the files and parse the large columns: Arrow's reader and hashing release the GIL, so
    they run beside the calling thread, which checks the small files meanwhile. Kept for the process (starting
    threads costs more than a small file's parse); made anew in a forked child, which has none of its parent's
    threads."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"records-parse-{process}")


#: Columns at least this long are parsed by the workers.
_LARGE_COLUMN = 200_000


@dataclass
class _Started:
    """The work handed to the workers: each large file's columns, and the rows that repeat a key in it."""

    columns: dict[tuple[str, str], Future] = field(default_factory=dict)  # by (file, column)
    repeats: dict[str, Future] = field(default_factory=dict)  # by file: what `_repeats` gives, or None


def _start_large_files(frames: dict[str, pd.DataFrame]) -> _Started:
    """Hand the large files to the workers, to be parsed while the small files are checked."""
    started, workers = _Started(), _workers(os.getpid())
    for spec in FILES:
        frame = frames[spec.name]
        if len(frame) < _LARGE_COLUMN:
            continue
        for column in spec.columns:
            if column.name in frame.columns:
                started.columns[(spec.name, column.name)] = workers.submit(
                    _parse_column, frame[column.name], column.kind, column.name in spec.key)
        if all((spec.name, name) in started.columns for name in spec.key):
            started.repeats[spec.name] = workers.submit(
                _repeats_once_parsed, [started.columns[(spec.name, name)] for name in spec.key])
    return started


def _repeats_once_parsed(key_columns: list[Future]) -> tuple[np.ndarray, np.ndarray] | None:
    """`_repeats` of a file's key once its columns are parsed; None when one was parsed in the calling thread.

    Queued after those columns, so when a worker takes it each of them has begun (or been taken back by the
    calling thread): waiting for them cannot hold up the queue."""
    try:
        columns = [column.result() for column in key_columns]
    except CancelledError:
        return None
    return _repeats(_key(columns))


def _in_checking_order(frames: dict[str, pd.DataFrame]) -> tuple[list[FileSpec], list[FileSpec]]:
    """The files in two rounds: patients.csv and the small files, then the large ones (their columns are being
    parsed by the workers meanwhile)."""
    small = [spec for spec in FILES if spec is PATIENTS or len(frames[spec.name]) < _LARGE_COLUMN]
    return small, [spec for spec in FILES if spec not in small]


def _parse_file(spec: FileSpec, raw: pd.DataFrame, label: str, out: _Collector,
                started: dict[tuple[str, str], Future], patient_ids: pd.Series | None = None
                ) -> tuple[pd.DataFrame, dict[str, _Parsed]]:
    """Type every column of one file; report values that do not parse and required values missing.

    `patient_ids`: patients.csv's, which the file's patient_id column probably lists in the same order."""
    parsed: dict[str, _Parsed] = {}
    for column in spec.columns:
        if column.name not in raw.columns:
            parsed[column.name] = _absent(column.kind, raw.index)
            continue
        work = started.get((spec.name, column.name))
        if work is not None and not work.cancel():  # running or done; one not begun yet is parsed here
            one = parsed[column.name] = work.result()
        else:
            one = parsed[column.name] = _parse_column(raw[column.name], column.kind, column.name in spec.key,
                                                      patient_ids if column.name == "patient_id" else None)
        if one.bad.any():
            out.add("error", label, _lines(np.flatnonzero(one.bad)), column.name, raw[column.name][one.bad].to_numpy(),
                    f"is not {EXPECTED_BY_KIND[column.kind]}")
        if column.required and one.missing.any():
            out.add("error", label, _lines(np.flatnonzero(one.missing)), column.name, None, "is missing (required)")
    for name in (c for c in raw.columns if c not in {col.name for col in spec.columns}):
        parsed[name] = _parse_column(raw[name], "text")  # extra columns: kept as trimmed text
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


def _check_values(raws: dict[str, pd.DataFrame], column_of: Callable[[str, str], _Parsed], labels: dict[str, str],
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
    parsed: dict[str, dict[str, _Parsed]] = {}
    patient_rows: dict[str, np.ndarray] = {}
    repeats = np.zeros(0, dtype=np.int64)

    def parse(specs: list[FileSpec]) -> None:
        for spec in specs:
            patient_ids = parsed[PATIENTS.name]["patient_id"].uniques if PATIENTS.name in parsed else None
            typed[spec.name], parsed[spec.name] = _parse_file(spec, raws[spec.name], labels.get(spec.name, spec.name),
                                                              out, started.columns, patient_ids)

    def check_rows(specs: list[FileSpec]) -> None:
        nonlocal repeats
        for spec in specs:
            found = started.repeats[spec.name].result() if spec.name in started.repeats else None
            patient_rows[spec.name], repeated = _check_rows(spec, typed, parsed, labels, today, out, found)
            repeats = repeated if spec is STRENGTH else repeats

    def column_of(file: str, column: str) -> _Parsed:  # a large file's columns: from the workers
        return parsed[file][column] if file in parsed else started.columns[(file, column)].result()

    small, large = _in_checking_order(raws)
    parse(small)
    _check_values(raws, column_of, labels, today, out)  # every file's checked columns in one pandera run
    check_rows(small)
    parse(large)
    check_rows(large)
    _check_exams_have_operations(typed, parsed, patient_rows, labels, out)
    report = out.report()
    if not report.ok:
        return None, report
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


def _remember_key_codes(records: Records, parsed: dict[str, dict[str, _Parsed]], repeats: np.ndarray,
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


def _check_rows(spec: FileSpec, typed: dict[str, pd.DataFrame], parsed: dict[str, dict[str, _Parsed]],
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
        later, first = found or _repeats(_key([columns[column] for column in spec.key]))
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


def _check_exams_have_operations(typed: dict[str, pd.DataFrame], parsed: dict[str, dict[str, _Parsed]],
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


def _check_strength_repeats(strength: pd.DataFrame, parsed: dict[str, _Parsed], label: str, out: _Collector,
                            found: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The same muscle, side and exam twice: an error when the grades differ, a warning when equal; rows with
    no grade take no part (`found`, the repeats of the key alone, holds when every row has one).

    Returns the rows that repeat an earlier one (to keep each exam once when the grades agree).
    """
    graded = parsed["mrc"].codes >= 0
    if found is None or not graded.all():
        key = _key([parsed[column] for column in STRENGTH.key])
        key[~graded] = -1
        found = _repeats(key)
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
