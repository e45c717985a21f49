"""Fuzzing the importers with hypothesis: whatever the file, validate() answers with a report — never a
traceback — and nothing reaches the store unless it is valid; exports neutralise spreadsheet formulas.

More than 1,000 generated files per run (see `settings(max_examples=…)`; $SPINE_FUZZ_SCALE multiplies them
for deeper runs; a summary line is printed at the end and written to artifacts/fuzz-summary.txt): random
bytes, wrong encodings, arbitrary CSV structure (quotes, new lines, commas, formulas, huge numbers, unicode)
in every file, free text that must survive exactly, files over the size limit, broken and real workbooks,
and the command line's import on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import importlib
import io
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from sqlalchemy import Engine

from dashboard.app.uploads import UploadRejected, check_uploads
from dashboard.cli import main as cli
from dashboard.clinical.records import limits
from dashboard.clinical.records.format import FILES
from dashboard.clinical.records.identity import mrn_match_key
from dashboard.clinical.records.validate import INTERNAL_ERROR, ISSUE_COLUMNS, Records, ValidationReport, validate
from dashboard.clinical.records.write import FORMULA_STARTS, neutralise_formulas, safe_csv, to_text_frames
from dashboard.store import get_engine, import_records, load_records
from dashboard.store.backup import store_digest
from tests.store_fixtures import GOOD_FILES, TODAY, store_url, write_folder

FIXTURES = (store_url,)  # imported for pytest, which finds fixtures by name
NAMES = [spec.name for spec in FILES]
COLUMNS = {spec.name: [c.name for c in spec.columns] for spec in FILES}
FUZZ = dict(deadline=None, derandomize=False, print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                   HealthCheck.function_scoped_fixture, HealthCheck.large_base_example])

#: $SPINE_FUZZ_SCALE multiplies every example count, for a deeper run than CI's (e.g. 10 overnight).
FUZZ_SCALE = float(os.environ.get("SPINE_FUZZ_SCALE", "1"))


def examples(count: int) -> int:
    return max(1, round(count * FUZZ_SCALE))


#: What the run generated and what validation made of it; printed at the end of the module.
SEEN: Counter[str] = Counter()

FORMULAS = ["=cmd|' /C calc'!A0", '=HYPERLINK("http://example.invalid","open")', "+1+1", "-2+3", "@SUM(A1:A2)",
            "=1+1", "\t=1+1", "\r=1+1", "＝1+1", "=DDE(\"cmd\";\"/C calc\";\"!A0\")"]
NUMBERS = ["9" * 40, "-" + "9" * 40, "1e400", "-1e400", "1e-400", "nan", "NaN", "inf", "-inf", "1_000", "0x1F",
           "١٩٦٠", "１９６０", str(2**63), str(-(2**63) - 1), "3.999999999999999999999", "4-", "5+", "-0", "00001960"]
DATES = ["2026-01-10", "2026-02-30", "0000-01-01", "9999-12-31", "2026-1-1", "10/01/2026", "2026-01-10T00:00",
         "2026-01-10 00:00:00", "20260110"]
CODES = ["P1", "P2", "P3", "P4", "yes", "no", "Y", "L", "R", "l", "F", "M", "X", "TLIF", "L4-L5", "L4-L5;L5-S1",
         "L9-L10", "ankle_dorsiflexion", "great_toe_extension", "hip_flexion", "toe", "3", "4+", "5-", "7", "-1"]
SPECIALS = ['"', '""', ",", "\n", "\r\n", "\r", " ", "\t", ";", "'", "\\", "\u200b", "\u202e", "\ufeff", "😀", "é"]

cells = st.one_of(
    st.sampled_from(FORMULAS + NUMBERS + DATES + CODES + SPECIALS + [""]),
    st.text(max_size=24),
    st.text(alphabet="\",\n\r\t ;=+-@'|", max_size=8),
)


def check_report(records: Records | None, report: ValidationReport) -> str:
    """What every answer must be: a report with clear rows, records exactly when there is no error."""
    assert isinstance(report, ValidationReport)
    assert list(report.issues.columns) == ISSUE_COLUMNS
    lines = report.error_lines() + report.warning_lines()
    assert all(isinstance(line, str) and line.strip() for line in lines)
    assert not any(INTERNAL_ERROR in line or "Traceback" in line for line in lines), lines
    assert report.issues["message"].map(lambda m: isinstance(m, str) and len(m) > 5).all()
    assert report.issues["file"].map(lambda f: isinstance(f, str) and f != "").all()
    if records is None:
        assert not report.ok
        return "rejected"
    assert report.ok
    return "valid"


def folder_with(tmp: str, replaced: dict[str, bytes]) -> Path:
    """The good records folder with some files replaced by raw bytes."""
    folder = write_folder(Path(tmp) / "records", {n: t for n, t in GOOD_FILES.items() if n not in replaced})
    for name, content in replaced.items():
        (folder / name).write_bytes(content)
    return folder


def _reading_error(report: ValidationReport) -> bool:
    return bool(report.errors["line"].isna().all()) and not report.errors.empty


def tally(kind: str, files: int, records: Records | None, report: ValidationReport) -> None:
    SEEN[f"{kind} files"] += files
    SEEN["files"] += files
    outcome = check_report(records, report)
    SEEN[outcome if outcome == "valid" else ("rejected on reading" if _reading_error(report)
                                             else "rejected by validation")] += 1


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    line = "fuzzed records files: " + ", ".join(f"{k} {v}" for k, v in sorted(SEEN.items()))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n" + line)
    results = Path(__file__).resolve().parents[2] / "artifacts"
    results.mkdir(exist_ok=True)
    (results / "fuzz-summary.txt").write_text(line + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------- bytes
@settings(max_examples=examples(300), **FUZZ)
@given(name=st.sampled_from(NAMES), content=st.one_of(
    st.binary(max_size=512),
    st.binary(min_size=1, max_size=64).map(lambda b: b"patient_id,name\nP1," + b),
    st.binary(max_size=64).map(lambda b: GOOD_FILES["patients.csv"].encode()[:-1] + b),
))
def test_random_bytes_give_a_report_never_a_traceback(name: str, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        records, report = validate(folder_with(tmp, {name: content}), today=TODAY)
    tally("random-bytes", 1, records, report)


# ------------------------------------------------------------------------------------------ encodings
@settings(max_examples=examples(160), **FUZZ)
@given(name=st.sampled_from(["patients.csv", "visits.csv"]),
       words=st.text(alphabet=st.characters(min_codepoint=0xA0, max_codepoint=0x17F), min_size=1, max_size=12),
       encoding=st.sampled_from(["latin-1", "cp1252", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "mac_roman"]))
def test_wrong_encodings_are_refused_with_the_file_named(name: str, words: str, encoding: str) -> None:
    text = GOOD_FILES[name].replace("Ann", words, 1) if name == "patients.csv" else \
        GOOD_FILES[name].replace("Ann feels better", words)
    try:
        content = text.encode(encoding)
    except UnicodeEncodeError:
        assume(False)
    with tempfile.TemporaryDirectory() as tmp:
        records, report = validate(folder_with(tmp, {name: content}), today=TODAY)
    tally("wrong-encoding", 1, records, report)
    try:
        content.decode("utf-8")
        readable = b"\x00" not in content
    except UnicodeDecodeError:
        readable = False
    if not readable:
        assert records is None
        assert report.error_lines()[0].startswith(f"{name}: ")
        assert "UTF-8" in report.error_lines()[0]
    # else: these bytes happen to be valid UTF-8 text (Latin-1 'Ã©' is UTF-8 'é'): nothing to detect


# ------------------------------------------------------------------------------------ CSV structure
@st.composite
def csv_file(draw: st.DrawFn, name: str) -> bytes:
    """Any table: known, extra, duplicated or odd headers; any cells; proper or broken quoting."""
    known = COLUMNS[name]
    header = draw(st.lists(st.one_of(st.sampled_from(known), st.sampled_from(["", "ward", "=cmd", " Patient_ID "]),
                                     st.text(max_size=6)), max_size=len(known) + 2))
    if draw(st.booleans()):
        header = known[: draw(st.integers(1, len(known)))] + header[:2]
    rows = draw(st.lists(st.lists(cells, min_size=0, max_size=len(header) + 1), max_size=6))
    style = draw(st.sampled_from(["minimal", "all", "naive"]))
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    if style == "naive":  # no quoting at all: commas and new lines inside values break the structure
        text = ending.join(",".join(row) for row in [header, *rows])
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator=ending,
                            quoting=csv.QUOTE_ALL if style == "all" else csv.QUOTE_MINIMAL)
        writer.writerows([header, *rows])
        text = buffer.getvalue()
    prefix = "\ufeff" if draw(st.booleans()) else ""
    return (prefix + text + draw(st.sampled_from(["", ending, ending * 3, " "]))).encode("utf-8")


@settings(max_examples=examples(120), **FUZZ)
@given(files=st.fixed_dictionaries({name: st.one_of(st.none(), csv_file(name)) for name in NAMES}))
def test_arbitrary_csv_structure_in_every_file_gives_a_report(files: dict[str, bytes | None]) -> None:
    replaced = {name: content for name, content in files.items() if content is not None}
    with tempfile.TemporaryDirectory() as tmp:
        folder = folder_with(tmp, replaced)
        for name, content in files.items():
            if content is None and name != "visits.csv":
                continue
            if content is None:
                (folder / name).unlink(missing_ok=True)  # an optional file left out
        records, report = validate(folder, today=TODAY)
    tally("csv-structure", len(replaced), records, report)


# ------------------------------------------------------------------- free text must survive exactly
#: Any text a UTF-8 file can hold, but NUL (a file with one is refused, see the bytes and encoding tests):
#: lone surrogates have no UTF-8 form.
free_text = st.one_of(st.sampled_from(FORMULAS + SPECIALS + NUMBERS),
                      st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)),
                              min_size=1, max_size=30))
TEXT_CELLS = {"patients.csv": ["name", "mrn", "surgeon", "ward"], "visits.csv": ["notes"],
              "strength.csv": ["examiner"], "surgeries.csv": ["procedure"]}


@settings(max_examples=examples(50), **FUZZ)
@given(name=st.sampled_from(list(TEXT_CELLS)), values=st.lists(free_text, min_size=1, max_size=3),
       writer=st.sampled_from([("\r\n", csv.QUOTE_MINIMAL), ("\n", csv.QUOTE_ALL), ("\n", csv.QUOTE_NONNUMERIC)]))
def test_quotes_new_lines_and_formulas_in_free_text_survive_and_exports_neutralise_them(
        name: str, values: list[str], writer: tuple[str, int]) -> None:
    """Written as a spreadsheet writes CSV (RFC 4180: CRLF, or every value quoted), any text comes back.

    (With '\n' line ends and minimal quoting, Python's csv leaves a bare CR unquoted: a broken file, which
    validation rightly refuses with the line — the fuzzer found this; exports use `safe_csv`.)
    """
    frame = pd.read_csv(io.StringIO(GOOD_FILES[name]), dtype=str, keep_default_na=False)
    column = TEXT_CELLS[name][len(values[0]) % len(TEXT_CELLS[name])]
    expected = [v.strip() or None for v in values][: len(frame)]
    if column == "procedure":  # required: a blank one is rightly an error
        assume(all(expected))
    for row, value in enumerate(values[: len(frame)]):
        frame.loc[row, column] = value
    if column == "mrn":  # one MRN under two patient ids is rightly an error (dashboard.clinical.records.identity)
        keys = [mrn_match_key(mrn) for mrn in frame["mrn"].str.strip() if mrn]
        assume(len(set(keys)) == len(keys))
    ending, quoting = writer
    written = frame.to_csv(index=False, lineterminator=ending, quoting=quoting)
    with tempfile.TemporaryDirectory() as tmp:
        records, report = validate(folder_with(tmp, {name: written.encode("utf-8")}), today=TODAY)
    tally("free-text", 1, records, report)
    assert records is not None, report.error_lines()
    stored = records.frames()[name.removesuffix(".csv")][column]
    assert [None if pd.isna(v) else v for v in stored.iloc[: len(expected)]] == expected
    exported = neutralise_formulas(to_text_frames(records)[name])  # what a CSV or Excel export contains
    cells_out = exported[column].dropna().astype(str)
    risky = cells_out[cells_out.str.startswith(FORMULA_STARTS)]
    assert risky.str.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?").all(), risky.tolist()
    assert list(csv.reader(io.StringIO(safe_csv(exported).decode("utf-8-sig"), newline="")))[1:] == \
        exported.fillna("").astype(str).values.tolist()


# ---------------------------------------------------------------------------------------- size limit
@pytest.fixture
def tiny_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """A 2 KB limit, so that 'enormous' files are cheap to make; the real limit is tested below."""
    monkeypatch.setattr(limits, "max_file_bytes", lambda: 2048)
    return 2048


@settings(max_examples=examples(200), **FUZZ)
@given(name=st.sampled_from(NAMES + ["clinic.xlsx"]), size=st.integers(2049, 64_000), fill=st.binary(max_size=16))
def test_files_over_the_size_limit_are_refused_before_reading(tiny_limit: int, name: str, size: int,
                                                              fill: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        content = (fill or b"x") * (size // max(len(fill), 1) + 1)
        if name.endswith(".xlsx"):
            target = Path(tmp) / name
            target.write_bytes(content[:size])
        else:
            target = folder_with(tmp, {name: content[:size]})
        records, report = validate(target, today=TODAY)
    tally("over-limit", 1, records, report)
    assert records is None
    assert "the limit is" in report.error_lines()[0] and report.error_lines()[0].startswith(name)


def test_the_real_limit_is_a_named_setting_and_refuses_without_reading(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "records", GOOD_FILES)
    with open(folder / "strength.csv", "r+b") as handle:  # sparse: 200 MB + 1 byte, nothing written
        handle.truncate(limits.MAX_UPLOAD_MB * limits.MB + 1)
    records, report = validate(folder, today=TODAY)
    assert records is None
    assert report.error_lines() == [
        f"strength.csv: is 200.0 MB; the limit is {limits.MAX_UPLOAD_MB} MB per file (setting "
        "SPINE_DASHBOARD_MAX_UPLOAD_MB)"]
    assert limits.MAX_UPLOAD_MB == limits.DEFAULT_MAX_UPLOAD_MB == 200
    with pytest.raises(UploadRejected, match=f"the limit is {limits.MAX_UPLOAD_MB} MB"):
        check_uploads([("strength.csv", b"x" * (limits.MAX_UPLOAD_MB * limits.MB + 1))])


def test_the_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        monkeypatch.setenv(limits.MAX_UPLOAD_MB_ENV, "5")
        assert importlib.reload(limits).MAX_UPLOAD_MB == 5 and limits.max_file_bytes() == 5 * limits.MB
        for bad in ("lots", "0", "-3"):
            monkeypatch.setenv(limits.MAX_UPLOAD_MB_ENV, bad)
            with pytest.raises(ValueError, match=limits.MAX_UPLOAD_MB_ENV):
                importlib.reload(limits)
    finally:
        monkeypatch.delenv(limits.MAX_UPLOAD_MB_ENV)
        importlib.reload(limits)
    assert limits.MAX_UPLOAD_MB == 200


def test_uploads_of_the_wrong_type_are_refused_with_a_message() -> None:
    with pytest.raises(UploadRejected, match="Not a records file: photo.png"):
        check_uploads([("photo.png", b"\x89PNG\r\n")])
    checked = check_uploads([("patients.csv", b"\x89PNG\r\n\x1a\n\x00\x00"), ("surgeries.csv", b""),
                             ("strength.csv", b"")])
    assert checked.records is None and checked.report.error_lines()[0].startswith("patients.csv: is not a text file")


@pytest.mark.parametrize("content", [b"", b"\n", b"\n\n\n", b" ", b"\r\n", b"\xef\xbb\xbf", b"patient_id\n",
                                     b",,,\n", b'""\n'])
def test_empty_and_blank_files_are_errors_not_crashes(tmp_path: Path, content: bytes) -> None:
    for name in NAMES:
        records, report = validate(folder_with(str(tmp_path / name), {name: content}), today=TODAY)
        tally("empty", 1, records, report)
        assert records is None or name == "visits.csv"


# ----------------------------------------------------------------------------------------- workbooks
@settings(max_examples=examples(60), **FUZZ)
@given(kind=st.sampled_from(["bytes", "zip", "workbook"]), junk=st.binary(max_size=300),
       values=st.lists(cells, min_size=1, max_size=4))
def test_workbooks_broken_or_odd_give_a_report(kind: str, junk: bytes, values: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        book = Path(tmp) / "clinic.xlsx"
        if kind == "bytes":
            book.write_bytes(junk)
        elif kind == "zip":
            book.write_bytes(b"PK\x03\x04" + junk)
        else:
            sheets = {name.removesuffix(".csv"): pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
                      for name, text in GOOD_FILES.items()}
            for row, value in enumerate(values[:3]):
                value = ILLEGAL_CHARACTERS_RE.sub("", value)  # openpyxl cannot write control characters
                sheets["patients"].loc[row, "name"] = value  # formulas become formula cells in Excel
                sheets["strength"].loc[row, "mrc"] = value
            with pd.ExcelWriter(book, engine="openpyxl") as writer:
                for sheet, frame in sheets.items():
                    frame.to_excel(writer, sheet_name=sheet, index=False)
        records, report = validate(book, today=TODAY)
    tally("workbook", 1, records, report)
    if kind != "workbook":
        assert records is None and report.error_lines()[0].startswith("clinic.xlsx: cannot be read as an .xlsx")


# ------------------------------------------------------------------- never a partial store (CLI import)
@st.composite
def records_folder(draw: st.DrawFn) -> dict[str, bytes]:
    """Mostly small mutations of a valid folder (so that some are valid), sometimes anything."""
    if draw(st.booleans()):
        name = draw(st.sampled_from(NAMES))
        return {name: draw(csv_file(name))}
    name = draw(st.sampled_from(list(TEXT_CELLS)))
    lines = GOOD_FILES[name].splitlines(keepends=True)
    line = draw(st.integers(1, len(lines) - 1))
    cut = draw(st.integers(0, len(lines[line]) - 1))
    lines[line] = lines[line][:cut] + draw(st.sampled_from(FORMULAS + NUMBERS + SPECIALS + ['"a,b"', "x"])) + \
        lines[line][cut:]
    return {name: "".join(lines).encode("utf-8")}


@pytest.fixture
def fuzz_store(store_url: str) -> Iterator[tuple[str, Engine]]:
    engine = get_engine(store_url)
    records, _ = validate(write_folder(Path(tempfile.mkdtemp()) / "base", GOOD_FILES), today=TODAY)
    import_records(engine, records, "base")
    yield store_url, engine
    engine.dispose()


@settings(max_examples=examples(12), **FUZZ)
@given(replaced=records_folder())
def test_the_command_line_stores_all_of_a_valid_folder_or_nothing(fuzz_store: tuple[str, Engine],
                                                                  replaced: dict[str, bytes]) -> None:
    url, engine = fuzz_store
    before = store_digest(engine)
    with tempfile.TemporaryDirectory() as tmp:
        folder = folder_with(tmp, replaced)
        records, report = validate(folder)
        tally("store", 1, records, report)
        with open(os.devnull, "w") as quiet, pytest.MonkeyPatch.context() as patch:
            patch.setattr("sys.stderr", quiet)
            status = cli(["import", str(folder), "--database", url])  # named as the system account
    if records is None:
        assert status == 2 and store_digest(engine) == before  # invalid: nothing stored, not even a log line
        return
    if status == 2:  # valid, but another person under a stored id (or a stored MRN): refused, nothing stored
        assert {k: v for k, v in store_digest(engine).items() if k != "imports"} == \
            {k: v for k, v in before.items() if k != "imports"}
        SEEN["valid but refused: identity differs from the store"] += 1
        return
    if status == 1:  # valid, but the database refused it: all of it rolled back
        assert {k: v for k, v in store_digest(engine).items() if k not in ("imports", "audit_log")} == \
            {k: v for k, v in before.items() if k not in ("imports", "audit_log")}
        SEEN["valid but refused by the database"] += 1
        return
    assert status == 0
    stored = load_records(engine)
    for stem, frame in records.frames().items():  # every row of the file is in the store
        keys = [c for c in frame.columns if c in ("patient_id", "surgery_date", "exam_date", "visit_date",
                                                    "muscle", "side")]
        merged = frame[keys].merge(stored.frames()[stem][keys].drop_duplicates(), how="left", indicator=True)
        assert (merged["_merge"] == "both").all(), stem
