"""The audit log: append-only in the database itself (SQLite and PostgreSQL), ids and counts only, filters,
migration up and down, and the app's and the command line's entries (sign-ins are in test_auth)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from alembic import command
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from dashboard.cli import main as cli
from dashboard.clinical.records.validate import Records
from dashboard.store import decision_history, get_engine, import_records, load_records
from dashboard.store import importer as importer_module
from dashboard.store.audit import DETAIL_KEYS, audit_log, audit_users, clean_details, recent_failures, record
from dashboard.store.db import alembic_config, current_revision
from dashboard.store.models import AuditEntry
from tests.app_fixtures import app_store, entries, run_app
from tests.store_fixtures import GOOD_FILES, IDENTIFYING_VALUES, good_records, store_engine, store_url, write_folder

FIXTURES = (app_store, good_records, store_engine, store_url)  # imported for pytest, which finds them by name
ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = pd.read_csv(ROOT / "data" / "demo" / "scenarios.csv", dtype=str)


def all_text(engine: Engine) -> str:
    """Every audit row as text, to look for values that must never be there."""
    with engine.connect() as conn:
        rows = conn.execute(select(AuditEntry.__table__)).all()
    return json.dumps([[str(v) for v in row] for row in rows])


# ------------------------------------------------------------------------------------------- the store
def test_entries_round_trip_newest_first_and_filter(store_engine: Engine) -> None:
    day = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    record(store_engine, "dr.a", "login", role="surgeon", at=day, method="password")
    record(store_engine, "dr.a", "patient_view", role="surgeon", patient_id="P1", at=day + timedelta(minutes=1))
    record(store_engine, "admin.c", "import", role="admin", at=day + timedelta(days=1), file="/home/c/cohort",
           counts={"patients": np.int64(3), "strength": 6}, import_id=1, seconds=1.23456)
    record(store_engine, None, "login_failed", at=day + timedelta(days=2), known_user=False)
    log = audit_log(store_engine)
    assert log["action"].tolist() == ["login_failed", "import", "patient_view", "login"]
    assert log.iloc[1]["details"] == {"file": "cohort", "counts": {"patients": 3, "strength": 6}, "import_id": 1,
                                      "seconds": 1.235}
    assert log.iloc[0]["user_name"] == "unknown"
    assert str(log["at"].dtype) == "datetime64[us, UTC]" and log.iloc[-1]["at"] == pd.Timestamp(day)
    assert audit_log(store_engine, user="dr.a")["action"].tolist() == ["patient_view", "login"]
    assert audit_log(store_engine, actions=["import", "login"])["action"].tolist() == ["import", "login"]
    assert audit_log(store_engine, patient_id=" P1 ")["action"].tolist() == ["patient_view"]
    assert audit_log(store_engine, since=date(2026, 11, 21))["action"].tolist() == ["login_failed", "import"]
    assert audit_log(store_engine, until=date(2026, 11, 20))["action"].tolist() == ["patient_view", "login"]
    assert audit_log(store_engine, since=date(2026, 11, 21), until=date(2026, 11, 21))["action"].tolist() == [
        "import"]
    assert len(audit_log(store_engine, limit=2)) == 2
    assert audit_users(store_engine) == ["admin.c", "dr.a", "unknown"]
    assert audit_log(store_engine, user="nobody").empty


def test_the_database_refuses_to_change_or_delete_audit_rows(store_engine: Engine) -> None:
    record(store_engine, "dr.a", "login", role="surgeon")
    statements = ["UPDATE audit_log SET user_name = 'someone else'", "DELETE FROM audit_log"]
    if store_engine.dialect.name == "postgresql":
        statements.append("TRUNCATE audit_log")
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"), store_engine.begin() as conn:
            conn.execute(text(statement))
    assert audit_log(store_engine)["user_name"].tolist() == ["dr.a"]
    with pytest.raises(IntegrityError), store_engine.begin() as conn:  # the action is checked too
        conn.execute(AuditEntry.__table__.insert().values(at=datetime.now(UTC), user_name="x", action="edit"))


def test_replace_and_upsert_cannot_rewrite_audit_entries_or_decisions(store_engine: Engine,
                                                                      good_records: Records) -> None:
    """REPLACE deletes the old row without the DELETE trigger (SQLite); an UPSERT updates it: both refused."""
    from dashboard.store import record_decision

    import_records(store_engine, good_records, "good", user="dr.a")
    record_decision(store_engine, patient_id="P1", rule_id="red-cauda-equina", evidence_hash="h", decision="ordered",
                    clinician="Dr A")
    before_audit = audit_log(store_engine)[["id", "user_name", "action"]].to_dict("records")
    if store_engine.dialect.name == "sqlite":
        rewrites = [
            "INSERT OR REPLACE INTO audit_log (id, at, user_name, action) VALUES (1, '2026-01-01', 'mallory', 'login')",
            "REPLACE INTO decisions (id, patient_id, rule_id, evidence_hash, decision, clinician, decided_at) "
            "VALUES (1, 'P1', 'red-cauda-equina', 'h', 'deferred', 'mallory', '2026-01-01')",
        ]
    else:
        rewrites = []
    rewrites += [
        "INSERT INTO audit_log (id, at, user_name, action) VALUES (1, '2026-01-01', 'mallory', 'login') "
        "ON CONFLICT (id) DO UPDATE SET user_name = 'mallory'",
        "INSERT INTO decisions (id, patient_id, rule_id, evidence_hash, decision, clinician, decided_at) "
        "VALUES (1, 'P1', 'red-cauda-equina', 'h', 'deferred', 'mallory', '2026-01-01') "
        "ON CONFLICT (id) DO UPDATE SET decision = 'deferred'",
    ]
    for statement in rewrites:
        with pytest.raises(DBAPIError, match="append-only"), store_engine.begin() as conn:
            conn.execute(text(statement))
    assert audit_log(store_engine)[["id", "user_name", "action"]].to_dict("records") == before_audit
    assert decision_history(store_engine, "P1")[["decision", "clinician"]].values.tolist() == [["ordered", "Dr A"]]


def test_an_entry_can_join_the_callers_transaction(store_engine: Engine) -> None:
    with pytest.raises(RuntimeError), store_engine.begin() as conn:
        record(conn, "dr.a", "export", kind="handout", format="pdf", patients=3)
        raise RuntimeError("the export failed")
    assert audit_log(store_engine).empty  # rolled back with the action it describes
    with store_engine.begin() as conn:
        record(conn, "dr.a", "export", kind="handout", format="pdf", patients=3)
    assert audit_log(store_engine)["details"].tolist() == [{"kind": "handout", "format": "pdf", "patients": 3}]


@pytest.mark.parametrize("details, message", [
    ({"name": "Ann Example"}, "'name' is not allowed"),
    ({"mrn": "MRN0000001"}, "'mrn' is not allowed"),
    ({"notes": "Ann feels better"}, "'notes' is not allowed"),
    ({"reason": "Duplex done at the GP"}, "'reason' is not allowed"),
    ({"format": "two\nlines"}, "one line"),
    ({"kind": "x" * 201}, "at most 200 characters"),
    ({"rows": [1, 2]}, "must be a number or a short text"),
    ({"patient_ids": ["P1"] * 1001}, "at most 1000 ids"),
])
def test_details_are_ids_codes_file_names_and_counts_only(details: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        clean_details(details)


def test_unknown_actions_are_refused_before_the_database() -> None:
    with pytest.raises(ValueError, match="audit action must be one of"):
        record(None, "dr.a", "edit")  # type: ignore[arg-type] - refused before any connection is used
    assert {"file", "counts", "rule_id", "decision", "patient_ids"} <= DETAIL_KEYS
    assert clean_details({"file": "C:\\Users\\ann.example\\cohort.xlsx", "rows": None}) == {"file": "cohort.xlsx"}
    assert clean_details({"file": "two\nlines.csv"}) == {"file": "two lines.csv"}
    assert len(clean_details({"file": "x" * 500})["file"]) == 200


def test_recent_failures_count_within_the_window(store_engine: Engine) -> None:
    now = datetime.now(UTC)
    for minutes in (1, 5, 30):
        record(store_engine, "dr.a", "login_failed", at=now - timedelta(minutes=minutes))
    record(store_engine, "dr.b", "login_failed", at=now)
    assert recent_failures(store_engine, "dr.a", timedelta(minutes=15)) == 2


def test_migration_0002_goes_up_and_down_keeping_the_records(store_url: str, good_records: Records) -> None:
    engine = get_engine(store_url)
    try:
        import_records(engine, good_records, "good")
        record(engine, "dr.a", "login")
        config = alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0001")
        assert current_revision(engine) == "0001"
        assert "audit_log" not in inspect(engine).get_table_names()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        assert audit_log(engine).empty and len(load_records(engine).patients) == 3
        record(engine, "dr.a", "login")
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:  # triggers are back
            conn.execute(text("DELETE FROM audit_log"))
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------------------- command line
def _add_user(url: str, username: str) -> None:
    """The command line's --user must be an active user of the store."""
    from dashboard.store.users import add_user

    engine = get_engine(url)
    try:
        add_user(engine, "setup", "admin", username, username, "surgeon", "unused-hash")
    finally:
        engine.dispose()


def test_command_line_import_is_audited_with_counts_only(store_url: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_folder(tmp_path / "clinic-2026", GOOD_FILES)
    _add_user(store_url, "dr.a")
    assert cli(["import", str(folder), "--database", store_url, "--user", "dr.a"]) == 0
    engine = get_engine(store_url)
    try:
        entry = audit_log(engine).iloc[0]
        assert (entry["user_name"], entry["action"]) == ("dr.a", "import")
        assert entry["details"]["file"] == "clinic-2026" and entry["details"]["status"] == "succeeded"
        assert entry["details"]["counts"]["patients"] == {"inserted": 3, "updated": 0, "unchanged": 0}
        assert not any(value in all_text(engine) for value in IDENTIFYING_VALUES)
    finally:
        engine.dispose()


def test_a_command_line_import_the_database_refuses_is_audited_as_failed(
        store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise IntegrityError("INSERT …", {}, Exception("UNIQUE constraint failed: patients.patient_id"))

    monkeypatch.setattr(importer_module, "_merge_file", refuse)
    folder = write_folder(tmp_path / "clinic", GOOD_FILES)
    assert cli(["import", str(folder), "--database", store_url]) == 1
    assert "nothing was stored: the database refused the import" in capsys.readouterr().err
    engine = get_engine(store_url)
    try:
        entry = audit_log(engine).iloc[0]
        assert entry["details"] == {"file": "clinic", "status": "failed", "error": "StoreImportError"}
        assert entry["user_name"].startswith("cli")
        assert load_records(engine).patients.empty
    finally:
        engine.dispose()


def test_command_line_exports_are_audited_in_the_store_they_read(store_url: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from dashboard.reports import follow_up, handout  # noqa: PLC0415

    # The audit is the subject here: the charts are not drawn (tests/app/test_handout.py draws them), which
    # saves two Chromium starts per database.
    for module in (follow_up, handout):
        monkeypatch.setattr(module, "render_pngs", lambda figures: [b"" for _ in figures])
    demo = ROOT / "data" / "demo"
    _add_user(store_url, "dr.a")
    assert cli(["import", str(demo), "--database", store_url, "--user", "dr.a"]) == 0
    patient = _patient("plateau_behind")
    assert cli(["export-fhir", str(tmp_path / "bundle.json"), "--patient", patient, "--database", store_url]) == 0
    assert cli(["report", str(demo), patient, "--as-of", "2026-11-20", "--out", str(tmp_path / "r.html"),
                "--database", store_url]) == 0
    assert cli(["handout", str(demo), "--as-of", "2026-11-20", "--patients", patient, "--out",
                str(tmp_path / "h.html"), "--database", store_url]) == 0
    engine = get_engine(store_url)
    try:
        exports = audit_log(engine, actions=["export"])
        got = [(e["patient_id"] if isinstance(e["patient_id"], str) else None, e["details"])
               for e in exports.to_dict("records")][::-1]
    finally:
        engine.dispose()
    assert got == [
        (None, {"kind": "fhir_bundle", "format": "json", "file": "bundle.json", "patients": 1, "identified": False,
                "patient_ids": [patient]}),
        (patient, {"kind": "follow_up_report", "format": "html", "file": "r.html", "identified": True}),
        (None, {"kind": "conference_handout", "format": "html", "file": "h.html", "patients": 1,
                "identified": False}),
    ]


# --------------------------------------------------------------------------------------------- the app
def _patient(scenario: str) -> str:
    return SCENARIOS.loc[SCENARIOS["scenario"] == scenario, "patient_id"].iloc[0]


def test_opening_a_patient_is_audited_once_per_patient_and_session(app_store: str) -> None:
    first, second = _patient("plateau_behind"), _patient("normal_recovery")
    at = run_app("screens/patient.py", user="surgeon", role="surgeon", patient_id=first)
    at.run()  # a rerun (any click) is the same view
    at.run()
    views = [e for e in entries(app_store, actions=["patient_view"], user="surgeon") if e["patient_id"]]
    assert [(e["patient_id"], e["role"]) for e in views] == [(first, "surgeon")]
    at.selectbox[0].set_value(second).run()
    assert f"Id {second}" in [t.value for t in at.get("text")]  # the patient banner
    run_app("screens/patient.py", user="surgeon", role="surgeon", patient_id=first)  # another session
    views = [e for e in entries(app_store, actions=["patient_view"], user="surgeon") if e["patient_id"]]
    assert [e["patient_id"] for e in views] == [first, second, first]


def test_the_clinic_list_is_audited_once_per_session_with_how_many_patients_it_showed(app_store: str) -> None:
    """Issue 22.6: the clinic list shows every patient's name and MRN; its view is logged like a patient's."""
    def clinic_views() -> list[dict]:
        return [e for e in entries(app_store, actions=["patient_view"], user="surgeon")
                if e["patient_id"] is None and e["details"].get("kind") == "clinic_list"]

    before = len(clinic_views())
    at = run_app(user="surgeon", role="surgeon")  # the surgeon's home screen is the clinic list
    at.run()  # a rerun (any click) is the same view
    new = clinic_views()[: len(clinic_views()) - before]
    assert [(e["role"], e["details"]["patients"]) for e in new] == [("surgeon", len(at.dataframe[-1].value))]
    assert new[0]["details"]["patients"] > 0


def test_a_decision_is_audited_with_its_code_not_its_reason(app_store: str) -> None:
    patient = _patient("calf_swelling")
    at = run_app("screens/patient.py", user="surgeon", role="surgeon", patient_id=patient)
    key = f"{patient}-red-venous-thrombosis"
    at.radio(key=f"choice-{key}").set_value("not_indicated")
    at.text_input(key=f"reason-{key}").input("Ann Example had a duplex at the GP")
    at.button(key=f"FormSubmitter:decision-{key}-Record decision").click().run()
    stored = decision_history(get_engine(app_store), patient).iloc[-1]
    entry = entries(app_store, actions=["decision"])[0]
    assert (entry["user_name"], entry["patient_id"]) == ("surgeon", patient)  # the signed-in user
    assert stored["clinician"] == "Demo Surgeon"  # named as the sign-in names them (not a free-text box)
    assert entry["details"] == {"rule_id": "red-venous-thrombosis", "decision": "not_indicated",
                                "decision_id": int(stored["id"])}
    assert "duplex" not in all_text(get_engine(app_store))


def test_an_exam_saved_from_the_form_is_audited_as_an_import(app_store: str) -> None:
    patient = _patient("normal_recovery")
    at = run_app("screens/add_exam.py", user="surgeon", role="surgeon", patient_id=patient)
    at.selectbox(key="g-ankle_dorsiflexion-R").set_value("4+")
    at.button[0].click().run()
    assert at.success and at.success[0].value.startswith("Saved 1 grade")
    entry = entries(app_store, actions=["import"])[0]
    assert (entry["user_name"], entry["patient_id"]) == ("surgeon", patient)
    assert entry["details"]["kind"] == "form" and entry["details"]["counts"]["strength"]["inserted"] == 1


def test_the_audit_page_filters_by_user_action_and_patient(app_store: str) -> None:
    patient = _patient("plateau_behind")
    run_app("screens/patient.py", user="surgeon", role="surgeon", patient_id=patient)
    at = run_app("screens/audit.py", user="admin", role="admin")
    assert at.title[0].value == "Audit log"
    assert "surgeon" in at.selectbox(key="audit_user").options
    at.selectbox(key="audit_user").set_value("surgeon").run()
    at.multiselect(key="audit_actions").set_value(["patient_view"]).run()
    at.text_input(key="audit_patient").input(patient).run()
    shown = at.dataframe[0].value
    assert len(shown) >= 1 and set(shown["patient_id"]) == {patient} and set(shown["action"]) == {"patient_view"}
    at.date_input(key="audit_dates").set_value((date.today() - timedelta(days=9), date.today() - timedelta(days=8)))
    at.run()
    assert at.dataframe[0].value.empty


def test_export_helper_records_downloads_for_colleagues_pages(app_store: str) -> None:
    """`audit_export` is the on_click of a download button; AppTest cannot click one, so call it in a run."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_string(
        "from dashboard.app.auth import audit_export\n"
        "audit_export('handout', 'pdf', patient_id='P00001', file='/tmp/handout.pdf')\n", default_timeout=60)
    at.session_state["user_name"], at.session_state["role"] = "conference", "conference"
    at.run()
    assert not at.exception
    entry = entries(app_store, actions=["export"])[0]
    assert (entry["user_name"], entry["role"], entry["patient_id"]) == ("conference", "conference", "P00001")
    assert entry["details"] == {"kind": "handout", "format": "pdf", "file": "handout.pdf"}
