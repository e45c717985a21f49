"""Reading records into frames of text, one per file (records format v1).

One route: every cell is read as text, so that a value that does not parse is shown as written. The source is
a folder, a workbook (path or bytes) or uploaded files (name → bytes). Every limit of `records.limits`
is checked while reading, before memory grows: file size and a workbook's unpacked size before parsing,
columns on the header, rows and cells block by block. A file that is not UTF-8 CSV text is refused, saying
what it is and what to do.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from dashboard.clinical.records import limits
from dashboard.clinical.records.format import FILES

#: Dates in records frames, whatever the file (pandas picks seconds for an empty column).
DATE_UNIT = "us"
DATE_DTYPE = f"datetime64[{DATE_UNIT}]"

#: What `validate` takes: a folder or workbook path, a workbook's bytes, or uploaded files by name.
Source = str | Path | bytes | Mapping[str, bytes]
#: A problem found while reading: severity, file label, line (None: the file), column, value, message.
Issue = tuple[str, str, int | None, str, object, str]


class RecordsFileError(ValueError):
    """A file that cannot be read as records at all: names the file (and the line) and says what to do."""

    def __init__(self, file: str, message: str, line: int | None = None, column: str = "",
                 value: object = None) -> None:
        super().__init__(f"{file}: {message}")
        self.file, self.message, self.line, self.column, self.value = file, message, line, column, value


@dataclass
class Read:
    """Each file's frame of text (None: absent), its label in messages, and what reading found."""

    frames: dict[str, pd.DataFrame | None]
    labels: dict[str, str]
    issues: list[Issue] = field(default_factory=list)


def read_raw(source: Source) -> Read:
    """Read records from a folder, an .xlsx workbook (path or bytes) or a mapping of file name → bytes.

    Cells are text, blank cells missing; headers are lower-cased and trimmed. Labels are 'strength.csv' for
    CSV files and 'book.xlsx[strength]' for a workbook's sheets."""
    if isinstance(source, (bytes, bytearray)):
        return _read_workbook("workbook.xlsx", bytes(source))
    if isinstance(source, Mapping):
        books = [name for name in source if _is_workbook(name)]
        if books:
            if len(source) > 1:
                raise ValueError("give one workbook or the CSV files, not both")
            return _read_workbook(Path(books[0]).name, source[books[0]])
        contents = {Path(name).name.lower(): content for name, content in source.items()}
        return _read_files(lambda spec: contents.get(spec.name))
    path = Path(source)
    if path.is_dir():
        return _read_files(lambda spec: _file_bytes(path / spec.name))
    if _is_workbook(path.name):
        content = _file_bytes(path)
        if content is None:
            raise FileNotFoundError(f"{path}: no such workbook")
        return _read_workbook(path.name, content)
    if path.suffix.lower() == ".csv" and path.exists():
        raise ValueError(f"{path}: give the folder that holds the records files, not one CSV file")
    raise FileNotFoundError(f"{path}: not a records folder or an .xlsx workbook")


def _is_workbook(name: str) -> bool:
    return name.lower().endswith((".xlsx", ".xlsm"))


def _read_files(content_of) -> Read:  # noqa: ANN001 - FileSpec → bytes | None
    read = Read({}, {spec.name: spec.name for spec in FILES})
    for spec in FILES:
        content = content_of(spec)
        read.frames[spec.name] = None if content is None else _read_csv(spec.name, content, read.issues)
    return read


def _file_bytes(path: Path) -> bytes | None:
    """A file's bytes (None when there is no file at all); its size checked before it is read. A link that
    loops or points nowhere is an error, not an absent file."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        if path.is_symlink():
            raise RecordsFileError(path.name, "is a link to a file that does not exist: replace the link with "
                                              "the file, or remove it") from None
        return None
    except OSError as problem:  # ELOOP: a link to itself, or a chain of links too long
        raise RecordsFileError(path.name, f"cannot be opened ({problem.strerror}): replace the link with the file, "
                                          "or remove it") from None
    if not path.is_file():
        raise RecordsFileError(path.name, "is not a file")
    _check_size(path.name, size)
    return path.read_bytes()


# ------------------------------------------------------------------------------------------------------- CSV
def _read_csv(name: str, content: bytes, issues: list[Issue]) -> pd.DataFrame:
    _check_size(name, len(content))
    if not content:
        return pd.DataFrame()
    _check_start(name, content)
    _check_no_nul(name, content)
    first = _first_record(name, content)
    _check_columns(name, first)
    _check_quotes_closed(name, content)
    text = {f"f{i}": pa.large_string() for i in range(len(first))}  # the reader's names for the columns
    options = dict(read_options=pcsv.ReadOptions(autogenerate_column_names=True, block_size=1 << 23),
                   parse_options=pcsv.ParseOptions(newlines_in_values=True),
                   convert_options=pcsv.ConvertOptions(column_types=text, strings_can_be_null=True,
                                                       quoted_strings_can_be_null=True, null_values=[""]))
    batches, rows = [], -1  # the header is the first row read
    try:
        for batch in pcsv.open_csv(pa.BufferReader(content), **options):
            _check_rows(name, rows := rows + batch.num_rows)
            batches.append(batch)
    except (pa.ArrowInvalid, UnicodeDecodeError) as problem:  # a message naming the file, not a traceback
        _check_utf8(name, content)
        raise RecordsFileError(name, _csv_problem(content, str(problem))) from None
    table = pa.Table.from_batches(batches)
    header = [str(value) if value is not None else "" for value in table.slice(0, 1).to_pylist()[0].values()]
    table = table.slice(1)
    if b'"' in content:  # quoted line breaks are possible only in quoted values
        _check_line_breaks(name, header, table)
    issues.extend(_long_cells(name, header, table))
    frame = pd.DataFrame({i: pd.Series(pd.arrays.ArrowStringArray(column), copy=False)
                          for i, column in enumerate(table.columns)}, copy=False)
    frame.columns = _normalised(header)
    return frame


def _first_record(name: str, content: bytes) -> list[str]:
    """The header's names as written (the first line, which must be UTF-8)."""
    end = content.find(b"\n")
    try:
        first = content[: end if end >= 0 else len(content)].decode("utf-8-sig")
    except UnicodeDecodeError:
        _check_utf8(name, content)
        raise
    return next(csv.reader([first.rstrip("\r")]), [])


def _check_columns(name: str, header: list[str]) -> None:
    if len(header) > limits.MAX_COLUMNS:
        raise RecordsFileError(name, f"has {len(header):,} columns; the limit is {limits.MAX_COLUMNS}", 1)


def _check_rows(name: str, rows: int) -> None:
    limit = limits.max_rows()
    if rows > limit:
        raise RecordsFileError(name, f"has more than {limit:,} rows; the limit is {limit:,} per file "
                                     f"(setting {limits.MAX_ROWS_ENV})")


def _check_quotes_closed(name: str, content: bytes) -> None:
    """A quoted value that is never closed would make the rest of the file one value: refused, naming the line
    where it opened. (An odd number of quotes is the sign; a quote inside an unquoted value is no quote.)"""
    if content.count(b'"') % 2 == 0:
        return
    reader = csv.reader(io.StringIO(content.decode("utf-8-sig", errors="replace"), newline=""), strict=True)
    start = 1
    try:
        for _ in reader:
            start = reader.line_num + 1
    except csv.Error:
        raise RecordsFileError(name, f"has a quote opened on line {start} that is never closed: the rest of the "
                                     "file would be read as one value; close the quote, or remove it", start) from None


def _check_line_breaks(name: str, header: list[str], table: pa.Table) -> None:
    """A cell with more line breaks than a note has: a quote opened and closed only far below (the lines in
    between became one value). Refused, naming the line where the quote opened."""
    breaks = [pc.count_substring(column, "\n").fill_null(0).to_numpy() for column in table.columns]
    for position, counts in enumerate(breaks):
        if len(counts) and counts.max() > limits.MAX_CELL_LINE_BREAKS:
            row = int(np.argmax(counts > limits.MAX_CELL_LINE_BREAKS))
            line = 2 + row + sum(int(other[:row].sum()) for other in breaks)
            raise RecordsFileError(
                name, f"holds {int(counts[row]):,} line breaks in one value (the limit is "
                      f"{limits.MAX_CELL_LINE_BREAKS}): the quote opened on line {line} closes only on line "
                      f"{line + int(counts[row])}; close it where the value ends", line, _normalised(header)[position])


def _long_cells(name: str, header: list[str], table: pa.Table) -> list[Issue]:
    """Cells over MAX_CELL_CHARS: an error each (bytes are counted first: a cell has at least as many)."""
    found: list[Issue] = []
    for position, column in enumerate(table.columns):
        if len(column) and (pc.max(pc.binary_length(column)).as_py() or 0) > limits.MAX_CELL_CHARS:
            lengths = pc.utf8_length(column).fill_null(0).to_numpy()
            for row in np.flatnonzero(lengths > limits.MAX_CELL_CHARS):
                found.append(_too_long(name, int(row) + 2, header[position], int(lengths[row])))
    return found


def _too_long(label: str, line: int, column: str, length: int) -> Issue:
    return ("error", label, line, str(column).strip().lower(), None,
            f"holds {length:,} characters; the limit is {limits.MAX_CELL_CHARS:,} per cell")


def _normalised(header: list[str]) -> list[str]:
    """Lower-case, trimmed names; a blank one is named by its place, as pandas does ('unnamed: 2')."""
    return [text.strip().lower() or f"unnamed: {i}" for i, text in enumerate(header)]


SAVE_AS_UTF8 = "save it as UTF-8 (in Excel: 'CSV UTF-8 (comma delimited)')"
_WIDE_BOMS = {b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe\x00\x00": "UTF-32", b"\xff\xfe": "UTF-16",
              b"\xfe\xff": "UTF-16"}


def _check_size(name: str, size: int) -> None:
    limit = limits.max_file_bytes()
    if size > limit:
        raise RecordsFileError(name, f"is {size / limits.MB:,.1f} MB; the limit is {limit // limits.MB} MB per file "
                                     f"(setting {limits.MAX_UPLOAD_MB_ENV})")


def _check_start(name: str, content: bytes) -> None:
    """Say what a file is when its first bytes show it is not UTF-8 text (wide Unicode, a zip)."""
    start = content[:4]
    for bom, encoding in _WIDE_BOMS.items():
        if start.startswith(bom):
            raise RecordsFileError(name, f"is {encoding} text, not UTF-8: {SAVE_AS_UTF8}")
    if start.startswith(b"PK\x03\x04"):
        raise RecordsFileError(name, "is a zip file (an .xlsx workbook?), not CSV text: upload a workbook as .xlsx")


def _check_no_nul(name: str, content: bytes) -> None:
    """Say that a file is binary, or wide Unicode without a byte-order mark, when it holds a NUL byte."""
    nul = content.find(b"\x00")
    if nul >= 0:
        line = content.count(b"\n", 0, nul) + 1
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
    if "Empty CSV file" in text or "No columns to parse" in text:
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


# -------------------------------------------------------------------------------------------------- workbook
_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_RELATION = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_MERGED = re.compile(rb"<(?:\w+:)?mergeCell\s+ref=\"([A-Z]+)([0-9]+)(?::([A-Z]+[0-9]+))?\"")
_FORMULA = re.compile(rb"<(?:\w+:)?f[\s>/]")


def _read_workbook(name: str, content: bytes) -> Read:
    """A workbook's sheets named like the records files, read row by row (openpyxl's read-only mode).

    Before anything is opened the zip's unpacked sizes are added up (a zip bomb is refused there); hidden
    and unknown sheets are named; merged cells and formulas without a saved value are errors."""
    import openpyxl  # noqa: PLC0415 - only workbooks need it

    _check_size(name, len(content))
    try:
        book = zipfile.ZipFile(io.BytesIO(content))
        unpacked = sum(member.file_size for member in book.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as problem:
        raise _not_a_workbook(name, problem) from None
    if unpacked > limits.MAX_WORKBOOK_UNPACKED_MB * limits.MB:
        raise RecordsFileError(name, f"unpacks to {unpacked / limits.MB:,.0f} MB; the limit is "
                                     f"{limits.MAX_WORKBOOK_UNPACKED_MB} MB (larger records come as CSV files)")
    try:
        parts = _sheet_parts(book)
        workbook = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except Exception as problem:  # zipfile, openpyxl and XML errors on a damaged or renamed file
        raise _not_a_workbook(name, problem) from None
    read = Read({spec.name: None for spec in FILES}, {spec.name: f"{name}[{spec.stem}]" for spec in FILES})
    by_stem: dict[str, list[str]] = {}
    for title in workbook.sheetnames:
        by_stem.setdefault(title.strip().lower().removesuffix(".csv"), []).append(title)
    cells = 0
    try:
        for stem, titles in by_stem.items():
            spec = next((spec for spec in FILES if spec.stem == stem), None)
            hidden = [title for title in titles if parts.get(title, ("", "visible"))[1] != "visible"]
            if spec is None:
                for title in titles:
                    read.issues.append(("warning", f"{name}[{title}]", None, "", None, "is not a sheet of the format"
                                        + (" (a hidden sheet)" if title in hidden else "") + "; ignored"))
                continue
            label = read.labels[spec.name]
            if len(titles) > 1:
                named = ", ".join(f"'{t}'" + (" (hidden)" if t in hidden else "") for t in titles)
                read.issues.append(("error", label, None, "", None, f"is given by {len(titles)} sheets ({named}): "
                                                                   "keep one and delete the others"))
            elif hidden:
                read.issues.append(("error", label, None, "", None, "is a hidden sheet: unhide it in Excel if it "
                                                                   "holds the records, or delete it"))
            title = next((t for t in titles if t not in hidden), titles[0])
            frame, cells = _read_sheet(workbook[title], label, read.issues, cells)
            member = parts.get(title, ("", ""))[0]
            if member:
                _check_sheet_xml(book, member, content, title, frame, label, read.issues)
            read.frames[spec.name] = frame
    except RecordsFileError:
        raise
    except Exception as problem:  # XML damaged inside a sheet: found only when its rows are read
        raise _not_a_workbook(name, problem) from None
    finally:
        workbook.close()
    return read


def _not_a_workbook(name: str, problem: Exception) -> RecordsFileError:
    return RecordsFileError(name, f"cannot be read as an .xlsx workbook ({type(problem).__name__}): save it again "
                                  "from Excel as .xlsx, or upload the CSV files")


def _sheet_parts(book: zipfile.ZipFile) -> dict[str, tuple[str, str]]:
    """Each sheet's title → (its XML member in the zip, its state: visible, hidden or veryHidden)."""
    sheets = ElementTree.fromstring(book.read("xl/workbook.xml")).iter(f"{_MAIN}sheet")
    relations = ElementTree.fromstring(book.read("xl/_rels/workbook.xml.rels"))
    targets = {relation.get("Id"): relation.get("Target", "") for relation in relations}
    parts = {}
    for sheet in sheets:
        target = targets.get(sheet.get(f"{_RELATION}id"), "")
        member = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
        parts[sheet.get("name", "")] = (member, sheet.get("state", "visible"))
    return parts


def _read_sheet(sheet, label: str, issues: list[Issue], cells: int) -> tuple[pd.DataFrame, int]:  # noqa: ANN001
    """One sheet's cells as text, row by row; `cells`: read so far in the workbook (limited in all)."""
    sheet.reset_dimensions()  # rows as stored, not padded to a width the file may declare
    first = next(sheet.iter_rows(max_row=1, max_col=limits.MAX_COLUMNS + 1, values_only=True), ())
    header = [_cell_text(value) or "" for value in first]
    while header and not header[-1]:
        header.pop()
    if len(header) > limits.MAX_COLUMNS:
        raise RecordsFileError(label, f"has more than {limits.MAX_COLUMNS} columns; the limit is "
                                      f"{limits.MAX_COLUMNS}", 1)
    width, limit = len(header), limits.max_rows()
    columns: list[list[str | None]] = [[] for _ in header]
    rows = sheet.iter_rows(min_row=2, max_col=width, values_only=True) if width else ()  # no cell past the header
    count = last = 0  # rows read; rows up to the last one with a value
    for count, values in enumerate(rows, start=1):
        if count > limit:
            _check_rows(label, count)
        cells += width
        if cells > limits.MAX_WORKBOOK_CELLS:
            raise RecordsFileError(label, f"holds more than {limits.MAX_WORKBOOK_CELLS:,} cells in all (rows × "
                                          "columns); give larger records as CSV files")
        texts = [_cell_text(value) for value in values[:width]]
        texts += [None] * (width - len(texts))
        if any(text is not None for text in texts):
            last = count
        for position, text in enumerate(texts):
            if text is not None and len(text) > limits.MAX_CELL_CHARS:
                issues.append(_too_long(label, count + 1, header[position], len(text)))
            columns[position].append(text)
    frame = pd.DataFrame({i: pd.Series(pd.arrays.ArrowStringArray(pa.array(column[:last], pa.large_string())),
                                       copy=False) for i, column in enumerate(columns)}, copy=False)
    frame.columns = _normalised(header)
    return frame, cells


def _cell_text(value: object) -> str | None:
    """A cell as the text a CSV file would hold: dates as YYYY-MM-DD, whole numbers without '.0'."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value)
    return text if text else None


def _check_sheet_xml(book: zipfile.ZipFile, member: str, content: bytes, title: str, frame: pd.DataFrame,
                     label: str, issues: list[Issue]) -> None:
    """Merged cells and formulas without a saved value, which openpyxl's read-only mode does not show: the
    sheet's XML is scanned in blocks for them; only a sheet with formulas is read again, for their text."""
    merged, formulas, tail = [], False, b""
    with book.open(member) as xml:
        while block := xml.read(1 << 20):
            text = tail + block
            merged += [match.groups() for match in _MERGED.finditer(text) if match.end() > len(tail)]
            formulas = formulas or _FORMULA.search(text) is not None
            tail = text[-200:]
    names = list(frame.columns)

    def column_name(index: int, letters: str) -> str:
        return names[index] if index < len(names) else letters

    for letters, row, end in dict.fromkeys(merged):
        where = f"{letters.decode()}{row.decode()}" + (f":{end.decode()}" if end else "")
        issues.append(("error", label, int(row), column_name(_column_index(letters.decode()), letters.decode()),
                       where, "are merged cells: unmerge them in Excel (a merge keeps its value in the first cell "
                              "only)"))
    if not formulas:
        return
    import openpyxl  # noqa: PLC0415

    with_formulas = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=False)
    try:
        for cells in with_formulas[title].iter_rows(min_row=2):
            for cell in cells:
                if cell.data_type != "f" or cell.column - 1 >= len(names):
                    continue
                if cell.row - 2 >= len(frame) or pd.isna(frame.iat[cell.row - 2, cell.column - 1]):
                    issues.append(("error", label, cell.row, column_name(cell.column - 1, cell.column_letter),
                                   str(cell.value), "is a formula without a saved value: open the workbook in "
                                                    "Excel and save it again, or paste the values"))
    finally:
        with_formulas.close()


def _column_index(letters: str) -> int:
    index = 0
    for letter in letters:
        index = index * 26 + ord(letter) - ord("A") + 1
    return index - 1
