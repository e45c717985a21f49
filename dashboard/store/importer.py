"""Importing validated records into the store: one transaction, natural keys, counts per file.

Each file is bulk-loaded into a temporary staging table (executemany on SQLite, COPY on PostgreSQL) and
merged with set-based SQL: one UPDATE for rows whose key exists with other values, one INSERT … SELECT for
new keys. Per-row Python or ORM objects would take minutes for a 1.6-million-row strength file; this takes
seconds. A re-import of the same data therefore adds nothing.

What a re-import may change (docs/format-extensions.md, "Re-imports"):
- a recorded value that differs from the stored one replaces it and is counted as updated;
- a blank cell or an absent column is "not recorded in this file" and keeps the stored value: an import never
  replaces a stored value with nothing (a visits file without the cauda equina columns must not erase them);
  extra columns too, value by value (`_merge_extras`);
- rows the store has and the file lacks are kept (an import never deletes);
- who a patient is (name, MRN, sex, birth year) is never changed by an import: a difference is an error
  (dashboard.store.identity) and nothing is stored.
The import's audit entry is written in the same transaction as its rows: both land, or neither.

Nothing here logs row contents: files carry names, MRNs and free-text notes.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement

from dashboard.clinical.records.format import FILES, FileSpec
from dashboard.clinical.records.validate import Records
from dashboard.store import audit
from dashboard.store.identity import IdentityConflictError, identity_conflicts
from dashboard.store.models import RECORD_TABLES, Import

log = logging.getLogger(__name__)

EXTRA = "extra"
#: SQLite page cache while importing (KiB). With the default 2 MB the key indexes of a large strength table
#: stop fitting and every insert reads pages from disk: 100,000 patients took 52 s instead of 35 s.
SQLITE_IMPORT_CACHE_KIB = 256 * 1024
SQLITE_DEFAULT_CACHE_KIB = 2000
SPEC_BY_FRAME: dict[str, FileSpec] = {spec.stem: spec for spec in FILES}


class StoreImportError(RuntimeError):
    """An import the database refused; nothing was stored. The message never carries row values."""


@dataclass(frozen=True)
class FileCounts:
    """What one file did to the store."""

    inserted: int = 0
    unchanged: int = 0
    updated: int = 0

    @property
    def total(self) -> int:
        return self.inserted + self.unchanged + self.updated


@dataclass(frozen=True)
class ImportResult:
    """Outcome of a successful import, per file ('patients', 'surgeries', 'strength', 'visits')."""

    import_id: int
    source_name: str
    counts: dict[str, FileCounts] = field(default_factory=dict)
    seconds: float = 0.0
    new_patients: tuple[str, ...] = ()  # ids not stored before
    changed_patients: tuple[str, ...] = ()  # stored ids with a new or changed row in any file
    unchanged_patients: int = 0  # the file's other patients
    dry_run: bool = False  # a preview: rolled back, nothing stored

    @property
    def inserted(self) -> int:
        return sum(c.inserted for c in self.counts.values())

    @property
    def unchanged(self) -> int:
        return sum(c.unchanged for c in self.counts.values())

    @property
    def updated(self) -> int:
        return sum(c.updated for c in self.counts.values())

    def summary(self) -> str:
        """One line for the import page (counts only, no values)."""
        return "; ".join(f"{name}: {c.inserted} new, {c.updated} updated, {c.unchanged} unchanged"
                         for name, c in self.counts.items())

    def patients_summary(self, show: int = 10) -> str:
        """New / changed / unchanged patients, naming the first few ids of each (ids are pseudonymous)."""
        def ids(values: tuple[str, ...]) -> str:
            if not values:
                return ""
            more = f", … {len(values) - show} more" if len(values) > show else ""
            return f" ({', '.join(values[:show])}{more})"
        return (f"{len(self.new_patients)} new patient(s){ids(self.new_patients)}, "
                f"{len(self.changed_patients)} changed{ids(self.changed_patients)}, "
                f"{self.unchanged_patients} unchanged")


def source_basename(source_name: str) -> str:
    """Base name of an uploaded file or folder, whatever the client's path separator."""
    parts = [p for p in re.split(r"[\\/]", source_name.strip()) if p]
    return parts[-1] if parts else "unnamed"


def guess_source_kind(source_name: str) -> str:
    """'workbook' for Excel files, else 'folder' (a records folder of CSV files)."""
    return "workbook" if source_basename(source_name).lower().endswith((".xlsx", ".xlsm")) else "folder"


class _Preview(Exception):
    """Raised inside a dry run's transaction to roll it back after everything was counted."""


def import_records(engine: Engine, records: Records, source_name: str, user: str | None = None, *,
                   source_kind: str | None = None, role: str | None = None, dry_run: bool = False,
                   audit_user: str | None = None, patient_id: str | None = None) -> ImportResult:
    """Store validated records atomically: all four files and the audit entry, or nothing.

    IdentityConflictError (nothing stored) when the file would change who a stored patient is. `dry_run`
    does the whole import, counts it and rolls it back: the preview shows exactly what the import would do.
    A failed attempt rolls everything back and is then logged in `imports` as failed (without values),
    so the import history shows what was tried. `audit_user` is who the audit log names (default `user`);
    `patient_id`, the one patient an import from a form is about, for the audit entry.
    """
    name = source_basename(source_name)
    kind = source_kind or guess_source_kind(source_name)
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    frames = records.frames()
    outcome: dict[str, Any] = {}
    try:
        with engine.begin() as conn:
            problems = identity_conflicts(conn, frames["patients"])
            if problems:
                raise IdentityConflictError(problems)
            _import_cache(conn, SQLITE_IMPORT_CACHE_KIB)
            import_id = conn.execute(insert(Import.__table__).values(
                started_at=started_at, source_name=name, source_kind=kind, user_name=user, status="running",
            )).inserted_primary_key[0]
            counts: dict[str, FileCounts] = {}
            new_ids: set[str] = set()
            touched_ids: set[str] = set()
            for stem, table in RECORD_TABLES.items():  # patients first: the others refer to them
                counts[stem], inserted_ids, updated_ids = _merge_file(conn, table, SPEC_BY_FRAME[stem], frames[stem],
                                                                      import_id)
                if stem == "patients":
                    new_ids = inserted_ids
                touched_ids |= inserted_ids | updated_ids
            changed = touched_ids - new_ids
            outcome = {"import_id": import_id, "counts": counts, "new_patients": tuple(sorted(new_ids)),
                       "changed_patients": tuple(sorted(changed)),
                       "unchanged_patients": len(frames["patients"]) - len(new_ids) - len(changed)}
            conn.execute(update(Import.__table__).where(Import.__table__.c.id == import_id).values(
                finished_at=datetime.now(UTC), status="succeeded", **_count_columns(counts)))
            _import_cache(conn, SQLITE_DEFAULT_CACHE_KIB)  # the pooled connection gives the memory back
            if dry_run:
                raise _Preview
            result = ImportResult(source_name=name, seconds=time.perf_counter() - clock, **outcome)
            audit.record(conn, audit_user or user, "import", role=role, patient_id=patient_id, file=name, kind=kind,
                         **audit.import_details(result))
    except _Preview:
        return ImportResult(source_name=name, seconds=time.perf_counter() - clock, dry_run=True, **outcome)
    except Exception as problem:
        driver_error = _driver_error(engine, problem)
        reason = _safe_reason(problem, driver_error)
        log.warning("import failed after %.1f s (%s); nothing was stored", time.perf_counter() - clock, reason)
        _log_failed_import(engine, started_at, name, kind, user, reason)
        if driver_error is not None:
            # The driver's message can quote a whole row (PostgreSQL: "Failing row contains …").
            raise StoreImportError(f"the database refused the import: {reason}") from None
        raise
    log.info("import %d stored in %.1f s: %s", import_id, result.seconds, result.summary())
    return result


def _import_cache(conn: Connection, kib: int) -> None:
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA cache_size = -{int(kib)}")


def _count_columns(counts: dict[str, FileCounts]) -> dict[str, int]:
    return {f"{stem}_{what}": getattr(c, what) for stem, c in counts.items()
            for what in ("inserted", "unchanged", "updated")}


def _driver_error(engine: Engine, problem: BaseException) -> BaseException | None:
    """The database driver's exception behind a failure, if it is one (wrapped by SQLAlchemy or raw, as
    from COPY on the driver's own cursor)."""
    if isinstance(problem, DBAPIError):
        return problem.orig or problem
    if isinstance(problem, engine.dialect.loaded_dbapi.Error):
        return problem
    return None


def _safe_reason(problem: BaseException, driver_error: BaseException | None) -> str:
    """Exception type and, for database errors, the constraint involved; never a value."""
    if driver_error is None:
        return type(problem).__name__
    name = type(driver_error).__name__
    diag = getattr(driver_error, "diag", None)  # psycopg: structured, value-free fields
    if diag is not None:
        detail = " ".join(filter(None, (diag.table_name, diag.column_name, diag.constraint_name)))
        return f"{name} {detail or diag.sqlstate or ''}".strip()
    text = str(driver_error)  # sqlite3: 'UNIQUE constraint failed: t.c' — names only, no values
    return f"{name}: {text}" if "constraint failed" in text else name


def _log_failed_import(engine: Engine, started_at: datetime, name: str, kind: str, user: str | None,
                       reason: str) -> None:
    try:
        with engine.begin() as conn:
            conn.execute(insert(Import.__table__).values(
                started_at=started_at, finished_at=datetime.now(UTC), source_name=name, source_kind=kind,
                user_name=user, status="failed", error=reason[:500]))
    except Exception as problem:  # the original failure matters more than its log entry
        log.warning("could not log the failed import (%s)", type(problem).__name__)


# ------------------------------------------------------------------------------------------- merging
def _merge_file(conn: Connection, table: Table, spec: FileSpec, frame: pd.DataFrame, import_id: int
                ) -> tuple[FileCounts, set[str], set[str]]:
    """Upsert one file by its natural key; its counts and the patient ids of its inserted and updated rows.

    A row is updated only where the file records a value that differs from the stored one; a blank cell or an
    absent column keeps the stored value (COALESCE), so an import never replaces a value with nothing.
    """
    if frame.empty:
        return FileCounts(), set(), set()
    key = list(spec.key)
    values = [c.name for c in spec.columns if c.name not in spec.key] + [EXTRA]
    columns = key + values
    rows = _rows(frame, spec)
    if conn.execute(select(table.c.id).limit(1)).first() is None:
        # First load of this table: nothing to compare with, so skip the staging table (half the time).
        _bulk_insert(conn, table.name, columns, rows, import_id)
        return FileCounts(inserted=len(rows)), set(frame["patient_id"].unique()), set()
    staging = _staging_table(table, tuple(columns))
    schema = "pg_temp" if conn.dialect.name == "postgresql" else "temp"
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {schema}.{staging.name}")  # a leftover on this pooled connection
    staging.create(conn)
    _bulk_insert(conn, staging.name, columns, rows)
    quote = conn.dialect.identifier_preparer.quote  # the key index after the rows: faster than keeping it up
    conn.exec_driver_sql(f"CREATE UNIQUE INDEX ix_{staging.name}_key ON {staging.name} "
                         f"({', '.join(quote(k) for k in key)})")
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {staging.name}")  # temp tables get no autovacuum statistics

    same_key = and_(*(table.c[k] == staging.c[k] for k in key))
    _merge_extras(conn, table, staging, key, same_key)
    differs = or_(*(and_(staging.c[v].is_not(None),
                         _comparable(table.c[v]).is_distinct_from(_comparable(staging.c[v]))) for v in values))
    is_new = ~exists().where(same_key)
    found = table.c.id.is_not(None)
    new_rows, changed_rows = func.count().filter(~found), func.count().filter(and_(found, differs))
    per_patient = conn.execute(  # one pass over the file's rows: what happens to each patient's rows
        select(staging.c.patient_id, new_rows, changed_rows).select_from(staging.outerjoin(table, same_key))
        .group_by(staging.c.patient_id).having(or_(new_rows > 0, changed_rows > 0))).all()
    inserted = sum(row[1] for row in per_patient)
    updated = sum(row[2] for row in per_patient)
    inserted_ids = {row[0] for row in per_patient if row[1]}
    updated_ids = {row[0] for row in per_patient if row[2]}
    if updated:
        conn.execute(update(table).where(same_key, differs)
                     .values({**{v: func.coalesce(staging.c[v], table.c[v]) for v in values}, "import_id": import_id}))
    if inserted:
        conn.execute(insert(table).from_select(
            [*columns, "import_id"],
            select(*(staging.c[c] for c in columns), literal(import_id)).where(is_new)))
    staging.drop(conn)
    return (FileCounts(inserted=inserted, updated=updated, unchanged=len(frame) - inserted - updated),
            inserted_ids, updated_ids)


def _merge_extras(conn: Connection, table: Table, staging: Table, key: Sequence[str],
                  same_key: ColumnElement[bool]) -> None:
    """Give extra columns the format columns' rule: a blank cell or an absent column keeps the stored value.

    Extras are one JSON object per row, so COALESCE on the whole object would let a file with a blank `ward`
    cell (JSON null), or without a `ward` column but with another extra, replace the stored ward. For each
    stored row whose file object differs as text, the staged object becomes the stored one updated by the
    file's recorded (non-null) values, or NULL ("nothing recorded") when that changes nothing; the set-based
    comparison and update then treat it like any column. Only differing rows come to Python: a re-import of
    the same file brings none.
    """
    rows = conn.execute(
        select(*(staging.c[k] for k in key), cast(table.c[EXTRA], Text), cast(staging.c[EXTRA], Text))
        .select_from(staging.join(table, same_key))
        .where(staging.c[EXTRA].is_not(None),
               or_(table.c[EXTRA].is_(None), _comparable(table.c[EXTRA]) != _comparable(staging.c[EXTRA])))).all()
    if not rows:
        return
    changes = []
    for *keys, stored_text, file_text in rows:
        stored = json.loads(stored_text) if stored_text else {}
        merged = {**stored, **{k: v for k, v in json.loads(file_text).items() if v is not None}}
        changes.append({**{f"key_{k}": value for k, value in zip(key, keys, strict=True)},
                        "merged_extra": None if merged == stored else merged})
    conn.execute(update(staging).where(*(staging.c[k] == bindparam(f"key_{k}") for k in key))
                 .values({EXTRA: bindparam("merged_extra", type_=staging.c[EXTRA].type)}), changes)


def _comparable(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """JSON has no equality operator on PostgreSQL: compare its text (key order as the file had it)."""
    return cast(column, Text) if column.name == EXTRA else column


@functools.cache
def _staging_table(table: Table, columns: tuple[str, ...]) -> Table:
    """The temporary table a file is staged in, one definition per record table for the life of the process.

    One definition, so SQLAlchemy compiles the merge statements once and reuses them (a new Table object per
    import made every import compile its ~20 statements again: a third of a small import's time, e.g. Add exam).
    The table itself is created and dropped on the connection for each file; its key index is plain SQL, made
    after the rows are in, so it never becomes part of this definition.
    """
    return Table(f"staging_{table.name}", MetaData(), *(Column(c, table.c[c].type) for c in columns),
                 prefixes=["TEMPORARY"], postgresql_on_commit="DROP")


def _bulk_insert(conn: Connection, table_name: str, columns: Sequence[str], rows: list[tuple],
                 import_id: int | None = None) -> None:
    """Bulk-load rows by the fastest path the driver has (COPY on PostgreSQL, executemany on SQLite).

    With `import_id`, every row also gets that import_id (for loading a table's first rows directly).
    """
    quote = conn.dialect.identifier_preparer.quote
    names = [quote(c) for c in columns] + (["import_id"] if import_id is not None else [])
    if conn.dialect.name == "postgresql":
        suffix = (import_id,) if import_id is not None else ()
        cursor = conn.connection.driver_connection.cursor()
        try:
            with cursor.copy(f"COPY {quote(table_name)} ({', '.join(names)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row + suffix)
        finally:
            cursor.close()
    elif conn.dialect.name == "sqlite":
        marks = ["?"] * len(columns) + ([str(int(import_id))] if import_id is not None else [])
        conn.exec_driver_sql(
            f"INSERT INTO {quote(table_name)} ({', '.join(names)}) VALUES ({', '.join(marks)})", rows)
    else:
        raise NotImplementedError(f"bulk import is implemented for SQLite and PostgreSQL, not {conn.dialect.name}")


# ----------------------------------------------------------------------------------- frame → rows
def _rows(frame: pd.DataFrame, spec: FileSpec) -> list[tuple]:
    """Plain Python tuples (str, int, float, bool, ISO date text, JSON text or None), key columns first."""
    key = list(spec.key)
    ordered = key + [c.name for c in spec.columns if c.name not in spec.key]
    kinds = {c.name: c.kind for c in spec.columns}
    columns = [_python_values(frame[name], kinds[name]) if name in frame.columns else [None] * len(frame)
               for name in ordered]
    columns.append(_extra_json(frame, [c for c in frame.columns if c not in kinds]))
    return list(zip(*columns, strict=True))


#: How one distinct, non-missing value of each kind is handed to the driver.
_TO_PYTHON = {
    "date": lambda value: value.strftime("%Y-%m-%d"),
    "number": float,
    "mrc": float,
    "integer": int,
    "boolean": bool,
}


def _python_values(series: pd.Series, kind: str) -> list[Any]:
    """Convert distinct values only (a cohort has a few hundred dates and codes for a million rows)."""
    convert = _TO_PYTHON.get(kind, str)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    converted = np.empty(len(uniques) + 1, dtype=object)
    converted[:-1] = [convert(value) for value in uniques]
    converted[-1] = None
    return converted[np.where(codes >= 0, codes, len(uniques))].tolist()


def _extra_json(frame: pd.DataFrame, extras: Iterable[str]) -> list[str | None]:
    """Extra columns as one JSON object per row (nulls kept, so the set of columns survives)."""
    extras = list(extras)
    if not extras or frame.empty:
        return [None] * len(frame)
    text = frame[extras].astype(object).to_json(orient="records", lines=True, force_ascii=False)
    return [line for line in text.split("\n") if line]  # JSON escapes newlines inside values
