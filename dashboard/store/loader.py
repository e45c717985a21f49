"""Reading the store back into the typed frames that `dashboard.clinical.records.validate.validate` produces.

Same columns, order and dtypes, so everything downstream (assessment, charts, exports) works on stored
data exactly as on a freshly validated file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, Table, select

from dashboard.clinical.records.format import FileSpec
from dashboard.clinical.records.parse import PARSERS
from dashboard.clinical.records.validate import Records
from dashboard.store.importer import EXTRA, SPEC_BY_FRAME
from dashboard.store.models import RECORD_TABLES, Import

#: The date column that places each row in time, for `as_of` (patients are timeless).
DATED_BY = {"surgeries": "surgery_date", "strength": "exam_date", "visits": "visit_date"}


def load_records(engine: Engine, as_of: date | None = None,
                 patient_range: tuple[str, str] | None = None, patient_ids: Sequence[str] | None = None) -> Records:
    """All stored records as typed frames; with `as_of`, rows dated after that day are left out.

    `as_of` answers "what was known on that day" the way `assess --as-of` does: by the dates in the
    records (operations, examinations and visits after it are ignored), not by import time.
    `patient_range` (first, last patient_id, inclusive) loads one chunk of patients (see patient_chunks);
    `patient_ids` loads just those patients (a few thousand at most per call: one IN list).
    """
    frames: dict[str, pd.DataFrame] = {}
    extras: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for stem, table in RECORD_TABLES.items():
            frames[stem], extras[stem] = _load_table(conn, table, SPEC_BY_FRAME[stem], as_of, DATED_BY.get(stem),
                                                     patient_range, patient_ids)
    return Records.from_store(frames, extras)


def patient_chunks(engine: Engine, size: int) -> Iterator[tuple[str, str]]:
    """Consecutive ranges of at most `size` patient ids, found by keyset paging on the primary key, so
    that a batch over millions of patients never holds more than one chunk."""
    table = RECORD_TABLES["patients"]
    last: str | None = None
    with engine.connect() as conn:
        while True:
            query = select(table.c.patient_id).order_by(table.c.patient_id).limit(size)
            if last is not None:
                query = query.where(table.c.patient_id > last)
            ids = conn.execute(query).scalars().all()
            if not ids:
                return
            yield ids[0], ids[-1]
            last = ids[-1]


def _load_table(conn: Connection, table: Table, spec: FileSpec, as_of: date | None,
                dated_by: str | None, patient_range: tuple[str, str] | None = None,
                patient_ids: Sequence[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    names = [c.name for c in spec.columns]
    query = select(*(table.c[n] for n in names), table.c[EXTRA]).order_by(*(table.c[k] for k in spec.key))
    if as_of is not None and dated_by is not None:
        query = query.where(table.c[dated_by] <= as_of)
    if patient_range is not None:
        query = query.where(table.c.patient_id.between(*patient_range))
    if patient_ids is not None:
        query = query.where(table.c.patient_id.in_(list(patient_ids)))
    result = conn.execute(query)
    try:
        # Raw driver rows: SQLAlchemy's per-value processing would cost more than the rest of the load.
        rows = result.cursor.fetchall()
    finally:
        result.close()
    values = list(zip(*rows, strict=True)) if rows else [()] * (len(names) + 1)
    frame = pd.DataFrame({column.name: _typed(values[i], column.kind) for i, column in enumerate(spec.columns)})
    extra_names, extra_frame = _extras(values[-1])
    if extra_names:
        frame = pd.concat([frame, extra_frame], axis=1)
    return frame, extra_names


def _typed(values: tuple[Any, ...], kind: str) -> pd.Series:
    """One column, as the driver returned it, with the dtype validation gives it.

    Dates go through validation's own parser so the datetime unit matches; SQLite hands booleans as 0/1.
    Dates and text are converted once per distinct value (a million rows hold a few hundred).
    """
    if kind in ("number", "mrc"):
        return pd.Series(np.array(values, dtype=float))
    if kind == "integer":
        return pd.Series(pd.array(values, dtype="Int64"))
    if kind == "boolean":
        return pd.Series(pd.array(values, dtype="boolean"))
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    if kind == "date":
        iso = [d if isinstance(d, str) else d.isoformat() for d in uniques]  # SQLite text, PostgreSQL date
        distinct = PARSERS["date"](pd.Series(iso or [pd.NA], dtype="string"))  # [pd.NA]: the unit of no dates
    else:
        distinct = pd.Series(list(uniques) or [pd.NA], dtype=object).astype("string")
    column = distinct.take(np.where(codes >= 0, codes, 0)).reset_index(drop=True)
    column[codes < 0] = pd.NA
    return column


def _extras(values: tuple[Any, ...]) -> tuple[list[str], pd.DataFrame]:
    """Columns kept from the file beyond the format, in the order first seen, as text."""
    parsed = [_as_dict(v) for v in values]
    names: dict[str, None] = {}
    for row in parsed:
        if row:
            names.update(dict.fromkeys(row))
    if not names:
        return [], pd.DataFrame(index=range(len(values)))
    frame = pd.DataFrame({name: pd.Series([row.get(name) if row else None for row in parsed], dtype=object)
                          .astype("string") for name in names})
    return list(names), frame


def _as_dict(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    return json.loads(value) if isinstance(value, str) else value


def import_history(engine: Engine) -> pd.DataFrame:
    """Every import attempt, newest first (counts, status and who; never row contents)."""
    table = Import.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table).order_by(table.c.id.desc())).mappings().all()
    frame = pd.DataFrame([dict(r) for r in rows], columns=list(table.c.keys()))
    for column in ("started_at", "finished_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame
