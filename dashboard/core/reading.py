"""Reading a records folder or workbook into frames, one per file (records format v1).

A CSV file is typed by Arrow's reader where it can be (fast on a large cohort), else read as text, so that a
value that does not parse can be shown as written; a file that is not UTF-8 CSV text is refused, saying what
it is and what to do.
"""

from __future__ import annotations

import codecs
import csv
import io
import mmap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from dashboard.core import limits
from dashboard.core.schema import BOOLEAN_TEXT, FILES, FileSpec
from dashboard.core.workers import workers

#: Dates in records frames, whatever the route or the file (pandas picks seconds for an empty column).
DATE_UNIT = "us"
DATE_DTYPE = f"datetime64[{DATE_UNIT}]"


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
        read = workers().map(lambda spec: _read_csv(path / spec.name, spec if typed else None), FILES)
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
READ_AS = {"date": lambda t: t.kind == "M", "boolean": lambda t: isinstance(t, pd.BooleanDtype),
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
    """Lower-case, trimmed headers; values are trimmed where they are parsed (parsed_columns)."""
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    return frame
