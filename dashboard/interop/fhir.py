"""FHIR R4 Bundles ↔ records: import a Bundle into the records format, export records as a Bundle.

Parsing and structural validation use `fhir.resources.R4B` (pydantic v2), one resource at a time so a
bad resource is reported with its Bundle entry. Coded values that library does not check (statuses,
gender, our own code systems) are checked here. The resources are then turned into the records text
frames and validated by `validate_frames`, so a Bundle meets exactly the checks of a CSV import; messages
name the entry ('bundle.json[entry 12 Observation/abc]') instead of a CSV line.

Identifying data: names and MRNs travel only in Patient.name and Patient.identifier, visit notes only in
a 'visit-note' Observation, and all three (with extra columns of unknown content) only when an identified
export is asked for. Nothing here logs resource contents.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections import Counter
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from dashboard.clinical.mrc import MRC_TOKENS, MUSCLE_LABELS
from dashboard.clinical.records.validate import Records, ValidationReport
from dashboard.interop import codes as C
from dashboard.interop.frames import FrameBuilder

log = logging.getLogger(__name__)

BUNDLE_TYPES = ("document", "message", "transaction", "transaction-response", "batch", "batch-response",
                "history", "searchset", "collection")
STATUSES = {
    "Observation": ("registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error",
                    "unknown"),
    "Procedure": ("preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error",
                  "unknown"),
    "Encounter": ("planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled",
                  "entered-in-error", "unknown"),
}
#: Statuses that say the thing did not happen (or was recorded in error): such resources are left out.
NOT_HAPPENED = {
    "Observation": {"cancelled", "entered-in-error"},
    "Procedure": {"preparation", "not-done", "entered-in-error"},
    "Encounter": {"planned", "cancelled", "entered-in-error"},
}
GENDERS = ("male", "female", "other", "unknown")
USED_TYPES = ("Patient", "Procedure", "Observation", "Encounter")
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_PATIENT_REFERENCE = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_NAMESPACE = uuid.UUID("5f0e7c1e-3b1c-4c55-9a7e-2f43a1a6c9d1")  # fullUrls: stable across exports


# ================================================================================================ import
def read_fhir(path: str | Path, today: date | None = None) -> tuple[Records | None, ValidationReport]:
    """Read a Bundle (.json), one NDJSON file, or a Bulk Data folder of NDJSON files (one per resource type).

    Records only when there is no error. A whole record without any spine operation gives no records and
    no error: the report's warnings say what was skipped (`no_spine_operations(report)` is then true).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(".ndjson"))
        builder = FrameBuilder(path.name)
        if not files:
            builder.error(path.name, None, None, "holds no .ndjson file (a Bulk Data export has one per resource "
                          "type, e.g. Patient.000.ndjson)")
            return builder.validate(today)
        return ndjson_to_records([(p.name, p) for p in files], path.name, today)
    if path.name.lower().endswith(".ndjson"):
        return ndjson_to_records([(path.name, path)], path.name, today)
    return read_bundle(path, today)


def read_bundle(path: str | Path, today: date | None = None) -> tuple[Records | None, ValidationReport]:
    """Read and validate a Bundle file; records only when there is no error."""
    path = Path(path)
    builder = FrameBuilder(path.name)
    try:
        text = path.read_bytes()
    except OSError as problem:
        builder.error(path.name, None, None, f"cannot be read ({type(problem).__name__})")
        return builder.validate(today)
    return bundle_to_records(text, path.name, today)


def bundle_to_records(data: bytes | str | dict, source: str = "bundle.json",
                      today: date | None = None) -> tuple[Records | None, ValidationReport]:
    """Convert a Bundle (JSON text or parsed) to records, validated like a records folder."""
    builder = FrameBuilder(source)
    if not isinstance(data, dict):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as problem:
            builder.error(source, None, None, f"is not JSON ({problem})")
            return builder.validate(today)
    _BundleReader(builder, source).read(data)
    return _finish(builder, today, "FHIR Bundle")


def ndjson_to_records(files: list[tuple[str, Path | bytes]], source: str = "bulk export",
                      today: date | None = None) -> tuple[Records | None, ValidationReport]:
    """Convert Bulk Data NDJSON (one resource per line; files given as (name, path or bytes)) to records."""
    builder = FrameBuilder(source)
    reader = _BundleReader(builder, source, "export (no Patient file holds it)")
    items: list[tuple[str, str | None, Any]] = []
    for name, content in files:
        try:
            lines = (content.read_bytes() if isinstance(content, Path) else content).splitlines()
        except OSError as problem:
            builder.error(name, None, None, f"cannot be read ({type(problem).__name__})")
            continue
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except (ValueError, UnicodeDecodeError) as problem:
                builder.error(f"{name}[line {number}]", None, None, f"is not JSON ({problem})")
                continue
            if not isinstance(raw, dict):
                builder.error(f"{name}[line {number}]", None, None, "is not a FHIR resource (a JSON object)")
                continue
            kind, rid = raw.get("resourceType"), raw.get("id")
            label = f"{name}[line {number}" + (f" {kind}/{rid}]" if isinstance(kind, str) and isinstance(rid, str)
                                               else "]")
            items.append((label, None, raw))
    reader.read_resources(items)
    return _finish(builder, today, "FHIR NDJSON")


def _finish(builder: FrameBuilder, today: date | None, what: str) -> tuple[Records | None, ValidationReport]:
    if not any(builder.rows.values()) and not any(i["severity"] == "error" for i in builder.issues):
        records, report = None, builder.validate(today)[1]  # nothing to import, and nothing wrong
    else:
        records, report = builder.validate(today)
    log.info("%s read: %d error(s), %d warning(s)", what, len(report.errors), len(report.warnings))
    return records, report


NO_SPINE_OPERATIONS = "no spine operations found: nothing to import"


def no_spine_operations(report: ValidationReport) -> bool:
    """True when a valid whole record held no spine operation (and no records data): nothing to store."""
    return report.ok and any(NO_SPINE_OPERATIONS in line for line in report.warning_lines())


class _BundleReader:
    """One pass over a Bundle or NDJSON: resources validated per entry, then converted to records rows."""

    def __init__(self, builder: FrameBuilder, source: str, kind: str = "Bundle") -> None:
        self.out = builder
        self.source = source
        self.kind = kind  # what the input is called in messages: 'Bundle' or 'export' (NDJSON)
        self.patients: dict[str, tuple[str, int]] = {}  # reference form → (patient_id, patients row)
        self.patient_keys: dict[str, Any] = {}  # reference form → parsed Patient (kept or not)
        self.skipped_patients: set[int] = set()  # id() of Patients skipped (no spine operation)
        self.encounters: dict[str, tuple[str | None, str | None]] = {}  # reference → (patient_id, date)
        self.visits: dict[tuple[str, str], int] = {}  # (patient_id, visit_date) → visits row
        self.surgeries: dict[tuple[str, str], tuple[int, str]] = {}  # (patient_id, day) → (row, label)
        self.ignored: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.pseudonymized = False  # the Bundle (or a resource) is marked PSEUDED

    # ------------------------------------------------------------------------------------ structure
    def read(self, data: Any) -> None:
        if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
            kind = data.get("resourceType") if isinstance(data, dict) else type(data).__name__
            self.out.error(self.source, "resourceType", kind, "is not a Bundle (expected resourceType 'Bundle')")
            return
        entries = data.get("entry") or []
        shell = {**data, "entry": [{k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
                                   for e in entries] if isinstance(entries, list) else entries}
        try:
            Bundle.model_validate(shell)
        except ValidationError as problem:
            self._report_invalid(self.source, "Bundle", problem)
            return
        if data.get("type") not in BUNDLE_TYPES:
            self.out.error(self.source, "type", data.get("type"), f"is not a Bundle type ({', '.join(BUNDLE_TYPES)})")
        self.pseudonymized = _is_pseudonymized(data)
        items = []
        for index, entry in enumerate(entries):
            raw = entry.get("resource") if isinstance(entry, dict) else None
            full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
            if not isinstance(raw, dict):
                continue  # e.g. a DELETE or GET of a transaction, a batch-response entry: nothing to read
            items.append((self._label(index, raw.get("resourceType"), raw.get("id"), full_url), full_url, raw))
        self.read_resources(items)

    def read_resources(self, items: list[tuple[str, str | None, Any]]) -> None:
        """Validate each resource and convert: spine operations and their patients only."""
        by_type: dict[str, list] = {name: [] for name in USED_TYPES}
        for label, full_url, raw in items:
            parsed = self._parse_entry(label, full_url, raw)
            if parsed is not None:
                by_type[parsed[2].get_resource_type()].append(parsed)
        for _label, full_url, patient in by_type["Patient"]:
            for key in self._keys(full_url, "Patient", patient.id):
                self.patient_keys[key] = patient
        # A patient is imported when it came from this dashboard (our identifier) or has a spine operation.
        wanted = {id(p) for p in self.patient_keys.values() if _identifier(p, C.ID_PATIENT)}
        for _, _, procedure in by_type["Procedure"]:
            found = self._patient_of(procedure)
            if found is not None:
                wanted.add(id(found))
        for args in by_type["Patient"]:
            if id(args[2]) in wanted:
                self._patient(*args)
            else:
                self.skipped_patients.add(id(args[2]))
                self.skipped["Patient"] += 1
        for args in by_type["Encounter"]:
            self._encounter(*args)
        for args in by_type["Procedure"]:
            self._procedure(*args)
        for args in by_type["Observation"]:
            self._observation(*args)
        if self.pseudonymized and self.patients:
            self.out.warning(self.source, "meta.security", "PSEUDED", "is a pseudonymous export: it holds no "
                             "names, MRNs or notes, and the store keeps those it has (they are never blanked)")
        for what, count in sorted(self.ignored.items()):
            self.out.warning(self.source, None, None, f"{count} {what}: not records data; ignored")
        self._report_skipped()
        if not by_type["Patient"] and not self.out.issues:
            self.out.error(self.source, None, None, "holds no Patient: there is nothing to import")
        elif not self.patients and not any(i["severity"] == "error" for i in self.out.issues):
            self.out.warning(self.source, None, None, NO_SPINE_OPERATIONS + f" ({len(by_type['Patient'])} "
                             "Patient(s), none with a spine operation by the codes in docs/interoperability.md)")

    def _report_skipped(self) -> None:
        texts = {
            "Procedure": "Procedure resource(s) that are not spine operations were skipped",
            "Patient": "Patient resource(s) without a spine operation were skipped, with their data",
            "Encounter": "Encounter resource(s) that are not spine follow-up visits were skipped",
            "Observation": "Observation resource(s) of skipped patients were skipped",
        }
        for kind, text in texts.items():
            if self.skipped[kind]:
                self.out.warning(self.source, None, None, f"{self.skipped[kind]} {text}")

    def _parse_entry(self, label: str, full_url: str | None, raw: dict) -> tuple[str, str | None, Any] | None:
        kind = raw.get("resourceType")
        if not isinstance(kind, str) or not kind:
            self.out.error(label, "resourceType", None, "is missing: every resource needs its type")
            return None
        try:
            model = get_fhir_model_class(kind)
        except (ValueError, KeyError):
            self.out.error(label, "resourceType", kind, "is not a FHIR R4 resource type")
            return None
        if kind not in USED_TYPES:
            self.ignored[f"{kind} resource(s)"] += 1
            return None
        if kind == "Procedure" and not is_spine_operation(raw):
            self.skipped["Procedure"] += 1  # not validated: an EHR's other Procedures are not our data
            return None
        try:
            resource = model.model_validate(raw)
        except ValidationError as problem:
            self._report_invalid(label, kind, problem)
            return None
        status = getattr(resource, "status", None)
        if kind in STATUSES and status not in STATUSES[kind]:
            article = "an" if kind[0] in "AEIOU" else "a"
            self.out.error(label, "status", status, f"is not {article} {kind} status ({', '.join(STATUSES[kind])})")
            return None
        if kind in NOT_HAPPENED and status in NOT_HAPPENED[kind]:
            self.out.warning(label, "status", status, "means it did not happen or was recorded in error; left out")
            return None
        if _is_pseudonymized(raw):
            self.pseudonymized = True
        return label, full_url, resource

    def _label(self, index: int, kind: object, resource_id: object, full_url: object) -> str:
        if isinstance(kind, str) and isinstance(resource_id, str):
            return f"{self.source}[entry {index} {kind}/{resource_id}]"
        if isinstance(full_url, str):
            return f"{self.source}[entry {index} {full_url}]"
        return f"{self.source}[entry {index}{' ' + kind if isinstance(kind, str) else ''}]"

    @staticmethod
    def _keys(full_url: str | None, kind: str, resource_id: str | None) -> list[str]:
        return [key for key in (full_url, f"{kind}/{resource_id}" if resource_id else None) if key]

    def _patient_of(self, resource: Any, element: str = "subject") -> Any:
        """The Patient resource a reference points to (kept or skipped), or None."""
        reference = getattr(resource, element, None)
        target = reference.reference if reference is not None else None
        if not target:
            return None
        found = self.patient_keys.get(target)
        if found is None:
            match = _PATIENT_REFERENCE.search(target)
            found = self.patient_keys.get(f"Patient/{match.group(1)}") if match else None
        return found

    def _of_skipped_patient(self, resource: Any) -> bool:
        found = self._patient_of(resource)
        return found is not None and id(found) in self.skipped_patients

    def _report_invalid(self, label: str, kind: str, problem: ValidationError) -> None:
        for error in problem.errors():
            path = ".".join(str(part) for part in error["loc"])
            value = error.get("input")
            shown = value if isinstance(value, (str, int, float, bool)) else None
            if error["type"] == "extra_forbidden":
                message = f"is not an element of {kind} in FHIR R4"
            elif error["type"] == "missing":
                message = f"is missing (required by FHIR {kind})"
            else:
                message = f"is not valid FHIR: {error['msg']}"
            self.out.error(label, path, shown, message)

    # ---------------------------------------------------------------------------------- references
    def _subject(self, label: str, resource: Any, element: str = "subject") -> str | None:
        """The records patient_id a resource's subject points to; errors when it points nowhere."""
        reference = getattr(resource, element, None)
        target = reference.reference if reference is not None else None
        if not target:
            self.out.error(label, element, None, "is missing: cannot tell which patient this is about")
            return None
        found = self.patients.get(target)
        if found is None:
            match = _PATIENT_REFERENCE.search(target)
            found = self.patients.get(f"Patient/{match.group(1)}") if match else None
        if found is None:
            self.out.error(label, element, target, f"is not a Patient in this {self.kind}")
            return None
        return found[0]

    # ----------------------------------------------------------------------------------- resources
    def _patient(self, label: str, full_url: str | None, patient: Any) -> None:
        patient_id = _identifier(patient, C.ID_PATIENT) or patient.id
        if not patient_id:
            temporary = " (its urn:uuid fullUrl is only a name within this Bundle)" if (full_url or "").startswith(
                "urn:uuid:") else ""
            self.out.error(label, "identifier", None, f"has no patient id: give an identifier with system "
                           f"{C.ID_PATIENT} or a Patient.id{temporary}")
            return
        if patient.gender is not None and patient.gender not in GENDERS:
            self.out.error(label, "gender", patient.gender, f"is not an administrative gender ({', '.join(GENDERS)})")
        birth = _text(patient.birthDate)
        name, mrn = _name(patient), _mrn(patient)
        if _is_pseudonymized(patient) or self.pseudonymized:
            for element, value in (("name", name), ("identifier", mrn)):
                if value is not None:
                    self.out.warning(label, element, None, "is in a pseudonymous (PSEUDED) resource: not read as "
                                     "the patient's identity; the store keeps what it has")
            name = mrn = None
        values = {
            "patient_id": patient_id,
            "name": name,
            "mrn": mrn,
            "birth_year": birth[:4] if birth and re.match(r"^\d{4}", birth) else birth,
            "sex": C.SEX_BY_GENDER.get(patient.gender, patient.gender) if patient.gender else None,
            "surgeon": _extension_value(patient, C.EXT_SURGEON),
            **_extra_columns(patient),
        }
        row = self.out.add_row("patients.csv", values, label)
        for key in self._keys(full_url, "Patient", patient.id):
            self.patients[key] = (patient_id, row)

    def _encounter(self, label: str, full_url: str | None, encounter: Any) -> None:
        day = _text(encounter.period.start) if encounter.period is not None else None
        if self._of_skipped_patient(encounter):
            self.skipped["Encounter"] += 1
            return
        ours = any(_code_in(kind, C.CS_ENCOUNTER_TYPE) == C.VISIT_TYPE for kind in encounter.type or []) or any(
            e.url == C.EXT_EXTRA_COLUMN for e in encounter.extension or [])
        found = self._patient_of(encounter)
        if ours or found is not None:
            patient_id = self._subject(label, encounter)
        else:
            patient_id = None
        for key in self._keys(full_url, "Encounter", encounter.id):
            self.encounters[key] = (patient_id, day)
        if patient_id is None and not ours:
            self.skipped["Encounter"] += 1
            return
        if day is None:
            self.out.warning(label, "period.start", None, "is missing: the visit's date is unknown, so it is not a "
                             "visit (an Observation of it needs its own effective date)")
            return
        if not ours:
            self.skipped["Encounter"] += 1  # another kind of encounter: a visit only if a finding is dated by it
            return
        if patient_id is None:
            return
        self._visit_row(patient_id, day, label, _extra_columns(encounter))

    def _procedure(self, label: str, full_url: str | None, procedure: Any) -> None:
        patient_id = self._subject(label, procedure)
        if patient_id is None:
            return
        performed = procedure.performedDateTime
        if performed is None and procedure.performedPeriod is not None:
            performed = procedure.performedPeriod.start
        levels = []
        for site in procedure.bodySite or []:
            code = _code_in(site, C.CS_LUMBAR_SEGMENT)
            if code is None and site.text and site.text.strip().upper() in C.SEGMENT_CODES:
                code = site.text.strip().upper()
            code = code or _any_code(site)
            if code and code not in levels:
                levels.append(code)
        code = procedure.code
        name = None
        if code is not None:
            name = code.text or next((c.display or c.code for c in code.coding or [] if c.display or c.code), None)
        instrumented = _yes_no(_extension_value(procedure, C.EXT_INSTRUMENTED))
        if instrumented is None and code is not None and any(
                c.system == C.CPT and c.code in C.INSTRUMENTATION_CPT for c in code.coding or []):
            instrumented = "yes"
        day = _text(performed)
        values = {
            "patient_id": patient_id,
            "surgery_date": day,
            "procedure": name,
            "levels": ";".join(levels) or None,
            "instrumented": instrumented,
            "revision": _yes_no(_extension_value(procedure, C.EXT_REVISION)),
            "deficit_onset_date": _text(_extension_value(procedure, C.EXT_DEFICIT_ONSET)),
            **_extra_columns(procedure),
        }
        coded_elsewhere = _extension_value(procedure, C.EXT_INSTRUMENTED) is None  # an EHR's, not our export
        if coded_elsewhere and day and (patient_id, day) in self.surgeries:
            self._merge_surgery(self.surgeries[(patient_id, day)], values, label)
            return
        row = self.out.add_row("surgeries.csv", values, label)
        if coded_elsewhere and day:
            self.surgeries[(patient_id, day)] = (row, label)

    def _merge_surgery(self, first: tuple[int, str], values: dict[str, str | None], label: str) -> None:
        """An EHR codes one operation as several Procedures (fusion, each extra level, instrumentation)."""
        position, first_label = first
        row = self.out.row("surgeries.csv", position)
        old = row.values
        if values["procedure"] and values["procedure"] not in (old.get("procedure") or "").split(" + "):
            old["procedure"] = " + ".join(filter(None, (old.get("procedure"), values["procedure"])))
        levels = [x for x in (old.get("levels") or "").split(";") if x]
        levels += [x for x in (values["levels"] or "").split(";") if x and x not in levels]
        old["levels"] = ";".join(levels) or None
        if values["instrumented"] == "yes" or old.get("instrumented") is None:
            old["instrumented"] = values["instrumented"] or old.get("instrumented")
        self.out.warning(label, "performed[x]", values["surgery_date"], f"is the day of {first_label} for the same "
                         "patient: read as one operation (codes, levels and instrumentation merged)")

    def _observation(self, label: str, full_url: str | None, observation: Any) -> None:
        if self._of_skipped_patient(observation):
            self.skipped["Observation"] += 1
            return
        kind = self._kind(label, observation)
        if kind is None:
            return
        patient_id = self._subject(label, observation)
        if patient_id is None:
            return
        value = self._value(label, observation, kind)
        if kind.file == "patients":
            row = next(r for ref, (pid, r) in self.patients.items() if pid == patient_id)
            self._set(("patients.csv", row), kind.column, value, label, "for the same patient")
            return
        day = _effective(observation)
        if day is None and observation.encounter is not None:
            day = self.encounters.get(observation.encounter.reference or "", (None, None))[1]
        if kind.file == "strength":
            muscle, side = self._muscle_side(label, observation)
            sides = [side]
            if side == C.BILATERAL:
                self.out.warning(label, "bodySite", C.BILATERAL, "is bilateral: read as the same grade on the left "
                                 "and on the right")
                sides = ["L", "R"]
            for one in sides:
                self.out.add_row("strength.csv", {"patient_id": patient_id, "exam_date": day, "muscle": muscle,
                                                  "side": one, "mrc": value, **_extra_columns(observation)}, label)
            return
        if day is None:
            self.out.error(label, "effective[x]", None, "is missing: a visit observation needs its date")
            return
        row = self._visit_row(patient_id, day, label, {})
        self._set(("visits.csv", row), kind.column, value, label, "for the same visit")

    def _kind(self, label: str, observation: Any) -> C.ObservationCode | None:
        codings = observation.code.coding or []
        for coding in codings:
            if coding.system == C.CS_OBSERVATION:
                found = C.OBSERVATION_BY_LOCAL.get(coding.code)
                if found is None:
                    self.out.error(label, "code", coding.code, f"is not a code of {C.CS_OBSERVATION} "
                                   f"({', '.join(C.OBSERVATION_BY_LOCAL)})")
                return found
        for coding in codings:
            found = C.OBSERVATION_BY_STANDARD.get((coding.system, coding.code))
            if found is not None:
                return found
        for coding in codings:
            if (coding.system, coding.code) in C.AMBIGUOUS_STANDARD:
                self.out.warning(label, "code", coding.code, "is used for both leg and back pain: add the local "
                                 "code leg-pain-nrs or back-pain-nrs; left out")
                return None
        first = next((f"{c.system or '?'}|{c.code}" for c in codings if c.code), observation.code.text or "no code")
        self.ignored[f"Observation(s) coded {first}"] += 1
        return None

    def _value(self, label: str, observation: Any, kind: C.ObservationCode) -> str | None:
        """The value as text; wrong kinds of value go through as text so validation names them."""
        if observation.valueCodeableConcept is not None:
            concept = observation.valueCodeableConcept
            if kind.value == "grade":
                return _code_in(concept, C.CS_MRC_GRADE) or _any_code(concept) or concept.text
            if kind.value == "boolean":
                yes_no = _code_in(concept, C.V2_0136)
                if yes_no in ("Y", "N"):
                    return "yes" if yes_no == "Y" else "no"
            return _any_code(concept) or concept.text
        if observation.valueBoolean is not None:
            return "yes" if observation.valueBoolean else "no"
        if observation.valueQuantity is not None:
            return self._quantity(label, observation.valueQuantity, kind)
        if observation.valueInteger is not None:
            return str(observation.valueInteger)
        if observation.valueString is not None:
            return observation.valueString
        present = next((name for name in type(observation).model_fields
                        if name.startswith("value") and getattr(observation, name) is not None), None)
        if present is not None:
            self.out.error(label, present, None, f"is not a kind of value a {kind.display} can have")
        elif observation.dataAbsentReason is None:
            self.out.error(label, "value[x]", None, "is missing (give a value or a dataAbsentReason)")
        return None

    def _quantity(self, label: str, quantity: Any, kind: C.ObservationCode) -> str | None:
        if quantity.value is None:
            self.out.error(label, "valueQuantity.value", None, "is missing")
            return None
        value = Decimal(quantity.value)
        unit = quantity.code or quantity.unit
        if kind.unit == "mg/L" and unit not in (None, "mg/L"):
            if unit != "mg/dL":
                self.out.error(label, "valueQuantity.code", unit, "is not a unit for CRP (mg/L or mg/dL)")
                return None
            value *= 10
        return _decimal_text(value)

    def _muscle_side(self, label: str, observation: Any) -> tuple[str | None, str | None]:
        """Muscle (local key-muscle code) and side: L, R, C.BILATERAL, or an unknown code for validation to name."""
        site = observation.bodySite
        if site is None:
            return None, None
        laterality_codes = set(C.SIDE_BY_LATERALITY) | {C.BILATERAL}
        muscle = _code_in(site, C.CS_KEY_MUSCLE) or next(
            (c.code for c in site.coding or [] if c.code and not (c.system == C.SNOMED and c.code in laterality_codes)),
            None)
        laterality = next((e.valueCodeableConcept for e in site.extension or []
                           if e.url in (C.EXT_LATERALITY, C.EXT_LATERALITY_MCODE) and e.valueCodeableConcept), None)
        codings = (laterality.coding or []) if laterality is not None else []
        codings += [c for c in site.coding or [] if c.system == C.SNOMED and c.code in laterality_codes]
        for coding in codings:
            if coding.system == C.SNOMED and coding.code in laterality_codes:
                return muscle, C.SIDE_BY_LATERALITY.get(coding.code, coding.code)
        if laterality is not None:
            return muscle, _any_code(laterality) or laterality.text
        return muscle, None

    def _visit_row(self, patient_id: str, day: str, label: str, extras: dict[str, str]) -> int:
        key = (patient_id, day)
        if key not in self.visits:
            self.visits[key] = self.out.add_row("visits.csv", {"patient_id": patient_id, "visit_date": day}, label)
        row = self.visits[key]
        for column, value in extras.items():
            self._set(("visits.csv", row), column, value, label, "for the same visit")
        return row

    def _set(self, where: tuple[str, int], column: str, value: str | None, label: str, scope: str) -> None:
        """Put one value into a row made from several resources; a second, different value is an error."""
        row = self.out.row(*where)
        if value is None:
            return
        old = row.values.get(column)
        if old is None:
            row.values[column] = value
            row.column_labels[column] = label
        elif old != value:
            self.out.error(label, column, value, f"conflicts with {row.column_labels.get(column, row.label)}, "
                           f"which gives '{old}' {scope}")
        else:
            self.out.warning(label, column, value, f"repeats {row.column_labels.get(column, row.label)} "
                             f"{scope}; kept once")


def is_spine_operation(raw: dict) -> bool:
    """A Procedure (raw JSON) that is a spine operation: our own export's, or coded as one
    (codes.SPINE_SNOMED, SPINE_CPT, INSTRUMENTATION_CPT, SPINE_ICD10PCS_ROOTS)."""
    for extension in raw.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == C.EXT_INSTRUMENTED:
            return True
    for site in raw.get("bodySite") or []:
        for coding in (site.get("coding") or []) if isinstance(site, dict) else []:
            if isinstance(coding, dict) and coding.get("system") == C.CS_LUMBAR_SEGMENT:
                return True
    code = raw.get("code")
    for coding in (code.get("coding") or []) if isinstance(code, dict) else []:
        if not isinstance(coding, dict) or not isinstance(coding.get("code"), str):
            continue
        system, value = coding.get("system"), coding["code"].strip()
        if system == C.SNOMED and value in C.SPINE_SNOMED:
            return True
        if system == C.CPT and (value in C.SPINE_CPT or value in C.INSTRUMENTATION_CPT):
            return True
        if system == C.ICD10PCS and len(value) == 7 and value[:4].upper() in C.SPINE_ICD10PCS_ROOTS:
            return True
    return False


def _is_pseudonymized(resource: Any) -> bool:
    meta = resource.get("meta") if isinstance(resource, dict) else getattr(resource, "meta", None)
    if meta is None:
        return False
    labels = meta.get("security") if isinstance(meta, dict) else meta.security
    for label in labels or []:
        system = label.get("system") if isinstance(label, dict) else label.system
        code = label.get("code") if isinstance(label, dict) else label.code
        if system == C.V3_OBSERVATION_VALUE and code == "PSEUDED":
            return True
    return False


def _text(value: Any) -> str | None:
    """A FHIR date or dateTime as the records' ISO day; partial dates stay as written (validation reports)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _effective(observation: Any) -> str | None:
    if observation.effectiveDateTime is not None:
        return _text(observation.effectiveDateTime)
    if observation.effectivePeriod is not None and observation.effectivePeriod.start is not None:
        return _text(observation.effectivePeriod.start)
    if observation.effectiveInstant is not None:
        return _text(observation.effectiveInstant)
    return None


def _decimal_text(value: Decimal) -> str:
    try:
        return format(value.normalize(), "f") if value == value.to_integral_value() else str(value)
    except InvalidOperation:
        return str(value)


def _code_in(concept: Any, system: str) -> str | None:
    return next((c.code for c in concept.coding or [] if c.system == system and c.code), None)


def _any_code(concept: Any) -> str | None:
    return next((c.code for c in concept.coding or [] if c.code), None)


def _identifier(resource: Any, system: str) -> str | None:
    return next((i.value for i in resource.identifier or [] if i.system == system and i.value), None)


def _mrn(patient: Any) -> str | None:
    for identifier in patient.identifier or []:
        typed_mr = identifier.type is not None and _code_in(identifier.type, C.V2_0203) == "MR"
        if identifier.value and (identifier.system == C.ID_MRN or typed_mr):
            return identifier.value
    return None


def _name(patient: Any) -> str | None:
    for name in patient.name or []:
        if name.text:
            return name.text
        parts = [*(name.given or []), *([name.family] if name.family else [])]
        if parts:
            return " ".join(parts)
    return None


def _extension_value(resource: Any, url: str) -> Any:
    for extension in resource.extension or []:
        if extension.url == url:
            for name in ("valueBoolean", "valueString", "valueDate", "valueDateTime", "valueCode"):
                value = getattr(extension, name, None)
                if value is not None:
                    return value
    return None


def _extra_columns(resource: Any) -> dict[str, str]:
    out = {}
    for extension in resource.extension or []:
        if extension.url != C.EXT_EXTRA_COLUMN:
            continue
        parts = {e.url: e.valueString for e in extension.extension or []}
        if parts.get("name"):
            out[str(parts["name"]).strip().lower()] = parts.get("value")
    return out


def _yes_no(value: Any) -> str | None:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return None if value is None else str(value)


# ================================================================================================ export
@lru_cache(maxsize=65536)
def fhir_id(patient_id: str) -> str:
    """The Patient.id for a records patient_id: the id itself when FHIR allows it, else a stable hash."""
    return patient_id if _FHIR_ID.match(patient_id) else "p-" + uuid.uuid5(_NAMESPACE, patient_id).hex[:24]


def records_to_bundle(records: Records, patient_ids: list[str] | None = None, *,
                      identified: bool = False, check: bool = True) -> dict[str, Any]:
    """A 'collection' Bundle of the given patients (default all), each resource validated as R4.

    Without `identified`, names, MRNs, visit notes and extra columns are left out: the pseudonymous
    patient_id and the clinical data remain. `check=False` skips the validation of our own output (about
    0.3 ms per resource) where the Bundle is validated anyway, as by an import right after.
    """
    wanted = set(records.patients["patient_id"]) if patient_ids is None else set(patient_ids)
    missing = wanted - set(records.patients["patient_id"])
    if missing:
        raise KeyError(f"no such patient: {', '.join(sorted(missing))}")
    writer = _BundleWriter(identified, check)
    _write_records(writer, records, wanted, identified)
    log.info("FHIR Bundle written: %d resource(s)", len(writer.entries))
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "collection", "entry": writer.entries}
    if not identified:
        bundle = {"resourceType": "Bundle", "meta": {"security": [dict(C.PSEUDONYMIZED)]}, "type": "collection",
                  "entry": writer.entries}
    return bundle


NDJSON_TYPES = ("Patient", "Procedure", "Encounter", "Observation")


def _write_records(writer: _BundleWriter, records: Records, wanted: set[str] | None, identified: bool) -> int:
    """Every resource of these records (of the wanted patients) through `writer`; the number of patients."""
    frames = {name: (frame if wanted is None else frame[frame["patient_id"].isin(wanted)])
              for name, frame in records.frames().items()}
    extras = records.extra_columns if identified else {}
    for row in frames["patients"].sort_values("patient_id").to_dict("records"):
        writer.patient(row, extras.get("patients", []))
    for row in frames["surgeries"].sort_values(["patient_id", "surgery_date"]).to_dict("records"):
        writer.procedure(row, extras.get("surgeries", []))
    for row in frames["strength"].sort_values(["patient_id", "exam_date", "muscle", "side"]).to_dict("records"):
        writer.strength(row, extras.get("strength", []))
    for row in frames["visits"].sort_values(["patient_id", "visit_date"]).to_dict("records"):
        writer.visit(row, extras.get("visits", []))
    return len(frames["patients"])


class NdjsonFiles:
    """Bulk Data output: one `<Type>.ndjson` file per resource type, written line by line."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.files = {kind: (self.folder / f"{kind}.ndjson").open("wb", buffering=1 << 20) for kind in NDJSON_TYPES}
        self.counts: Counter[str] = Counter()

    def __call__(self, resource: dict[str, Any]) -> None:
        kind = resource["resourceType"]
        self.files[kind].write(orjson.dumps(resource, option=orjson.OPT_APPEND_NEWLINE))
        self.counts[kind] += 1

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()


def write_ndjson(source: Records | Any, out: str | Path, patient_ids: list[str] | None = None, *,
                 identified: bool = False, chunk: int = 1000, check_first: int = 20) -> Counter[str]:
    """Write patients as Bulk Data NDJSON (a folder, one file per resource type), streamed.

    `source` is Records, or a store engine: then patients are read `chunk` at a time (keyset paging), so
    memory holds one chunk whatever the store's size. Returns resources written per type. Identical
    resources to `records_to_bundle`, except references: `Patient/ID` and `Encounter/ID`.
    """
    wanted = None if patient_ids is None else set(patient_ids)
    if wanted is not None:  # checked before anything is written
        if isinstance(source, Records):
            known = set(source.patients["patient_id"])
        else:
            from sqlalchemy import select  # noqa: PLC0415

            from dashboard.store.models import Patient  # noqa: PLC0415

            table = Patient.__table__
            with source.connect() as conn:
                known = set(conn.execute(select(table.c.patient_id).where(table.c.patient_id.in_(sorted(wanted))))
                            .scalars())
        if wanted - known:
            raise KeyError(f"no such patient: {', '.join(sorted(wanted - known))}")
    files = NdjsonFiles(out)
    writer = _BundleWriter(identified, check=False, sink=files, check_first=check_first)
    try:
        if isinstance(source, Records):
            _write_records(writer, source, wanted, identified)
        else:
            from dashboard.store.loader import load_records, patient_chunks  # noqa: PLC0415

            for first, last in patient_chunks(source, chunk):
                if wanted is not None and not any(first <= pid <= last for pid in wanted):
                    continue
                records = load_records(source, patient_range=(first, last))
                _write_records(writer, records, wanted, identified)
                del records
    finally:
        files.close()
    log.info("FHIR NDJSON written: %d resource(s)", writer.count)
    return files.counts


def write_bundle(records: Records, out: str | Path, patient_ids: list[str] | None = None, *,
                 identified: bool = False) -> Path:
    """Write `records_to_bundle` as JSON."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    bundle = records_to_bundle(records, patient_ids, identified=identified)
    out.write_text(json.dumps(bundle, ensure_ascii=False, indent=1), encoding="utf-8")
    return out


def _present(value: Any) -> bool:
    return value is not None and not (not isinstance(value, str) and pd.isna(value))


def _day(value: Any) -> str:
    return pd.Timestamp(value).date().isoformat()


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code, **({"display": display} if display else {})}


_MRC_TOKEN_BY_VALUE = {round(float(value), 9): token for token, value in MRC_TOKENS.items()}


def _body_site(muscle: str, side: str) -> dict[str, Any]:
    laterality_code, laterality_display = C.LATERALITY[side]
    qualifier_code, qualifier_display = C.LATERALITY_QUALIFIER[side]
    return {"extension": [{"url": C.EXT_LATERALITY, "valueCodeableConcept": {
                "coding": [_coding(C.SNOMED, laterality_code, laterality_display),
                           _coding(C.SNOMED, qualifier_code, qualifier_display)]}}],
            "coding": [_coding(C.CS_KEY_MUSCLE, muscle, MUSCLE_LABELS[muscle])],
            "text": f"{MUSCLE_LABELS[muscle]}, {qualifier_display.lower()}"}


class _BundleWriter:
    """Builds validated resources with stable ids and urn:uuid fullUrls; references use the fullUrls.

    With a `sink` (NDJSON) each resource goes to it at once instead of into `entries`, references are
    relative (`Patient/ID`, `Encounter/ID`: NDJSON has no fullUrls), and only the first `check_first`
    resources of each type are validated (the format is the same for all; validating every one would
    cost 0.3 ms each).
    """

    def __init__(self, identified: bool, check: bool = True, sink: Any = None, check_first: int = 0) -> None:
        self.identified = identified
        self.check = check
        self.entries: list[dict[str, Any]] = []
        self.sink = sink
        self.check_first = check_first
        self.checked: Counter[str] = Counter()
        self.count = 0
        # Streamed output is serialised at once and never edited: parts that repeat (codes, body sites,
        # grades, references) are built once and shared. A Bundle's resources stay independent objects.
        self._cache: dict[Any, Any] | None = {} if sink is not None else None
        self._days: dict[Any, str] = {}

    def _shared(self, key: Any, build: Any) -> Any:
        if self._cache is None:
            return build()
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = build()
        return found

    def _day(self, value: Any) -> str:
        found = self._days.get(value)
        if found is None:
            if len(self._days) > 100_000:
                self._days.clear()
            found = self._days[value] = _day(value)
        return found

    def _add(self, resource: dict[str, Any]) -> str:
        kind = resource["resourceType"]
        if not self.identified:  # every resource says so, also when read alone (NDJSON, a server)
            resource["meta"] = self._shared("meta", lambda: {"security": [dict(C.PSEUDONYMIZED)]})
        if self.check or self.checked[kind] < self.check_first:  # our own output must be valid R4
            self.checked[kind] += 1
            get_fhir_model_class(kind).model_validate(resource)
        self.count += 1
        if self.sink is not None:
            self.sink(resource)
            return f"{kind}/{resource['id']}"
        full_url = f"urn:uuid:{uuid.uuid5(_NAMESPACE, kind + '/' + resource['id'])}"
        self.entries.append({"fullUrl": full_url, "resource": resource})
        return full_url

    def _patient_ref(self, patient_id: str) -> dict[str, str]:
        if self.sink is not None:
            if self._cache.get("patient") != patient_id:  # rows come patient by patient within each file
                self._cache["patient"], self._cache["patient_ref"] = patient_id, {
                    "reference": f"Patient/{fhir_id(patient_id)}"}
            return self._cache["patient_ref"]
        return {"reference": f"urn:uuid:{uuid.uuid5(_NAMESPACE, 'Patient/' + fhir_id(patient_id))}"}

    def _id(self, *parts: str) -> str:
        text = "-".join(parts)
        return text if _FHIR_ID.match(text) else "r-" + uuid.uuid5(_NAMESPACE, text).hex

    def _extras(self, row: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
        return [{"url": C.EXT_EXTRA_COLUMN, "extension": [{"url": "name", "valueString": name},
                                                          {"url": "value", "valueString": str(row[name])}]}
                for name in names if _present(row.get(name)) and str(row[name]) != ""]

    def patient(self, row: dict[str, Any], extras: list[str]) -> None:
        pid = row["patient_id"]
        resource: dict[str, Any] = {"resourceType": "Patient", "id": fhir_id(pid),
                                    "identifier": [{"system": C.ID_PATIENT, "value": pid}]}
        if self.identified and _present(row["mrn"]):
            resource["identifier"].append({"use": "usual", "type": {"coding": [_coding(C.V2_0203, "MR")]},
                                           "system": C.ID_MRN, "value": row["mrn"]})
        if self.identified and _present(row["name"]):
            resource["name"] = [{"text": row["name"]}]
        if _present(row["sex"]):
            resource["gender"] = C.GENDER[row["sex"]]
        if _present(row["birth_year"]):
            resource["birthDate"] = f"{int(row['birth_year']):04d}"
        extensions = []
        if _present(row["surgeon"]):
            extensions.append({"url": C.EXT_SURGEON, "valueString": row["surgeon"]})
        extensions += self._extras(row, extras)
        if extensions:
            resource["extension"] = extensions
        self._add(resource)
        for column in ("diabetes", "smoker"):
            if _present(row[column]):
                self._observation(pid, C.OBSERVATION_BY_COLUMN[("patients", column)], None,
                                  {"valueBoolean": bool(row[column])}, ("patient",))

    def procedure(self, row: dict[str, Any], extras: list[str]) -> None:
        pid, day = row["patient_id"], _day(row["surgery_date"])
        extensions = [{"url": C.EXT_INSTRUMENTED, "valueBoolean": bool(row["instrumented"])}]
        if _present(row["revision"]):
            extensions.append({"url": C.EXT_REVISION, "valueBoolean": bool(row["revision"])})
        if _present(row["deficit_onset_date"]):
            extensions.append({"url": C.EXT_DEFICIT_ONSET, "valueDate": _day(row["deficit_onset_date"])})
        extensions += self._extras(row, extras)
        self._add({
            "resourceType": "Procedure", "id": self._id("surgery", fhir_id(pid), day.replace("-", "")),
            "extension": extensions, "status": "completed", "code": {"text": row["procedure"]},
            "subject": self._patient_ref(pid), "performedDateTime": day,
            "bodySite": [{"coding": [_coding(C.CS_LUMBAR_SEGMENT, level, f"Lumbar segment {level}")], "text": level}
                         for level in str(row["levels"]).split(";")],
        })

    def strength(self, row: dict[str, Any], extras: list[str]) -> None:
        pid, day, muscle, side, grade = (row[c] for c in ("patient_id", "exam_date", "muscle", "side", "mrc"))
        token = _MRC_TOKEN_BY_VALUE.get(round(float(grade), 9))
        if token is None:
            token = next((t for t, v in MRC_TOKENS.items() if abs(v - grade) < 1e-9), None)
        value = (self._shared(("grade", token), lambda: {"valueCodeableConcept": {
                     "coding": [_coding(C.CS_MRC_GRADE, token, C.MRC_GRADE_DISPLAY[token])], "text": token}})
                 if token is not None else {"valueQuantity": {"value": float(grade)}})
        body_site = self._shared(("site", muscle, side), lambda: _body_site(muscle, side))
        self._observation(pid, C.OBSERVATION_BY_COLUMN[("strength", "mrc")], self._day(day), value,
                          (muscle.replace("_", "-"), side), body_site=body_site,
                          extensions=self._extras(row, extras) if extras else None)

    def visit(self, row: dict[str, Any], extras: list[str]) -> None:
        pid, day = row["patient_id"], self._day(row["visit_date"])
        encounter: dict[str, Any] = {
            "resourceType": "Encounter", "id": self._id("visit", fhir_id(pid), day.replace("-", "")),
            "status": "finished", "class": self._shared("class", lambda: _coding(C.ACT_CODE, "AMB", "ambulatory")),
            "type": self._shared("visit-type", lambda: [{"coding": [
                _coding(C.CS_ENCOUNTER_TYPE, C.VISIT_TYPE, "Spine follow-up visit")]}]),
            "subject": self._patient_ref(pid), "period": {"start": day, "end": day},
        }
        extensions = self._extras(row, extras)
        if extensions:
            encounter["extension"] = extensions
        encounter_url = self._add(encounter)
        for kind in C.OBSERVATIONS:
            if kind.file != "visits" or not _present(row[kind.column]):
                continue
            if kind.column == "notes" and not self.identified:
                continue
            value = row[kind.column]
            if kind.value == "boolean":
                payload: dict[str, Any] = {"valueBoolean": bool(value)}
            elif kind.value == "number":
                payload = {"valueQuantity": {"value": _number(value), "unit": kind.unit, "system": C.UCUM,
                                             "code": kind.unit}}
            else:
                payload = {"valueString": str(value)}
            self._observation(pid, kind, day, payload, (), encounter=encounter_url)

    def _observation(self, pid: str, kind: C.ObservationCode, day: str | None, value: dict[str, Any],
                     id_parts: tuple[str, ...], *, body_site: dict | None = None, encounter: str | None = None,
                     extensions: list | None = None) -> None:
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "id": self._id(kind.local, fhir_id(pid), *((day.replace("-", ""),) if day else ()), *id_parts),
            "status": "final",
            "code": self._shared(("code", kind.local), lambda: {"coding": [
                _coding(C.CS_OBSERVATION, kind.local, kind.display),
                *(_coding(*standard) for standard in kind.standard)], "text": kind.display}),
            "subject": self._patient_ref(pid),
        }
        if extensions:
            resource["extension"] = extensions
        if kind.category:
            resource["category"] = self._shared(("category", kind.category), lambda: [
                {"coding": [_coding(C.OBSERVATION_CATEGORY, kind.category)]}])
        if encounter:
            resource["encounter"] = {"reference": encounter}
        if day:
            resource["effectiveDateTime"] = day
        if body_site:
            resource["bodySite"] = body_site
        resource.update(value)
        self._add(resource)
