"""Fixtures for the store tests: one engine per backend, and small records folders written as CSV.

Every store test runs on SQLite and on PostgreSQL. PostgreSQL needs $SPINE_TEST_POSTGRES_URL (a database
the tests may create schemas in); without it the PostgreSQL case is skipped locally but FAILS under CI=true,
so a CI without PostgreSQL cannot pass silently. Each test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from dashboard.clinical.records.validate import Records, validate
from dashboard.store import get_engine

POSTGRES_ENV = "SPINE_TEST_POSTGRES_URL"
TODAY = date(2026, 11, 1)

#: A small cohort touching every kind of value: +/- grades, decimals, blanks, extra columns, notes.
GOOD_FILES: dict[str, str] = {
    "patients.csv": "patient_id,name,mrn,birth_year,sex,diabetes,smoker,surgeon,ward\n"
                    "P1,Ann Example,MRN0000001,1960,F,yes,no,Dr A,W1\n"
                    "P2,,,1971,M,,N,Dr B,\n"
                    "P3,Bob Sample,MRN0000003,,X,no,,,W2\n",
    "surgeries.csv": "patient_id,surgery_date,procedure,levels,instrumented,revision,deficit_onset_date\n"
                     "P1,2026-01-10,TLIF,L4-L5,yes,no,2025-12-01\n"
                     "P2,2026-02-01,decompression,L3-L4;L4-L5,no,,\n"
                     "P3,2025-06-01,PLIF,L5-S1,yes,,\n"
                     "P3,2026-03-01,PLIF,L4-L5;L5-S1,yes,yes,2026-02-15\n",
    "strength.csv": "patient_id,exam_date,muscle,side,mrc,examiner\n"
                    "P1,2026-01-08,ankle_dorsiflexion,R,3,physio 1\n"
                    "P1,2026-02-20,ankle_dorsiflexion,R,4+,\n"
                    "P1,2026-02-20,great_toe_extension,L,5-,physio 2\n"
                    "P2,2026-01-30,great_toe_extension,L,4-,\n"
                    "P2,2026-03-01,great_toe_extension,L,4.5,\n"
                    "P3,2026-04-01,hip_flexion,R,5,\n",
    "visits.csv": "patient_id,visit_date,leg_pain_nrs,back_pain_nrs,odi,radicular_pain,numbness,fever,crp_mg_l,notes\n"
                  "P1,2026-02-20,3,2.5,30,no,yes,no,4.5,Ann feels better\n"
                  "P3,2026-04-01,,6,,yes,,,,\n",
}
IDENTIFYING_VALUES = ("Ann Example", "MRN0000001", "Bob Sample", "MRN0000003", "Ann feels better")


def write_folder(folder: Path, files: dict[str, str | None]) -> Path:
    """Write a records folder; a None content leaves that file out."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        if text is not None:
            (folder / name).write_text(text, encoding="utf-8")
    return folder


def edited(files: dict[str, str], name: str, old: str, new: str) -> dict[str, str]:
    """The files with one text of one file replaced (the test's own data must hold it)."""
    assert old in files[name], f"{old!r} is not in {name}"
    return {**files, name: files[name].replace(old, new)}


def records_from(folder: Path, files: dict[str, str | None]) -> Records:
    """Validate a folder written from `files`; the test data itself must be valid."""
    records, report = validate(write_folder(folder, files), today=TODAY)
    assert records is not None, report.error_lines()
    return records


@pytest.fixture
def good_records(tmp_path: Path) -> Records:
    return records_from(tmp_path / "good", GOOD_FILES)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database: a SQLite file, or a fresh schema in the PostgreSQL test database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store' / 'dashboard.db'}"
        return
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{POSTGRES_ENV} is not set: under CI the store must be tested on PostgreSQL")
        pytest.skip(f"set {POSTGRES_ENV} to run the store tests on PostgreSQL")
    schema = f"store_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield make_url(base).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def store_engine(store_url: str) -> Iterator[Engine]:
    """An engine on an empty store at the latest schema revision."""
    engine = get_engine(store_url)
    yield engine
    engine.dispose()
