"""FHIR R4: export then import gives back the same records; invalid Bundles give clear errors and store nothing."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import func, select

from dashboard.cli import main
from dashboard.interop import codes as C
from dashboard.interop.fhir import (
    bundle_to_records,
    fhir_id,
    ndjson_to_records,
    no_spine_operations,
    read_fhir,
    records_to_bundle,
    write_ndjson,
)
from dashboard.interop.uploads import FHIR_BUNDLE, check_interop_uploads
from dashboard.store import get_engine, import_history, load_records
from dashboard.store.models import Patient
from tests.interop_helpers import ROOT, assert_same_records, demo_records, one_per_scenario, subset
from tests.store_fixtures import GOOD_FILES, IDENTIFYING_VALUES, TODAY, records_from

IDENTIFYING = ("name", "mrn", "notes")
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A hand-made cohort with +/- grades, a decimal grade, extra columns, a revision and notes."""
    return records_from(tmp_path_factory.mktemp("fhir") / "good", GOOD_FILES)


def read(bundle: dict, today=TODAY):
    return bundle_to_records(json.dumps(bundle), "bundle.json", today=today)


def entries(bundle: dict, kind: str, code: str | None = None) -> list[dict]:
    return [e for e in bundle["entry"] if e["resource"]["resourceType"] == kind
            and (code is None or e["resource"]["code"]["coding"][0]["code"] == code)]


def label(bundle: dict, entry: dict) -> str:
    resource = entry["resource"]
    return f"bundle.json[entry {bundle['entry'].index(entry)} {resource['resourceType']}/{resource['id']}]"


# --------------------------------------------------------------------------------------------- round trips
def test_demo_cohort_exports_and_imports_to_the_same_records():
    records = demo_records()
    bundle = records_to_bundle(records, identified=True, check=False)  # the import validates every resource
    back, report = bundle_to_records(json.dumps(bundle), "demo.json")
    assert report.issues.empty, report.error_lines() + report.warning_lines()
    assert_same_records(back, records)
    kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert kinds == {"Patient", "Procedure", "Observation", "Encounter"}


def test_exact_grades_extra_columns_and_identifying_fields_round_trip(small):
    bundle = records_to_bundle(small, identified=True)
    Bundle.model_validate(bundle)  # valid R4 as a whole
    back, report = read(bundle)
    assert report.errors.empty, report.error_lines()
    assert_same_records(back, small)
    assert back.extra_columns == small.extra_columns == {"patients": ["ward"], "surgeries": [], "strength":
                                                          ["examiner"], "visits": []}
    grades = [e["resource"] for e in entries(bundle, "Observation", "mrc-strength")]
    coded = sorted(r["valueCodeableConcept"]["coding"][0]["code"] for r in grades if "valueCodeableConcept" in r)
    assert coded == ["3", "4+", "4-", "5", "5-"]  # the exact grade, never a rounded number
    assert [r["valueQuantity"]["value"] for r in grades if "valueQuantity" in r] == [4.5]
    assert all(r["valueCodeableConcept"]["coding"][0]["system"] == C.CS_MRC_GRADE
               for r in grades if "valueCodeableConcept" in r)


def test_default_export_carries_no_name_mrn_note_or_extra_column(small):
    bundle = records_to_bundle(small)
    text = json.dumps(bundle)
    for value in IDENTIFYING_VALUES + ("W1", "physio 1"):
        assert value not in text
    patient = entries(bundle, "Patient")[0]["resource"]
    assert set(patient) == {"resourceType", "meta", "id", "identifier", "gender", "birthDate", "extension"}
    pseudonymized = {"security": [{"system": C.V3_OBSERVATION_VALUE, "code": "PSEUDED", "display": "pseudonymized"}]}
    assert bundle["meta"] == pseudonymized
    assert all(e["resource"]["meta"] == pseudonymized for e in bundle["entry"])
    assert "meta" not in records_to_bundle(small, identified=True)
    assert patient["identifier"] == [{"system": C.ID_PATIENT, "value": "P1"}]
    back, report = read(bundle)
    assert report.errors.empty
    for column, frame in (("name", back.patients), ("mrn", back.patients), ("notes", back.visits)):
        assert frame[column].isna().all()
    assert_same_records(back, small, drop=(*IDENTIFYING, "ward", "examiner"))


def test_coded_as_documented(small):
    bundle = records_to_bundle(small, identified=True)
    codes = {(c["system"], c["code"]) for e in entries(bundle, "Observation")
             for c in e["resource"]["code"]["coding"]}
    assert {(C.LOINC, "97909-6"), (C.LOINC, "72514-3"), (C.LOINC, "1988-5"), (C.SNOMED, "44077006"),
            (C.SNOMED, "386661006")} <= codes
    strength = entries(bundle, "Observation", "mrc-strength")[0]["resource"]
    assert strength["bodySite"]["coding"][0]["system"] == C.CS_KEY_MUSCLE
    laterality = strength["bodySite"]["extension"][0]["valueCodeableConcept"]["coding"]
    value_set = json.loads((FIXTURES / "hl7-r4" / "valueset-bodysite-laterality.json").read_text())
    allowed = {c["code"] for include in value_set["compose"]["include"] for c in include["concept"]}
    assert laterality[0]["system"] == C.SNOMED and laterality[0]["code"] in allowed  # the R4 value set first
    assert laterality[1]["code"] in ("7771000", "24028007")  # and the SNOMED CT qualifier
    procedure = entries(bundle, "Procedure")[0]["resource"]
    assert procedure["extension"][0] == {"url": C.EXT_INSTRUMENTED, "valueBoolean": True}
    assert procedure["bodySite"][0]["coding"][0]["system"] == C.CS_LUMBAR_SEGMENT
    crp = entries(bundle, "Observation", "crp")[0]["resource"]
    assert crp["valueQuantity"] == {"value": 4.5, "unit": "mg/L", "system": C.UCUM, "code": "mg/L"}
    # Deterministic: the same records give the same Bundle (stable ids and fullUrls).
    assert records_to_bundle(small, identified=True) == bundle


def test_store_round_trip_through_the_command_line(tmp_path: Path, capsys):
    records = subset(demo_records(), one_per_scenario())
    path = tmp_path / "cohort.json"
    path.write_text(json.dumps(records_to_bundle(records, identified=True)), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["import-fhir", str(path), "--database", url]) == 0
    assert f"patients: {len(records.patients)} new" in capsys.readouterr().err
    stored = load_records(get_engine(url))
    assert_same_records(stored, records)
    out = tmp_path / "out.json"
    assert main(["export-fhir", str(out), "--identified", "--database", url]) == 0
    assert json.loads(out.read_text(encoding="utf-8")) == records_to_bundle(records, identified=True)
    first = records.patients["patient_id"].iloc[0]
    assert main(["export-fhir", str(out), "--patient", first, "--database", url]) == 0
    one = json.loads(out.read_text(encoding="utf-8"))
    assert {e["resource"]["id"] for e in entries(one, "Patient")} == {fhir_id(first)}
    assert main(["export-fhir", str(out), "--patient", "NOBODY", "--database", url]) == 2
    assert "no such patient: NOBODY" in capsys.readouterr().err


def test_fhir_ids_are_valid_and_stable():
    assert fhir_id("P00001") == "P00001"
    odd = fhir_id("P 1/ä")
    assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", odd) and fhir_id("P 1/ä") == odd != fhir_id("P 2/ä")


# ------------------------------------------------------------------------------------------ invalid input
def test_bad_values_and_unknown_codes_get_the_records_messages_with_the_entry(small):
    bundle = records_to_bundle(small, identified=True)
    grade = entries(bundle, "Observation", "mrc-strength")[0]
    grade["resource"]["valueCodeableConcept"]["coding"][0]["code"] = "7"
    muscle = entries(bundle, "Observation", "mrc-strength")[1]
    muscle["resource"]["bodySite"]["coding"][0]["code"] = "tibialis"
    odi = entries(bundle, "Observation", "odi")[0]
    odi["resource"]["valueQuantity"]["value"] = 140
    level = entries(bundle, "Procedure")[0]
    level["resource"]["bodySite"][0]["coding"][0]["code"] = "L9-L10"
    unknown = entries(bundle, "Observation", "fever")[0]
    unknown["resource"]["code"]["coding"][0]["code"] = "mystery"
    records, report = read(bundle)
    assert records is None
    lines = report.error_lines()
    assert f"{label(bundle, grade)}: mrc: '7' is not an MRC grade (0–5, 4-, 4+, 5-)" in lines
    assert (f"{label(bundle, muscle)}: muscle: 'tibialis' is not a muscle code (hip_flexion, knee_extension, "
            "ankle_dorsiflexion, great_toe_extension, ankle_plantarflexion)") in lines
    assert f"{label(bundle, odi)}: odi: '140' is not an ODI score (0–100)" in lines
    assert (f"{label(bundle, level)}: levels: 'L9-L10' is not lumbar segments L1-L2 … L5-S1 separated by ';'"
            in lines)
    assert any(line.startswith(f"{label(bundle, unknown)}: code: 'mystery' is not a code of {C.CS_OBSERVATION}")
               for line in lines)
    assert len(lines) == 5


def test_bad_resources_are_reported_with_their_entry_and_element(small):
    bundle = records_to_bundle(small)
    extra = entries(bundle, "Observation", "mrc-strength")[0]
    extra["resource"]["colour"] = "blue"
    typed = entries(bundle, "Observation", "crp")[0]
    typed["resource"]["valueQuantity"]["value"] = "lots"
    status = entries(bundle, "Observation", "mrc-strength")[1]
    status["resource"]["status"] = "done"
    gender = entries(bundle, "Patient")[0]
    gender["resource"]["gender"] = "robot"
    orphan = entries(bundle, "Procedure")[0]
    orphan["resource"]["subject"] = {"reference": "Patient/nobody"}
    bundle["entry"].append({"resource": {"resourceType": "Frobnicate", "id": "x"}})
    records, report = read(bundle)
    assert records is None
    lines = report.error_lines()
    assert f"{label(bundle, extra)}: colour: 'blue' is not an element of Observation in FHIR R4" in lines
    assert any(line.startswith(f"{label(bundle, typed)}: valueQuantity.value: 'lots' is not valid FHIR")
               for line in lines)
    assert (f"{label(bundle, status)}: status: 'done' is not an Observation status (registered, preliminary, "
            "final, amended, corrected, cancelled, entered-in-error, unknown)") in lines
    assert (f"{label(bundle, gender)}: gender: 'robot' is not an administrative gender (male, female, other, "
            "unknown)") in lines
    assert f"{label(bundle, orphan)}: subject: 'Patient/nobody' is not a Patient in this Bundle" in lines
    assert f"bundle.json[entry {len(bundle['entry']) - 1} Frobnicate/x]: resourceType: 'Frobnicate' is not a " \
           "FHIR R4 resource type" in lines


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "bundle.json: is not JSON"),
    ('{"resourceType": "Patient", "id": "p"}', "bundle.json: resourceType: 'Patient' is not a Bundle"),
    ('{"resourceType": "Bundle", "type": "pile", "entry": []}', "bundle.json: type: 'pile' is not a Bundle type"),
    ('{"resourceType": "Bundle", "type": "collection", "entry": []}',
     "bundle.json: holds no Patient: there is nothing to import"),
    ('{"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": 5}]}',
     "bundle.json: entry.0.fullUrl: '5' is not valid FHIR"),
])
def test_inputs_that_are_not_usable_bundles(text: str, message: str):
    records, report = bundle_to_records(text, "bundle.json")
    assert records is None
    assert any(line.startswith(message) for line in report.error_lines()), report.error_lines()


def test_two_values_for_the_same_visit_conflict(small):
    bundle = records_to_bundle(small)
    first = entries(bundle, "Observation", "odi")[0]
    second = copy.deepcopy(first)
    second["resource"]["id"] = "odi-again"
    second["fullUrl"] = "urn:uuid:0f6d1a52-0000-4000-8000-000000000001"
    second["resource"]["valueQuantity"]["value"] = 45
    bundle["entry"].append(second)
    records, report = read(bundle)
    assert records is None
    assert report.error_lines() == [f"{label(bundle, second)}: odi: '45' conflicts with {label(bundle, first)}, "
                                    "which gives '30' for the same visit"]


def test_invalid_bundle_stores_nothing_and_exits_2(small, tmp_path: Path, capsys):
    bundle = records_to_bundle(small)
    entries(bundle, "Observation", "mrc-strength")[0]["resource"]["valueCodeableConcept"]["coding"][0]["code"] = "7"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["import-fhir", str(path), "--database", url]) == 2
    err = capsys.readouterr().err
    assert "mrc: '7' is not an MRC grade" in err and "1 error(s): nothing was stored." in err
    engine = get_engine(url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Patient.__table__)).scalar_one() == 0
    assert (import_history(engine)["status"] == "succeeded").sum() == 0


def test_upload_on_the_import_page_is_checked_the_same_way(small):
    bundle = records_to_bundle(small, identified=True)
    checked = check_interop_uploads(FHIR_BUNDLE, [("ehr.json", json.dumps(bundle).encode())])
    assert checked.records is not None and checked.source_kind == "fhir" and checked.source_name == "ehr.json"
    entries(bundle, "Observation", "odi")[0]["resource"]["valueQuantity"]["value"] = -1
    checked = check_interop_uploads(FHIR_BUNDLE, [("ehr.json", json.dumps(bundle).encode())])
    assert checked.records is None
    assert [line.split(": ", 1)[1] for line in checked.report.error_lines()] == [
        "odi: '-1' is not an ODI score (0–100)"]
    synthea = [(f.name, f.read_bytes()) for f in sorted((FIXTURES / "synthea-bulk-10").iterdir())]
    checked = check_interop_uploads(FHIR_BUNDLE, synthea)  # a Bulk Data export's files
    assert checked.records is None and checked.report.ok and no_spine_operations(checked.report)


# ------------------------------------------------------------------------------------- an EHR's own Bundle
def test_a_bundle_written_by_another_system():
    """Patient id without our identifier, absolute references, LOINC-only codes, mg/dL, unrelated data."""
    patient_url = "https://ehr.example/fhir/Patient/ehr-123"
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"fullUrl": patient_url, "resource": {
            "resourceType": "Patient", "id": "ehr-123", "gender": "female", "birthDate": "1961-04-02",
            "name": [{"family": "Example", "given": ["Ann"]}],
            "identifier": [{"type": {"coding": [{"system": C.V2_0203, "code": "MR"}]}, "value": "H-778"}]}},
        {"resource": {"resourceType": "Procedure", "id": "op1", "status": "completed", "code": {"text": "TLIF"},
                      "subject": {"reference": patient_url}, "performedPeriod": {"start": "2026-01-10T08:30:00Z"},
                      "bodySite": [{"coding": [{"system": C.CS_LUMBAR_SEGMENT, "code": "L4-L5"}]}],
                      "extension": [{"url": C.EXT_INSTRUMENTED, "valueBoolean": True}]}},
        {"resource": {"resourceType": "Observation", "id": "odi1", "status": "final",
                      "code": {"coding": [{"system": C.LOINC, "code": "97909-6"}]},
                      "subject": {"reference": "Patient/ehr-123"}, "effectiveDateTime": "2026-03-01T10:00:00+01:00",
                      "valueQuantity": {"value": 34, "unit": "%"}}},
        {"resource": {"resourceType": "Observation", "id": "crp1", "status": "amended",
                      "code": {"coding": [{"system": C.LOINC, "code": "1988-5"}]},
                      "subject": {"reference": "Patient/ehr-123"}, "effectiveDateTime": "2026-03-01",
                      "valueQuantity": {"value": 1.2, "system": C.UCUM, "code": "mg/dL"}}},
        {"resource": {"resourceType": "Observation", "id": "bp", "status": "final",
                      "code": {"coding": [{"system": C.LOINC, "code": "85354-9"}]},
                      "subject": {"reference": "Patient/ehr-123"}, "effectiveDateTime": "2026-03-01"}},
        {"resource": {"resourceType": "Observation", "id": "pain", "status": "final",
                      "code": {"coding": [{"system": C.LOINC, "code": "72514-3"}]},
                      "subject": {"reference": "Patient/ehr-123"}, "effectiveDateTime": "2026-03-01",
                      "valueInteger": 6}},
        {"resource": {"resourceType": "Observation", "id": "oops", "status": "entered-in-error",
                      "code": {"coding": [{"system": C.CS_OBSERVATION, "code": "fever"}]},
                      "subject": {"reference": "Patient/ehr-123"}, "effectiveDateTime": "2026-03-01",
                      "valueBoolean": True}},
        {"resource": {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/ehr-123"}}},
    ]}
    records, report = read(bundle)
    assert report.errors.empty, report.error_lines()
    assert records.patients[["patient_id", "name", "mrn", "birth_year", "sex"]].astype(object).values.tolist() == [
        ["ehr-123", "Ann Example", "H-778", 1961, "F"]]
    assert records.surgeries["surgery_date"].dt.strftime("%Y-%m-%d").tolist() == ["2026-01-10"]
    visit = records.visits.iloc[0]
    assert (visit["visit_date"].strftime("%Y-%m-%d"), visit["odi"], visit["crp_mg_l"]) == ("2026-03-01", 34, 12)
    assert visit[["leg_pain_nrs", "back_pain_nrs", "fever"]].isna().all()
    assert sorted(report.warning_lines()) == [
        "bundle.json: 1 Condition resource(s): not records data; ignored",
        "bundle.json: 1 Observation(s) coded http://loinc.org|85354-9: not records data; ignored",
        "bundle.json[entry 5 Observation/pain]: code: '72514-3' is used for both leg and back pain: add the local "
        "code leg-pain-nrs or back-pain-nrs; left out",
        "bundle.json[entry 6 Observation/oops]: status: 'entered-in-error' means it did not happen or was "
        "recorded in error; left out",
    ]


def test_every_code_is_documented():
    doc = (ROOT / "docs" / "interoperability.md").read_text(encoding="utf-8")
    wanted = [o.local for o in C.OBSERVATIONS] + [code for o in C.OBSERVATIONS for _, code, _ in o.standard]
    wanted += list(C.MUSCLE_CODES) + list(C.SEGMENT_CODES) + list(C.MRC_GRADE_CODES)
    wanted += [code for code, _ in C.LATERALITY.values()] + [code for code, _ in C.LATERALITY_QUALIFIER.values()]
    wanted += [C.BILATERAL, C.VISIT_TYPE, *C.SPINE_SNOMED, *C.SPINE_CPT, *C.INSTRUMENTATION_CPT,
               *C.SPINE_ICD10PCS_ROOTS, C.PSEUDONYMIZED["code"]]
    wanted += [url.removeprefix(C.BASE + "/") for url in (
        C.CS_OBSERVATION, C.CS_KEY_MUSCLE, C.CS_MRC_GRADE, C.CS_LUMBAR_SEGMENT, C.CS_CHECKLIST_RULE,
        C.CS_ENCOUNTER_TYPE,
        C.EXT_INSTRUMENTED, C.EXT_REVISION, C.EXT_DEFICIT_ONSET, C.EXT_LATERALITY, C.EXT_SURGEON,
        C.EXT_EXTRA_COLUMN)]
    missing = [code for code in wanted if f"`{code}`" not in doc]
    assert not missing


# ------------------------------------------------------------------------ whole records as EHRs produce them
SYNTHEA = FIXTURES / "synthea-bulk-10"
HL7 = FIXTURES / "hl7-r4"


def ndjson_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_synthea_bulk_folder_has_no_spine_operation_and_gives_no_error(tmp_path: Path, capsys):
    records, report = read_fhir(SYNTHEA)
    assert records is None and report.ok and no_spine_operations(report)
    procedures = len(ndjson_lines(SYNTHEA / "Procedure.000.ndjson"))
    encounters = len(ndjson_lines(SYNTHEA / "Encounter.000.ndjson"))
    warnings = report.warning_lines()
    assert f"synthea-bulk-10: {procedures} Procedure resource(s) that are not spine operations were skipped" in warnings
    assert "synthea-bulk-10: 13 Patient resource(s) without a spine operation were skipped, with their data" in warnings
    assert f"synthea-bulk-10: {encounters} Encounter resource(s) that are not spine follow-up visits were skipped" \
        in warnings
    assert "synthea-bulk-10: 555 Condition resource(s): not records data; ignored" in warnings
    assert any("no spine operations found: nothing to import" in line for line in warnings)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["import-fhir", str(SYNTHEA), "--database", url]) == 0
    assert "no spine operations found: nothing was stored." in capsys.readouterr().err
    with get_engine(url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(Patient.__table__)).scalar_one() == 0


def test_synthea_record_with_a_coded_fusion_imports_that_patient_only(tmp_path: Path, capsys):
    """The real Synthea folder plus one patient's lumbar fusion coded as an EHR codes it (CPT, several Procedures)."""
    folder = tmp_path / "bulk"
    folder.mkdir()
    for name in ("Patient", "Encounter", "Procedure", "Condition"):
        (folder / f"{name}.000.ndjson").write_bytes((SYNTHEA / f"{name}.000.ndjson").read_bytes())
    patient = ndjson_lines(SYNTHEA / "Patient.000.ndjson")[1]
    subject = {"reference": f"Patient/{patient['id']}"}
    cpt = "http://www.ama-assn.org/go/cpt"
    extra = [
        {"resourceType": "Procedure", "id": "fusion", "status": "completed", "subject": subject,
         "code": {"coding": [{"system": cpt, "code": "22633", "display": "Lumbar arthrodesis, combined technique"}],
                  "text": "TLIF L4-L5"},
         "performedPeriod": {"start": "2026-05-04T08:00:00Z", "end": "2026-05-04T11:00:00Z"},
         "bodySite": [{"text": "L4-L5"}]},
        {"resourceType": "Procedure", "id": "screws", "status": "completed", "subject": subject,
         "code": {"coding": [{"system": cpt, "code": "22842"}], "text": "Pedicle screws"},
         "performedDateTime": "2026-05-04"},
        {"resourceType": "Procedure", "id": "icd", "status": "completed", "subject": subject,
         "code": {"coding": [{"system": "http://www.cms.gov/Medicare/Coding/ICD10", "code": "0SG10AJ"}]},
         "performedDateTime": "2026-09-01", "bodySite": [{"text": "L3-L4"}],
         "extension": [{"url": C.EXT_INSTRUMENTED, "valueBoolean": False}]},
    ]
    with (folder / "Procedure.000.ndjson").open("a", encoding="utf-8") as out:
        out.writelines(json.dumps(r) + "\n" for r in extra)
    grade = {"resourceType": "Observation", "id": "g1", "status": "final", "subject": subject,
             "code": {"coding": [{"system": C.CS_OBSERVATION, "code": "mrc-strength"}]},
             "effectiveDateTime": "2026-05-05",
             "bodySite": {"coding": [{"system": C.CS_KEY_MUSCLE, "code": "ankle_dorsiflexion"}],
                          "extension": [{"url": C.EXT_LATERALITY_MCODE, "valueCodeableConcept": {
                              "coding": [{"system": C.SNOMED, "code": "7771000"}]}}]},
             "valueCodeableConcept": {"coding": [{"system": C.CS_MRC_GRADE, "code": "3"}]}}
    (folder / "Observation.000.ndjson").write_text(json.dumps(grade) + "\n", encoding="utf-8")
    records, report = read_fhir(folder)
    assert report.ok, report.error_lines()
    assert records.patients["patient_id"].tolist() == [patient["id"]]
    surgeries = records.surgeries.sort_values("surgery_date")
    assert surgeries["procedure"].tolist() == ["TLIF L4-L5 + Pedicle screws", "0SG10AJ"]
    assert surgeries["levels"].tolist() == ["L4-L5", "L3-L4"]
    assert surgeries["instrumented"].tolist() == [True, False]
    assert records.visits.empty  # the patient's many Synthea encounters are not visits
    assert records.strength[["muscle", "side", "mrc"]].values.tolist() == [["ankle_dorsiflexion", "L", 3.0]]
    procedures = len(ndjson_lines(SYNTHEA / "Procedure.000.ndjson"))
    assert f"bulk: {procedures} Procedure resource(s) that are not spine operations were skipped" in \
        report.warning_lines()
    assert "Procedure.000.ndjson[line " in " ".join(report.warning_lines())  # the merge names the NDJSON line
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["import-fhir", str(folder), "--database", url]) == 0
    assert "patients: 1 new" in capsys.readouterr().err


def test_hl7_example_procedures_are_not_spine_operations():
    patient = json.loads((HL7 / "patient-example.json").read_text(encoding="utf-8"))
    names = ("procedure-example.json", "procedure-example-ambulation.json", "procedure-example-physical-therapy.json",
             "procedure-example-f201-tpf.json")
    lines = b"".join(json.dumps(json.loads((HL7 / n).read_text(encoding="utf-8"))).encode() + b"\n" for n in names)
    records, report = ndjson_to_records([("Patient.ndjson", json.dumps(patient).encode()),
                                         ("Procedure.ndjson", lines)], "examples")
    assert records is None and report.ok and no_spine_operations(report)
    assert "examples: 4 Procedure resource(s) that are not spine operations were skipped" in report.warning_lines()


def test_hl7_transaction_bundle_reads_without_error():
    records, report = read_fhir(HL7 / "bundle-transaction.json")
    assert records is None and report.ok and no_spine_operations(report)
    assert "bundle-transaction.json: 1 Parameters resource(s): not records data; ignored" in report.warning_lines()
    assert "bundle-transaction.json: 5 Patient resource(s) without a spine operation were skipped, with their data" \
        in report.warning_lines()


def transaction(small) -> dict:
    """Our export rewritten as an EHR's transaction: urn:uuid fullUrls, no ids, POST requests."""
    bundle = records_to_bundle(small, ["P1"])
    bundle["type"] = "transaction"
    for entry in bundle["entry"]:
        resource = entry["resource"]
        kind = resource.pop("id") and resource["resourceType"]
        entry["request"] = {"method": "POST", "url": kind}
    return bundle


def test_transaction_bundle_with_urn_uuid_references_and_no_ids(small):
    bundle = transaction(small)
    assert all(e["fullUrl"].startswith("urn:uuid:") and "id" not in e["resource"] for e in bundle["entry"])
    records, report = read(bundle)
    assert report.errors.empty, report.error_lines()
    assert_same_records(back_to_pseudonymous(small, ["P1"]), records)
    bundle["entry"][0]["resource"]["identifier"] = []  # no patient id anywhere: named, with why
    records, report = read(bundle)
    assert records is None
    assert report.error_lines()[0] == (f"bundle.json[entry 0 {bundle['entry'][0]['fullUrl']}]: identifier: has no "
                                       f"patient id: give an identifier with system {C.ID_PATIENT} or a Patient.id "
                                       "(its urn:uuid fullUrl is only a name within this Bundle)")


def back_to_pseudonymous(records, patient_ids):
    """What a pseudonymous export of these patients carries: identity blank, no notes or extra columns."""
    bundle = records_to_bundle(records, patient_ids, identified=True)
    back, _ = read(bundle)
    return read(records_to_bundle(back, patient_ids))[0]


def test_searchset_bundle_with_encounter_references_and_no_period(small):
    bundle = records_to_bundle(small, ["P1"])
    bundle["type"] = "searchset"
    visits = entries(bundle, "Encounter")
    for entry in entries(bundle, "Observation"):
        entry["resource"].pop("effectiveDateTime", None) if "encounter" in entry["resource"] else None
    records, report = read(bundle)
    assert report.errors.empty, report.error_lines()  # visit observations dated through their Encounter
    other = copy.deepcopy(visits[0])
    other["fullUrl"] = "urn:uuid:0e0c5a0b-6a53-4bb4-9a59-0c3c4fa1e2a7"
    other["resource"].update(id="er-visit", type=[{"text": "Emergency"}])
    other["resource"]["period"] = {"start": "2026-02-02"}
    undated = copy.deepcopy(visits[0])
    undated["fullUrl"] = "urn:uuid:1e0c5a0b-6a53-4bb4-9a59-0c3c4fa1e2a7"
    undated["resource"]["id"] = "undated"
    del undated["resource"]["period"]
    bundle["entry"] += [other, undated]
    again, report = read(bundle)
    assert report.errors.empty, report.error_lines()
    assert len(again.visits) == len(records.visits)  # no empty visit from another kind of Encounter
    assert "bundle.json: 1 Encounter resource(s) that are not spine follow-up visits were skipped" in \
        report.warning_lines()
    assert (f"{label(bundle, undated)}: period.start: is missing: the visit's date is unknown, so it is not a visit "
            "(an Observation of it needs its own effective date)") in report.warning_lines()


def test_laterality_codes_of_the_value_set_the_qualifiers_and_bilateral(small):
    bundle = records_to_bundle(small, ["P1"])
    grade = entries(bundle, "Observation", "mrc-strength")[0]
    codings = grade["resource"]["bodySite"]["extension"][0]["valueCodeableConcept"]["coding"]
    side = {"419161000": "L", "419465000": "R"}[codings[0]["code"]]
    muscle = grade["resource"]["bodySite"]["coding"][0]["code"]

    def sides(records):
        rows = records.strength[(records.strength["muscle"] == muscle) & (records.strength["patient_id"] == "P1")]
        return sorted(rows["side"])

    baseline = sides(read(bundle)[0])
    for kept in ([codings[0]], [codings[1]]):  # the value-set code alone, the qualifier alone
        edited = copy.deepcopy(bundle)
        edited_grade = edited["entry"][bundle["entry"].index(grade)]["resource"]
        edited_grade["bodySite"]["extension"][0]["valueCodeableConcept"]["coding"] = kept
        assert sides(read(edited)[0]) == baseline
    other = [e for e in entries(bundle, "Observation", "mrc-strength")
             if e["resource"]["bodySite"]["coding"][0]["code"] == muscle and e is not grade]
    for entry in other:
        bundle["entry"].remove(entry)
    grade["resource"]["bodySite"]["extension"][0]["valueCodeableConcept"]["coding"] = [
        {"system": C.SNOMED, "code": "51440002", "display": "Bilateral"}]
    records, report = read(bundle)
    assert report.errors.empty, report.error_lines()
    assert sides(records) == ["L", "R"] and side in ("L", "R")
    assert f"{label(bundle, grade)}: bodySite: '51440002' is bilateral: read as the same grade on the left and " \
           "on the right" in report.warning_lines()


def test_pseudonymous_export_reimported_never_blanks_or_changes_identity(small, tmp_path: Path, capsys):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    identified = tmp_path / "identified.json"
    identified.write_text(json.dumps(records_to_bundle(small, identified=True)), encoding="utf-8")
    assert main(["import-fhir", str(identified), "--database", url]) == 0
    before = load_records(get_engine(url)).patients[["patient_id", "name", "mrn"]]
    out = tmp_path / "pseudonymous.json"
    assert main(["export-fhir", str(out), "--database", url]) == 0
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert exported["meta"]["security"][0]["code"] == "PSEUDED"
    capsys.readouterr()
    assert main(["import-fhir", str(out), "--database", url]) == 0
    err = capsys.readouterr().err
    assert "pseudonymous.json: meta.security: 'PSEUDED' is a pseudonymous export: it holds no names, MRNs or " \
           "notes, and the store keeps those it has (they are never blanked)" in err
    after = load_records(get_engine(url)).patients[["patient_id", "name", "mrn"]]
    assert after.equals(before) and after["name"].notna().sum() == 2
    # A pseudonymous resource that nevertheless carries a name or MRN: not read as identity, said so.
    patient = entries(exported, "Patient")[0]
    patient["resource"]["name"] = [{"text": "Pseudo Nym"}]
    patient["resource"]["identifier"].append({"system": C.ID_MRN, "value": "X-1"})
    records, report = read(exported)
    assert records.patients["name"].isna().all() and records.patients["mrn"].isna().all()
    assert f"{label(exported, patient)}: name: is in a pseudonymous (PSEUDED) resource: not read as the patient's " \
           "identity; the store keeps what it has" in report.warning_lines()


# ------------------------------------------------------------------------------------------ Bulk Data export
def test_ndjson_export_streams_from_the_store_and_reads_back(small, tmp_path: Path, capsys):
    records = subset(demo_records(), one_per_scenario())
    url = f"sqlite:///{tmp_path / 'store.db'}"
    path = tmp_path / "cohort.json"
    path.write_text(json.dumps(records_to_bundle(records, identified=True)), encoding="utf-8")
    assert main(["import-fhir", str(path), "--database", url]) == 0
    out = tmp_path / "bulk"
    counts = write_ndjson(get_engine(url), out, identified=True, chunk=3)  # several chunks
    assert sorted(p.name for p in out.iterdir()) == ["Encounter.ndjson", "Observation.ndjson", "Patient.ndjson",
                                                     "Procedure.ndjson"]
    bundle = records_to_bundle(records, identified=True)
    assert sum(counts.values()) == len(bundle["entry"])
    lines = {kind: ndjson_lines(out / f"{kind}.ndjson") for kind in counts}
    relative = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
    for kind, written in lines.items():  # the Bundle's resources (chunk by chunk), references made relative
        expected = json.loads(re.sub(r'"(urn:uuid:[0-9a-f-]+)"', lambda m: f'"{relative[m.group(1)]}"',
                                     json.dumps([e["resource"] for e in entries(bundle, kind)])))
        assert sorted(written, key=lambda r: r["id"]) == sorted(expected, key=lambda r: r["id"]), kind
    observation = next(r for r in lines["Observation"] if "encounter" in r)
    assert observation["encounter"]["reference"].startswith("Encounter/")
    assert observation["subject"]["reference"] == f"Patient/{fhir_id(observation['subject']['reference'][8:])}"
    back, report = read_fhir(out)
    assert report.issues.empty, report.error_lines() + report.warning_lines()
    assert_same_records(back, records)
    capsys.readouterr()
    pseudonymous = tmp_path / "pseudonymous"
    assert main(["export-fhir", str(pseudonymous), "--ndjson", "--database", url]) == 0
    assert f"wrote {len(records.patients)} patient(s) to {pseudonymous}/ as NDJSON" in capsys.readouterr().err
    text = "".join(p.read_text(encoding="utf-8") for p in pseudonymous.iterdir())
    assert all(json.loads(line)["meta"]["security"][0]["code"] == "PSEUDED" for line in text.splitlines())
    assert not any(name in text for name in records.patients["name"].dropna())
    first = records.patients["patient_id"].iloc[0]
    assert main(["export-fhir", str(tmp_path / "one"), "--ndjson", "--patient", first, "--database", url]) == 0
    assert len(ndjson_lines(tmp_path / "one" / "Patient.ndjson")) == 1
    assert main(["export-fhir", str(tmp_path / "none"), "--ndjson", "--patient", "NOBODY", "--database", url]) == 2
    assert "no such patient: NOBODY: nothing was written." in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
