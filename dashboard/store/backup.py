"""Backup and restore of the store with the database's own online tools.

SQLite: the online backup API (sqlite3.Connection.backup) copies a consistent snapshot while the app keeps
running, into a temporary file that is checked (integrity_check) and only then renamed to the target, so a
backup file is either complete or absent. Restore copies a checked backup into the live database with the
same API, inside one write transaction: readers see the old store or the new one, never a mix.

PostgreSQL: pg_dump (custom format, the store's schema only) and pg_restore; the restore script runs in one
psql transaction (--single-transaction, ON_ERROR_STOP), so a failed restore changes nothing. These are
PostgreSQL's client programs (Debian: postgresql-client); without them backup and restore say so.

Before a restore replaces anything, the current store is backed up next to the database (a safety copy), so
a restore can itself be undone. After it, the schema is migrated to head: a backup from an older version of
the app still restores.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, Table, func, inspect, select
from sqlalchemy.engine import URL, make_url

from dashboard.store.db import DEFAULT_DB_PATH, alembic_config, database_url, get_engine
from dashboard.store.models import Base

SQLITE_TIMEOUT_S = 30
#: Our functions on PostgreSQL (append-only triggers), dropped with the tables before a restore.
PG_FUNCTIONS = ("decisions_append_only", "audit_log_append_only")


class BackupError(RuntimeError):
    """A backup or restore that could not be done; nothing was changed. The message says why and what to do."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    backend: str
    bytes: int
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RestoreResult:
    source: Path
    backend: str
    safety_copy: Path | None
    revision: str | None
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ backup
def backup(out: str | Path, url: str | None = None) -> BackupResult:
    """Write an online backup of the store at `url` (default: the app's store) to `out`, a new file."""
    out = Path(out)
    if out.exists():
        raise BackupError(f"{out} already exists: give a new file name (a backup never overwrites a file)")
    out.parent.mkdir(parents=True, exist_ok=True)
    url = database_url(url)
    clock = time.perf_counter()
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        _sqlite_backup(_sqlite_path(url), out)
    elif backend == "postgresql":
        _pg_backup(url, out)
    else:
        raise BackupError(f"backup is implemented for SQLite and PostgreSQL, not {backend}")
    return BackupResult(out, backend, out.stat().st_size, time.perf_counter() - clock, _counts_of(url))


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError("backup and restore need a SQLite database file, not an in-memory database")
    return Path(database).expanduser()


def _sqlite_backup(source: Path, out: Path) -> None:
    if not source.exists():
        raise BackupError(f"there is no database at {source}")
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    src = sqlite3.connect(source, timeout=SQLITE_TIMEOUT_S)
    dst = sqlite3.connect(partial)
    try:
        src.backup(dst)  # one step: a consistent snapshot, writers (WAL) are not blocked
        dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
        _check_sqlite(dst, out)
    finally:
        dst.close()
        src.close()
    try:
        _fsync(partial)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)


def _check_sqlite(conn: sqlite3.Connection, label: Path) -> str | None:
    """integrity_check must say ok and the file must be a dashboard store; returns its schema revision."""
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()
        if not result or result[0] != "ok":
            raise BackupError(f"{label} is damaged (SQLite integrity_check: {result[0] if result else 'no answer'})")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "alembic_version" not in tables:
            raise BackupError(f"{label} is a SQLite database but not a dashboard store (no schema revision)")
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError as problem:
        raise BackupError(f"{label} is not a SQLite database ({problem})") from None
    return row[0] if row else None


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


# ------------------------------------------------------------------------------------------------ restore
def restore(source: str | Path, url: str | None = None, *, safety_dir: str | Path | None = None) -> RestoreResult:
    """Replace the store at `url` with the backup `source`, after a safety copy of the current store.

    The backup is checked first (SQLite: integrity and schema revision; PostgreSQL: pg_restore can read it).
    A backup from a newer version of the app is refused; an older one is migrated to head afterwards.
    """
    source = Path(source)
    if not source.is_file():
        raise BackupError(f"{source}: no such backup file")
    url = database_url(url)
    backend = make_url(url).get_backend_name()
    clock = time.perf_counter()
    if backend == "sqlite":
        _check_sqlite_backup(source)
    elif backend == "postgresql":
        _pg_tables_in(source)  # readable by pg_restore, and a dashboard store
    else:
        raise BackupError(f"restore is implemented for SQLite and PostgreSQL, not {backend}")
    safety = _safety_copy(url, backend, Path(safety_dir) if safety_dir else DEFAULT_DB_PATH.parent / "backups")
    if backend == "sqlite":
        target = _sqlite_path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(target, timeout=SQLITE_TIMEOUT_S)
        try:
            src.backup(dst)  # one write transaction on the live database: all of it or none
        finally:
            dst.close()
            src.close()
    else:
        _pg_restore(url, source)
    engine = get_engine(url)  # migrates an older backup to head
    try:
        from dashboard.store.users import revoke_all_sessions

        revoke_all_sessions(engine)  # sessions revoked since the backup was made must not come back
        revision = _revision(engine)
        counts = _counts(engine)
    finally:
        engine.dispose()
    return RestoreResult(source, backend, safety, revision, time.perf_counter() - clock, counts)


def _check_sqlite_backup(source: Path) -> None:
    try:
        conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    except sqlite3.Error as problem:
        raise BackupError(f"{source} cannot be opened ({problem})") from None
    try:
        revision = _check_sqlite(conn, source)
    finally:
        conn.close()
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if revision not in known:
        raise BackupError(f"{source} is at schema revision {revision!r}, which this version of the app does not "
                          "know (a backup from a newer version?): upgrade the app first")


def _safety_copy(url: str, backend: str, folder: Path) -> Path | None:
    """Back up the current store before it is replaced; None when there is nothing to keep."""
    if backend == "sqlite" and not _sqlite_path(url).exists():
        return None
    engine = get_engine(url, migrate=False)
    try:
        if not inspect(engine).get_table_names():
            return None
    finally:
        engine.dispose()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return backup(folder / f"pre-restore-{stamp}.{'db' if backend == 'sqlite' else 'dump'}", url).path


# ------------------------------------------------------------------------------------------- PostgreSQL
def _pg_program(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                                                   reverse=True)), None)
    if not found:
        raise BackupError(f"PostgreSQL backup and restore need {name} (Debian: apt-get install postgresql-client); "
                          "it was not found, so nothing was done")
    return found


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection URI without the password (which goes in PGPASSWORD, not on a command line)."""
    parsed: URL = make_url(url)
    env = {**os.environ}
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _pg_schema(url: str) -> str:
    engine = get_engine(url, migrate=False)
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SELECT current_schema()").scalar_one())
    finally:
        engine.dispose()


def _run(command: list[str], env: dict[str, str], what: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(command, env=env, input=stdin, capture_output=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{what} failed: {_value_free(result.stderr) or f'exit status {result.returncode}'}")
    return result.stdout


def _value_free(stderr: bytes) -> str:
    """The PostgreSQL tools' error lines without row data: psql's CONTEXT/DETAIL lines can quote a COPY line
    (names, notes), and quoted values in an ERROR line are replaced."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines()]
    kept = [re.sub(r'"[^"]*"', '"…"', line) for line in lines
            if line and not line.startswith(("CONTEXT:", "DETAIL:", "HINT:", "LINE ", "^"))]
    return " ".join(kept[-3:])[:500]


def _pg_backup(url: str, out: Path) -> None:
    uri, env = _libpq(url)
    schema = _pg_schema(url)
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        _run([_pg_program("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", f"--schema={schema}",
              f"--file={partial}", f"--dbname={uri}"], env, "pg_dump")
        _pg_tables_in(partial)
        _fsync(partial)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)


def _pg_tables_in(dump: Path) -> set[str]:
    """Tables of a pg_dump archive (its table of contents); refuses a file that is not a dashboard store."""
    listing = _run([_pg_program("pg_restore"), "--list", str(dump)], {**os.environ},
                   f"reading {dump.name} (is it a pg_dump custom-format backup?)").decode(errors="replace")
    tables = set()
    for line in listing.splitlines():  # "216; 1259 18352 TABLE schema name owner"
        parts = line.split()
        if not line.startswith(";") and "TABLE" in parts and "DATA" not in parts:
            at = parts.index("TABLE")
            if len(parts) > at + 2:
                tables.add(parts[at + 2])
    if "alembic_version" not in tables:
        raise BackupError(f"{dump} is a pg_dump archive but not a dashboard store (no schema revision)")
    return tables


def _pg_restore(url: str, source: Path) -> None:
    """Drop our own objects, then the dump's --clean script, all in one psql transaction."""
    uri, env = _libpq(url)
    schema = _pg_schema(url).replace('"', '""')
    ours = [*Base.metadata.tables, "alembic_version"]
    prefix = "".join(f'DROP TABLE IF EXISTS "{schema}"."{t}" CASCADE;\n' for t in ours)
    prefix += "".join(f'DROP FUNCTION IF EXISTS "{schema}".{f}() CASCADE;\n' for f in PG_FUNCTIONS)
    script = _run([_pg_program("pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-privileges",
                   "--file=-", str(source)], env, "pg_restore")
    _run([_pg_program("psql"), "--no-psqlrc", "--quiet", "--single-transaction", "--set=ON_ERROR_STOP=1",
          f"--dbname={uri}"], env, "restoring with psql (nothing was changed)",
         stdin=prefix.encode() + script)


# ---------------------------------------------------------------------------------------------- content
def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def _counts(engine: Engine) -> dict[str, int]:
    existing = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        return {name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                for name, table in Base.metadata.tables.items() if name in existing}


def _counts_of(url: str) -> dict[str, int]:
    engine = get_engine(url, migrate=False)
    try:
        return _counts(engine)
    finally:
        engine.dispose()


def store_digest(engine: Engine) -> dict[str, tuple[int, str]]:
    """Row count and a SHA-256 of every row (in id order) per table, plus the schema revision.

    Two stores with the same digest hold the same content: what the kill -9 and restore tests compare.
    """
    existing = set(inspect(engine).get_table_names())
    digest: dict[str, tuple[int, str]] = {}
    with engine.connect() as conn:
        for name in sorted({*Base.metadata.tables, "alembic_version"} & existing):
            table = Table(name, MetaData(), autoload_with=conn)
            order = [table.c.id] if "id" in table.c else list(table.c)
            hasher, count = hashlib.sha256(), 0
            for row in conn.execute(select(table).order_by(*order)):
                hasher.update(repr(tuple(_canonical(v) for v in row)).encode())
                count += 1
            digest[name] = (count, hasher.hexdigest())
    return digest


def _canonical(value: object) -> object:
    """Same text for the same value whatever the driver returns (SQLite text dates, 0/1 booleans)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat() if value.tzinfo is None else value.astimezone(UTC).isoformat()
    return value
