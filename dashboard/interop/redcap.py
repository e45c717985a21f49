"""REDCap flat CSV exports → records, through a mapping file; and the inverse, for the shipped example.

A REDCap "flat" export has one row per record and event for non-repeating instruments, and one row per
instance of a repeating instrument (`redcap_event_name`, `redcap_repeat_instrument`,
`redcap_repeat_instance`). Raw exports carry value codes ('1' for Female, '1'/'0' for yes/no) and one
column per checkbox choice (`surg_levels___4`). The mapping file (YAML, data/redcap/mapping.yaml is the
example; docs/interoperability.md the reference) says which instrument fills which records file, which
field fills which column, and how codes translate. Strength may be recorded wide (one field per muscle
and side, as on a paper motor chart): `grades` turns each filled field into one strength row.

The rows are validated by the records format's own `validate_frames`; messages name the REDCap record
and field ("redcap_export.csv: record 17, field ta_r_grade [...]: '7' is not an MRC grade ..."). Nothing
here logs values.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from dashboard.clinical.mrc import MUSCLES, SIDES
from dashboard.clinical.records.format import FILES
from dashboard.clinical.records.validate import Records, ValidationReport
from dashboard.interop.frames import FrameBuilder

log = logging.getLogger(__name__)

EVENT, INSTRUMENT, INSTANCE = "redcap_event_name", "redcap_repeat_instrument", "redcap_repeat_instance"
#: Columns REDCap adds to an export by option (data access groups, survey fields): not data to map.
SYSTEM_FIELDS = ("redcap_data_access_group", "redcap_survey_identifier")
SPEC_BY_STEM = {spec.stem: spec for spec in FILES}
MAPPING_KEYS = {"version", "record_id_field", "patient_id_field", "missing_data_codes", "files"}
FILE_KEYS = {"instrument", "repeat_instrument", "event", "arm", "columns", "grades"}
_ARM = re.compile(r"^(?P<event>.+)_arm_(?P<arm>\d+)$")
_DATETIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T]\d{1,2}:\d{2}(:\d{2})?$")
DATE_COLUMNS = {spec.stem: {c.name for c in spec.columns if c.kind == "date"} for spec in FILES}


def event_and_arm(name: str) -> tuple[str, int | None]:
    """A REDCap unique event name split into the event and its arm ('follow_up_arm_2' → ('follow_up', 2))."""
    match = _ARM.match(name)
    return (match["event"], int(match["arm"])) if match else (name, None)


class MappingError(ValueError):
    """A mapping file that cannot be used; the message names the file and the entry."""


# ================================================================================================ mapping
@dataclass(frozen=True)
class ColumnMap:
    """One records column filled from one REDCap field (or a checkbox's choice columns)."""

    column: str
    field: str
    codes: dict[str, str] | None = None  # REDCap code → records value
    checkbox: bool = False
    where: str = ""  # the mapping entry, for messages

    def export_columns(self) -> list[str]:
        return [checkbox_column(self.field, code) for code in self.codes] if self.checkbox and self.codes else [
            self.field]


def checkbox_column(field_name: str, code: str) -> str:
    """The export column of one checkbox choice as REDCap names it (lower case; '-' and '.' become '_')."""
    return f"{field_name}___{re.sub(r'[^a-z0-9_]', '_', str(code).lower())}"


@dataclass(frozen=True)
class GradeMap:
    field: str
    muscle: str
    side: str
    codes: dict[str, str] | None = None


@dataclass(frozen=True)
class FileMap:
    stem: str
    instrument: str | None  # the REDCap instrument (form) name
    repeating: bool
    event: str | None  # as written in the mapping (the first one when several): used for export
    columns: tuple[ColumnMap, ...]
    grades: tuple[GradeMap, ...] = ()
    events: tuple[str, ...] = ()  # event names without '_arm_N': matched in every arm
    arms: tuple[int, ...] = ()  # only these arms (default: all)

    def reads_event(self, name: object) -> bool:
        if not self.events:
            return True
        if not isinstance(name, str):
            return False
        event, arm = event_and_arm(name)
        return event in self.events and (not self.arms or arm is None or arm in self.arms)

    def fields(self) -> list[tuple[str, str]]:
        """(export column, mapping entry) for every export column this file reads."""
        out = [(name, c.where) for c in self.columns for name in c.export_columns()]
        out += [(g.field, f"files.{self.stem}.grades.{g.field}") for g in self.grades]
        return out


@dataclass(frozen=True)
class Mapping:
    record_id_field: str
    patient_id_field: str
    files: dict[str, FileMap] = field(default_factory=dict)
    path: str = "mapping.yaml"
    missing_data_codes: dict[str, str] = field(default_factory=dict)  # REDCap Missing Data Code → its label


def parse_codes(spec: Any, where: str) -> dict[str, str]:
    """Codes as REDCap writes them ('1, Left | 2, Right') or as a YAML mapping ({1: yes, 0: no})."""
    if isinstance(spec, dict):
        pairs = [(str(k).strip(), "" if v is None else str(v).strip()) for k, v in spec.items()]
    elif isinstance(spec, str):
        pairs = []
        for part in spec.split("|"):
            code, comma, value = part.partition(",")
            if not comma:
                raise MappingError(f"{where}: '{part.strip()}' is not 'code, value' (choices are separated by '|')")
            pairs.append((code.strip(), value.strip()))
    else:
        raise MappingError(f"{where}: expected 'code, value | code, value' or a mapping of code: value")
    out: dict[str, str] = {}
    for code, value in pairs:
        if not code or not value:
            raise MappingError(f"{where}: '{code}, {value}' needs both a code and a value")
        if code in out:
            raise MappingError(f"{where}: code '{code}' appears twice")
        out[code] = value
    return out


def load_mapping(path: str | Path) -> Mapping:
    """Read and check a mapping file; a problem raises MappingError naming the entry."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as problem:
        raise MappingError(f"{path.name}: cannot be read ({type(problem).__name__}: {problem})") from problem
    return mapping_from_dict(raw, path.name)


def mapping_from_dict(raw: Any, name: str = "mapping.yaml") -> Mapping:
    """Check a parsed mapping (see docs/interoperability.md for its form)."""
    def fail(where: str, message: str) -> MappingError:
        return MappingError(f"{name}: {where}: {message}")

    if not isinstance(raw, dict):
        raise MappingError(f"{name}: expected a mapping with 'record_id_field' and 'files'")
    for key in raw:
        if key not in MAPPING_KEYS:
            raise fail(str(key), f"is not a mapping entry ({', '.join(sorted(MAPPING_KEYS))})")
    if raw.get("version", 1) != 1:
        raise fail("version", f"'{raw.get('version')}' is not a supported version (1)")
    record_id = raw.get("record_id_field")
    if not isinstance(record_id, str) or not record_id.strip():
        raise fail("record_id_field", "is missing (the REDCap field holding the record id, e.g. record_id)")
    patient_id = raw.get("patient_id_field", record_id)
    if not isinstance(patient_id, str) or not patient_id.strip():
        raise fail("patient_id_field", "must be a REDCap field name")
    files = raw.get("files")
    if not isinstance(files, dict):
        raise fail("files", "is missing (one entry per records file: patients, surgeries, strength, visits)")
    parsed = {}
    for stem, entry in files.items():
        if stem not in SPEC_BY_STEM:
            raise fail(f"files.{stem}", f"is not a records file ({', '.join(SPEC_BY_STEM)})")
        try:
            parsed[stem] = _file_map(stem, entry, fail)
        except MappingError as problem:  # code lists are checked without the file's name: add it
            if not str(problem).startswith(f"{name}: "):
                raise MappingError(f"{name}: {problem}") from problem
            raise
    for spec in FILES:
        if spec.required and spec.stem not in parsed:
            raise fail(f"files.{spec.stem}", "is missing (the records format requires this file)")
    missing = raw.get("missing_data_codes")
    if missing is None:
        missing_codes: dict[str, str] = {}
    elif isinstance(missing, list) and all(isinstance(c, (str, int)) and str(c).strip() for c in missing):
        missing_codes = {str(c).strip(): str(c).strip() for c in missing}
    else:
        try:
            missing_codes = parse_codes(missing, "missing_data_codes")
        except MappingError as problem:
            raise MappingError(f"{name}: {problem}") from problem
    return Mapping(record_id.strip(), patient_id.strip(), parsed, name, missing_codes)


def _file_map(stem: str, entry: Any, fail) -> FileMap:  # noqa: ANN001 — fail builds the message
    where = f"files.{stem}"
    if not isinstance(entry, dict):
        raise fail(where, "expected a mapping with 'columns'")
    for key in entry:
        if key not in FILE_KEYS:
            raise fail(f"{where}.{key}", f"is not a file entry ({', '.join(sorted(FILE_KEYS))})")
    spec = SPEC_BY_STEM[stem]
    known = [c.name for c in spec.columns if c.name != "patient_id"]
    columns_raw = entry.get("columns") or {}
    if not isinstance(columns_raw, dict):
        raise fail(f"{where}.columns", "expected a mapping of records column: REDCap field")
    columns = []
    for column, target in columns_raw.items():
        here = f"{where}.columns.{column}"
        if column == "patient_id":
            raise fail(here, "patient_id comes from 'patient_id_field' (or the record id); do not map it here")
        if column not in known:
            raise fail(here, f"is not a column of {spec.name} ({', '.join(known)})")
        columns.append(_column_map(column, target, here, fail))
    grades = []
    grades_raw = entry.get("grades")
    if grades_raw is not None:
        if stem != "strength":
            raise fail(f"{where}.grades", "only strength can be recorded as one field per muscle and side")
        if not isinstance(grades_raw, dict) or not grades_raw:
            raise fail(f"{where}.grades", "expected a mapping of REDCap field: {muscle: …, side: …}")
        seen = set()
        for name, grade in grades_raw.items():
            here = f"{where}.grades.{name}"
            if not isinstance(grade, dict):
                raise fail(here, "expected {muscle: …, side: …}")
            muscle, side = grade.get("muscle"), grade.get("side")
            if muscle not in MUSCLES:
                raise fail(f"{here}.muscle", f"'{muscle}' is not a muscle code ({', '.join(MUSCLES)})")
            if side not in SIDES:
                raise fail(f"{here}.side", f"'{side}' is not a side code ({', '.join(SIDES)})")
            if (muscle, side) in seen:
                raise fail(here, f"{muscle} {side} is mapped twice")
            seen.add((muscle, side))
            extra = set(grade) - {"muscle", "side", "codes"}
            if extra:
                raise fail(here, f"'{sorted(extra)[0]}' is not a grade entry (muscle, side, codes)")
            codes = parse_codes(grade["codes"], f"{here}.codes") if "codes" in grade else None
            grades.append(GradeMap(str(name), muscle, side, codes))
    mapped = {c.column for c in columns} | ({"muscle", "side", "mrc"} if grades else set())
    for column in spec.columns:
        if column.required and column.name != "patient_id" and column.name not in mapped:
            raise fail(where, f"column '{column.name}' is required by {spec.name} but not mapped")
    if grades and any(c.column in ("muscle", "side", "mrc") for c in columns):
        raise fail(f"{where}.columns", "map muscle, side and mrc either as columns or through 'grades', not both")
    repeat = entry.get("repeat_instrument")
    instrument = entry.get("instrument")
    for key, value in (("repeat_instrument", repeat), ("instrument", instrument)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise fail(f"{where}.{key}", "must be a REDCap name")
    if repeat and instrument and repeat != instrument:
        raise fail(where, "give 'repeat_instrument' or 'instrument', not two different names")
    event = entry.get("event")
    given = [] if event is None else event if isinstance(event, list) else [event]
    if not given and event is not None or any(not isinstance(e, str) or not e.strip() for e in given):
        raise fail(f"{where}.event", "must be a REDCap event name or a list of them")
    arm = entry.get("arm")
    arms = [] if arm is None else arm if isinstance(arm, list) else [arm]
    if any(isinstance(a, bool) or not isinstance(a, int) or a < 1 for a in arms) or (arm is not None and not arms):
        raise fail(f"{where}.arm", "must be an arm number (1, 2, …) or a list of them")
    events = tuple(dict.fromkeys(event_and_arm(e.strip())[0] for e in given))
    return FileMap(stem, repeat or instrument, bool(repeat), given[0].strip() if given else None, tuple(columns),
                   tuple(grades), events, tuple(arms))


def _column_map(column: str, target: Any, where: str, fail) -> ColumnMap:  # noqa: ANN001
    if isinstance(target, str) and target.strip():
        return ColumnMap(column, target.strip(), where=where)
    if not isinstance(target, dict):
        raise fail(where, "expected a REDCap field name or {field: …, codes: …}")
    extra = set(target) - {"field", "checkbox", "codes"}
    if extra:
        raise fail(where, f"'{sorted(extra)[0]}' is not a column entry (field, checkbox, codes)")
    if ("field" in target) == ("checkbox" in target):
        raise fail(where, "give exactly one of 'field' or 'checkbox'")
    name = target.get("field") or target.get("checkbox")
    if not isinstance(name, str) or not name.strip():
        raise fail(where, "the REDCap field name is missing")
    codes = parse_codes(target["codes"], f"{where}.codes") if "codes" in target else None
    checkbox = "checkbox" in target
    if checkbox and not codes:
        raise fail(where, "a checkbox needs its 'codes' (one per choice, e.g. '4, L4-L5 | 5, L5-S1')")
    return ColumnMap(column, name.strip(), codes, checkbox, where)


# ================================================================================================ import
def read_export(path: str | Path, mapping: Mapping | str | Path,
                today: date | None = None) -> tuple[Records | None, ValidationReport]:
    """Read a REDCap flat CSV export through a mapping; records only when there is no error.

    A mapping that cannot be used raises MappingError (the mapping is the program, not the data).
    """
    if not isinstance(mapping, Mapping):
        mapping = load_mapping(mapping)
    path = Path(path)
    builder = FrameBuilder(path.name, keep_column=False)
    try:
        frame = read_csv_text(path.read_bytes())
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as problem:
        builder.error(path.name, None, None, f"cannot be read as CSV ({type(problem).__name__})")
        return builder.validate(today)
    return export_to_records(frame, mapping, path.name, today)


def read_csv_text(data: bytes) -> pd.DataFrame:
    """A REDCap CSV as text, blank as missing, headers as REDCap writes them (a BOM is dropped)."""
    import io  # noqa: PLC0415

    frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    return frame.apply(lambda s: s.str.strip().replace("", pd.NA))


def export_to_records(frame: pd.DataFrame, mapping: Mapping, source: str = "redcap_export.csv",
                      today: date | None = None) -> tuple[Records | None, ValidationReport]:
    """Convert an export already read as text (`read_csv_text`) and validate it like a records folder."""
    builder = FrameBuilder(source, keep_column=False)
    reader = _ExportReader(builder, mapping, frame, source)
    reader.read()
    reader.report_missing()
    records, report = builder.validate(today)
    log.info("REDCap export read: %d error(s), %d warning(s)", len(report.errors), len(report.warnings))
    return records, report


class _ExportReader:
    def __init__(self, builder: FrameBuilder, mapping: Mapping, frame: pd.DataFrame, source: str) -> None:
        self.out, self.mapping, self.frame, self.source = builder, mapping, frame, source
        self.missing_seen: dict[tuple[str, str], list[str]] = defaultdict(list)  # (field, code) → records
        self.unmapped_choices: dict[str, tuple[ColumnMap, str]] = {}  # export column → (checkbox, choice)
        self.missing_choices: dict[str, tuple[ColumnMap, str]] = {}  # export column → (checkbox, missing code)

    def read(self) -> None:
        if not self._check_header():
            return
        frame = self.frame
        repeat = frame[INSTRUMENT] if INSTRUMENT in frame else pd.Series(pd.NA, index=frame.index, dtype="string")
        self.pids = self._patient_ids(frame, repeat)
        selected: dict[str, pd.DataFrame] = {}
        for stem in SPEC_BY_STEM:
            file_map = self.mapping.files.get(stem)
            if file_map is None:
                continue
            mask = (repeat == file_map.instrument if file_map.repeating else repeat.isna()).fillna(False)
            if file_map.events and EVENT in frame:
                read = frame[EVENT].map(file_map.reads_event).astype(bool)
                self._report_unread_events(file_map, frame[mask & ~read])
                mask &= read
            selected[stem] = frame[mask.to_numpy(dtype=bool)]
        # A record is a patient when the mapping reads at least one of its rows (an arm left out is not).
        self.read_records = set().union(*(set(rows[self.mapping.record_id_field].dropna())
                                          for rows in selected.values()))
        for stem, rows in selected.items():
            file_map = self.mapping.files[stem]
            self.stem = stem
            if stem == "patients":
                self._patients(file_map, rows)
            elif file_map.grades:
                self._wide_strength(file_map, rows)
            else:
                for row in rows.to_dict("records"):
                    self._row(file_map, row)

    def _report_unread_events(self, file_map: FileMap, rows: pd.DataFrame) -> None:
        """Rows of this file's instrument in events the mapping does not read: never dropped silently."""
        fields = [name for name, _ in file_map.fields() if name in rows.columns]
        filled = rows[rows[fields].notna().any(axis=1)] if fields and len(rows) else rows.iloc[0:0]
        for event, group in filled.groupby(EVENT, sort=True):
            ids = list(dict.fromkeys(map(str, group[self.mapping.record_id_field])))
            records = ", ".join(ids[:10]) + (", …" if len(ids) > 10 else "")
            wanted = ", ".join(file_map.events) + (f" (arm {', '.join(map(str, file_map.arms))})"
                                                   if file_map.arms else "")
            self.out.warning(self.source, None, event, f"{len(group)} row(s) of this event hold "
                             f"{file_map.instrument or file_map.stem} data (records {records}) but "
                             f"files.{file_map.stem}.event in {self.mapping.path} reads {wanted} only: not read")

    def _check_header(self) -> bool:
        columns = set(self.frame.columns)
        ok = True
        if self.mapping.record_id_field not in columns:
            self.out.error(self.source, None, self.mapping.record_id_field,
                           f"is not a column of the export (record_id_field in {self.mapping.path})")
            return False
        if self.mapping.patient_id_field not in columns:
            self.out.error(self.source, None, self.mapping.patient_id_field,
                           f"is not a column of the export (patient_id_field in {self.mapping.path})")
            ok = False
        for file_map in self.mapping.files.values():
            if file_map.repeating and INSTRUMENT not in columns:
                self.out.error(self.source, None, INSTRUMENT, f"is not a column of the export, but "
                               f"{self.mapping.path} reads files.{file_map.stem} from a repeating instrument")
                ok = False
            for name, where in file_map.fields():
                if name not in columns:
                    self.out.error(self.source, None, name, f"is not a column of the export ({where} in "
                                   f"{self.mapping.path})")
                    ok = False
        mapped = {self.mapping.record_id_field, self.mapping.patient_id_field, EVENT, INSTRUMENT, INSTANCE,
                  *SYSTEM_FIELDS}
        mapped |= {name for f in self.mapping.files.values() for name, _ in f.fields()}
        missing_columns = {checkbox_column("", code)[3:]: code for code in self.mapping.missing_data_codes}
        for file_map in self.mapping.files.values():
            for column in file_map.columns:
                if not column.checkbox:
                    continue
                prefix = f"{column.field}___"
                for name in self.frame.columns:
                    if not name.startswith(prefix) or name in mapped:
                        continue
                    choice = name[len(prefix):]
                    if choice in missing_columns:
                        self.missing_choices[name] = (column, missing_columns[choice])
                    else:
                        self.unmapped_choices[name] = (column, choice)
                    mapped.add(name)
        never = [name for name in self.unmapped_choices if not self.frame[name].eq("1").any()]
        for name in never:
            column, choice = self.unmapped_choices[name]
            self.out.warning(self.source, None, name, f"is choice '{choice}' of checkbox {column.field}, not in "
                             f"{column.where}.codes of {self.mapping.path}; never ticked in this export")
        unused = [c for c in self.frame.columns if c not in mapped and not c.endswith("_complete")]
        if unused and ok:
            shown = ", ".join(unused[:8]) + (", …" if len(unused) > 8 else "")
            self.out.warning(self.source, None, None, f"{len(unused)} field(s) not in {self.mapping.path}, "
                             f"ignored: {shown}")
        return ok

    def _patient_ids(self, frame: pd.DataFrame, repeat: pd.Series) -> dict[str, str | None]:
        """Record id → patient_id: the record id itself, or the patient_id_field of its non-repeating rows."""
        record_field, pid_field = self.mapping.record_id_field, self.mapping.patient_id_field
        records = frame[record_field].dropna().unique()
        if pid_field == record_field:
            return {r: r for r in records}
        plain = frame[repeat.isna().to_numpy(dtype=bool)]
        given = plain.dropna(subset=[pid_field]).groupby(record_field, sort=False)[pid_field].unique()
        out: dict[str, str | None] = {}
        for record in records:
            values = given.get(record, [])
            if len(values) > 1:
                self.out.error(self._label(record, None, pid_field), None, ", ".join(values),
                               "gives two patient ids for one record")
            out[record] = values[0] if len(values) else None
        return out

    def _label(self, record: str, row: dict | None, field_name: str | None) -> str:
        where = [] if row is None else self._where(row)
        suffix = f" [{', '.join(where)}]" if where else ""
        field_part = f", field {field_name}" if field_name else ""
        return f"{self.source}: record {record}{field_part}{suffix}"

    def _where(self, row: dict) -> list[str]:
        where = []
        instance = row.get(INSTANCE)
        shown = instance if instance is not None and pd.notna(instance) else None
        if EVENT in row and pd.notna(row[EVENT]):
            repeating_event = shown is not None and (INSTRUMENT not in row or pd.isna(row[INSTRUMENT]))
            where.append(f"{row[EVENT]} #{shown}" if repeating_event else str(row[EVENT]))
        if INSTRUMENT in row and pd.notna(row[INSTRUMENT]):
            where.append(f"{row[INSTRUMENT]} #{shown if shown is not None else '?'}")
        return where

    def _value(self, column: ColumnMap, row: dict, record: str) -> tuple[str | None, bool]:
        """The records text of one mapped value, and whether a problem was already reported for it."""
        if column.checkbox:
            chosen, told = [], False
            for name, (other, choice) in self.unmapped_choices.items():
                if other is column and row.get(name) == "1":
                    self.out.error(self._label(record, row, name), None, choice, f"is a ticked choice of checkbox "
                                   f"{column.field} that {column.where}.codes in {self.mapping.path} does not map "
                                   f"({', '.join(column.codes)}): add it there, or untick it in REDCap")
                    told = True
            for name, (other, code) in self.missing_choices.items():
                if other is column and row.get(name) == "1":
                    self._missing(column.field, code, record)
                    return None, told
            for code, value in column.codes.items():
                name = checkbox_column(column.field, code)
                cell = row[name]
                if pd.isna(cell) or cell == "0":
                    continue
                if cell != "1":
                    self.out.error(self._label(record, row, name), None, cell,
                                   "is not a checkbox value (1 ticked, 0 or blank not)")
                    return None, True
                chosen.append(value)
            return (";".join(chosen) or None), told
        value, told = self._coded(row[column.field], column.codes, self._label(record, row, column.field),
                                  column.field, record)
        if value is not None and column.column in DATE_COLUMNS.get(getattr(self, "stem", ""), ()):
            match = _DATETIME.match(value)
            if match:  # a REDCap datetime field (YYYY-MM-DD HH:MM[:SS]): the records keep the day
                value = match.group(1)
        return value, told

    def _missing(self, field_name: str, code: str, record: str) -> None:
        self.missing_seen[(field_name, code)].append(str(record))

    def report_missing(self) -> None:
        for (field_name, code), records in sorted(self.missing_seen.items()):
            label = self.mapping.missing_data_codes.get(code, code)
            shown = ", ".join(dict.fromkeys(records[:10])) + (", …" if len(set(records)) > 10 else "")
            meaning = f" ({label})" if label != code else ""
            self.out.warning(f"{self.source}: field {field_name}", None, code, f"is a Missing Data Code{meaning} in "
                             f"{len(records)} row(s) (records {shown}): read as blank")

    def _coded(self, cell: Any, codes: dict[str, str] | None, label: str, field_name: str = "",
               record: str = "") -> tuple[str | None, bool]:
        if pd.isna(cell):
            return None, False
        if str(cell) in self.mapping.missing_data_codes and (codes is None or str(cell) not in codes):
            self._missing(field_name, str(cell), record)
            return None, False
        if codes is None:
            return str(cell), False
        if str(cell) not in codes:
            self.out.error(label, None, cell, f"is not one of this field's codes ({', '.join(codes)})")
            return None, True
        return codes[str(cell)], False

    def _start_row(self, row: dict) -> tuple[str, dict[str, str | None], dict[str, str], set]:
        record = row[self.mapping.record_id_field]
        values = {"patient_id": self.pids.get(record)}
        labels = {"patient_id": self._label(record, row, self.mapping.patient_id_field)}
        return record, values, labels, set()

    def _row(self, file_map: FileMap, row: dict, keep_empty: bool = False) -> None:
        record = row[self.mapping.record_id_field]
        if pd.isna(record):
            self.out.error(self.source, None, None, f"a row has no {self.mapping.record_id_field}; left out")
            return
        _, values, labels, reported = self._start_row(row)
        for column in file_map.columns:
            value, told = self._value(column, row, record)
            values[column.column] = value
            labels[column.column] = self._label(record, row, column.field if not column.checkbox else
                                                f"{column.field}___*")
            if told:
                reported.add(column.column)
        if not keep_empty and not reported and all(values[c.column] is None for c in file_map.columns):
            return  # an empty instance (or another event's row): nothing recorded
        self._add(f"{file_map.stem}.csv", values, self._label(record, row, None), labels, reported, record)

    def _add(self, file: str, values: dict, label: str, labels: dict, reported: set, record: str) -> None:
        position = self.out.add_row(file, values, label, labels)
        for column in reported:
            self.out.already_reported(file, position, column)
        if values.get("patient_id") is None:
            self.out.already_reported(file, position, "patient_id")

    def _patients(self, file_map: FileMap, rows: pd.DataFrame) -> None:
        record_field = self.mapping.record_id_field
        seen = set()
        for row in rows.to_dict("records"):
            before = len(self.out.rows["patients.csv"])
            self._row(file_map, row)
            if len(self.out.rows["patients.csv"]) > before:
                seen.add(row[record_field])
        # Every record is a patient, even one whose demographics are blank.
        for record, pid in self.pids.items():
            if record not in self.read_records:
                continue
            if record not in seen:
                stub = dict.fromkeys(self.frame.columns, pd.NA)
                stub[record_field] = record
                self._row(file_map, stub, keep_empty=True)
            if pid is None:
                self.out.error(self._label(record, None, self.mapping.patient_id_field), None, None,
                               "is missing (required: the record's patient id)")

    def _wide_strength(self, file_map: FileMap, rows: pd.DataFrame) -> None:
        for row in rows.to_dict("records"):
            record = row[self.mapping.record_id_field]
            if pd.isna(record):
                continue
            base, base_labels, base_reported = {}, {}, set()
            for column in file_map.columns:
                value, told = self._value(column, row, record)
                base[column.column] = value
                base_labels[column.column] = self._label(record, row, column.field)
                if told:
                    base_reported.add(column.column)
            for grade in file_map.grades:
                if pd.isna(row[grade.field]):
                    continue
                label = self._label(record, row, grade.field)
                mrc, told = self._coded(row[grade.field], grade.codes, label, grade.field, record)
                if mrc is None and not told:
                    continue  # a Missing Data Code: no grade
                _, values, labels, reported = self._start_row(row)
                values.update(base, muscle=grade.muscle, side=grade.side, mrc=mrc)
                labels.update(base_labels, muscle=label, side=label, mrc=label)
                reported |= base_reported | ({"mrc"} if told else set())
                self._add("strength.csv", values, label, labels, reported, record)


# ================================================================================================ export
def records_to_export(records: Records, mapping: Mapping) -> pd.DataFrame:
    """The REDCap flat export these records would give under `mapping` (for the shipped example).

    Record ids are numbered 1… in patient_id order when the mapping keeps the patient id in its own
    field, as REDCap's auto-numbering would; otherwise the patient_id is the record id.
    """
    separate = mapping.patient_id_field != mapping.record_id_field
    pids = sorted(records.patients["patient_id"])
    record_of = {pid: str(i) if separate else pid for i, pid in enumerate(pids, start=1)}
    text = _text_frames(records)
    columns = [mapping.record_id_field]
    has_events = any(f.event for f in mapping.files.values())
    if has_events:
        columns.append(EVENT)
    columns += [INSTRUMENT, INSTANCE]
    for stem in SPEC_BY_STEM:
        file_map = mapping.files.get(stem)
        if file_map is None:
            continue
        if stem == "patients" and separate:
            columns.append(mapping.patient_id_field)
        columns += [name for name, _ in file_map.fields()]
        if file_map.instrument:
            columns.append(f"{file_map.instrument}_complete")
    rows: list[dict[str, str]] = []
    for pid in pids:
        record = record_of[pid]
        for stem in SPEC_BY_STEM:
            file_map = mapping.files.get(stem)
            if file_map is None:
                continue
            frame = text[stem][text[stem]["patient_id"] == pid]
            for instance, out in enumerate(_export_rows(stem, frame, file_map), start=1):
                out[mapping.record_id_field] = record
                if has_events:
                    out[EVENT] = file_map.event or ""
                if file_map.repeating:
                    out[INSTRUMENT] = file_map.instrument
                    out[INSTANCE] = str(instance)
                if stem == "patients" and separate:
                    out[mapping.patient_id_field] = pid
                if file_map.instrument:
                    out[f"{file_map.instrument}_complete"] = "2"
                rows.append(out)
    return pd.DataFrame(rows, columns=columns).fillna("")


def _text_frames(records: Records) -> dict[str, pd.DataFrame]:
    from dashboard.clinical.records.write import to_text_frames  # noqa: PLC0415

    return {name.removesuffix(".csv"): frame for name, frame in to_text_frames(records).items()}


def _inverse(codes: dict[str, str] | None, where: str) -> dict[str, str] | None:
    if codes is None:
        return None
    inverse = {value: code for code, value in codes.items()}
    if len(inverse) != len(codes):
        raise MappingError(f"{where}: two codes give the same value, so the export cannot be written")
    return inverse


def _encode(value: Any, codes: dict[str, str] | None, where: str) -> str:
    if value is None or pd.isna(value):
        return ""
    inverse = _inverse(codes, where)
    if inverse is None:
        return str(value)
    if str(value) not in inverse:
        raise MappingError(f"{where}: value '{value}' has no code")
    return inverse[str(value)]


def _export_rows(stem: str, frame: pd.DataFrame, file_map: FileMap) -> list[dict[str, str]]:
    if file_map.grades:
        by_muscle = {(g.muscle, g.side): g for g in file_map.grades}
        out = []
        for _, exam in frame.groupby("exam_date", sort=True):
            row = {c.field: _encode(exam.iloc[0][c.column], c.codes, c.where) for c in file_map.columns}
            for item in exam.itertuples(index=False):
                grade = by_muscle.get((item.muscle, item.side))
                if grade is None:
                    raise MappingError(f"files.strength.grades: no field for {item.muscle} {item.side}")
                row[grade.field] = _encode(item.mrc, grade.codes, f"files.strength.grades.{grade.field}")
            out.append(row)
        return out
    order = {"surgeries": "surgery_date", "visits": "visit_date", "strength": "exam_date"}.get(stem)
    frame = frame.sort_values(order) if order else frame
    out = []
    for item in frame.to_dict("records"):
        row: dict[str, str] = {}
        for column in file_map.columns:
            value = item[column.column]
            if column.checkbox:
                chosen = set() if pd.isna(value) else set(str(value).split(";"))
                for code, choice in column.codes.items():
                    row[checkbox_column(column.field, code)] = "1" if choice in chosen else "0"
            else:
                row[column.field] = _encode(value, column.codes, column.where)
        out.append(row)
    return out


def write_example(records_dir: str | Path, mapping_path: str | Path, out: str | Path) -> Path:
    """Write the example export for a records folder (data/redcap/ is made from data/demo)."""
    from dashboard.clinical.records.validate import validate  # noqa: PLC0415

    records, report = validate(records_dir)
    if records is None:
        raise ValueError("\n".join(report.error_lines()))
    frame = records_to_export(records, load_mapping(mapping_path))
    out = Path(out)
    frame.to_csv(out, index=False, lineterminator="\n")
    return out


if __name__ == "__main__":  # python -m dashboard.interop.redcap data/demo data/redcap/mapping.yaml OUT.csv
    import sys

    print(write_example(*sys.argv[1:4]), file=sys.stderr)
