"""The store: CSV → store → frames round trip, idempotent re-import, atomic failure, append-only decisions,
migrations. Every test that touches a database runs on SQLite and on PostgreSQL (see store_fixtures)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, Table, func, inspect, select, text

from dashboard.clinical.records.format import FILES, FileSpec
from dashboard.clinical.records.validate import Records
from dashboard.demo import write_cohort
from dashboard.store import (
    ENV_VAR,
    current_revision,
    database_url,
    decision_history,
    get_engine,
    head_revision,
    import_history,
    import_records,
    latest_decisions,
    load_records,
    record_decision,
    upgrade_to_head,
)
from dashboard.store import importer as importer_module
from dashboard.store.db import REPO_ROOT
from dashboard.store.importer import StoreImportError
from dashboard.store.models import RECORD_TABLES, Base
from tests.store_fixtures import (
    GOOD_FILES,
    IDENTIFYING_VALUES,
    edited,
    good_records,
    records_from,
    store_engine,
    store_url,
)

FIXTURES = (good_records, store_engine, store_url)  # imported for pytest, which finds them by name
SPECS = {spec.stem: spec for spec in FILES}


def sorted_frame(frame: pd.DataFrame, stem: str) -> pd.DataFrame:
    return frame.sort_values(list(SPECS[stem].key), kind="stable").reset_index(drop=True)


def assert_same_records(actual: Records, expected: Records) -> None:
    for stem, frame in expected.frames().items():
        pd.testing.assert_frame_equal(sorted_frame(actual.frames()[stem], stem), sorted_frame(frame, stem),
                                      obj=stem)
    assert actual.extra_columns == expected.extra_columns


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {stem: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for stem, table in RECORD_TABLES.items()}


# ------------------------------------------------------------------------------------------ round trip
def test_csv_to_store_to_frames_round_trip(store_engine: Engine, good_records: Records) -> None:
    result = import_records(store_engine, good_records, "/somewhere/private/cohort-2026")
    assert {stem: c.inserted for stem, c in result.counts.items()} == {
        "patients": 3, "surgeries": 4, "strength": 6, "visits": 2}
    assert result.source_name == "cohort-2026"
    assert_same_records(load_records(store_engine), good_records)


def test_round_trip_without_visits_file(store_engine: Engine, tmp_path: Path) -> None:
    records = records_from(tmp_path / "novisits", {**GOOD_FILES, "visits.csv": None})
    import_records(store_engine, records, "novisits")
    loaded = load_records(store_engine)
    assert loaded.visits.empty
    assert_same_records(loaded, records)


def test_empty_store_loads_typed_empty_frames(store_engine: Engine) -> None:
    loaded = load_records(store_engine)
    for stem, frame in loaded.frames().items():
        assert frame.empty
        assert list(frame.columns) == [c.name for c in SPECS[stem].columns]
    assert str(loaded.strength["mrc"].dtype) == "float64"
    assert str(loaded.patients["birth_year"].dtype) == "Int64"


def test_as_of_leaves_out_later_rows(store_engine: Engine, good_records: Records) -> None:
    import_records(store_engine, good_records, "good")
    earlier = load_records(store_engine, as_of=date(2026, 2, 20))
    assert len(earlier.patients) == 3  # patients are not dated
    assert earlier.surgeries["surgery_date"].max() <= pd.Timestamp("2026-02-20")
    assert len(earlier.surgeries) == 3
    assert sorted(earlier.strength["exam_date"].dt.strftime("%Y-%m-%d")) == [
        "2026-01-08", "2026-01-30", "2026-02-20", "2026-02-20"]
    assert len(earlier.visits) == 1


# ------------------------------------------------------------------------------------------- re-import
def test_reimport_adds_nothing(store_engine: Engine, good_records: Records) -> None:
    first = import_records(store_engine, good_records, "good")
    before = row_counts(store_engine)
    second = import_records(store_engine, good_records, "good", user="dr.a")
    assert row_counts(store_engine) == before
    assert second.inserted == 0 and second.updated == 0
    assert {stem: c.unchanged for stem, c in second.counts.items()} == {
        stem: c.inserted for stem, c in first.counts.items()}
    history = import_history(store_engine)
    assert list(history["status"]) == ["succeeded", "succeeded"]
    assert history.iloc[0]["user_name"] == "dr.a"
    assert history.iloc[0]["strength_unchanged"] == 6 and history.iloc[0]["strength_inserted"] == 0


def test_changed_row_is_updated_and_the_file_wins(store_engine: Engine, tmp_path: Path,
                                                  good_records: Records) -> None:
    import_records(store_engine, good_records, "v1")
    files = edited(GOOD_FILES, "strength.csv", "P2,2026-03-01,great_toe_extension,L,4.5,",
                   "P2,2026-03-01,great_toe_extension,L,4,\nP2,2026-04-01,great_toe_extension,L,5,")
    files = edited(files, "patients.csv", "P1,Ann Example,MRN0000001,1960,F,yes,no,Dr A,W1",
                   "P1,Ann Example,MRN0000001,1960,F,yes,no,Dr A,W9")  # an extra column counts too
    files = edited(files, "visits.csv", "P3,2026-04-01,,6,,yes,,,,\n", "")  # kept: imports never delete
    second = import_records(store_engine, records_from(tmp_path / "v2", files), "v2")
    assert second.counts["strength"] == importer_module.FileCounts(inserted=1, unchanged=5, updated=1)
    assert second.counts["patients"] == importer_module.FileCounts(inserted=0, unchanged=2, updated=1)
    assert second.counts["visits"] == importer_module.FileCounts(inserted=0, unchanged=1, updated=0)
    loaded = load_records(store_engine)
    grades = loaded.strength.set_index(["patient_id", "exam_date"])["mrc"]
    assert grades[("P2", pd.Timestamp("2026-03-01"))] == 4.0
    assert loaded.patients.set_index("patient_id").loc["P1", "ward"] == "W9"
    assert len(loaded.visits) == 2
    with store_engine.connect() as conn:  # provenance: the row names the import that last changed it
        table = RECORD_TABLES["strength"]
        import_ids = dict(conn.execute(select(table.c.exam_date, table.c.import_id)
                                       .where(table.c.patient_id == "P2")).all())
    assert import_ids == {date(2026, 1, 30): 1, date(2026, 3, 1): 2, date(2026, 4, 1): 2}


# -------------------------------------------------------------------------------------------- atomicity
def test_failure_half_way_leaves_the_store_unchanged(store_engine: Engine, tmp_path: Path,
                                                     good_records: Records,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import_records(store_engine, good_records, "v1")
    before = load_records(store_engine)
    files = edited(GOOD_FILES, "patients.csv", "P2,,,1971,M,,N,Dr B,", "P2,,,1971,M,,N,Dr C,\nP4,,,1980,F,,,,")
    files = edited(files, "surgeries.csv", "P2,2026-02-01", "P4,2026-02-01,TLIF,L4-L5,yes,,\nP2,2026-02-01")
    files = edited(files, "strength.csv", "P3,2026-04-01,hip_flexion,R,5,", "P3,2026-04-01,hip_flexion,R,4,")
    changed = records_from(tmp_path / "v2", files)

    real_bulk_insert = importer_module._bulk_insert
    written: list[str] = []

    def failing_bulk_insert(conn: Connection, table_name: str, *args: Any, **kwargs: Any) -> None:
        if "strength" in table_name:
            raise RuntimeError("disk on fire")
        written.append(table_name)
        return real_bulk_insert(conn, table_name, *args, **kwargs)

    monkeypatch.setattr(importer_module, "_bulk_insert", failing_bulk_insert)
    with pytest.raises(RuntimeError, match="disk on fire"):
        import_records(store_engine, changed, "v2")
    assert any("patients" in name for name in written)  # patients had been written when it failed
    assert_same_records(load_records(store_engine), before)
    history = import_history(store_engine)
    assert list(history["status"]) == ["failed", "succeeded"]
    assert history.iloc[0]["error"] == "RuntimeError"
    assert pd.isna(history.iloc[0]["patients_inserted"])


def test_failed_first_import_leaves_an_empty_store(store_engine: Engine, good_records: Records,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def fail_on_strength(conn: Connection, table: Table, spec: FileSpec, frame: pd.DataFrame,
                         import_id: int) -> importer_module.FileCounts:
        if spec.stem == "strength":
            raise RuntimeError("interrupted")
        return real_merge(conn, table, spec, frame, import_id)

    real_merge = importer_module._merge_file
    monkeypatch.setattr(importer_module, "_merge_file", fail_on_strength)
    with pytest.raises(RuntimeError):
        import_records(store_engine, good_records, "v1")
    assert row_counts(store_engine) == {"patients": 0, "surgeries": 0, "strength": 0, "visits": 0}


def test_database_errors_never_carry_identifying_values(store_engine: Engine, good_records: Records,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    records = good_records  # validated for this test alone; its frame is broken in place, as no validation would
    records.patients.loc[records.patients["patient_id"] == "P1", "patient_id"] = pd.NA  # NOT NULL: PostgreSQL quotes
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreImportError) as failure:
        import_records(store_engine, records, "broken")
    shown = f"{failure.value} {failure.value.__cause__} {caplog.text}"
    assert not any(value in shown for value in IDENTIFYING_VALUES)
    assert failure.value.__suppress_context__
    assert row_counts(store_engine)["patients"] == 0


def test_import_and_load_log_no_row_contents(store_engine: Engine, good_records: Records,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    import_records(store_engine, good_records, "good")
    load_records(store_engine)
    assert "import 1 stored" in caplog.text
    assert not any(value in caplog.text for value in (*IDENTIFYING_VALUES, "W1", "physio"))


# -------------------------------------------------------------------------------------------- decisions
def test_decisions_are_append_only_and_the_latest_wins(store_engine: Engine, good_records: Records) -> None:
    import_records(store_engine, good_records, "good")
    common = {"patient_id": "P1", "rule_id": "fibrosis-recurrent-radicular", "clinician": "Dr A"}
    first = record_decision(store_engine, **common, evidence_hash="h1", decision="deferred", reason="review in 2 weeks")
    second = record_decision(store_engine, **common, evidence_hash="h1", decision="not_indicated",
                             reason="  symptoms settled  ")
    record_decision(store_engine, patient_id="P2", rule_id="hardware-loosening", clinician="Dr B",
                    evidence_hash="h9", decision="ordered", decided_at=datetime(2026, 3, 1, 9, 30))
    assert second > first
    history = decision_history(store_engine, patient_id="P1")
    assert list(history["id"]) == [first, second]
    assert list(history["decision"]) == ["deferred", "not_indicated"]
    assert history.iloc[1]["reason"] == "symptoms settled"
    assert str(history["decided_at"].dtype) == "datetime64[us, UTC]"
    latest = latest_decisions(store_engine)
    assert list(zip(latest["patient_id"], latest["decision"], strict=True)) == [
        ("P1", "not_indicated"), ("P2", "ordered")]
    assert latest.iloc[1]["decided_at"] == pd.Timestamp("2026-03-01 09:30", tz="UTC")

    with pytest.raises(Exception, match="append-only"), store_engine.begin() as conn:
        conn.execute(text("UPDATE decisions SET decision = 'ordered'"))
    with pytest.raises(Exception, match="append-only"), store_engine.begin() as conn:
        conn.execute(text("DELETE FROM decisions"))
    assert len(decision_history(store_engine)) == 3


def test_a_later_decided_at_wins_over_a_later_entry(store_engine: Engine, good_records: Records) -> None:
    import_records(store_engine, good_records, "good")
    common = {"patient_id": "P3", "rule_id": "r", "clinician": "Dr A", "evidence_hash": "h"}
    record_decision(store_engine, **common, decision="ordered", decided_at=datetime(2026, 5, 2, tzinfo=UTC))
    record_decision(store_engine, **common, decision="deferred", reason="later",
                    decided_at=datetime(2026, 5, 1, tzinfo=UTC))
    assert latest_decisions(store_engine).iloc[0]["decision"] == "ordered"


def test_decisions_are_checked(store_engine: Engine, good_records: Records) -> None:
    import_records(store_engine, good_records, "good")
    common = {"patient_id": "P1", "rule_id": "r", "evidence_hash": "h", "clinician": "Dr A"}
    with pytest.raises(ValueError, match="reason is required"):
        record_decision(store_engine, **common, decision="not_indicated", reason="  ")
    with pytest.raises(ValueError, match="reason is required when the decision is deferred"):
        record_decision(store_engine, **common, decision="deferred")
    with pytest.raises(ValueError, match="decision must be one of"):
        record_decision(store_engine, **common, decision="maybe")
    with pytest.raises(ValueError, match="clinician is required"):
        record_decision(store_engine, **{**common, "clinician": ""}, decision="ordered")
    with pytest.raises(ValueError, match="not in the store"):
        record_decision(store_engine, **{**common, "patient_id": "P404"}, decision="ordered")
    assert decision_history(store_engine).empty
    assert list(latest_decisions(store_engine).columns) == list(decision_history(store_engine).columns)


# ------------------------------------------------------------------------------------------- migrations
def test_migrations_reach_head_on_an_empty_database_and_are_idempotent(
        store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may depend on the working directory
    engine = get_engine(store_url, migrate=False)
    try:
        assert current_revision(engine) is None
        upgrade_to_head(engine)
        assert current_revision(engine) == head_revision() is not None
        upgrade_to_head(engine)
        get_engine(store_url).dispose()  # the app's way in migrates too: still fine at head
        assert current_revision(engine) == head_revision()
        assert {"patients", "surgeries", "strength_exams", "visits", "imports", "decisions"} <= set(
            inspect(engine).get_table_names())
        with engine.connect() as conn:  # the migrated schema is exactly the models
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()


def test_alembic_command_line_uses_the_configured_database(store_url: str, tmp_path: Path) -> None:
    env = {**os.environ, ENV_VAR: store_url, "PYTHONPATH": str(REPO_ROOT)}
    ini = REPO_ROOT / "dashboard" / "store" / "alembic.ini"
    done = subprocess.run([sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    engine = get_engine(store_url, migrate=False)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------- scale
def test_a_large_cohort_round_trips_and_reimports_unchanged(store_engine: Engine, tmp_path: Path) -> None:
    """A 2,000-patient demo cohort (tens of thousands of strength rows): stored whole, then all unchanged.

    Its speed is measured by benchmarks/bench.py, not asserted here.
    """
    records = records_from(write_cohort(tmp_path / "large", n_patients=2_000, seed=3, anchor=date(2026, 10, 1)), {})
    rows = len(records.strength)
    first = import_records(store_engine, records, "large")
    second = import_records(store_engine, records, "large")
    assert rows > 50_000
    assert first.counts["strength"].inserted == rows
    assert second.counts["strength"].unchanged == rows and second.inserted == 0
    stored = load_records(store_engine).strength
    key = ["patient_id", "exam_date", "muscle", "side"]
    pd.testing.assert_frame_equal(stored.sort_values(key)[[*key, "mrc"]].reset_index(drop=True),
                                  records.strength.sort_values(key)[[*key, "mrc"]].reset_index(drop=True))


# -------------------------------------------------------------------------------------- configuration
def test_database_url_default_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert database_url() == f"sqlite:///{REPO_ROOT / 'var' / 'dashboard.db'}"
    monkeypatch.setenv(ENV_VAR, "postgresql+psycopg://u@h/db")
    assert database_url() == "postgresql+psycopg://u@h/db"
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_sqlite_engine_creates_its_folder_with_foreign_keys_and_wal(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'new' / 'folder' / 'dashboard.db'}")
    try:
        assert (tmp_path / "new" / "folder" / "dashboard.db").exists()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()


def test_models_mirror_the_records_format() -> None:
    for stem, table in RECORD_TABLES.items():
        spec = SPECS[stem]
        assert [c.name for c in table.columns] == ["id", *(c.name for c in spec.columns), "extra", "import_id"]
        unique = [c for c in table.constraints if c.__class__.__name__ == "UniqueConstraint"]
        assert [tuple(col.name for col in u.columns) for u in unique] == [spec.key]
        for column in spec.columns:
            assert table.c[column.name].nullable is not column.required, column.name
