"""Verified backups (issue 22, point 7 and "a backup with one flipped bit"): restore refuses what it cannot
verify before the live store changes, never loses audit entries, and encrypted backups round-trip.

Each refusal is asserted with its exact message, and the store is compared (every table's rows) before and
after, so "refused" always also means "nothing changed".
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from dashboard.cli import main as cli
from dashboard.clinical.records.validate import Records
from dashboard.store import encryption, get_engine, import_records
from dashboard.store.audit import audit_log, record
from dashboard.store.backup import BackupError, backup, manifest_of, restore, store_digest
from dashboard.store.db import head_revision
from dashboard.store.users import add_user
from tests.store_fixtures import GOOD_FILES, good_records, records_from, store_url

HEAD = head_revision()

FIXTURES = (good_records, store_url)  # imported for pytest, which finds them by name
PASSPHRASE = "correct horse battery staple 22"
REFUSED = "restore failed, nothing was changed: "


def _digest(url: str) -> dict:
    engine = get_engine(url)
    try:
        return store_digest(engine)
    finally:
        engine.dispose()


def _without_audit(digest: dict) -> dict:
    return {table: value for table, value in digest.items() if table != "audit_log"}


@pytest.fixture
def stocked(store_url: str, good_records: Records) -> Iterator[str]:
    """The store at `store_url` with the small cohort and two audit entries."""
    engine = get_engine(store_url)
    import_records(engine, good_records, "good", user="seed")
    record(engine, "dr.a", "login")
    engine.dispose()
    yield store_url


def _refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert cli(args) == 1
    return capsys.readouterr().err.strip()


def _forge_manifest(backup_file: Path) -> None:
    """What someone who edits a backup and knows the format does: a matching file checksum."""
    path = manifest_of(backup_file)
    manifest = json.loads(path.read_text())
    manifest["sha256"] = hashlib.sha256(backup_file.read_bytes()).hexdigest()
    manifest["bytes"] = backup_file.stat().st_size
    path.write_text(json.dumps(manifest))


def _is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _wipe(url: str) -> None:
    """The store at `url` gone: a new, empty one will be created there (another store under the same name)."""
    if _is_sqlite(url):
        database = Path(make_url(url).database)
        for path in (database, database.with_name(database.name + "-wal"),
                     database.with_name(database.name + "-shm")):
            path.unlink(missing_ok=True)
        return
    engine = create_engine(url)
    with engine.begin() as conn:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine.dispose()


# ------------------------------------------------------------------------------------------ the manifest
def test_a_backup_writes_a_manifest_with_revision_rows_and_checksums_all_owner_only(
        stocked: str, tmp_path: Path) -> None:
    previous = os.umask(0o022)  # as a library call from a process that did not set owner_only()
    try:
        result = backup(tmp_path / "out" / "store.bak", stocked)
        encrypted = backup(tmp_path / "out" / "sealed.bak", stocked, secret=PASSPHRASE.encode())
        restored = restore(result.path, stocked, safety_dir=tmp_path / "safety")
    finally:
        os.umask(previous)
    manifest = json.loads(manifest_of(result.path).read_text())
    assert manifest["schema_revision"] == HEAD and manifest["backend"] == make_url(stocked).get_backend_name()
    assert manifest["sha256"] == hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert manifest["tables"]["patients"]["rows"] == 3 and len(manifest["tables"]["patients"]["sha256"]) == 64
    assert manifest["tables"]["audit_log"]["rows"] == 2 and not manifest["encrypted"]
    sealed = json.loads(manifest_of(encrypted.path).read_text())
    assert sealed["encrypted"] and sealed["tables"]["patients"] == {"rows": 3}  # no digest of hidden content
    safety = restored.safety_copy
    assert safety is not None
    for path in (result.path, manifest_of(result.path), encrypted.path, manifest_of(encrypted.path), safety,
                 manifest_of(safety)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "safety").stat().st_mode) == 0o700
    assert not list((tmp_path / "out").glob("*.partial*"))


def test_a_backup_without_a_manifest_needs_unverified_which_says_what_is_not_checked(
        stocked: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = backup(tmp_path / "store.bak", stocked).path
    manifest_of(out).unlink()
    before = _digest(stocked)
    message = _refused(["restore", str(out), "--database", stocked, "--safety-dir", str(tmp_path / "s")], capsys)
    assert message == REFUSED + (
        "store.bak has no manifest (store.bak.manifest.json) beside it, so it cannot be verified (a backup from an "
        "older version, or its manifest was lost): restore it with --unverified to go on without the checksum "
        "and the row counts written at backup time (the schema, the append-only triggers, the CHECK "
        "constraints and the foreign keys are still checked)")
    assert _digest(stocked) == before and not (tmp_path / "s").exists()
    assert cli(["restore", str(out), "--database", stocked, "--safety-dir", str(tmp_path / "s"), "--unverified"]) == 0
    assert ("restored WITHOUT a manifest (--unverified): its checksum and row counts were not checked; its schema, "
            "append-only triggers, CHECK constraints and foreign keys were") in capsys.readouterr().err


# ---------------------------------------------------------------------------- what restore refuses (SQLite)
def _flip_mrc_5_to_13(backup_file: Path) -> None:
    """One bit: SQLite stores the REAL 5.0 as the integer 5 (0b0101); bit 3 makes it 13 (0b1101), read as 13.0."""
    data = bytearray(backup_file.read_bytes())
    pattern = b"hip_flexionR\x05"  # P3's exam: muscle, side, then the grade, one record of the table
    assert data.count(pattern) == 1
    data[data.index(pattern) + len(pattern) - 1] ^= 0b1000
    backup_file.write_bytes(bytes(data))


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # a SQLite file's bytes; a PostgreSQL archive is
def test_a_backup_with_one_flipped_bit_is_refused_naming_the_check_and_later_restores_still_work(  # compressed
        stocked: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = backup(tmp_path / "good.bak", stocked).path
    out = backup(tmp_path / "store.bak", stocked).path
    _flip_mrc_5_to_13(out)
    with sqlite3.connect(f"file:{out}?mode=ro", uri=True) as conn:  # what the issue saw: a read-only check passes
        assert conn.execute("SELECT mrc FROM strength_exams WHERE muscle = 'hip_flexion'").fetchone() == (13.0,)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    before = _digest(stocked)
    args = ["restore", str(out), "--database", stocked, "--safety-dir", str(tmp_path / "s")]
    assert _refused(args, capsys) == REFUSED + (
        "store.bak: the backup was changed after it was written (its SHA-256 is not the one in "
        "store.bak.manifest.json)")
    manifest_of(out).unlink()  # without its manifest, the CHECK constraint itself refuses it
    assert _refused([*args, "--unverified"], capsys) == REFUSED + (
        "store.bak: 1 row(s) of strength_exams break its CHECK constraint ck_strength_exams_mrc "
        "(mrc >= 0 AND mrc <= 5): the backup was damaged or edited after it was written")
    assert _digest(stocked) == before and not (tmp_path / "s").exists()
    assert cli(["restore", str(good), "--database", stocked, "--safety-dir", str(tmp_path / "s")]) == 0  # and again
    assert cli(["restore", str(good), "--database", stocked, "--safety-dir", str(tmp_path / "s")]) == 0


def test_a_file_with_only_the_revision_table_is_refused_even_with_a_matching_manifest(
        stocked: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = ("hollow.bak is not a complete dashboard store: it has no table audit_log, decisions, imports, "
                "login_throttle, patients, prompt_log, sessions, strength_exams, surgeries, users, visits (a store at "
                f"schema revision {HEAD} has them)")
    hollow = tmp_path / "hollow.bak"
    if _is_sqlite(stocked):
        out = backup(tmp_path / "store.bak", stocked).path
        with sqlite3.connect(hollow) as conn:
            conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
            conn.execute(f"INSERT INTO alembic_version VALUES ('{HEAD}')")
        conn.close()
        manifest_of(hollow).write_text(manifest_of(out).read_text())
        _forge_manifest(hollow)
    else:  # a genuine backup, manifest and all, of a schema holding nothing but the revision table
        engine = create_engine(stocked)
        with engine.begin() as conn:
            for table in ("strength_exams", "surgeries", "visits", "decisions", "prompt_log", "patients", "imports",
                          "audit_log", "sessions", "users", "login_throttle"):
                conn.exec_driver_sql(f"DROP TABLE {table} CASCADE")
        engine.dispose()
        backup(hollow, stocked)
        _wipe(stocked)
        engine = get_engine(stocked)
        import_records(engine, records_from(tmp_path / "again", GOOD_FILES), "good", user="seed")
        engine.dispose()
    before = _digest(stocked)
    args = ["restore", str(hollow), "--database", stocked, "--safety-dir", str(tmp_path / "s")]
    assert _refused(args, capsys) == REFUSED + expected
    manifest_of(hollow).unlink()
    assert _refused([*args, "--unverified"], capsys) == REFUSED + expected
    assert _digest(stocked) == before and not (tmp_path / "s").exists()


def test_an_edited_backup_is_refused(stocked: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = backup(tmp_path / "store.bak", stocked).path
    before = _digest(stocked)
    args = ["restore", str(out), "--database", stocked, "--safety-dir", str(tmp_path / "s")]
    if _is_sqlite(stocked):
        with sqlite3.connect(out) as conn:
            conn.execute("UPDATE visits SET notes = 'edited' WHERE notes IS NOT NULL")
        conn.close()
    else:
        data = bytearray(out.read_bytes())
        data[len(data) // 2] ^= 1
        out.write_bytes(bytes(data))
    assert _refused(args, capsys) == REFUSED + (
        "store.bak: the backup was changed after it was written (its SHA-256 is not the one in "
        "store.bak.manifest.json)")
    if _is_sqlite(stocked):  # a forger who also rewrites the file's checksum: the table digests still differ
        _forge_manifest(out)
        assert _refused(args, capsys) == REFUSED + (
            "store.bak: the rows of table visits are not those written (SHA-256 of its rows): the backup was "
            "changed after it was written")
    assert _digest(stocked) == before and not (tmp_path / "s").exists()


def test_a_backup_without_its_append_only_triggers_is_refused(
        stocked: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _digest(stocked)
    if _is_sqlite(stocked):
        out = backup(tmp_path / "store.bak", stocked).path
        with sqlite3.connect(out) as conn:
            conn.execute("DROP TRIGGER audit_log_no_delete")
            conn.execute("DROP TRIGGER decisions_no_replace")  # and one kept by name but made harmless
            conn.execute("CREATE TRIGGER decisions_no_replace BEFORE INSERT ON decisions BEGIN SELECT 1; END")
        conn.close()
        manifest_of(out).unlink()
        args = ["restore", str(out), "--database", stocked, "--safety-dir", str(tmp_path / "s"), "--unverified"]
        lost = "audit_log_no_delete, decisions_no_replace"
    else:  # a store whose trigger was dropped, backed up as it is: the backup's manifest is genuine
        engine = create_engine(stocked)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER audit_log_append_only ON audit_log")
        engine.dispose()
        out = backup(tmp_path / "store.bak", stocked).path
        engine = create_engine(stocked)
        with engine.begin() as conn:  # the live store repaired, to see that a refusal changes nothing
            conn.exec_driver_sql("CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
                                 "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()")
        engine.dispose()
        args = ["restore", str(out), "--database", stocked, "--safety-dir", str(tmp_path / "s")]
        lost = "audit_log_append_only"
        before = _digest(stocked)
    message = _refused(args, capsys)
    assert message == REFUSED + (
        f"store.bak lacks the append-only trigger(s) {lost} of schema revision {HEAD}"
        f"{' (missing or changed)' if _is_sqlite(stocked) else ''}: restoring it would leave the audit log and "
        "decisions open to edits, so it is refused (the backup was edited, or is not a dashboard backup)")
    assert _digest(stocked) == before
    engine = get_engine(stocked)
    try:  # the live store keeps its protection
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_log"))
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------- audit entries survive
def _entries(url: str) -> list[tuple]:
    engine = get_engine(url)
    try:
        log = audit_log(engine).sort_values("id")
    finally:
        engine.dispose()
    return [(int(row.id), row.at, row.user_name, row.action, row.patient_id) for row in log.itertuples()]


def test_audit_entries_made_after_the_backup_survive_the_restore_with_their_ids(
        stocked: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "store.bak"
    engine = get_engine(stocked)
    add_user(engine, "setup", "admin", "admin.a", "Admin A", "admin", "unused-hash")  # --user must be a user
    engine.dispose()
    assert cli(["backup", str(out), "--database", stocked, "--user", "admin.a"]) == 0
    at_backup = _digest(stocked)
    engine = get_engine(stocked)
    record(engine, "dr.b", "login")
    record(engine, "dr.b", "patient_view", patient_id="P1")
    record(engine, "dr.b", "export", kind="handout", format="pdf", identified=True)
    engine.dispose()
    before = _entries(stocked)  # the backup's own entry (written after its snapshot) and the three since
    assert cli(["restore", str(out), "--database", stocked, "--user", "admin.a",
                "--safety-dir", str(tmp_path / "s")]) == 0
    assert "4 audit entries the backup did not have were kept" in capsys.readouterr().err
    after = _entries(stocked)
    assert after[:-1] == before  # same ids, times, users, actions, patients
    assert after[-1][2:4] == ("admin.a", "restore") and after[-1][0] == before[-1][0] + 1
    assert _without_audit(_digest(stocked)) == _without_audit(at_backup)
    engine = get_engine(stocked)
    try:
        record(engine, "dr.c", "login")  # the id sequence goes on after the carried entries
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text("UPDATE audit_log SET user_name = 'x'"))
    finally:
        engine.dispose()


def test_audit_entries_whose_ids_the_backup_uses_get_new_ids_and_keep_their_time(
        stocked: str, tmp_path: Path) -> None:
    """A backup of another store (or of another time line) over this one: no entry of either is lost."""
    out = backup(tmp_path / "other.bak", stocked).path
    in_backup = _entries(stocked)  # ids 1 and 2
    _wipe(stocked)
    engine = get_engine(stocked)
    for user in ("u1", "u2", "u3"):
        record(engine, user, "login")
    engine.dispose()
    live = _entries(stocked)  # ids 1, 2 (taken in the backup) and 3 (free)
    result = restore(out, stocked, safety_dir=tmp_path / "s", user="admin.z")
    assert result.carried_audit_entries == 3
    after = _entries(stocked)
    assert after[:2] == in_backup
    assert after[2] == live[2]  # id 3 was free: kept
    assert [entry[1:] for entry in after[3:5]] == [entry[1:] for entry in live[:2]]  # new ids, same time
    assert [entry[0] for entry in after[3:5]] == [4, 5]
    assert after[5][2:4] == ("admin.z", "restore") and len(after) == 6


# ----------------------------------------------------------------------------------------- encryption
def test_an_encrypted_backup_round_trips_and_a_wrong_or_missing_key_changes_nothing(
        stocked: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "store.bak"
    monkeypatch.delenv(encryption.PASSPHRASE_ENV, raising=False)
    assert _refused(["backup", str(out), "--database", stocked, "--encrypt"], capsys) == (
        "backup failed: --encrypt needs a passphrase in SPINE_BACKUP_PASSPHRASE or a key file (--key-file)")
    monkeypatch.setenv(encryption.PASSPHRASE_ENV, "short")
    assert _refused(["backup", str(out), "--database", stocked, "--encrypt"], capsys) == (
        "backup failed: SPINE_BACKUP_PASSPHRASE holds fewer than 12 bytes: use a longer passphrase or key")
    assert not out.exists() and not manifest_of(out).exists()
    monkeypatch.setenv(encryption.PASSPHRASE_ENV, PASSPHRASE)
    assert cli(["backup", str(out), "--database", stocked, "--encrypt"]) == 0
    assert "(sqlite, encrypted," in capsys.readouterr().err or not _is_sqlite(stocked)
    content = out.read_bytes()
    assert content.startswith(encryption.MAGIC)
    assert not any(value.encode() in content for value in ("Ann Example", "MRN0000001", "Ann feels better"))
    at_backup = _digest(stocked)
    engine = get_engine(stocked)
    record(engine, "dr.b", "login")
    engine.dispose()
    before = _digest(stocked)

    args = ["restore", str(out), "--database", stocked, "--safety-dir", str(tmp_path / "s")]
    monkeypatch.delenv(encryption.PASSPHRASE_ENV)
    assert _refused(args, capsys) == REFUSED + (
        "store.bak is encrypted: give its passphrase in SPINE_BACKUP_PASSPHRASE or its key file with --key-file")
    wrong = tmp_path / "wrong.key"
    wrong.write_text("not the passphrase at all\n")
    wrong_key = REFUSED + ("store.bak: the passphrase or key file does not open this backup (a wrong key, or the "
                           "file was changed after it was written)")
    assert _refused([*args, "--key-file", str(wrong)], capsys) == wrong_key
    tampered = bytearray(content)  # and a changed byte, with a checksum to match: authentication refuses it
    tampered[-100] ^= 1
    out.write_bytes(bytes(tampered))
    _forge_manifest(out)
    right = tmp_path / "right.key"
    right.write_text(PASSPHRASE + "\n")
    assert _refused([*args, "--key-file", str(right)], capsys) == wrong_key
    assert _digest(stocked) == before and not (tmp_path / "s").exists()

    out.write_bytes(content)
    _forge_manifest(out)  # the original bytes and checksum again
    assert cli([*args, "--key-file", str(right)]) == 0
    assert _without_audit(_digest(stocked)) == _without_audit(at_backup)
    [safety] = [p for p in (tmp_path / "s").iterdir() if not p.name.endswith(".manifest.json")]
    assert safety.read_bytes().startswith(encryption.MAGIC)  # the safety copy is encrypted with the same key
    entries = _entries(stocked)
    assert entries[-2][2:4] == ("dr.b", "login") and entries[-1][3] == "restore"


def test_encryption_detects_removed_and_reordered_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encryption, "CHUNK", 1000)
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(3500))
    sealed = tmp_path / "sealed"
    encryption.encrypt_file(plain, sealed, PASSPHRASE.encode())
    encryption.decrypt_file(sealed, tmp_path / "back", PASSPHRASE.encode())
    assert (tmp_path / "back").read_bytes() == plain.read_bytes()
    data = sealed.read_bytes()
    header, size = encryption._HEADER.size, 1000 + encryption.TAG
    chunks = [data[header + i * size: header + (i + 1) * size] for i in range(4)]
    for name, changed in (("truncated", data[:header + 3 * size]),
                          ("reordered", data[:header] + chunks[1] + chunks[0] + chunks[2] + chunks[3])):
        (tmp_path / name).write_bytes(changed)
        with pytest.raises(encryption.EncryptionError, match="does not open this backup"):
            encryption.decrypt_file(tmp_path / name, tmp_path / f"{name}.out", PASSPHRASE.encode())
        assert not (tmp_path / f"{name}.out").exists()


def test_restore_refuses_a_backup_whose_manifest_is_for_the_other_database(
        stocked: str, tmp_path: Path) -> None:
    out = backup(tmp_path / "store.bak", stocked).path
    manifest = json.loads(manifest_of(out).read_text())
    other = "postgresql" if _is_sqlite(stocked) else "sqlite"
    manifest["backend"] = other
    manifest_of(out).write_text(json.dumps(manifest))
    with pytest.raises(BackupError) as refused:
        restore(out, stocked, safety_dir=tmp_path / "s")
    assert str(refused.value) == f"store.bak is a {other} backup; this store is {make_url(stocked).get_backend_name()}"


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # PostgreSQL enforces CHECK on every write
def test_a_damaged_store_does_not_block_restoring_a_good_backup(stocked: str, tmp_path: Path) -> None:
    """The issue's sequel: after a bad value reached the store, every restore was refused (its safety copy
    failed integrity_check). The safety copy now keeps the store as it is, and says what is wrong with it."""
    good = backup(tmp_path / "good.bak", stocked).path
    at_backup = _digest(stocked)
    with sqlite3.connect(make_url(stocked).database) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("UPDATE strength_exams SET mrc = 13 WHERE muscle = 'hip_flexion'")
    conn.close()
    result = restore(good, stocked, safety_dir=tmp_path / "s")
    assert _without_audit(_digest(stocked)) == _without_audit(at_backup)
    assert result.safety_copy is not None
    assert json.loads(manifest_of(result.safety_copy).read_text())["damaged"] == (
        f"{result.safety_copy} is damaged (SQLite integrity_check: CHECK constraint failed in strength_exams)")


def test_a_backup_with_a_trigger_or_function_of_its_own_is_refused(
        stocked: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A planted trigger (here: one that empties the visits whenever a patient is added) never comes back."""
    if _is_sqlite(stocked):
        out = backup(tmp_path / "store.bak", stocked).path
        with sqlite3.connect(out) as conn:
            conn.execute("CREATE TRIGGER planted AFTER INSERT ON patients BEGIN DELETE FROM visits; END")
        conn.close()
        manifest_of(out).unlink()
        args = ["restore", str(out), "--database", stocked, "--safety-dir", str(tmp_path / "s"), "--unverified"]
        expected = (f"store.bak has trigger(s) a dashboard store at schema revision {HEAD} does not have: planted "
                    "(the backup was edited, or is not a dashboard backup)")
    else:  # planted in the store itself, then backed up with a genuine manifest
        engine = create_engine(stocked)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE FUNCTION planted() RETURNS trigger LANGUAGE plpgsql AS $$ "
                                 "BEGIN DELETE FROM visits; RETURN NEW; END $$")
            conn.exec_driver_sql("CREATE TRIGGER planted AFTER INSERT ON patients FOR EACH ROW "
                                 "EXECUTE FUNCTION planted()")
        out = backup(tmp_path / "store.bak", stocked).path
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP FUNCTION planted() CASCADE")
        engine.dispose()
        args = ["restore", str(out), "--database", stocked, "--safety-dir", str(tmp_path / "s")]
        expected = ("store.bak holds objects a dashboard store does not have: FUNCTION planted(), planted (the "
                    "backup was edited, or is not a dashboard backup)")
    before = _digest(stocked)
    assert _refused(args, capsys) == REFUSED + expected
    assert _digest(stocked) == before and not (tmp_path / "s").exists()
