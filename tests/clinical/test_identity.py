"""One patient is one person, and a re-import never erases: identity checks in the file and against the store.

Issue 22, points 2 and 3: a re-import wrote NULL over stored values for absent columns and blank cells (a
visits file without the cauda equina columns erased recorded findings and their emergency prompts), and a
folder whose P00001 was another person imported as "50 updated", merging two people under one id.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine

from dashboard.cli import main
from dashboard.clinical.assessment import assess
from dashboard.clinical.records.identity import id_match_key
from dashboard.clinical.records.validate import Records, validate_frames
from dashboard.store import IdentityConflictError, import_history, import_records, load_records
from dashboard.store.audit import audit_log
from dashboard.store.backup import store_digest
from tests.store_fixtures import GOOD_FILES, edited, good_records, records_from, store_engine, store_url

FIXTURES = (good_records, store_engine, store_url)  # imported for pytest, which finds them by name
TODAY = date(2026, 11, 1)


def records_digest(engine: Engine) -> dict:
    """Every table's digest but the import log (a refused import is logged there as failed)."""
    return {table: digest for table, digest in store_digest(engine).items() if table != "imports"}


# ------------------------------------------------------------------------------------ one file's patients
def _patients_errors(patient_rows: list[tuple[str, str]]) -> list[str]:
    patients = pd.DataFrame(patient_rows, columns=["patient_id", "mrn"], dtype="string")
    first = patient_rows[0][0]
    raw = {"patients.csv": patients,
           "surgeries.csv": pd.DataFrame({"patient_id": [first], "surgery_date": ["2026-01-10"],
                                          "procedure": ["TLIF"], "levels": ["L4-L5"], "instrumented": ["yes"]},
                                         dtype="string"),
           "strength.csv": pd.DataFrame({"patient_id": [first], "exam_date": ["2026-01-12"],
                                         "muscle": ["hip_flexion"], "side": ["L"], "mrc": ["5"]}, dtype="string"),
           "visits.csv": None}
    records, report = validate_frames(raw, {}, today=TODAY)
    assert records is None or report.ok
    return report.error_lines()


def test_ids_that_read_the_same_are_one_id_in_a_file() -> None:
    assert _patients_errors([("P00001", "M1"), ("p00001", "M2"), ("\uff30" + "00001", "M3")]) == [
        "patients.csv:3: patient_id: 'p00001' reads the same as patient_id 'P00001' on line 2 (case or look-alike "
        "letters differ): one person cannot have two ids",
        "patients.csv:4: patient_id: 'Ｐ00001' reads the same as patient_id 'P00001' on line 2 (case or look-alike "
        "letters differ): one person cannot have two ids",
    ]


def test_a_cyrillic_look_alike_id_is_the_same_id_and_a_mixed_script_id_is_refused() -> None:
    cyrillic_p = "\u0420"  # Р, CYRILLIC CAPITAL LETTER ER
    assert id_match_key(cyrillic_p + "00001") == id_match_key("P00001")
    assert _patients_errors([("P00001", ""), (cyrillic_p + "00001", "")]) == [
        f"patients.csv:3: patient_id: '{cyrillic_p}00001' reads the same as patient_id 'P00001' on line 2 (case or "
        "look-alike letters differ): one person cannot have two ids"]
    assert _patients_errors([("P00001", ""), (f"PA{cyrillic_p}7", "")]) == [
        f"patients.csv:3: patient_id: 'PA{cyrillic_p}7' mixes letters of different scripts (cyrillic, latin): "
        "look-alike letters make two ids that read the same"]


def test_one_mrn_under_two_ids_is_an_error_whatever_its_spacing_or_case() -> None:
    assert _patients_errors([("P1", "MRN0001"), ("P2", "mrn 0001"), ("P3", "MRN0003")]) == [
        "patients.csv:3: mrn: 'mrn 0001' is also the MRN of patient_id 'P1' on line 2: one MRN is one person"]


def test_distinct_ids_and_mrns_pass() -> None:
    assert _patients_errors([("P1", "MRN0001"), ("P2", "MRN0002"), ("P10", "")]) == []


# ------------------------------------------------------------------------------- re-import keeps values
CAUDA_VISITS = ("patient_id,visit_date,leg_pain_nrs,saddle_anesthesia,urinary_retention,notes\n"
                "P1,2026-02-20,3,yes,yes,Ann feels numb\n"
                "P3,2026-04-01,,,,\n")


def test_a_visits_file_without_the_cauda_equina_columns_erases_no_finding_and_no_prompt(
        store_engine: Engine, tmp_path: Path) -> None:
    files = {**GOOD_FILES, "visits.csv": CAUDA_VISITS}
    import_records(store_engine, records_from(tmp_path / "v1", files), "v1")
    prompts_before = assess(load_records(store_engine), as_of=date(2026, 2, 21)).prompts
    assert "red-cauda-equina" in set(prompts_before.loc[prompts_before["patient_id"] == "P1", "rule_id"])

    without = edited(files, "visits.csv", CAUDA_VISITS,
                     "patient_id,visit_date,leg_pain_nrs\nP1,2026-02-20,3\nP3,2026-04-01,\n")
    second = import_records(store_engine, records_from(tmp_path / "v2", without), "v2")

    assert second.updated == 0 and second.changed_patients == ()
    visits = load_records(store_engine).visits.set_index("patient_id")
    assert bool(visits.loc["P1", "saddle_anesthesia"]) and bool(visits.loc["P1", "urinary_retention"])
    assert visits.loc["P1", "notes"] == "Ann feels numb"
    prompts_after = assess(load_records(store_engine), as_of=date(2026, 2, 21)).prompts
    assert prompts_after[["patient_id", "rule_id"]].equals(prompts_before[["patient_id", "rule_id"]])


def test_blank_identity_cells_keep_the_stored_name_and_mrn(store_engine: Engine, tmp_path: Path,
                                                            good_records: Records) -> None:
    import_records(store_engine, good_records, "v1")
    blanked = edited(GOOD_FILES, "patients.csv", "P1,Ann Example,MRN0000001,1960,F,yes,no,Dr A,W1",
                     "P1,,,,,,,,W1")
    second = import_records(store_engine, records_from(tmp_path / "v2", blanked), "v2")
    assert second.updated == 0
    stored = load_records(store_engine).patients.set_index("patient_id").loc["P1"]
    assert (stored["name"], stored["mrn"], stored["birth_year"], stored["sex"], bool(stored["diabetes"])) == (
        "Ann Example", "MRN0000001", 1960, "F", True)


def test_a_changed_value_is_reported_as_a_change_of_that_patient(store_engine: Engine, tmp_path: Path,
                                                                  good_records: Records) -> None:
    import_records(store_engine, good_records, "v1")
    files = edited(GOOD_FILES, "strength.csv", "P2,2026-03-01,great_toe_extension,L,4.5,",
                   "P2,2026-03-01,great_toe_extension,L,4,")
    files = edited(files, "patients.csv", "P3,Bob Sample,MRN0000003,,X,no,,,W2",
                   "P3,Bob Sample,MRN0000003,,X,no,,,W2\nP4,Cy New,MRN0000004,1950,M,,,,")
    preview = import_records(store_engine, records_from(tmp_path / "v2", files), "v2", dry_run=True)
    assert (preview.new_patients, preview.changed_patients, preview.unchanged_patients) == (("P4",), ("P2",), 2)
    assert preview.patients_summary() == "1 new patient(s) (P4), 1 changed (P2), 2 unchanged"
    assert preview.dry_run and len(load_records(store_engine).patients) == 3  # the preview stored nothing
    result = import_records(store_engine, records_from(tmp_path / "v2b", files), "v2")
    assert result.counts["strength"].updated == 1 and result.changed_patients == ("P2",)


# ----------------------------------------------------------------------------- another person, same id
def test_another_person_under_a_stored_id_is_refused_naming_both(store_engine: Engine, tmp_path: Path,
                                                                  good_records: Records) -> None:
    import_records(store_engine, good_records, "v1")
    before = records_digest(store_engine)
    other = edited(GOOD_FILES, "patients.csv", "P1,Ann Example,MRN0000001,1960,F,yes,no,Dr A,W1",
                   "P1,Dora Other,MRN0000099,1948,M,no,no,Dr A,W1")
    with pytest.raises(IdentityConflictError) as refused:
        import_records(store_engine, records_from(tmp_path / "v2", other), "v2")
    assert refused.value.problems == [
        "patient P1: name is stored as 'Ann Example', the file has 'Dora Other'; MRN is stored as 'MRN0000001', the "
        "file has 'MRN0000099'; sex is stored as 'F', the file has 'M'; birth year is stored as 1960, the file has "
        "1948. A different person under the same id? Give the new patient a new id; a genuine correction is an "
        "admin's `correct-patient`."]
    assert records_digest(store_engine) == before
    history = import_history(store_engine)
    assert (history.iloc[0]["status"], history.iloc[0]["error"]) == ("failed", "IdentityConflictError")


def test_a_case_variant_of_a_stored_id_and_a_stored_mrn_under_a_new_id_are_refused(
        store_engine: Engine, tmp_path: Path, good_records: Records) -> None:
    import_records(store_engine, good_records, "v1")
    before = records_digest(store_engine)
    files = {"patients.csv": "patient_id,name,mrn\np2,,\nP9,Cy Other,mrn 0000001\n",
             "surgeries.csv": "patient_id,surgery_date,procedure,levels,instrumented\np2,2026-05-01,TLIF,L4-L5,yes\n"
                              "P9,2026-05-01,TLIF,L4-L5,yes\n",
             "strength.csv": "patient_id,exam_date,muscle,side,mrc\np2,2026-05-02,hip_flexion,L,5\n"
                             "P9,2026-05-02,hip_flexion,L,5\n"}
    with pytest.raises(IdentityConflictError) as refused:
        import_records(store_engine, records_from(tmp_path / "v2", files), "v2")
    assert refused.value.problems == [
        "patient p2: reads the same as stored patient P2 (case or look-alike letters differ). Use the stored id for "
        "the same person, or a clearly different id.",
        "patient P9: MRN 'mrn 0000001' is stored for patient P1. One MRN is one person."]
    assert records_digest(store_engine) == before


def test_the_same_person_again_with_unchanged_identity_imports(store_engine: Engine, tmp_path: Path,
                                                               good_records: Records) -> None:
    import_records(store_engine, good_records, "v1")
    spaced = edited(GOOD_FILES, "patients.csv", "P1,Ann Example,MRN0000001", "P1,ann  example,MRN0000001")
    assert import_records(store_engine, records_from(tmp_path / "v2", spaced), "v2").updated == 1  # the spelling
    assert load_records(store_engine).patients.set_index("patient_id").loc["P1", "name"] == "ann  example"


# ------------------------------------------------------------------------------------ the audit entry
def test_the_import_and_its_audit_entry_land_together(store_engine: Engine, good_records: Records, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from dashboard.store import importer

    import_records(store_engine, good_records, "v1", user="dr.a", role="surgeon")
    entries = audit_log(store_engine, actions=["import"])
    assert list(zip(entries["user_name"], entries["role"], strict=True)) == [("dr.a", "surgeon")]

    def lost_connection(*args: object, **kwargs: object) -> int:
        raise RuntimeError("connection lost before the audit entry")

    monkeypatch.setattr(importer.audit, "record", lost_connection)
    before = records_digest(store_engine)
    with pytest.raises(RuntimeError):
        import_records(store_engine, records_from(tmp_path / "v2", edited(
            GOOD_FILES, "strength.csv", "P3,2026-04-01,hip_flexion,R,5,", "P3,2026-04-01,hip_flexion,R,4,")), "v2")
    assert records_digest(store_engine) == before  # no rows without their audit entry


# ---------------------------------------------------------------------------------------- command line
def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """A command through the command line's own entry point, in this process (its subject is what the commands
    do and say, not the process: tests/app/test_cli.py runs the real one); its exit code and standard error."""
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


def test_a_second_demo_cohort_cannot_merge_into_the_first_and_the_generator_avoids_stored_ids(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SPINE_DASHBOARD_DB_URL", f"sqlite:///{tmp_path / 'store.db'}")
    assert _run(capsys, "demo", str(tmp_path / "a"), "--patients", "30", "--seed", "1")[0] == 0
    assert _run(capsys, "import", str(tmp_path / "a"))[0] == 0

    clash = _run(capsys, "demo", str(tmp_path / "b"), "--patients", "30", "--seed", "2", "--first-id", "1")
    assert clash[0] == 0
    code, refused = _run(capsys, "import", str(tmp_path / "b"))
    assert code == 2
    assert "patient P00001: name is stored as '" in refused
    assert refused.rstrip().endswith("identity conflict(s) with stored patients; nothing was stored.")

    fresh = _run(capsys, "demo", str(tmp_path / "c"), "--patients", "30", "--seed", "2")[1]
    assert "(P00031 …)" in fresh
    assert pd.read_csv(tmp_path / "c" / "patients.csv")["patient_id"].iloc[0] == "P00031"
    code, imported = _run(capsys, "import", str(tmp_path / "c"))
    assert code == 0, imported
    assert "imported c: 30 new patient(s) (P00031, P00032" in imported


def test_a_genuine_correction_is_an_audited_admin_action(store_engine: Engine, tmp_path: Path,
                                                         good_records: Records) -> None:
    from dashboard.store.identity import correct_identity

    import_records(store_engine, good_records, "v1")
    old = correct_identity(store_engine, "P1", {"name": "Ann Exemple", "birth_year": 1961}, "admin.b")
    assert old == {"name": "Ann Example", "birth_year": 1960}
    stored = load_records(store_engine).patients.set_index("patient_id").loc["P1"]
    assert (stored["name"], stored["birth_year"]) == ("Ann Exemple", 1961)
    entry = audit_log(store_engine, actions=["import"]).iloc[0]
    assert (entry["user_name"], entry["patient_id"], entry["details"]["kind"], entry["details"]["fields"]) == (
        "admin.b", "P1", "identity_correction", "birth_year,name")
    assert "Ann" not in str(entry["details"])  # which fields, never their values
    with pytest.raises(ValueError, match="MRN 'MRN0000003' is stored for patient P3"):
        correct_identity(store_engine, "P1", {"mrn": "MRN0000003"}, "admin.b")
    # the corrected identity is what a re-import is now checked against
    with pytest.raises(IdentityConflictError):
        import_records(store_engine, good_records, "v1 again")
