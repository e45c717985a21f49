"""Records back to the text of the format (ISO dates, yes/no, clinicians' grades): for forms that are
validated exactly like an import, and for writing a records folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dashboard.clinical.mrc import format_mrc
from dashboard.clinical.records.format import FILES
from dashboard.clinical.records.validate import Records


def _text(series: pd.Series, kind: str) -> pd.Series:
    if kind == "date":
        return series.dt.strftime("%Y-%m-%d").astype("string")
    if kind == "boolean":
        return series.map({True: "yes", False: "no"}).astype("string")
    if kind == "mrc":
        return series.map(lambda v: None if pd.isna(v) else format_mrc(v)).astype("string")
    if kind == "integer":
        return series.astype("Int64").astype("string")
    if kind == "number":
        return series.map(lambda v: None if pd.isna(v) else f"{v:g}").astype("string")
    return series.astype("string")


def to_text_frames(records: Records) -> dict[str, pd.DataFrame]:
    """One frame of text per file, columns in the format's order, extra columns kept at the end."""
    frames = records.frames()
    out = {}
    for spec in FILES:
        frame = frames[spec.stem]
        text = pd.DataFrame({c.name: _text(frame[c.name], c.kind) for c in spec.columns}, index=frame.index)
        for extra in records.extra_columns.get(spec.stem, []):
            text[extra] = frame[extra].astype("string")
        out[spec.name] = text
    return out


def write_folder(records: Records, folder: Path) -> Path:
    """Write a records folder that `validate` reads back to the same records."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in to_text_frames(records).items():
        frame.to_csv(folder / name, index=False)
    return folder


#: A cell starting with one of these is run as a formula by Excel, LibreOffice and Google Sheets
#: (OWASP "CSV injection": e.g. =cmd|' /C calc'!A0, +HYPERLINK(…), @SUM(…), or after a tab or carriage return).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_PLAIN_NUMBER = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy safe to open in a spreadsheet: text cells that would start a formula get a leading apostrophe.

    For every export people open in Excel (CSV, XLSX). Plain numbers such as -3 or +1.5 are left alone (they
    cannot run anything), as are non-text columns; headers are neutralised too. Not for records folders meant
    to be imported again, where the apostrophe would become part of the value.
    """
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if not (pd.api.types.is_string_dtype(values) or values.dtype == object):
            continue
        text = values.astype("string")
        starts = text.str.startswith(FORMULA_STARTS).fillna(False)
        if not starts.any():  # the usual case: one vectorised pass, no copy
            continue
        risky = starts & ~text.str.match(_PLAIN_NUMBER).fillna(False)
        if risky.any():
            if values.dtype == object:
                out[column] = values.where(~risky.to_numpy(), "'" + text[risky].astype(object))
            else:
                out[column] = text.mask(risky, "'" + text)
    out.columns = [_neutral_header(c) for c in out.columns]
    return out


def _neutral_header(name: object) -> object:
    text = str(name)
    return f"'{text}" if text.startswith(FORMULA_STARTS) and not pd.Series([text]).str.match(_PLAIN_NUMBER)[0] \
        else name


def safe_csv(frame: pd.DataFrame) -> bytes:
    """CSV bytes for people to open in a spreadsheet: formulas neutralised, every line break inside a value
    quoted (CRLF line ends: Python's csv quotes a bare CR only when it is part of the line terminator), and a
    UTF-8 byte-order mark so Excel reads accents right."""
    return neutralise_formulas(frame).to_csv(index=False, lineterminator="\r\n").encode("utf-8-sig")
