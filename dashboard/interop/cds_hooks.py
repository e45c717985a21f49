"""CDS Hooks service: the imaging checklist of one patient as cards, for an EHR's patient-view hook.

    python -m dashboard serve-cds [--host 127.0.0.1 --port 8090] [--database URL] [--as-of YYYY-MM-DD]

Discovery is `GET /cds-services`; the service is `POST /cds-services/patient-view`. When the EHR sends
prefetched FHIR data (the `records` template asks for the patient's `$everything` Bundle; any prefetch
key holding a Bundle or resources is read), that data is converted with the FHIR importer and validated
like any import; otherwise the patient is read from the store. Either way the cards come from the same
`assess` the dashboard and the command line use: one card per prompt, in the assessment's order.

The service binds to 127.0.0.1 by default and does not check the EHR's JWT: run it behind the EHR's
authenticated gateway. Nothing here logs names, MRNs, notes or card contents.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from datetime import date
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select

from dashboard.core.assessment import assess, to_json_dict
from dashboard.core.checklist import evidence_hash, load_rules
from dashboard.core.curves import load_reference
from dashboard.core.records import Records
from dashboard.interop import codes as C
from dashboard.interop.fhir import bundle_to_records, fhir_id

log = logging.getLogger(__name__)

SERVICE_ID = "patient-view"
INDICATOR = {"emergency": "critical", "urgent": "warning", "routine": "info"}
URGENCY_TEXT = {"emergency": "emergency: now, within hours", "urgent": "urgent: within days",
                "routine": "routine: at the next planned review"}
MODALITY_TEXT = {
    "mri": "MRI", "mri_contrast": "MRI with contrast", "ct": "CT", "ct_myelography": "CT myelography",
    "radiograph": "radiograph", "flexion_extension_radiograph": "flexion-extension radiographs",
    "venous_duplex": "venous duplex ultrasound", "electrodiagnostics": "electrodiagnostics (EMG/NCS)",
}
CATEGORY_TEXT = {"red_flag": "red flag", "compression": "compression", "recurrence": "recurrence (disc or scar)",
                 "hardware": "hardware", "recovery": "recovery"}
SUMMARY_LIMIT = 140  # CDS Hooks: a summary is under 140 characters
SOURCE_LABEL = "Spine Recovery Dashboard imaging checklist"
DEFAULT_SOURCE_URL = "https://spine-dashboard.example/docs/rule-catalogue"
EXTENSION = "example.spine-dashboard.prompt"
PREFETCH = {"records": "Patient/{{context.patientId}}/$everything"}
_NAMESPACE = uuid.UUID("0b5c1f2e-8d4a-4f7e-9a61-3c2d9e8f7a10")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|])")


def discovery() -> dict[str, Any]:
    """The discovery document: one patient-view service with its prefetch template."""
    return {"services": [{
        "hook": "patient-view",
        "id": SERVICE_ID,
        "title": "Spine recovery imaging checklist",
        "description": ("Imaging prompts for a patient after lumbar spine surgery, from muscle strength "
                        "trajectories, visits and red flags: what to consider, why, and the source."),
        "prefetch": PREFETCH,
        "usageRequirements": ("Prefetch the patient's data as a FHIR R4 Bundle coded as in the dashboard's "
                              "docs/interoperability.md, or import the patient into the dashboard's store."),
    }]}


def markdown_escape(text: str) -> str:
    """Evidence and citations shown as written, not as Markdown (muscle codes hold underscores)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _summary(prompt: dict[str, Any]) -> str:
    text = f"Consider {MODALITY_TEXT.get(prompt['modality'], prompt['modality'])}: {prompt['summary']}"
    return text if len(text) < SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 2] + "…"


def _detail(prompt: dict[str, Any], as_of: str) -> str:
    modality = MODALITY_TEXT.get(prompt["modality"], prompt["modality"])
    lines = [
        f"**Consider {markdown_escape(modality)}** ({URGENCY_TEXT.get(prompt['urgency'], prompt['urgency'])}); "
        f"category: {CATEGORY_TEXT.get(prompt['category'], prompt['category'])}.",
        "",
        "**Evidence**",
        "",
        *(f"- {markdown_escape(line)}" for line in prompt["evidence"]),
        "",
        f"**Source:** {markdown_escape(prompt['source'])}",
        "",
        f"Checklist rule `{prompt['rule_id']}`, assessed as of {as_of}. A prompt to consider, not an order: "
        "review the evidence above before deciding.",
    ]
    return "\n".join(lines)


def prompt_cards(patient: dict[str, Any], as_of: str, source_url: str = DEFAULT_SOURCE_URL) -> list[dict[str, Any]]:
    """CDS Hooks cards for one patient of `to_json_dict(assess(...))`, one per prompt, same order.

    The card uuid is stable for the same patient, rule and evidence, so feedback on a card refers to
    the same prompt until its evidence changes (as recorded decisions do in the dashboard).
    """
    cards = []
    for prompt in patient["prompts"]:
        fingerprint = evidence_hash(list(prompt["evidence"]))
        cards.append({
            "uuid": str(uuid.uuid5(_NAMESPACE, f"{patient['patient_id']}|{prompt['rule_id']}|{fingerprint}")),
            "summary": _summary(prompt),
            "indicator": INDICATOR[prompt["urgency"]],
            "detail": _detail(prompt, as_of),
            "source": {
                "label": SOURCE_LABEL,
                "url": f"{source_url}#{prompt['rule_id']}",
                "topic": {"system": C.CS_CHECKLIST_RULE, "code": prompt["rule_id"],
                          "display": prompt["summary"]},
            },
            "extension": {EXTENSION: {
                "rule_id": prompt["rule_id"], "category": prompt["category"], "modality": prompt["modality"],
                "urgency": prompt["urgency"], "evidence": list(prompt["evidence"]), "evidence_hash": fingerprint,
                "as_of": as_of,
            }},
        })
    return cards


def _problem_card(summary: str, lines: list[str]) -> dict[str, Any]:
    """Say that the checklist could not be computed, and why, rather than show nothing."""
    shown = lines[:20] + ([f"… and {len(lines) - 20} more"] if len(lines) > 20 else [])
    return {
        "uuid": str(uuid.uuid4()), "summary": summary[: SUMMARY_LIMIT - 1], "indicator": "warning",
        "detail": "The imaging checklist was **not** assessed:\n\n" + "\n".join(
            f"- {markdown_escape(line)}" for line in shown),
        "source": {"label": SOURCE_LABEL, "url": DEFAULT_SOURCE_URL},
    }


class HookContext(BaseModel):
    model_config = ConfigDict(extra="allow")
    patientId: str  # noqa: N815 — the CDS Hooks name
    userId: str | None = None  # noqa: N815


class HookRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    hook: str
    hookInstance: str  # noqa: N815
    context: HookContext
    prefetch: dict[str, Any] | None = None
    fhirServer: str | None = None  # noqa: N815


def _prefetch_bundle(prefetch: dict[str, Any] | None) -> dict[str, Any] | None:
    """All prefetched resources as one collection Bundle (duplicates by type and id kept once)."""
    if not prefetch:
        return None
    entries, seen = [], set()
    for value in prefetch.values():
        if not isinstance(value, dict):
            continue
        items = (value.get("entry") or []) if value.get("resourceType") == "Bundle" else [{"resource": value}]
        for entry in items:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                continue
            key = (resource.get("resourceType"), resource.get("id"))
            if key[1] is not None and key in seen:
                continue
            seen.add(key)
            entries.append({k: v for k, v in entry.items() if k in ("fullUrl", "resource")})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries} if entries else None


def _one_patient(records: Records, patient_id: str) -> Records:
    keep = {name: frame[frame["patient_id"] == patient_id].reset_index(drop=True)
            for name, frame in records.frames().items()}
    return Records(extra_columns=records.extra_columns, **keep)


class _Checklist:
    """Assessment for one patient, from prefetched FHIR data or from the store (cached per import)."""

    def __init__(self, database: str | None, as_of: date | None, source_url: str) -> None:
        self.database, self.as_of, self.source_url = database, as_of, source_url
        self.reference = load_reference()
        self.rules = load_rules()
        self._lock = threading.Lock()
        self._engine = None
        self._version: int | None = None
        self._records: Records | None = None

    def _store(self) -> Records:
        from dashboard.store import get_engine, load_records  # noqa: PLC0415 — only when the store is used
        from dashboard.store.models import Import  # noqa: PLC0415

        with self._lock:
            if self._engine is None:
                self._engine = get_engine(self.database)
            with self._engine.connect() as conn:
                version = conn.execute(select(func.coalesce(func.max(Import.__table__.c.id), 0))).scalar_one()
            if self._records is None or version != self._version:
                self._records, self._version = load_records(self._engine), version
            return self._records

    def cards(self, request: HookRequest) -> list[dict[str, Any]]:
        requested = request.context.patientId
        bundle = _prefetch_bundle(request.prefetch)
        if bundle is not None:
            records, report = bundle_to_records(bundle, "prefetch")
            if records is None:
                log.info("patient-view: prefetched data has %d error(s); no assessment", len(report.errors))
                return [_problem_card(f"Imaging checklist not assessed: the prefetched FHIR data has "
                                      f"{len(report.errors)} error(s)", report.error_lines())]
            patient_id = _patient_in_bundle(bundle, records, requested)
        else:
            records = self._store()
            ids = records.patients["patient_id"]
            match = ids[(ids == requested) | (ids.map(fhir_id) == requested)]
            patient_id = match.iloc[0] if len(match) else None
        if patient_id is None:
            log.info("patient-view: patient not known; no cards")
            return []
        as_of = self.as_of or date.today()
        result = to_json_dict(assess(_one_patient(records, patient_id), as_of=as_of, reference=self.reference,
                                     rules=self.rules))
        patient = next(p for p in result["patients"] if p["patient_id"] == patient_id)
        cards = prompt_cards(patient, result["as_of"], self.source_url)
        log.info("patient-view: %d card(s)", len(cards))
        return cards


def _patient_in_bundle(bundle: dict[str, Any], records: Records, requested: str) -> str | None:
    """The records patient_id of the Patient whose FHIR id the EHR asked about."""
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource.get("resourceType") == "Patient" and resource.get("id") == requested:
            for identifier in resource.get("identifier") or []:
                if identifier.get("system") == C.ID_PATIENT and identifier.get("value"):
                    return identifier["value"]
            return requested
    ids = list(records.patients["patient_id"])
    return ids[0] if len(ids) == 1 else None


def create_app(database: str | None = None, *, as_of: date | None = None,
               source_url: str = DEFAULT_SOURCE_URL) -> FastAPI:
    """The FastAPI application; `as_of` pins the assessment day (default: today, per request)."""
    app = FastAPI(title="Spine Recovery Dashboard CDS Hooks", docs_url=None, redoc_url=None)
    checklist = _Checklist(database, as_of, source_url)

    @app.get("/cds-services")
    def services() -> dict[str, Any]:
        return discovery()

    @app.post("/cds-services/{service_id}")
    def patient_view(service_id: str, request: HookRequest) -> dict[str, Any]:
        if service_id != SERVICE_ID:
            raise HTTPException(status_code=404, detail=f"no CDS service '{service_id}'")
        if request.hook != "patient-view":
            raise HTTPException(status_code=400, detail=f"this service answers the patient-view hook, "
                                                        f"not '{request.hook}'")
        return {"cards": checklist.cards(request)}

    return app


def serve(host: str = "127.0.0.1", port: int = 8090, database: str | None = None,
          as_of: date | None = None) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn  # noqa: PLC0415

    uvicorn.run(create_app(database, as_of=as_of), host=host, port=port, log_level="info")

