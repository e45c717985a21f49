"""The prompt log in the store (issue 21): each prompt logged once, the first time it is computed, on SQLite and
PostgreSQL; insert-if-absent when two writers log the same prompts at once."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select

from dashboard.clinical.assessment import assess
from dashboard.clinical.imaging.checklist import evidence_hash
from dashboard.store import get_engine, import_records
from dashboard.store.models import PromptLogEntry
from dashboard.store.prompt_log import insert_rows, log_rows, prompt_log, prompt_log_size, record_prompts
from tests.builders import SURGERY, exams, make_records, patient, surgery, visit
from tests.store_fixtures import store_engine, store_url

FIXTURES = (store_engine, store_url)  # imported for pytest, which finds fixtures by name
DAY_31 = SURGERY + timedelta(days=31)


def _records(saddle_day_33: str = "no"):
    """P1 has saddle anaesthesia on day 30 (an emergency cauda equina prompt); P2 none."""
    return make_records([patient("P1"), patient("P2")], [surgery("P1"), surgery("P2")],
                        exams("P1", "ankle_dorsiflexion", "R", {-2: "5", 5: "5"})
                        + exams("P2", "ankle_dorsiflexion", "R", {-2: "5", 5: "5"}),
                        [visit("P1", 30, saddle_anesthesia="yes"), visit("P1", 33, saddle_anesthesia=saddle_day_33)])


def _rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(PromptLogEntry.__table__)).scalar_one())


def test_a_prompt_is_logged_once_with_its_key_dates_and_urgency(store_engine: Engine) -> None:
    records = _records()
    import_records(store_engine, records, source_name="test", user="t")
    prompts = assess(records, as_of=DAY_31).prompts
    shown = datetime(2026, 2, 10, 8, 30, tzinfo=UTC)
    assert record_prompts(store_engine, prompts, DAY_31, shown_at=shown) == 1
    assert record_prompts(store_engine, prompts, DAY_31 + timedelta(days=1)) == 0  # insert twice: one row
    assert _rows(store_engine) == 1 and prompt_log_size(store_engine) >= 1
    log = prompt_log(store_engine)
    row = log.iloc[0]
    assert (row["patient_id"], row["rule_id"], row["decision_key"], row["urgency"], row["modality"]) == (
        "P1", "red-cauda-equina", "scan:mri", "emergency", "mri")
    assert row["evidence_hash"] == evidence_hash(list(prompts.iloc[0]["evidence"]))
    assert row["decision_basis"] == prompts.iloc[0]["decision_basis"]
    assert row["first_seen"] == pd.Timestamp("2026-02-09")  # the evidence's date (day 30), not the day it was shown
    assert row["as_of"] == pd.Timestamp(DAY_31)  # the first computation's day: the repeat changed nothing
    assert row["first_shown_at"] == pd.Timestamp(shown)


def test_new_evidence_is_a_new_row_and_the_first_is_kept(store_engine: Engine) -> None:
    records = _records(saddle_day_33="yes")
    import_records(store_engine, records, source_name="test", user="t")
    assert record_prompts(store_engine, assess(records, as_of=DAY_31).prompts, DAY_31) == 1
    later = SURGERY + timedelta(days=34)
    assert record_prompts(store_engine, assess(records, as_of=later).prompts, later) == 1  # saddle again: new lines
    log = prompt_log(store_engine)
    assert log["as_of"].tolist() == [pd.Timestamp(DAY_31), pd.Timestamp(later)]
    assert log["first_seen"].tolist() == [pd.Timestamp("2026-02-09"), pd.Timestamp("2026-02-12")]
    assert log["evidence_hash"].nunique() == 2


def test_no_prompts_and_an_empty_log(store_engine: Engine) -> None:
    records = _records()
    import_records(store_engine, records, source_name="test", user="t")
    assert record_prompts(store_engine, assess(records, as_of=SURGERY + timedelta(days=20)).prompts, DAY_31) == 0
    log = prompt_log(store_engine)
    assert log.empty and prompt_log_size(store_engine) == 0
    assert str(log["first_seen"].dtype) == "datetime64[s]" and str(log["first_shown_at"].dtype).endswith("UTC]")


def test_a_row_another_writer_inserted_after_the_keys_were_read_is_skipped(store_engine: Engine) -> None:
    """The race itself: both writers read no key, both insert. The second insert adds nothing and raises
    nothing (ON CONFLICT DO NOTHING), instead of an IntegrityError that would lose its batch."""
    records = _records()
    import_records(store_engine, records, source_name="test", user="t")
    rows = log_rows(assess(records, as_of=DAY_31).prompts, DAY_31, datetime.now(UTC))
    assert insert_rows(store_engine, rows) == 1
    assert insert_rows(store_engine, rows) == 0
    assert _rows(store_engine) == 1


def test_two_writers_at_once_log_each_prompt_once(store_url: str, tmp_path: Path) -> None:
    """Two engines (as two app servers, or the app and the command line) log overlapping prompts of 60 patients
    at the same moment, five times each: every prompt is logged once, and neither writer fails."""
    ids = [f"P{n:03d}" for n in range(60)]
    records = make_records([patient(p) for p in ids], [surgery(p) for p in ids],
                           [row for p in ids for row in exams(p, "ankle_dorsiflexion", "R", {-2: "5", 5: "5"})],
                           [visit(p, 30, saddle_anesthesia="yes") for p in ids])
    setup = get_engine(store_url)
    import_records(setup, records, source_name="test", user="t")
    setup.dispose()
    prompts = assess(records, as_of=DAY_31).prompts
    assert len(prompts) == 60
    halves = [prompts.iloc[:40], prompts.iloc[20:]]  # 20 prompts written by both
    start, errors, added = threading.Barrier(2), [], [0, 0]

    def write(n: int) -> None:
        engine = get_engine(store_url, migrate=False)
        try:
            start.wait()
            for _ in range(5):
                added[n] += record_prompts(engine, halves[n], DAY_31)
        except Exception as problem:  # noqa: BLE001 — reported by the assertion below
            errors.append(problem)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert sum(added) == 60
    check = get_engine(store_url, migrate=False)
    assert _rows(check) == 60
    assert prompt_log(check)["patient_id"].nunique() == 60
    check.dispose()


def test_a_prompt_of_a_patient_not_in_the_store_is_refused(store_engine: Engine) -> None:
    """One patient is one person: the log refers to stored patients only (foreign key)."""
    records = _records()
    prompts = assess(records, as_of=DAY_31).prompts  # P1 was never imported
    with pytest.raises(Exception, match="(?i)foreign key"):
        record_prompts(store_engine, prompts, DAY_31)
    assert _rows(store_engine) == 0


def test_log_rows_has_one_row_per_key() -> None:
    prompts = assess(_records(), as_of=DAY_31).prompts
    rows = log_rows(pd.concat([prompts, prompts]), date(2026, 2, 10), datetime(2026, 2, 10, tzinfo=UTC))
    assert len(rows) == 1 and rows.loc[0, "first_seen"] == date(2026, 2, 9)


def test_a_backup_carries_the_prompt_log_and_a_restore_brings_it_back(store_url: str, tmp_path: Path) -> None:
    """The log is part of the store: backed up with it, and restored as it was (a prompt logged after the backup
    is gone again with the restore, like any other row written since)."""
    from dashboard.store.backup import backup, restore

    records = _records(saddle_day_33="yes")
    engine = get_engine(store_url)
    import_records(engine, records, source_name="test", user="t")
    record_prompts(engine, assess(records, as_of=DAY_31).prompts, DAY_31)
    saved = prompt_log(engine)
    result = backup(tmp_path / "store.bak", store_url)
    later = SURGERY + timedelta(days=34)
    assert record_prompts(engine, assess(records, as_of=later).prompts, later) == 1
    engine.dispose()
    restore(result.path, store_url, safety_dir=tmp_path / "safety", user="t")
    engine = get_engine(store_url)
    pd.testing.assert_frame_equal(prompt_log(engine), saved)
    assert record_prompts(engine, assess(records, as_of=later).prompts, later) == 1  # writable after the restore
    engine.dispose()
