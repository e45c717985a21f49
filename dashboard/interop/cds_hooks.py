"""CDS Hooks service: the imaging checklist of one patient as cards, for an EHR's patient-view hook.

    python -m dashboard serve-cds [--host 127.0.0.1 --port 8090] [--database URL] [--as-of YYYY-MM-DD]
                                  [--source-url URL] [--cors-origin ORIGIN ...] [--fhir-timeout S]

Discovery is `GET /cds-services`; the service is `POST /cds-services/patient-view` (CDS Hooks 2.0). The
prefetch templates are the recommended kind: `Patient/{{context.patientId}}` and Procedure, Encounter and
Observation searches on `patient={{context.patientId}}` (`cds_prefetch.PREFETCH`). Template keys the EHR
did not satisfy (absent, an OperationOutcome, a paged Bundle) are fetched from `fhirServer` with the
`fhirAuthorization` bearer token, with a timeout; when they cannot be had the answer is HTTP 412. The
FHIR data is converted with the FHIR importer and validated like any import. A request with neither
prefetch nor a token is answered from the dashboard's store. Either way the cards come from the same
`assess` the dashboard and the command line use: one card per prompt, in the assessment's order.

Cards are only ever for `context.patientId`. FHIR data that is not provably about that patient alone
(another Patient, two Patients, a resource whose subject is not the patient in context, a token for
another patient) is refused with HTTP 412 and a neutral message (`cds_prefetch.check_same_patient`):
never another patient's cards, and nothing of theirs in the answer or the log. 412 rather than an error
card because the specification defines 412 for "unable to retrieve the necessary FHIR data" and data of
another patient does not satisfy the templates; a 412 cannot be shown in the wrong chart.

Error bodies name problems by location and type only (no token, name or record content is repeated);
the hook's rules are enforced (`hookInstance` a UUID, `context.userId` a reference of the hook's user
types; a patient or proxy user gets no cards). The service binds to 127.0.0.1 by default and does not yet
check the EHR's JWT (`create_app(authorize=...)` is where that check goes): run it behind the EHR's
authenticated gateway. CORS only for the listed origins. Nothing here logs names, MRNs, notes, tokens or
card contents.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
import uuid
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, SecretStr
from sqlalchemy import func, select

from dashboard.core.assessment import assess, to_json_dict
from dashboard.core.checklist import evidence_hash, load_rules
from dashboard.core.curves import load_reference
from dashboard.core.records import Records
from dashboard.core.wording import plain
from dashboard.interop import codes as C
from dashboard.interop.cds_prefetch import (
    DEFAULT_TIMEOUT,
    PREFETCH,
    Unusable,
    check_same_patient,
    complete,
)
from dashboard.interop.fhir import bundle_to_records, fhir_id

log = logging.getLogger(__name__)

SERVICE_ID = "patient-view"
INDICATOR = {"emergency": "critical", "urgent": "warning", "routine": "info"}
URGENCY_TEXT = {"emergency": "emergency: same day", "urgent": "urgent: within days",
                "routine": "routine: at the next planned review"}
MODALITY_TEXT = {
    "mri": "MRI", "mri_contrast": "MRI with contrast", "ct": "CT", "ct_myelography": "CT myelography",
    "radiograph": "radiograph", "flexion_extension_radiograph": "flexion-extension radiographs",
    "venous_duplex": "venous duplex ultrasound",
}
CATEGORY_TEXT = {"red_flag": "red flag", "compression": "compression", "fibrosis": "fibrosis",
                 "hardware": "hardware"}
SUMMARY_LIMIT = 140  # CDS Hooks: a summary is under 140 characters
SOURCE_LABEL = "Spine Recovery Dashboard imaging checklist"
DEFAULT_SOURCE_URL = "https://spine-dashboard.example/docs/rule-catalogue"
EXTENSION = "example.spine-dashboard.prompt"
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
        "usageRequirements": ("Prefetch the four templates (FHIR R4, coded as in the dashboard's "
                              "docs/interoperability.md), or give fhirServer with fhirAuthorization to fetch "
                              "what is not prefetched; or import the patient into the dashboard's store."),
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
        *(f"- {markdown_escape(plain(line))}" for line in prompt["evidence"]),
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


def _problem_card(summary: str, lines: list[str], source_url: str = DEFAULT_SOURCE_URL) -> dict[str, Any]:
    """Say that the checklist could not be computed, and why, rather than show nothing."""
    shown = lines[:20] + ([f"… and {len(lines) - 20} more"] if len(lines) > 20 else [])
    return {
        "uuid": str(uuid.uuid4()), "summary": summary[: SUMMARY_LIMIT - 1], "indicator": "warning",
        "detail": "The imaging checklist was **not** assessed:\n\n" + "\n".join(
            f"- {markdown_escape(line)}" for line in shown),
        "source": {"label": SOURCE_LABEL, "url": source_url},
    }


#: patient-view: `context.userId` is `[ResourceType]/[id]` of one of these (hook definition, 1.0).
USER_TYPES = ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson")
#: The checklist is for the clinicians: a patient or a proxy viewing the record gets no cards.
CLINICIAN_TYPES = ("Practitioner", "PractitionerRole")
_USER_ID = re.compile(r"^(?P<type>[A-Za-z]+)/[A-Za-z0-9\-.]{1,64}$")


class HookContext(BaseModel):
    model_config = ConfigDict(extra="allow")
    patientId: str  # noqa: N815 — the CDS Hooks name
    userId: str  # noqa: N815 — REQUIRED by the patient-view hook
    encounterId: str | None = None  # noqa: N815


class FhirAuthorization(BaseModel):
    """The bearer token the CDS Client grants for its FHIR server (never shown in a repr, log or error)."""
    model_config = ConfigDict(extra="allow")
    access_token: SecretStr
    token_type: str
    expires_in: int
    scope: str
    subject: str
    patient: str | None = None


class HookRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    hook: str
    hookInstance: str  # noqa: N815
    context: HookContext
    prefetch: dict[str, Any] | None = None
    fhirServer: str | None = None  # noqa: N815
    fhirAuthorization: FhirAuthorization | None = None  # noqa: N815


def _prefetch_bundle(prefetch: dict[str, Any] | None) -> dict[str, Any] | None:
    """All resources of the template keys as one collection Bundle (duplicates by type and id kept once)."""
    if not prefetch:
        return None
    entries, seen = [], set()
    for value in (prefetch[key] for key in PREFETCH if key in prefetch):
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

    def __init__(self, database: str | None, as_of: date | None, source_url: str,
                 fhir_timeout: float = DEFAULT_TIMEOUT, fhir_transport: httpx.BaseTransport | None = None) -> None:
        self.database, self.as_of, self.source_url = database, as_of, source_url
        self.fhir_timeout, self.fhir_transport = fhir_timeout, fhir_transport
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
        check_same_patient(request.prefetch, requested, request.fhirServer)
        authorization = request.fhirAuthorization
        if authorization is not None and authorization.patient not in (None, requested):
            raise Unusable("fhirAuthorization is restricted to another patient than the patient in context")
        bundle = None
        if request.prefetch is not None or authorization is not None:
            token = {"access_token": authorization.access_token.get_secret_value()} if authorization else None
            data = complete(request.prefetch, requested, request.fhirServer, token,
                            timeout=self.fhir_timeout, transport=self.fhir_transport)
            check_same_patient(data, requested, request.fhirServer)
            bundle = _prefetch_bundle(data)
            if bundle is None:
                raise Unusable("the FHIR data of the patient in context holds no resources")
        if bundle is not None:
            records, report = bundle_to_records(bundle, "prefetch")
            if records is None:
                log.info("patient-view: prefetched data has %d error(s); no assessment", len(report.errors))
                return [_problem_card(f"Imaging checklist not assessed: the prefetched FHIR data has "
                                      f"{len(report.errors)} error(s)", report.error_lines(), self.source_url)]
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
    return None  # never another patient's: `check_same_patient` has refused any other


_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
MAX_PROBLEMS = 20


def _location(loc: tuple[Any, ...]) -> str:
    """Where a validation problem is, as 'body.context.patientId': element names and indexes, no values."""
    return ".".join(str(part) if isinstance(part, int) or _PLAIN_NAME.match(str(part)) else "…" for part in loc)


def validation_problems(exc: RequestValidationError) -> list[dict[str, str]]:
    """The problems of an invalid request by location and type only.

    FastAPI's default 422 body repeats each invalid value (`input`) and, for a missing element, the whole
    object around it: the access token, the prefetched record. This keeps only where and what kind.
    """
    problems = [{"location": _location(tuple(e.get("loc", ()))), "type": str(e.get("type", "invalid"))}
                for e in exc.errors()]
    return problems[:MAX_PROBLEMS]


def hook_problem(request: HookRequest) -> str | None:
    """What makes a request not a patient-view call as the specification defines it (None: nothing)."""
    if request.hook != "patient-view":
        return "this service answers the patient-view hook only"
    try:
        uuid.UUID(request.hookInstance)
    except ValueError:
        return "hookInstance must be a UUID"
    match = _USER_ID.match(request.context.userId)
    if match is None or match["type"] not in USER_TYPES:
        return f"context.userId must be [ResourceType]/[id] with a type of {', '.join(USER_TYPES)}"
    if request.fhirAuthorization is not None:
        if not request.fhirServer:
            return "fhirAuthorization is given without fhirServer"
        if request.fhirAuthorization.token_type.lower() != "bearer":
            return "fhirAuthorization.token_type must be Bearer"
    return None


def _check_url(url: str) -> str:
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("source_url must be an absolute http(s) URL")
    return url


def create_app(database: str | None = None, *, as_of: date | None = None,
               source_url: str = DEFAULT_SOURCE_URL, fhir_timeout: float = DEFAULT_TIMEOUT,
               fhir_transport: httpx.BaseTransport | None = None, cors_origins: Sequence[str] = (),
               authorize: Callable[[Request], None] | None = None) -> FastAPI:
    """The FastAPI application; `as_of` pins the assessment day (default: today, per request).

    `source_url` is where a card's source links (the rule catalogue; `#rule_id` is added).
    `fhir_timeout` bounds each HTTP request to the EHR's FHIR server; `fhir_transport` replaces the
    network (tests). `cors_origins` is the allow-list of browser origins (exact origins, no wildcard;
    empty: no CORS headers at all). `authorize` is called with every request before it is answered and
    raises `HTTPException(401)` to refuse it: the place for the EHR's JWT check (none is made here yet).
    """
    _check_url(source_url)
    if any(origin.strip() in ("*", "null", "") for origin in cors_origins):
        raise ValueError("cors_origins must name each allowed origin (no '*', 'null' or empty entries)")

    def authorized(request: Request) -> None:
        if authorize is not None:
            authorize(request)

    app = FastAPI(title="Spine Recovery Dashboard CDS Hooks", docs_url=None, redoc_url=None,
                  dependencies=[Depends(authorized)])
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           max_age=600)
    checklist = _Checklist(database, as_of, source_url, fhir_timeout, fhir_transport)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = validation_problems(exc)
        log.info("invalid CDS Hooks request: %s", ", ".join(f"{p['location']} ({p['type']})" for p in problems))
        return JSONResponse(status_code=422, content={
            "detail": problems,
            "message": "the request is not a valid CDS Hooks request; problems are named by location and type "
                       "(values are never repeated)"})

    @app.get("/cds-services")
    def services() -> dict[str, Any]:
        return discovery()

    @app.post("/cds-services/{service_id}")
    def patient_view(service_id: str, request: HookRequest) -> dict[str, Any]:
        if service_id != SERVICE_ID:
            raise HTTPException(status_code=404, detail="no such CDS service (see GET /cds-services)")
        problem = hook_problem(request)
        if problem is not None:
            raise HTTPException(status_code=400, detail=problem)
        if request.context.userId.split("/")[0] not in CLINICIAN_TYPES:
            log.info("patient-view: the user is a patient or proxy; no cards")
            return {"cards": []}
        try:
            cards = checklist.cards(request)
        except Unusable as refusal:
            log.warning("patient-view %s: data refused (412): %s", request.hookInstance, refusal)
            raise HTTPException(status_code=412, detail=str(refusal)) from None
        except Exception as problem:  # an exception's message may quote record contents: not passed on
            frames = "".join(traceback.format_tb(problem.__traceback__))
            log.error("patient-view failed: %s (message withheld)\n%s", type(problem).__name__, frames)
            raise HTTPException(status_code=500, detail="internal error; the service log names where") from None
        return {"cards": cards}

    return app


def serve(host: str = "127.0.0.1", port: int = 8090, database: str | None = None,
          as_of: date | None = None, *, source_url: str = DEFAULT_SOURCE_URL, cors_origins: Sequence[str] = (),
          fhir_timeout: float = DEFAULT_TIMEOUT) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn  # noqa: PLC0415

    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO line holds FHIR URLs with patient ids
    app = create_app(database, as_of=as_of, source_url=source_url, cors_origins=cors_origins,
                     fhir_timeout=fhir_timeout)
    uvicorn.run(app, host=host, port=port, log_level="info")

