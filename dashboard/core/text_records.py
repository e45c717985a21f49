"""Records back to the text of the format (ISO dates, yes/no, clinicians' grades): for forms that are
validated exactly like an import, and for writing a records folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dashboard.core.grades import format_mrc
from dashboard.core.records import Records
from dashboard.core.schema import FILES


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
