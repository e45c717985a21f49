"""Backup and restore of the store with the database's own online tools, verified at both ends.

Backup. SQLite: the online backup API (sqlite3.Connection.backup) copies a consistent snapshot while the app
keeps running, into a temporary file that is checked (integrity_check) and only then renamed to the target,
so a backup file is either complete or absent. PostgreSQL: pg_dump (custom format, the store's schema only)
of a snapshot exported by a transaction that also counts and digests the same rows. Beside every backup goes
a manifest, `OUT.manifest.json`: schema revision, rows per table, a SHA-256 of every table's rows (not for an
encrypted backup: they would tell about its content) and the SHA-256 of the backup file as written. Backup,
manifest and every temporary file are created 0600. `--encrypt` (dashboard.store.encryption) writes the
backup with AES-256-GCM; the manifest's checksum is then the encrypted file's.

A sidecar rather than an embedded manifest: the checksum covers every byte of the file as written (a SQLite
file or a pg_dump archive cannot hold a checksum of itself), and the backup stays an ordinary database file
or archive that the database's own tools open in a disaster.

Restore verifies before it touches the live store, and refuses what it cannot verify:
- the manifest is there (else only with `unverified=True`) and the file's SHA-256 is the one it names;
- an encrypted backup opens with the key given (AES-GCM authenticates every byte);
- the tables, their columns and the append-only triggers (name and text) are those of a store at the
  backup's schema revision, which must be one this version knows;
- SQLite: every CHECK constraint of the models holds (queried one by one, so the message names it), then
  integrity_check on a writable copy (a read-only connection skips CHECK constraints) and foreign_key_check;
  rows and table digests are those of the manifest. PostgreSQL: loading enforces CHECK and foreign keys, and
  the row counts and triggers are checked inside the restore's transaction, before it commits.

Restore never loses audit rows: entries in the live audit log that the backup does not hold (made since the
backup, or never in it) are carried into the restored store in the same transaction, with their ids where
free, else new ids (their original time kept), and the restore itself is logged in that transaction too.

SQLite: the backup is verified and migrated to head in a private copy beside the store; then one write
transaction on the live database swaps every table's rows for the copy's, carries the audit rows over,
re-creates the append-only triggers of the head revision and checks them, foreign keys and row counts before
it commits: readers see the old store or the new one, never a mix. PostgreSQL: the pg_restore script, the
checks and the carry-over run in one psql transaction (--single-transaction, ON_ERROR_STOP), so a failed
restore changes nothing. These need PostgreSQL's client programs (Debian: postgresql-client).

Before a restore replaces anything, the current store is backed up (a safety copy, itself with a manifest,
encrypted when a key was given), so a restore can itself be undone.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, Connection, Engine, MetaData, Table, create_engine, func, inspect, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool, StaticPool

from dashboard.store.audit import clean_details
from dashboard.store.db import DEFAULT_DB_PATH, alembic_config, database_url, get_engine, head_revision
from dashboard.store.encryption import PASSPHRASE_ENV, EncryptionError, decrypt_file, encrypt_file, is_encrypted
from dashboard.store.models import AuditEntry, Base

SQLITE_TIMEOUT_S = 30
#: Our functions on PostgreSQL (append-only triggers), dropped with the tables before a restore.
PG_FUNCTIONS = ("decisions_append_only", "audit_log_append_only")
#: The append-only triggers on PostgreSQL, per table (migrations 0001 and 0002), and the function each calls.
PG_TRIGGERS = {
    "decisions": {"decisions_append_only": "decisions_append_only", "decisions_no_truncate": "decisions_append_only"},
    "audit_log": {"audit_log_append_only": "audit_log_append_only", "audit_log_no_truncate": "audit_log_append_only"},
}
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = "spine-dashboard-backup/1"
AUDIT = AuditEntry.__tablename__
AUDIT_COLUMNS = [column.name for column in AuditEntry.__table__.columns]


class BackupError(RuntimeError):
    """A backup or restore that could not be done; nothing was changed. The message says why and what to do."""


class RestoredUnprotectedError(RuntimeError):
    """The restore committed, but the check after it found an append-only trigger missing (never seen: the
    restore's own transaction checks them before COMMIT). The message says what to do."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    backend: str
    bytes: int
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    manifest: Path | None = None
    encrypted: bool = False
    revision: str | None = None


@dataclass(frozen=True)
class RestoreResult:
    source: Path
    backend: str
    safety_copy: Path | None
    revision: str | None
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    verified: bool = True  # False: restored with unverified=True, without a manifest
    carried_audit_entries: int = 0


def manifest_of(backup_file: str | Path) -> Path:
    """Where the manifest of a backup file goes: beside it, `NAME.manifest.json`."""
    backup_file = Path(backup_file)
    return backup_file.with_name(backup_file.name + MANIFEST_SUFFIX)


# ------------------------------------------------------------------------------------------------ backup
def backup(out: str | Path, url: str | None = None, *, secret: bytes | None = None,
           damaged_ok: bool = False) -> BackupResult:
    """Write an online backup of the store at `url` (default: the app's store) to `out`, a new file, and its
    manifest beside it; encrypted with `secret` (dashboard.store.encryption.secret_from) when given.

    `damaged_ok` (the safety copy before a restore): a SQLite store that fails integrity_check is copied all
    the same, with the finding in the manifest, so a damaged store never blocks restoring a good backup."""
    out = Path(out)
    manifest_path = manifest_of(out)
    for existing in (out, manifest_path):
        if existing.exists():
            raise BackupError(f"{existing} already exists: give a new file name (a backup never overwrites a file)")
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    url = database_url(url)
    clock = time.perf_counter()
    backend = make_url(url).get_backend_name()
    partial = out.with_name(out.name + ".partial")
    sealed = out.with_name(out.name + ".partial.enc")
    for leftover in (partial, sealed):
        leftover.unlink(missing_ok=True)
    try:
        damage = None
        if backend == "sqlite":
            revision, digest, damage = _sqlite_backup(_sqlite_path(url), partial, out, damaged_ok)
        elif backend == "postgresql":
            revision, digest = _pg_backup(url, partial)
        else:
            raise BackupError(f"backup is implemented for SQLite and PostgreSQL, not {backend}")
        written = partial
        if secret is not None:
            encrypt_file(partial, sealed, secret)
            partial.unlink()
            written = sealed
        _fsync(written)
        manifest = {
            "format": MANIFEST_FORMAT,
            "file": out.name,
            "backend": backend,
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "schema_revision": revision,
            "encrypted": secret is not None,
            "bytes": written.stat().st_size,
            "sha256": _sha256(written),
            "tables": {name: ({"rows": rows} if secret is not None else {"rows": rows, "sha256": sha})
                       for name, (rows, sha) in digest.items() if name != "alembic_version"},
        }
        if damage:
            manifest["damaged"] = damage
        os.replace(written, out)
        _write_private(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
    finally:
        for leftover in (partial, sealed):
            leftover.unlink(missing_ok=True)
    counts = {name: rows for name, (rows, _sha) in digest.items() if name != "alembic_version"}
    return BackupResult(out, backend, out.stat().st_size, time.perf_counter() - clock, counts, manifest_path,
                        secret is not None, revision)


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError("backup and restore need a SQLite database file, not an in-memory database")
    return Path(database).expanduser()


def _create_private(path: Path) -> None:
    """A new empty file, 0600 whatever the umask (the tools that fill it keep its mode)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _write_private(path: Path, content: bytes) -> None:
    """Write a new file 0600 under a temporary name, fsync, rename: complete or absent."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _sqlite_backup(source: Path, partial: Path, label: Path, damaged_ok: bool = False
                   ) -> tuple[str | None, dict[str, tuple[int, str]], str | None]:
    if not source.exists():
        raise BackupError(f"there is no database at {source}")
    _create_private(partial)
    src = sqlite3.connect(source, timeout=SQLITE_TIMEOUT_S)
    dst = sqlite3.connect(partial)
    damage = None
    try:
        src.backup(dst)  # one step: a consistent snapshot, writers (WAL) are not blocked
        dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
        try:
            revision = _check_sqlite(dst, label)  # writable: integrity_check includes the CHECK constraints
        except BackupError as problem:
            if not damaged_ok:
                raise
            damage, revision = str(problem), None
    finally:
        dst.close()
        src.close()
    engine = _plain_sqlite_engine(partial)  # reads only: no WAL switch, the file stays as written
    try:
        with engine.connect() as conn:
            return revision, _digest(conn), damage
    except Exception:  # noqa: BLE001 - a damaged store's safety copy is kept even if it cannot be read through
        if damage is None:
            raise
        return revision, {}, damage
    finally:
        engine.dispose()


def _plain_sqlite_engine(path: Path) -> Engine:
    return create_engine(URL.create("sqlite", database=str(path)), poolclass=NullPool)


def _check_sqlite(conn: sqlite3.Connection, label: Path | str) -> str | None:
    """integrity_check must say ok and the file must be a dashboard store; returns its schema revision.

    On a writable connection integrity_check also checks NOT NULL and CHECK constraints; on a read-only one it
    silently skips them (SQLite), so callers pass a writable connection (a private copy at restore)."""
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()
    except sqlite3.DatabaseError as problem:
        raise BackupError(f"{label} is not a SQLite database ({problem})") from None
    if not result or result[0] != "ok":
        raise BackupError(f"{label} is damaged (SQLite integrity_check: {result[0] if result else 'no answer'})")
    return _sqlite_revision(conn, label)


def _sqlite_revision(conn: sqlite3.Connection, label: Path | str) -> str | None:
    """The schema revision of a SQLite dashboard store; BackupError for any other file."""
    try:
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


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


# ------------------------------------------------------------------------------------------------ restore
def restore(source: str | Path, url: str | None = None, *, safety_dir: str | Path | None = None,
            secret: bytes | None = None, unverified: bool = False, user: str | None = None) -> RestoreResult:
    """Replace the store at `url` with the backup `source`, after verifying it and keeping a safety copy.

    Refuses (BackupError, nothing changed) a backup without a manifest unless `unverified`, one whose checksum,
    schema, triggers, constraints or row counts are not as written, and one from a newer version of the app.
    An older one is migrated to head. Audit entries of the live store that the backup lacks are kept, and
    the restore is logged under `user`, in the same transaction. `secret` opens an encrypted backup (and
    encrypts the safety copy).
    """
    source = Path(source)
    if not source.is_file():
        raise BackupError(f"{source}: no such backup file")
    url = database_url(url)
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise BackupError(f"restore is implemented for SQLite and PostgreSQL, not {backend}")
    clock = time.perf_counter()
    manifest = _verified_manifest(source, backend, unverified)
    safety_folder = Path(safety_dir) if safety_dir else DEFAULT_DB_PATH.parent / "backups"
    if backend == "sqlite":
        target = _sqlite_path(url)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        work_parent: Path | None = target.parent  # the decrypted copy stays beside the store it will replace
    else:
        work_parent = None
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=work_parent) as work:  # 0700
        plain = _opened(source, Path(work), secret, manifest)
        if backend == "sqlite":
            revision, counts = _verify_sqlite_backup(plain, source.name, manifest)
            safety = _safety_copy(url, backend, safety_folder, secret)
            carried = _sqlite_restore(plain, url, source.name, revision, counts, user)
        else:
            revision, tables = _verify_pg_backup(plain, source.name, url)
            safety = _safety_copy(url, backend, safety_folder, secret)
            carried = _pg_restore(url, plain, source.name, revision, tables, manifest, user)
    engine = get_engine(url)  # migrates an older backup to head
    try:
        from dashboard.store.users import revoke_all_sessions

        revoke_all_sessions(engine)  # sessions revoked since the backup was made must not come back
        revision_now = _revision(engine)
        _verify_live_triggers(engine)
        counts = _counts(engine)
    finally:
        engine.dispose()
    return RestoreResult(source, backend, safety, revision_now, time.perf_counter() - clock, counts,
                         manifest is not None, carried)


def _verified_manifest(source: Path, backend: str, unverified: bool) -> dict[str, Any] | None:
    """The backup's manifest (its checksum is compared by `_opened`); None only when `unverified`."""
    path = manifest_of(source)
    if not path.is_file():
        if unverified:
            return None
        raise BackupError(
            f"{source.name} has no manifest ({path.name}) beside it, so it cannot be verified (a backup from an "
            "older version, or its manifest was lost): restore it with --unverified to go on without the checksum "
            "and the row counts written at backup time (the schema, the append-only triggers, the CHECK "
            "constraints and the foreign keys are still checked)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"not a {MANIFEST_FORMAT} manifest")
        if not re.fullmatch(r"[0-9a-f]{64}", str(manifest.get("sha256"))) or not isinstance(
                manifest.get("tables"), dict):
            raise ValueError("no SHA-256 or no tables")
    except (OSError, ValueError) as problem:
        raise BackupError(f"{path.name} is not a readable backup manifest ({problem})") from None
    if manifest.get("backend") != backend:
        raise BackupError(f"{source.name} is a {manifest.get('backend')} backup; this store is {backend}")
    return manifest


def _opened(source: Path, work: Path, secret: bytes | None, manifest: dict[str, Any] | None) -> Path:
    """The backup as a private, writable plain file in `work`: copied, its SHA-256 taken from the copy and
    compared with the manifest (so what is checked is what is restored), then decrypted if it is encrypted."""
    copy = work / "backup.copy"
    _create_private(copy)
    hasher = hashlib.sha256()
    with open(source, "rb") as src, open(copy, "wb") as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            hasher.update(block)
            dst.write(block)
    if manifest is not None and hasher.hexdigest() != manifest["sha256"]:
        raise BackupError(f"{source.name}: the backup was changed after it was written (its SHA-256 is not the "
                          f"one in {manifest_of(source).name})")
    if not is_encrypted(copy):
        return copy
    if secret is None:
        raise BackupError(f"{source.name} is encrypted: give its passphrase in {PASSPHRASE_ENV} or its key "
                          "file with --key-file")
    plain = work / "backup.plain"
    try:
        decrypt_file(copy, plain, secret)
    except EncryptionError as problem:
        raise BackupError(f"{source.name}: {problem}") from None
    finally:
        copy.unlink()
    return plain


def _known_revision(revision: str | None, label: str) -> str:
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if revision not in known:
        raise BackupError(f"{label} is at schema revision {revision!r}, which this version of the app does not "
                          "know (a backup from a newer version?): upgrade the app first")
    return str(revision)


@dataclass(frozen=True)
class _Schema:
    tables: dict[str, frozenset[str]]  # table → column names
    triggers: dict[str, str]  # trigger → its SQL, white space collapsed
    indexes: frozenset[str]


def _sqlite_schema(conn: sqlite3.Connection) -> _Schema:
    tables, triggers, indexes = {}, {}, set()
    for kind, name, sql in conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall():
        if name.startswith("sqlite_"):
            continue
        if kind == "table":
            tables[name] = frozenset(row[1] for row in conn.execute(f'PRAGMA table_info("{name}")'))
        elif kind == "trigger":
            triggers[name] = " ".join(str(sql).split())
        elif kind == "index" and sql:
            indexes.add(name)
    return _Schema(tables, triggers, frozenset(indexes))


@functools.cache
def _reference_schema(revision: str) -> _Schema:
    """The schema of a store at `revision`, built by our own migrations in an empty SQLite database."""
    engine = create_engine("sqlite://", poolclass=StaticPool)
    try:
        config = alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        with engine.connect() as conn:
            return _sqlite_schema(conn.connection.dbapi_connection)  # type: ignore[arg-type]
    finally:
        engine.dispose()


def _missing_tables(have: set[str] | dict[str, Any], revision: str, label: str) -> None:
    missing = sorted(set(_reference_schema(revision).tables) - set(have))
    if missing:
        raise BackupError(f"{label} is not a complete dashboard store: it has no table {', '.join(missing)} "
                          f"(a store at schema revision {revision} has them)")


def _verify_sqlite_backup(plain: Path, label: str, manifest: dict[str, Any] | None
                          ) -> tuple[str, dict[str, int]]:
    """Every check a SQLite backup must pass before it may replace the store; returns revision and counts."""
    try:
        conn = sqlite3.connect(plain)  # writable (a private copy): integrity_check then checks CHECK constraints
    except sqlite3.Error as problem:
        raise BackupError(f"{label} cannot be opened ({problem})") from None
    try:
        revision = _known_revision(_sqlite_revision(conn, label), label)
        _verify_sqlite_schema(conn, revision, label)
        _verify_sqlite_checks(conn, revision, label)
        _check_sqlite(conn, label)
        broken = conn.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise BackupError(f"{label}: {len(broken)} row(s) of {broken[0][0]} refer to rows that are not in the "
                              f"backup (foreign_key_check on {broken[0][2]}): the backup was damaged or edited")
    finally:
        conn.close()
    engine = _plain_sqlite_engine(plain)
    try:
        with engine.connect() as sa_conn:
            digest = _digest(sa_conn)
    finally:
        engine.dispose()
    if manifest is not None:
        _compare_with_manifest(digest, manifest, revision, label)
    return revision, {name: rows for name, (rows, _sha) in digest.items() if name != "alembic_version"}


def _verify_sqlite_schema(conn: sqlite3.Connection, revision: str, label: str) -> None:
    reference, found = _reference_schema(revision), _sqlite_schema(conn)
    _missing_tables(found.tables, revision, label)
    for table, columns in reference.tables.items():
        if found.tables[table] != columns:
            raise BackupError(f"{label}: table {table} has the columns {', '.join(sorted(found.tables[table]))}, "
                              f"not those of schema revision {revision} ({', '.join(sorted(columns))})")
    lost = sorted(name for name, sql in reference.triggers.items() if found.triggers.get(name) != sql)
    if lost:
        raise BackupError(f"{label} lacks the append-only trigger(s) {', '.join(lost)} of schema revision "
                          f"{revision} (missing or changed): restoring it would leave the audit log and decisions "
                          "open to edits, so it is refused (the backup was edited, or is not a dashboard backup)")
    extra = sorted(set(found.triggers) - set(reference.triggers))
    if extra:
        raise BackupError(f"{label} has trigger(s) a dashboard store at schema revision {revision} does not have: "
                          f"{', '.join(extra)} (the backup was edited, or is not a dashboard backup)")
    missing_indexes = sorted(reference.indexes - found.indexes)
    if missing_indexes:
        raise BackupError(f"{label} lacks the index(es) {', '.join(missing_indexes)} of schema revision {revision}")


def _check_constraints() -> list[tuple[str, str, str]]:
    """(table, constraint name as in the database, SQL) of every CHECK constraint of the models."""
    found = []
    for table in Base.metadata.sorted_tables:
        for constraint in table.constraints:
            if isinstance(constraint, CheckConstraint):
                name = str(constraint.name)  # the naming convention's name once the table is built
                found.append((table.name, name if name.startswith("ck_") else f"ck_{table.name}_{name}",
                              str(constraint.sqltext)))
    return found


def _verify_sqlite_checks(conn: sqlite3.Connection, revision: str, label: str) -> None:
    """Query every CHECK constraint explicitly: SQLite does not check them when reading, and this names the
    one that fails (the columns of an older revision are those checked)."""
    reference = _reference_schema(revision)
    for table, name, sql in _check_constraints():
        if table not in reference.tables:
            continue
        try:
            bad = conn.execute(f'SELECT count(*) FROM "{table}" WHERE NOT ({sql})').fetchone()[0]
        except sqlite3.OperationalError:  # a column this revision does not have yet
            continue
        if bad:
            raise BackupError(f"{label}: {bad} row(s) of {table} break its CHECK constraint {name} ({sql}): the "
                              "backup was damaged or edited after it was written")


def _compare_with_manifest(digest: dict[str, tuple[int, str]], manifest: dict[str, Any], revision: str,
                           label: str) -> None:
    if manifest.get("schema_revision") != revision:
        raise BackupError(f"{label} is at schema revision {revision}, its manifest says "
                          f"{manifest.get('schema_revision')}: the backup was changed after it was written")
    for table, written in manifest["tables"].items():
        rows, sha = digest.get(table, (None, None))
        if rows != written.get("rows"):
            raise BackupError(f"{label}: table {table} has {rows} rows, its manifest says {written.get('rows')}: "
                              "the backup was changed after it was written")
        if "sha256" in written and sha != written["sha256"]:
            raise BackupError(f"{label}: the rows of table {table} are not those written (SHA-256 of its rows): "
                              "the backup was changed after it was written")


def _safety_copy(url: str, backend: str, folder: Path, secret: bytes | None) -> Path | None:
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
    return backup(folder / f"pre-restore-{stamp}.{'db' if backend == 'sqlite' else 'dump'}", url,
                  secret=secret, damaged_ok=True).path


def _migrated(url: str) -> None:
    try:
        get_engine(url).dispose()
    except Exception as problem:  # noqa: BLE001 - any failure of the migration: report it, change nothing
        raise BackupError(f"the current store cannot be brought to schema revision {head_revision()} before the "
                          f"restore ({type(problem).__name__}); it is unchanged, and kept in the safety copy") from None


def _restore_details(label: str, backend: str, revision: str, counts: dict[str, int]) -> dict[str, Any]:
    return clean_details({"file": label, "backend": backend, "revision": revision, "counts": counts})


# ----------------------------------------------------------------------------------------- SQLite restore
def _sqlite_restore(plain: Path, url: str, label: str, revision: str, counts: dict[str, int],
                    user: str | None) -> int:
    """Migrate the verified copy to head, log the restore in it, then swap it into the live store."""
    from dashboard.store.audit import record

    staged_url = URL.create("sqlite", database=str(plain)).render_as_string(hide_password=False)
    try:
        staged = get_engine(staged_url)  # an older backup is brought to head before it replaces anything
    except Exception as problem:  # noqa: BLE001
        raise BackupError(f"{label} at schema revision {revision} could not be migrated to "
                          f"{head_revision()} ({type(problem).__name__})") from None
    try:  # written here for the app's own formatting; moved after the carried entries by the swap
        entry = record(staged, user, "restore", **_restore_details(label, "sqlite", revision, counts))
    finally:
        staged.dispose()
    _migrated(url)
    return _sqlite_swap(plain, _sqlite_path(url), entry)


def _table_columns(conn: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f'PRAGMA "{schema}".table_info("{table}")')]


def _sqlite_swap(staged: Path, target: Path, restore_entry: int) -> int:
    """One write transaction on the live store: its rows become the staged copy's, its audit entries that the
    copy lacks are appended, then the restore's own entry (`restore_entry` in the copy), the head revision's
    triggers are re-created, all checked before COMMIT."""
    reference = _reference_schema(str(head_revision()))
    tables = [table.name for table in Base.metadata.sorted_tables]  # parents first
    conn = sqlite3.connect(target, timeout=SQLITE_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("ATTACH DATABASE ? AS staged", (str(staged),))
        columns = {}
        for table in tables:
            live, copy = _table_columns(conn, "main", table), _table_columns(conn, "staged", table)
            if set(live) != set(copy):
                raise BackupError(f"the restored copy's table {table} does not match the store's (columns)")
            columns[table] = ", ".join(f'"{c}"' for c in live)
        conn.execute("BEGIN IMMEDIATE")  # other writers wait; readers keep seeing the old store until COMMIT
        try:
            conn.execute("PRAGMA defer_foreign_keys = ON")
            same = " AND ".join(f'b."{c}" IS m."{c}"' for c in AUDIT_COLUMNS)
            conn.execute(f"CREATE TEMP TABLE restore_carry AS SELECT * FROM main.{AUDIT} AS m "
                         f"WHERE NOT EXISTS (SELECT 1 FROM staged.{AUDIT} AS b WHERE {same})")
            for (name,) in conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'trigger'").fetchall():
                conn.execute(f'DROP TRIGGER main."{name}"')
            for table in reversed(tables):
                conn.execute(f'DELETE FROM main."{table}"')
            conn.execute(f"CREATE TEMP VIEW restore_backup AS SELECT * FROM staged.{AUDIT} "
                         f"WHERE id <> {restore_entry:d}")
            for table in tables:
                conn.execute(f'INSERT INTO main."{table}" ({columns[table]}) SELECT {columns[table]} '
                             f'FROM {"temp.restore_backup" if table == AUDIT else f"staged.{table}"}')
            carried = _carry_audit(conn, "temp.restore_carry", "temp.restore_backup", f"main.{AUDIT}")
            without_id = ", ".join(f'"{c}"' for c in AUDIT_COLUMNS if c != "id")
            conn.execute(f"INSERT INTO main.{AUDIT} ({without_id}) SELECT {without_id} FROM staged.{AUDIT} "
                         f"WHERE id = {restore_entry:d}")
            for sql in reference.triggers.values():
                conn.execute(sql)
            _verify_swap(conn, tables, reference, carried)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as problem:
        raise BackupError(f"the restore was rolled back ({problem})") from None
    finally:
        conn.close()
    return carried


def _carry_audit(conn: sqlite3.Connection, carry: str, backup_table: str, live_table: str) -> int:
    """Append the carried audit entries: with their own ids where the backup has no such id, else new ids."""
    cols = ", ".join(f'"{c}"' for c in AUDIT_COLUMNS)
    without_id = ", ".join(f'"{c}"' for c in AUDIT_COLUMNS if c != "id")
    free = conn.execute(f"INSERT INTO {live_table} ({cols}) SELECT {cols} FROM {carry} "
                        f"WHERE id NOT IN (SELECT id FROM {backup_table}) ORDER BY id").rowcount
    taken = conn.execute(f"INSERT INTO {live_table} ({without_id}) SELECT {without_id} FROM {carry} "
                         f"WHERE id IN (SELECT id FROM {backup_table}) ORDER BY id").rowcount
    return free + taken


def _verify_swap(conn: sqlite3.Connection, tables: list[str], reference: _Schema, carried: int) -> None:
    found = _sqlite_schema(conn)  # main and the temp table only: the attached copy is not listed in main
    lost = sorted(name for name, sql in reference.triggers.items() if found.triggers.get(name) != sql)
    if lost:
        raise BackupError(f"after the swap the store lacks the append-only trigger(s) {', '.join(lost)}")
    broken = conn.execute("PRAGMA main.foreign_key_check").fetchall()
    if broken:
        raise BackupError(f"after the swap {len(broken)} row(s) of {broken[0][0]} refer to rows that are not there")
    for table in tables:
        live = conn.execute(f'SELECT count(*) FROM main."{table}"').fetchone()[0]
        copy = conn.execute(f'SELECT count(*) FROM staged."{table}"').fetchone()[0]
        if live != copy + (carried if table == AUDIT else 0):
            raise BackupError(f"after the swap table {table} has {live} rows, not {copy} (+{carried} carried)")


def _verify_live_triggers(engine: Engine) -> None:
    """After a restore and the migration to head: the append-only triggers of the head revision are there."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            found = _sqlite_schema(conn.connection.dbapi_connection)  # type: ignore[arg-type]
        reference = _reference_schema(str(head_revision()))
        lost = sorted(name for name, sql in reference.triggers.items() if found.triggers.get(name) != sql)
    else:
        with engine.connect() as conn:
            present = {row[0] for row in conn.exec_driver_sql(
                "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE c.relnamespace = current_schema()::regnamespace AND t.tgenabled <> 'D'")}
        lost = sorted({name for names in PG_TRIGGERS.values() for name in names} - present)
    if lost:
        raise RestoredUnprotectedError(f"the restored store lacks the append-only trigger(s) {', '.join(lost)}: "
                                       "restore the safety copy, and report this")


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


def _pg_backup(url: str, partial: Path) -> tuple[str | None, dict[str, tuple[int, str]]]:
    """pg_dump of a snapshot that this transaction exports, and the manifest's counts and digests of the
    very same snapshot (a write committed meanwhile is in neither)."""
    uri, env = _libpq(url)
    engine = get_engine(url, migrate=False)
    try:
        with engine.connect() as conn:
            conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
                schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
                _create_private(partial)  # pg_dump truncates and fills it, keeping 0600
                _run([_pg_program("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
                      f"--schema={schema}", f"--snapshot={snapshot}", f"--file={partial}", f"--dbname={uri}"],
                     env, "pg_dump")
                digest = _digest(conn)
                revision = (conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
                            if inspect(conn).has_table("alembic_version") else None)
    finally:
        engine.dispose()
    _pg_tables_in(partial)
    return revision, digest


@dataclass(frozen=True)
class _Toc:
    tables: set[str]
    triggers: set[tuple[str, str]]  # (table, trigger)
    schemas: set[str]
    functions: set[str]


def _pg_toc(dump: Path) -> _Toc:
    """The table of contents of a pg_dump archive; refuses a file that is not a dashboard store."""
    listing = _run([_pg_program("pg_restore"), "--list", str(dump)], {**os.environ},
                   f"reading {dump.name} (is it a pg_dump custom-format backup?)").decode(errors="replace")
    toc = _Toc(set(), set(), set(), set())
    for line in listing.splitlines():  # "216; 1259 18352 TABLE schema name owner"
        parts = line.split()
        if line.startswith(";") or len(parts) < 6:
            continue
        kind = parts[3]
        if kind == "TABLE" and parts[4] != "DATA":
            toc.tables.add(parts[5])
            toc.schemas.add(parts[4])
        elif kind == "TRIGGER" and len(parts) >= 7:
            toc.triggers.add((parts[5], parts[6]))
        elif kind in ("FUNCTION", "PROCEDURE", "AGGREGATE", "RULE", "POLICY", "EVENT"):
            toc.functions.add(f"{kind} {parts[5] if kind != 'EVENT' else ' '.join(parts[4:6])}")
    if "alembic_version" not in toc.tables:
        raise BackupError(f"{dump} is a pg_dump archive but not a dashboard store (no schema revision)")
    return toc


def _pg_tables_in(dump: Path) -> set[str]:
    """Tables of a pg_dump archive; refuses a file that is not a dashboard store."""
    return _pg_toc(dump).tables


def _pg_dump_revision(dump: Path) -> str | None:
    script = _run([_pg_program("pg_restore"), "--data-only", "--table=alembic_version", "--file=-", str(dump)],
                  {**os.environ}, "reading the schema revision").decode(errors="replace")
    lines = script.splitlines()
    for at, line in enumerate(lines):
        if line.startswith("COPY ") and ".alembic_version " in line and at + 1 < len(lines):
            value = lines[at + 1].strip()
            return None if value == "\\." else value
    return None


def _verify_pg_backup(dump: Path, label: str, url: str) -> tuple[str, set[str]]:
    """Before anything changes: a dashboard store at a known revision, with every table of that revision,
    the append-only triggers, and of the store's own schema. Returns the revision and the tables."""
    toc = _pg_toc(dump)
    revision = _known_revision(_pg_dump_revision(dump), label)
    _missing_tables(toc.tables, revision, label)
    schema = _pg_schema(url)
    if toc.schemas != {schema}:
        raise BackupError(f"{label} is a backup of the PostgreSQL schema {', '.join(sorted(toc.schemas))}; this store "
                          f"is in {schema}: restoring it would write into the other schema, so it is refused")
    expected = {(table, name) for table, names in PG_TRIGGERS.items() if table in _reference_schema(revision).tables
                for name in names}
    unexpected = sorted({name for _table, name in toc.triggers - expected}
                        | (toc.functions - {f"FUNCTION {name}()" for name in PG_FUNCTIONS}))
    if unexpected:
        raise BackupError(f"{label} holds objects a dashboard store does not have: {', '.join(unexpected)} (the "
                          "backup was edited, or is not a dashboard backup)")
    lost = sorted(name for _table, name in expected - toc.triggers)
    if lost:
        raise BackupError(f"{label} lacks the append-only trigger(s) {', '.join(lost)} of schema revision "
                          f"{revision}: restoring it would leave the audit log and decisions open to edits, so it "
                          "is refused (the backup was edited, or is not a dashboard backup)")
    return revision, toc.tables


def _pg_restore(url: str, dump: Path, label: str, revision: str, tables: set[str],
                manifest: dict[str, Any] | None, user: str | None) -> int:
    """In one psql transaction: keep the live audit entries, drop our objects, run the dump's --clean script,
    check rows and triggers, append the audit entries the backup lacks, log the restore; then COMMIT."""
    from dashboard.store.audit import UNKNOWN_USER

    uri, env = _libpq(url)
    schema = _pg_schema(url)
    ident, literal = '"' + schema.replace('"', '""') + '"', "'" + schema.replace("'", "''") + "'"
    engine = get_engine(url, migrate=False)
    try:
        live_audit = inspect(engine).has_table(AUDIT)
        kept_rows: list[dict[str, Any]] = []
        if live_audit and AUDIT not in tables:  # a backup older than the audit log: carried after migrating
            with engine.connect() as conn:
                kept_rows = [dict(row) for row in conn.execute(select(AuditEntry.__table__)).mappings()]
    finally:
        engine.dispose()
    sql = []
    if live_audit and AUDIT in tables:
        sql.append(f"LOCK TABLE {ident}.{AUDIT} IN EXCLUSIVE MODE;\n"
                   f"CREATE TEMP TABLE restore_carry ON COMMIT DROP AS SELECT * FROM {ident}.{AUDIT};\n")
    ours = [*Base.metadata.tables, "alembic_version"]
    sql += [f'DROP TABLE IF EXISTS {ident}."{t}" CASCADE;\n' for t in ours]
    sql += [f"DROP FUNCTION IF EXISTS {ident}.{f}() CASCADE;\n" for f in PG_FUNCTIONS]
    prefix = "".join(sql).encode()
    script = _run([_pg_program("pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-privileges",
                   "--file=-", str(dump)], env, "pg_restore")
    checks = []
    for table, written in (manifest or {}).get("tables", {}).items():
        if table in tables:
            rows = int(written.get("rows", -1))
            checks.append(f"IF (SELECT count(*) FROM {ident}.\"{table}\") <> {rows} THEN RAISE EXCEPTION "
                          f"'restore check: table {table} has %% rows, its manifest says {rows}', "
                          f"(SELECT count(*) FROM {ident}.\"{table}\"); END IF;")
    for table, triggers in PG_TRIGGERS.items():
        if table not in tables:
            continue
        for trigger, function in triggers.items():
            checks.append(
                "IF NOT EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_proc p ON p.oid = t.tgfoid "
                f"WHERE n.nspname = {literal} AND c.relname = '{table}' AND t.tgname = '{trigger}' "
                f"AND t.tgenabled <> 'D' AND p.proname = '{function}' AND p.prosrc LIKE '%RAISE EXCEPTION%') "
                f"THEN RAISE EXCEPTION 'restore check: the append-only trigger {trigger} is missing or changed'; "
                "END IF;")
    suffix = ["\nDO $restore_checks$ BEGIN\n" + "\n".join(checks).replace("%%", "%") + "\nEND $restore_checks$;\n"]
    if AUDIT in tables:
        cols = ", ".join(AUDIT_COLUMNS)
        without_id = ", ".join(c for c in AUDIT_COLUMNS if c != "id")
        if live_audit:
            same = " AND ".join(f"b.{c}::text IS NOT DISTINCT FROM c.{c}::text" for c in AUDIT_COLUMNS)
            suffix.append(
                f"CREATE TEMP TABLE restore_new ON COMMIT DROP AS SELECT c.* FROM pg_temp.restore_carry c "
                f"WHERE NOT EXISTS (SELECT 1 FROM {ident}.{AUDIT} b WHERE {same});\n"
                f"CREATE TEMP TABLE restore_taken ON COMMIT DROP AS SELECT id FROM {ident}.{AUDIT};\n"
                f"INSERT INTO {ident}.{AUDIT} ({cols}) SELECT {cols} FROM pg_temp.restore_new "
                f"WHERE id NOT IN (SELECT id FROM pg_temp.restore_taken) ORDER BY id;\n")
        suffix.append(f"SELECT setval(pg_get_serial_sequence('{ident}.{AUDIT}', 'id'), "
                      f"(SELECT COALESCE(max(id), 0) + 1 FROM {ident}.{AUDIT}), false);\n")
        if live_audit:
            suffix.append(f"INSERT INTO {ident}.{AUDIT} ({without_id}) SELECT {without_id} FROM pg_temp.restore_new "
                          f"WHERE id IN (SELECT id FROM pg_temp.restore_taken) ORDER BY id;\n"
                          "SELECT 'restore-carried:' || count(*) FROM pg_temp.restore_new;\n")
        suffix.append(f"INSERT INTO {ident}.{AUDIT} (at, user_name, action, details) VALUES (clock_timestamp(), "
                      ":'spine_restore_user', 'restore', :'spine_restore_details'::json);\n")
    details = _restore_details(label, "postgresql", revision, {
        t: int(w.get("rows", 0)) for t, w in (manifest or {}).get("tables", {}).items()})
    who = user.strip() if user and user.strip() else UNKNOWN_USER
    out = _run([_pg_program("psql"), "--no-psqlrc", "--quiet", "--tuples-only", "--single-transaction",
                "--set=ON_ERROR_STOP=1", f"--set=spine_restore_user={who}",
                f"--set=spine_restore_details={json.dumps(details)}", f"--dbname={uri}"],
               env, "restoring with psql (nothing was changed)", stdin=prefix + script + "".join(suffix).encode())
    carried = re.search(rb"restore-carried:(\d+)", out)
    if AUDIT not in tables:
        return _pg_carry_after_migration(url, kept_rows, who, details)
    return int(carried.group(1)) if carried else 0


def _pg_carry_after_migration(url: str, rows: list[dict[str, Any]], who: str, details: dict[str, Any]) -> int:
    """A backup from before the audit log (revision 0001): once migrated, the store's new audit log gets the
    entries the live store had, with their ids, and the restore entry. Not in the restore's transaction: a
    crash in between leaves them in the safety copy."""
    from sqlalchemy import insert

    from dashboard.store.audit import record

    engine = get_engine(url)
    try:
        with engine.begin() as conn:
            if rows:
                conn.execute(insert(AuditEntry.__table__), rows)
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{AUDIT}', 'id'), "
                                     f"(SELECT COALESCE(max(id), 0) + 1 FROM {AUDIT}), false)")
            record(conn, who, "restore", **details)
    finally:
        engine.dispose()
    return len(rows)


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


def store_digest(engine: Engine) -> dict[str, tuple[int, str]]:
    """Row count and a SHA-256 of every row (in id order) per table, plus the schema revision.

    Two stores with the same digest hold the same content: what the kill -9 and restore tests compare, and
    what a backup's manifest records per table.
    """
    with engine.connect() as conn:
        return _digest(conn)


def _digest(conn: Connection) -> dict[str, tuple[int, str]]:
    existing = set(inspect(conn).get_table_names())
    digest: dict[str, tuple[int, str]] = {}
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
