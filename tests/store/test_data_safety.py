"""No fault loses a row: kill -9 in the middle of a real import, online backup and restore (SQLite and
PostgreSQL), and the checks that refuse a bad backup before anything is replaced."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from dashboard.cli import main as cli
from dashboard.clinical.records.format import VISIT_SIGN_BOOLEANS, VISIT_SIGN_NUMBERS, VISITS
from dashboard.clinical.records.validate import Records, validate
from dashboard.store import backup as backup_module
from dashboard.store import get_engine, import_history, import_records, record_decision
from dashboard.store.audit import audit_log, record
from dashboard.store.backup import BackupError, backup, restore, store_digest
from dashboard.store.db import alembic_config, current_revision, head_revision
from tests.store_fixtures import GOOD_FILES, good_records, records_from, store_engine, store_url

FIXTURES = (good_records, store_engine, store_url)  # imported for pytest, which finds them by name
ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"
LARGE_COHORT = 5_000
#: Kill this long after the import's write transaction is seen open (it lasts seconds at 5,000 patients).
KILL_AFTER_S = 0.3


@pytest.fixture(scope="module")
def large_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5,000-patient synthetic cohort written by the command line's `demo` (through its entry point in this
    process: the cohort is what is needed here; the import below is the real process that is killed)."""
    folder = tmp_path_factory.mktemp("cohort") / "cohort-5000"
    # After the shipped demo's P00001–P00200 (seeded below): the same ids would be other people, refused.
    assert cli(["demo", str(folder), "--patients", str(LARGE_COHORT), "--seed", "11", "--first-id", "201"]) == 0
    return folder


def _seed(engine: Engine) -> None:
    """A store with content in every table: the shipped demo cohort, a decision and audit entries."""
    records, report = validate(DEMO)
    assert records is not None, report.error_lines()
    import_records(engine, records, "data/demo", user="seed")
    patient = records.patients["patient_id"].iloc[0]
    record_decision(engine, patient_id=patient, rule_id="red-cauda-equina", evidence_hash="h", decision="deferred",
                    reason="review", clinician="Dr Seed")
    record(engine, "seed", "import", file="demo", rows=len(records.strength))


# ---------------------------------------------------------------------------------------- kill -9
def _write_transaction_open(url: str) -> bool:
    """Whether another process holds the store's write transaction open right now (the import is mid-way)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        probe = sqlite3.connect(parsed.database, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")  # refused while a writer holds the RESERVED lock
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError as problem:
            if "locked" in str(problem) or "busy" in str(problem):
                return True
            raise
        finally:
            probe.close()
    engine = create_engine(parsed)
    try:
        with engine.connect() as conn:  # a row lock on the import log: the import's transaction is open
            return bool(conn.execute(text(
                "SELECT count(*) FROM pg_locks WHERE relation = 'imports'::regclass AND mode = 'RowExclusiveLock' "
                "AND pid <> pg_backend_pid()")).scalar_one())
    finally:
        engine.dispose()


def test_kill_9_in_the_middle_of_an_import_leaves_the_store_exactly_as_before(
        store_url: str, large_cohort: Path) -> None:
    engine = get_engine(store_url)
    _seed(engine)
    before = store_digest(engine)
    engine.dispose()

    importer = subprocess.Popen(
        [sys.executable, "-m", "dashboard", "import", str(large_cohort), "--database", store_url],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    try:
        while not _write_transaction_open(store_url):
            assert importer.poll() is None, f"the import ended before it was caught mid-way: {importer.stderr.read()}"
            assert time.monotonic() - started < 240, "the import never opened its write transaction"
            time.sleep(0.01)
        seen = time.monotonic()
        time.sleep(KILL_AFTER_S)
        assert importer.poll() is None and _write_transaction_open(store_url), \
            "the import finished too fast to be killed mid-way: raise LARGE_COHORT"
        os.kill(importer.pid, signal.SIGKILL)
        assert importer.wait(timeout=30) == -signal.SIGKILL
    finally:
        if importer.poll() is None:
            importer.kill()
            importer.wait()
    print(f"killed {time.monotonic() - seen:.2f} s into the import's write transaction "
          f"({seen - started:.1f} s after start, spent validating)")

    engine = get_engine(store_url)  # opens and migrates after the crash
    try:
        assert current_revision(engine) == head_revision()
        assert store_digest(engine) == before  # counts and content, every table
        assert "running" not in set(import_history(engine)["status"])
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"
        # And the store takes the same import once nothing interrupts it.
        records, report = validate(large_cohort)
        assert records is not None, report.error_lines()
        result = import_records(engine, records, "cohort-5000", user="again")
        assert result.counts["patients"].total == LARGE_COHORT
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------- backup, restore
def _without_audit(digest: dict) -> dict:
    return {table: value for table, value in digest.items() if table != "audit_log"}


def test_backup_and_restore_bring_the_store_back_exactly(store_url: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    engine = get_engine(store_url)
    _seed(engine)
    at_backup = store_digest(engine)
    out = tmp_path / "backups" / "store.bak"
    assert cli(["backup", str(out), "--database", store_url]) == 0
    assert f"to {out}" in capsys.readouterr().err and out.is_file()
    assert audit_log(engine, actions=["backup"]).iloc[0]["details"]["file"] == "store.bak"

    changed = records_from(tmp_path / "v2", GOOD_FILES)  # three more patients, and a decision
    import_records(engine, changed, "v2")
    record_decision(engine, patient_id="P1", rule_id="r", evidence_hash="h", decision="ordered", clinician="Dr X")
    before_restore = store_digest(engine)
    assert _without_audit(before_restore) != _without_audit(at_backup)
    engine.dispose()

    safety = tmp_path / "safety"
    assert cli(["restore", str(out), "--database", store_url, "--safety-dir", str(safety)]) == 0
    assert "the store as it was before is kept in" in capsys.readouterr().err

    engine = get_engine(store_url)
    try:
        after = store_digest(engine)
        assert _without_audit(after) == _without_audit(at_backup)
        log = audit_log(engine)
        # Every entry of the store before the restore is kept (issue 22: the ones made since the backup too).
        assert log["action"].tolist()[:1] == ["restore"] and len(log) == before_restore["audit_log"][0] + 1
        assert log.iloc[0]["details"]["counts"]["patients"] == 200
    finally:
        engine.dispose()
    [kept] = [path for path in safety.iterdir() if not path.name.endswith(".manifest.json")]
    if make_url(store_url).get_backend_name() == "sqlite":
        copy = get_engine(f"sqlite:///{kept}", migrate=False)
        try:
            assert store_digest(copy) == before_restore  # the restore itself can be undone
        finally:
            copy.dispose()
    else:
        assert "patients" in backup_module._pg_tables_in(kept)


def test_the_backup_is_online_a_snapshot_beside_an_open_write(store_url: str, good_records: Records,
                                                              tmp_path: Path) -> None:
    engine = get_engine(store_url)
    try:
        import_records(engine, good_records, "good")
        at_start = store_digest(engine)
        with engine.connect() as writer:  # an uncommitted write in progress while the backup runs
            writer.execute(text("INSERT INTO imports (started_at, source_name, source_kind, status) "
                                "VALUES (CURRENT_TIMESTAMP, 'open', 'folder', 'running')"))
            started = time.monotonic()
            result = backup(tmp_path / "online.bak", store_url)
            assert time.monotonic() - started < 30  # not waiting for the writer
            writer.rollback()
        assert result.counts["patients"] == 3 and result.counts["imports"] == 1
    finally:
        engine.dispose()
    restore(result.path, store_url, safety_dir=tmp_path / "safety")
    engine = get_engine(store_url)
    try:
        assert _without_audit(store_digest(engine)) == _without_audit(at_start)
    finally:
        engine.dispose()


def test_a_backup_never_overwrites_and_a_bad_file_is_refused_before_anything_changes(
        store_url: str, good_records: Records, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = get_engine(store_url)
    import_records(engine, good_records, "good")
    before = store_digest(engine)
    engine.dispose()
    taken = tmp_path / "taken.bak"
    taken.write_bytes(b"something precious")
    assert cli(["backup", str(taken), "--database", store_url]) == 1
    assert "already exists" in capsys.readouterr().err and taken.read_bytes() == b"something precious"

    garbage = tmp_path / "garbage.bak"
    garbage.write_bytes(os.urandom(4096))
    not_a_store = tmp_path / "other.db"
    sqlite3.connect(not_a_store).execute("CREATE TABLE t (x)").connection.commit()
    for bad in (garbage, not_a_store, tmp_path / "missing.bak"):
        assert cli(["restore", str(bad), "--database", store_url, "--safety-dir", str(tmp_path / "s")]) == 1
        message = capsys.readouterr().err
        assert message.startswith("restore failed, nothing was changed: ") and str(bad.name) in message
    engine = get_engine(store_url)
    try:
        assert store_digest(engine) == before
    finally:
        engine.dispose()
    assert not (tmp_path / "s").exists()  # nothing was even copied


def test_a_backup_from_a_newer_version_is_refused(tmp_path: Path, good_records: Records) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    get_engine(url).dispose()
    newer = backup(tmp_path / "newer.bak", url).path
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(BackupError, match="newer.bak: the backup was changed after it was written"):
        restore(newer, url, safety_dir=tmp_path / "safety")
    newer.with_name("newer.bak.manifest.json").unlink()  # as if written by a newer app without one we know
    with pytest.raises(BackupError, match="revision '9999'.*upgrade the app first"):
        restore(newer, url, safety_dir=tmp_path / "safety", unverified=True)


def test_a_backup_from_an_older_schema_restores_and_is_migrated(store_url: str, good_records: Records,
                                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """A backup taken before the audit log existed (revision 0001) replaces a store that has one."""
    from alembic import command

    from dashboard.store import importer

    engine = get_engine(store_url, migrate=False)
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    with monkeypatch.context() as old_code:  # the importer of revision 0001 had no audit log to write to
        old_code.setattr(importer.audit, "record", lambda *args, **kwargs: 0)
        # … nor the visit sign columns of 0005 (records-format extension)
        signs = {*VISIT_SIGN_BOOLEANS, *VISIT_SIGN_NUMBERS}
        old_code.setitem(importer.SPEC_BY_FRAME, "visits", dataclasses.replace(
            VISITS, columns=tuple(c for c in VISITS.columns if c.name not in signs)))
        import_records(engine, good_records, "old")  # the sign columns are blank (unknown) in these records
    engine.dispose()
    old = backup(tmp_path / "old.bak", store_url).path

    engine = get_engine(store_url)  # the app upgrades, then works on
    record(engine, "dr.a", "login")
    engine.dispose()
    result = restore(old, store_url, safety_dir=tmp_path / "safety")
    assert result.revision == head_revision() and result.counts["patients"] == 3
    engine = get_engine(store_url)
    try:
        # The restored store, brought to head: its new audit log keeps the live store's entry, and the restore.
        assert audit_log(engine)["action"].tolist() == ["restore", "login"]
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            record(conn, "x", "login")
            conn.execute(text("DELETE FROM audit_log"))
    finally:
        engine.dispose()


def test_postgresql_backup_without_pg_dump_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup_module.shutil, "which", lambda _name: None)
    monkeypatch.setattr(backup_module.glob, "glob", lambda _pattern: [])
    with pytest.raises(BackupError, match="need pg_dump .*apt-get install postgresql-client"):
        backup_module._pg_program("pg_dump")


def test_postgresql_tool_errors_are_reported_without_row_values() -> None:
    stderr = (b'psql:<stdin>:40: ERROR:  invalid input syntax for type integer: "Ann Example"\n'
              b'CONTEXT:  COPY patients, line 1, column birth_year: "Ann Example"\n'
              b"DETAIL:  Key (mrn)=(MRN0000001) already exists.\n")
    assert backup_module._value_free(stderr) == 'psql:<stdin>:40: ERROR:  invalid input syntax for type integer: "…"'
