"""Rows of records text built from another format, each remembering where it came from.

Conversions (FHIR, REDCap) add rows here, then `validate` runs the records format's own validation
(`validate_frames`) and rewrites each message's place: a CSV line becomes the Bundle entry or the REDCap
record and field the value came from. So every source gets the same checks and the same messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

import pandas as pd

from dashboard.clinical.records.format import FILES
from dashboard.clinical.records.validate import (
    ISSUE_COLUMNS,
    MAX_VALUE_CHARS,
    Records,
    ValidationReport,
    validate_frames,
)

FILE_NAMES: tuple[str, ...] = tuple(spec.name for spec in FILES)
_COLUMNS = {spec.name: [c.name for c in spec.columns] for spec in FILES}
_LINE_REFERENCE = re.compile(r"\bline (\d+)\b")


@dataclass
class _Row:
    values: dict[str, str | None]
    label: str  # where the row as a whole came from
    column_labels: dict[str, str] = field(default_factory=dict)  # where single values came from


@dataclass
class FrameBuilder:
    """Collects text rows for the four records files plus the problems found while converting."""

    source: str  # the input's name, used for messages about the input as a whole
    keep_column: bool = True  # False: the place label already names the field (REDCap)
    rows: dict[str, list[_Row]] = field(default_factory=lambda: {name: [] for name in FILE_NAMES})
    issues: list[dict] = field(default_factory=list)
    reported: set[tuple[str, int, str]] = field(default_factory=set)  # cells whose problem is already told

    def add_row(self, file: str, values: dict[str, str | None], label: str,
                column_labels: dict[str, str] | None = None) -> int:
        """Add one row of text to a records file ('strength.csv'); returns its position."""
        self.rows[file].append(_Row(dict(values), label, dict(column_labels or {})))
        return len(self.rows[file]) - 1

    def row(self, file: str, position: int) -> _Row:
        return self.rows[file][position]

    def error(self, label: str, column: str | None, value: object, message: str) -> None:
        self._issue("error", label, column, value, message)

    def warning(self, label: str, column: str | None, value: object, message: str) -> None:
        self._issue("warning", label, column, value, message)

    def already_reported(self, file: str, position: int, column: str) -> None:
        """A cell left blank because its value was rejected here: no second 'is missing' for it."""
        self.reported.add((file, position, column))

    def _issue(self, severity: str, label: str, column: str | None, value: object, message: str) -> None:
        self.issues.append({"severity": severity, "file": label, "line": pd.NA, "column": column or "",
                            "value": _shown(value), "message": message})

    def frames(self) -> dict[str, pd.DataFrame | None]:
        """Text frames as a records folder would give them (blank = missing, extra columns kept)."""
        out: dict[str, pd.DataFrame | None] = {}
        for name in FILE_NAMES:
            rows = self.rows[name]
            columns = list(_COLUMNS[name])
            for row in rows:
                columns.extend(c for c in row.values if c not in columns)
            frame = pd.DataFrame([{c: row.values.get(c) for c in columns} for row in rows], columns=columns,
                                 dtype="string")
            out[name] = frame.replace("", pd.NA) if len(frame) else frame
        return out

    def validate(self, today: date | None = None) -> tuple[Records | None, ValidationReport]:
        """Validate like a CSV import; messages name this source's places. Records only without error."""
        records, report = validate_frames(self.frames(), {name: name for name in FILE_NAMES}, today)
        issues = [*self.issues, *self._relabel(report.issues)]
        frame = pd.DataFrame(issues, columns=ISSUE_COLUMNS)
        frame["line"] = frame["line"].astype("Float64")
        final = ValidationReport(frame.reset_index(drop=True))
        return (records if final.ok else None), final

    def _relabel(self, issues: pd.DataFrame) -> list[dict]:
        out = []
        for issue in issues.to_dict("records"):
            name, line, column = issue["file"], issue["line"], issue["column"] or ""
            if name not in self.rows or pd.isna(line) or int(line) < 2:
                issue.update(file=self.source, line=pd.NA)  # about the input as a whole (or a header)
                out.append(issue)
                continue
            position = int(line) - 2
            if (name, position, column) in self.reported and "is missing" in str(issue["message"]):
                continue
            row = self.rows[name][position]
            label = row.column_labels.get(column, row.label)
            message = _LINE_REFERENCE.sub(lambda m, n=name, c=column: self._place(n, int(m.group(1)), c),
                                          str(issue["message"]))
            issue.update(file=label, line=pd.NA, message=message,
                         column=column if self.keep_column or column not in row.column_labels else "")
            out.append(issue)
        return out

    def _place(self, name: str, line: int, column: str) -> str:
        rows = self.rows[name]
        if not 2 <= line < len(rows) + 2:
            return f"line {line}"
        row = rows[line - 2]
        return row.column_labels.get(column, row.label)


def _shown(value: object) -> object:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return pd.NA
    text = str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"
