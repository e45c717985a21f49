"""CDS Hooks service: the imaging checklist of one patient as cards, for an EHR's patient-view hook.

    python -m dashboard serve-cds --auth-config FILE [--service-url URL] [--host 127.0.0.1 --port 8090]
                                  [--database URL] [--as-of YYYY-MM-DD] [--source-url URL] [--cors-origin ORIGIN ...]
                                  [--fhir-timeout S] [--allowed-host HOST[:PORT] ...] [--max-body-bytes N]
    SPINE_DASHBOARD_MODE=demo python -m dashboard serve-cds --no-auth      # demo only, loopback only

Discovery is `GET /cds-services`; the service is `POST /cds-services/patient-view` (CDS Hooks 2.0) and its
feedback `POST /cds-services/patient-view/feedback`.

Who may call (`cds_security`): every call but discovery carries the EHR's signed JWT (`Authorization:
Bearer`), checked in ASGI middleware before the body is read, the store opened or the prefetch looked at:
`iss` on the allow-list with its JWK Set, `kid` choosing the key, asymmetric algorithms only (no `none`,
no HMAC), `aud` = the service URL plus the endpoint path, `exp`/`iat` checked, `jti` never accepted twice.
Any failure is 401 with one neutral body; failed attempts are limited per client (429). Only the
configured `Host` values are answered (DNS rebinding: 400) and bodies over the limit are refused (413) by
their Content-Length or while they stream in. Authentication is on by default: `create_app` refuses to
build a service without it unless `allow_unauthenticated`, which only demo mode allows (and it warns).

The prefetch templates are the recommended kind: `Patient/{{context.patientId}}` and Procedure, Encounter
and Observation searches on `patient={{context.patientId}}` (`cds_prefetch.PREFETCH`). Template keys the
EHR did not satisfy (absent, an OperationOutcome, a paged Bundle) are fetched from `fhirServer` with the
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

Each card has a stable `uuid` (patient, rule, evidence hash), one suggestion ("imaging ordered") and the
`overrideReasons` of `OVERRIDE_REASONS`. Feedback on a card the service issued (remembered in memory,
`CardRegistry`; after a restart found among the stored patients' current prompts) becomes a clinician's
decision (accepted → ordered; an override reason → not indicated, already done or deferred) with its
audit entry, in one transaction; the clinician is the JWT's `sub`, else the hook call's `userId`.

Error bodies name problems by location and type only (no token, name or record content is repeated);
the hook's rules are enforced (`hookInstance` a UUID, `context.userId` a reference of the hook's user
types; a patient or proxy user gets no cards). The service binds to 127.0.0.1 by default; CORS only for
the listed origins. Nothing here logs names, MRNs, notes, tokens or card contents.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from sqlalchemy import func, select

from dashboard.clinical.assessment import assess, to_json_dict
from dashboard.clinical.curves import load_reference
from dashboard.clinical.imaging.checklist import evidence_hash, load_rules
from dashboard.clinical.records.validate import Records
from dashboard.clinical.wording import plain
from dashboard.interop import codes as C
from dashboard.interop.cds_prefetch import (
    DEFAULT_TIMEOUT,
    PREFETCH,
    Unusable,
    check_same_patient,
    complete,
)
from dashboard.interop.cds_security import (
    DEFAULT_MAX_BODY_BYTES,
    LOOPBACK_HOSTS,
    AuthConfig,
    AuthGuard,
    FailureLimiter,
    HostGuard,
    JwtVerifier,
    default_hosts,
)
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
_NAMESPACE = uuid.UUID("0b5c1f2e-8d4a-4f7e-9a61-3c2d9e8f7a10")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|])")
#: The code system of the override reasons offered on every card (feedback maps them to decisions).
CS_OVERRIDE_REASON = f"{C.BASE}/CodeSystem/cds-override-reason"
#: code → (display, the dashboard decision it records), in the order offered.
OVERRIDE_REASONS: dict[str, tuple[str, str]] = {
    "not-applicable": ("Not applicable to this patient", "not_indicated"),
    "patient-ineligible": ("Patient not eligible for this imaging", "not_indicated"),
    "order-already-exists": ("Imaging already ordered", "already_done"),
    "action-completed": ("Imaging already done", "already_done"),
    "not-a-priority": ("Not a priority now", "deferred"),
}
SUGGESTION_LABEL = "Record in the dashboard: imaging ordered"


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
        card_uuid = str(uuid.uuid5(_NAMESPACE, f"{patient['patient_id']}|{prompt['rule_id']}|{fingerprint}"))
        cards.append({
            "uuid": card_uuid,
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
            # Accepting the one suggestion records "ordered" (it orders nothing); dismissing the card with
            # one of these reasons records the matching decision (feedback endpoint).
            "suggestions": [{"label": SUGGESTION_LABEL, "uuid": suggestion_uuid(card_uuid)}],
            "selectionBehavior": "at-most-one",
            "overrideReasons": [{"system": CS_OVERRIDE_REASON, "code": code, "display": display}
                                for code, (display, _) in OVERRIDE_REASONS.items()],
        })
    return cards


def suggestion_uuid(card_uuid: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{card_uuid}|ordered"))


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
    return records.narrowed({name: (frame["patient_id"] == patient_id).to_numpy()
                             for name, frame in records.frames().items()}, renumber=True)


UNKNOWN_EHR_USER = "EHR user (not named)"


@dataclass(frozen=True)
class IssuedCard:
    """What a card's uuid stands for: the prompt of one patient on one evidence, and who was shown it."""

    patient_id: str
    rule_id: str
    evidence_hash: str
    user_id: str
    issued: float


class CardRegistry:
    """The cards this service issued, by uuid, so that feedback can name its patient, rule and evidence.

    In memory (a card uuid is a one-way hash): at most `capacity` cards, each for `ttl` seconds. A card
    issued before a restart is looked up among the store's current prompts instead (`_Checklist.card`).
    """

    def __init__(self, capacity: int = 100_000, ttl: float = 7 * 24 * 3600.0) -> None:
        self.capacity, self.ttl = capacity, ttl
        self._lock = threading.Lock()
        self._cards: OrderedDict[str, IssuedCard] = OrderedDict()
        self._feedback: OrderedDict[str, set[tuple]] = OrderedDict()  # card uuid → feedback recorded

    def issued(self, cards: list[dict[str, Any]], patient_id: str, user_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            for card in cards:
                facts = card.get("extension", {}).get(EXTENSION)
                if not facts:
                    continue
                self._cards[card["uuid"]] = IssuedCard(patient_id, facts["rule_id"], facts["evidence_hash"],
                                                       user_id, now)
                self._cards.move_to_end(card["uuid"])
            while self._cards and (len(self._cards) > self.capacity
                                   or now - next(iter(self._cards.values())).issued > self.ttl):
                old, _ = self._cards.popitem(last=False)
                self._feedback.pop(old, None)

    def get(self, card_uuid: str) -> IssuedCard | None:
        with self._lock:
            card = self._cards.get(card_uuid)
            return card if card is not None and time.monotonic() - card.issued <= self.ttl else None

    def recorded(self, card_uuid: str, key: tuple) -> bool:
        """Whether exactly this feedback (outcome, reason, time) was already recorded for the card."""
        with self._lock:
            return key in self._feedback.get(card_uuid, set())

    def remember(self, card_uuid: str, key: tuple) -> None:
        """Note feedback as recorded (after its transaction committed)."""
        with self._lock:
            self._feedback.setdefault(card_uuid, set()).add(key)
            self._feedback.move_to_end(card_uuid)
            while len(self._feedback) > self.capacity:
                self._feedback.popitem(last=False)


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
        self.registry = CardRegistry()
        self._index_lock = threading.Lock()
        self._index: dict[str, IssuedCard] | None = None
        self._index_key: tuple | None = None

    def engine(self):  # noqa: ANN201 — a SQLAlchemy Engine, imported only when the store is used
        from dashboard.store import get_engine  # noqa: PLC0415

        with self._lock:
            if self._engine is None:
                self._engine = get_engine(self.database)
            return self._engine

    def _store(self) -> Records:
        from dashboard.store import load_records  # noqa: PLC0415 — only when the store is used
        from dashboard.store.models import Import  # noqa: PLC0415

        self.engine()
        with self._lock:
            with self._engine.connect() as conn:
                version = conn.execute(select(func.coalesce(func.max(Import.__table__.c.id), 0))).scalar_one()
            if self._records is None or version != self._version:
                self._records, self._version = load_records(self._engine), version
            return self._records

    def warm(self) -> int:
        """Load the store before the first request (the first EHR call must not pay for it); its patient count."""
        return len(self._store().patients)

    def card(self, card_uuid: str) -> IssuedCard | None:
        """What a card uuid stands for: a card this service issued, else (after a restart) a current prompt
        of a stored patient, from an index of the whole store built once per import."""
        card = self.registry.get(card_uuid)
        if card is not None:
            return card
        records = self._store()
        with self._index_lock:
            as_of = self.as_of or date.today()
            if self._index is None or self._index_key != (self._version, as_of):
                result = to_json_dict(assess(records, as_of=as_of, reference=self.reference, rules=self.rules))
                index = {}
                for patient in result["patients"]:
                    for issued in prompt_cards(patient, result["as_of"], self.source_url):
                        facts = issued["extension"][EXTENSION]
                        index[issued["uuid"]] = IssuedCard(patient["patient_id"], facts["rule_id"],
                                                           facts["evidence_hash"], UNKNOWN_EHR_USER, 0.0)
                self._index, self._index_key = index, (self._version, as_of)
                log.info("feedback: card index of the store built (%d card(s))", len(index))
            return self._index.get(card_uuid)

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
            if records is None and report.ok:  # a record without a spine operation: nothing to assess
                log.info("patient-view: no spine operation in the FHIR data; no cards")
                return []
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
        assessment = assess(_one_patient(records, patient_id), as_of=as_of, reference=self.reference,
                            rules=self.rules)
        result = to_json_dict(assessment)
        patient = next(p for p in result["patients"] if p["patient_id"] == patient_id)
        cards = prompt_cards(patient, result["as_of"], self.source_url)
        self.registry.issued(cards, patient_id, request.context.userId)
        if bundle is None:
            self._log_prompts(assessment)
        log.info("patient-view: %d card(s)", len(cards))
        return cards

    def _log_prompts(self, assessment) -> None:  # noqa: ANN001 — an Assessment
        """A stored patient's prompts into the store's prompt log (docs/outcomes.md: a prompt that goes away
        undecided is still counted). Prefetched FHIR data is not the store's and is not logged. A failure is a
        warning: the cards are answered all the same."""
        from dashboard.store.prompt_log import record_prompts  # noqa: PLC0415 — only when the store is used

        try:
            record_prompts(self.engine(), assessment.prompts, assessment.as_of)
        except Exception as problem:  # noqa: BLE001 — named by type only (no patient data in logs)
            log.warning("patient-view: the prompts could not be written to the prompt log (%s); the cards are "
                        "answered all the same", type(problem).__name__)


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


class Coding(BaseModel):
    model_config = ConfigDict(extra="allow")
    system: str | None = Field(default=None, max_length=500)
    code: str = Field(max_length=200)
    display: str | None = Field(default=None, max_length=500)


class OverrideReason(BaseModel):
    model_config = ConfigDict(extra="allow")
    reason: Coding | None = None
    userComment: str | None = Field(default=None, max_length=2000)  # noqa: N815


class AcceptedSuggestion(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(max_length=200)


class Feedback(BaseModel):
    model_config = ConfigDict(extra="allow")
    card: str = Field(max_length=200)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = Field(default=None, max_length=20)  # noqa: N815
    overrideReason: OverrideReason | None = None  # noqa: N815
    outcomeTimestamp: str = Field(max_length=64)  # noqa: N815


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    feedback: list[Feedback] = Field(min_length=1, max_length=100)


MAX_REASON = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_CLINICIAN = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")
FUTURE_LEEWAY = timedelta(minutes=5)


def _one_line(text: str | None, limit: int = MAX_REASON) -> str:
    text = " ".join(_CONTROL.sub(" ", text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def feedback_decision(item: Feedback) -> tuple[str, str, str]:
    """(decision, reason, reason code for the audit) of one feedback: accepted → ordered; overridden with
    one of this service's reasons → its decision; with another system's reason or none → deferred
    (the prompt stays open in the dashboard). The user's comment is kept with the reason."""
    comment = _one_line(item.overrideReason.userComment if item.overrideReason else None)
    if item.outcome == "accepted":
        return "ordered", "accepted in the EHR (CDS Hooks)", "accepted"
    coding = item.overrideReason.reason if item.overrideReason else None
    if coding is not None and coding.system == CS_OVERRIDE_REASON and coding.code in OVERRIDE_REASONS:
        display, decision = OVERRIDE_REASONS[coding.code]
        code = coding.code
    elif coding is not None:
        display, decision, code = f"overridden in the EHR: {_one_line(coding.display or coding.code, 120)}", \
            "deferred", "other"
    else:
        display, decision, code = "overridden in the EHR without a reason", "deferred", "none"
    reason = f"{display}; comment: {comment}" if comment else display
    return decision, _one_line(reason), code


def _outcome_time(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return None if when > datetime.now(UTC) + FUTURE_LEEWAY else when


def _clinician(claims: dict[str, Any], card: IssuedCard) -> str:
    """Who decided: the JWT's `sub` when the EHR names its user there, else the hook call's `userId`."""
    sub = claims.get("sub")
    if isinstance(sub, str) and _CLINICIAN.match(sub.strip() or "-"):
        return sub.strip()
    return card.user_id


def _check_url(url: str) -> str:
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("source_url must be an absolute http(s) URL")
    return url


def create_app(database: str | None = None, *, as_of: date | None = None,
               source_url: str = DEFAULT_SOURCE_URL, fhir_timeout: float = DEFAULT_TIMEOUT,
               fhir_transport: httpx.BaseTransport | None = None, cors_origins: Sequence[str] = (),
               auth: AuthConfig | None = None, service_url: str | None = None,
               allow_unauthenticated: bool = False, allowed_hosts: Sequence[str] | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, failure_limiter: FailureLimiter | None = None,
               authorize: Callable[[Request], None] | None = None) -> FastAPI:
    """The FastAPI application; `as_of` pins the assessment day (default: today, per request).

    `auth` is the JWT check's configuration (trusted issuers and their keys, `cds_security`); it is
    required unless `allow_unauthenticated`, which only demo mode allows. `service_url` is the service's
    own base URL as the EHR calls it (the JWT `aud` is it plus the endpoint path; default: the
    configuration's). `allowed_hosts` are the Host header values answered (default: the loopback names on
    any port and the service URL's host); `max_body_bytes` the largest request body; `failure_limiter`
    limits failed authentications per client.

    `source_url` is where a card's source links (the rule catalogue; `#rule_id` is added).
    `fhir_timeout` bounds each HTTP request to the EHR's FHIR server; `fhir_transport` replaces the
    network (tests). `cors_origins` is the allow-list of browser origins (exact origins, no wildcard;
    empty: no CORS headers at all). `authorize` is called with every request that passed the JWT check,
    before it is answered, and may raise `HTTPException` to refuse it (a site's extra rule).
    """
    from dashboard.access import MODE_ENV, demo_mode  # noqa: PLC0415

    _check_url(source_url)
    if any(origin.strip() in ("*", "null", "") for origin in cors_origins):
        raise ValueError("cors_origins must name each allowed origin (no '*', 'null' or empty entries)")
    if auth is None and not allow_unauthenticated:
        raise ValueError("the CDS service needs an authentication configuration (trusted issuers and their keys)")
    if auth is not None and allow_unauthenticated:
        raise ValueError("give either an authentication configuration or allow_unauthenticated, not both")
    if allow_unauthenticated and not demo_mode():
        raise ValueError(f"authentication can be switched off in demo mode only ({MODE_ENV}=demo)")
    service_url = service_url or (auth.service_url if auth is not None else None)
    if auth is not None and not service_url:
        raise ValueError("service_url is required with authentication: the JWT audience is the service's URL")
    if service_url:
        _check_url(service_url)
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be positive")

    def authorized(request: Request) -> None:
        if authorize is not None:
            authorize(request)

    app = FastAPI(title="Spine Recovery Dashboard CDS Hooks", docs_url=None, redoc_url=None,
                  dependencies=[Depends(authorized)])
    # Middleware: the last added runs first. Host and size, then CORS (so a refusal carries its headers),
    # then the JWT check, then the app.
    if auth is not None:
        app.add_middleware(AuthGuard, verifier=JwtVerifier(auth, service_url), limiter=failure_limiter)
    else:
        log.warning("CDS service WITHOUT AUTHENTICATION (demo mode): any caller gets any patient's cards")
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           max_age=600)
    hosts = list(allowed_hosts) if allowed_hosts is not None else [
        *LOOPBACK_HOSTS, *([httpx.URL(service_url).netloc.decode("ascii")] if service_url else [])]
    app.add_middleware(HostGuard, allowed_hosts=hosts, max_body_bytes=max_body_bytes)
    checklist = _Checklist(database, as_of, source_url, fhir_timeout, fhir_transport)
    app.state.checklist = checklist

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

    @app.post("/cds-services/{service_id}/feedback")
    def feedback(service_id: str, body: FeedbackRequest, request: Request) -> dict[str, Any]:
        """CDS Hooks 2.0 feedback: each outcome becomes a clinician's decision and an audit entry."""
        if service_id != SERVICE_ID:
            raise HTTPException(status_code=404, detail="no such CDS service (see GET /cds-services)")
        try:
            return record_feedback(body, request)
        except HTTPException:
            raise
        except Exception as problem:  # a driver's message may quote the reason or an id: not passed on
            frames = "".join(traceback.format_tb(problem.__traceback__))
            log.error("feedback failed: %s (message withheld)\n%s", type(problem).__name__, frames)
            raise HTTPException(status_code=500, detail="internal error; the service log names where") from None

    def record_feedback(body: FeedbackRequest, request: Request) -> dict[str, Any]:
        claims = getattr(request.state, "cds_claims", None) or {}
        resolved = []
        for index, item in enumerate(body.feedback):
            card = checklist.card(item.card)
            if card is None:
                raise HTTPException(status_code=404, detail=f"feedback[{index}].card: no card of this service "
                                    "by that uuid (or its prompt's evidence has changed since)")
            when = _outcome_time(item.outcomeTimestamp)
            if when is None:
                raise HTTPException(status_code=400, detail=f"feedback[{index}].outcomeTimestamp must be an "
                                    "ISO 8601 date-time in UTC, not in the future")
            resolved.append((item, card, when, *feedback_decision(item)))
        from dashboard.store import audit  # noqa: PLC0415
        from dashboard.store.decisions import record_decision  # noqa: PLC0415

        recorded, duplicates, done = 0, 0, []
        try:
            with checklist.engine().begin() as conn:
                for item, card, when, decision, reason, code in resolved:
                    key = (item.outcome, code, when.isoformat())
                    if checklist.registry.recorded(item.card, key) or (item.card, key) in done:
                        duplicates += 1
                        continue
                    done.append((item.card, key))
                    clinician = _clinician(claims, card)
                    decision_id = record_decision(conn, patient_id=card.patient_id, rule_id=card.rule_id,
                                                  evidence_hash=card.evidence_hash, decision=decision,
                                                  reason=reason, clinician=clinician, decided_at=when)
                    audit.record(conn, clinician, "decision", role="cds-hooks", patient_id=card.patient_id,
                                 rule_id=card.rule_id, decision=decision, decision_id=decision_id,
                                 kind="cds_feedback", status=code)
                    recorded += 1
        except ValueError:  # the card's patient is not in the store (cards from prefetched data only)
            log.info("feedback: a card's patient is not in the store; nothing recorded")
            raise HTTPException(status_code=409, detail="the patient of a card is not in the dashboard's store; "
                                "no feedback was recorded") from None
        for card_uuid, key in done:  # only once committed: a refused request can be sent again
            checklist.registry.remember(card_uuid, key)
        log.info("feedback: %d decision(s) recorded, %d repeated", recorded, duplicates)
        return {"recorded": recorded, "repeated": duplicates}

    return app


def serve(host: str = "127.0.0.1", port: int = 8090, database: str | None = None,
          as_of: date | None = None, *, source_url: str = DEFAULT_SOURCE_URL, cors_origins: Sequence[str] = (),
          fhir_timeout: float = DEFAULT_TIMEOUT, auth: AuthConfig | None = None, service_url: str | None = None,
          no_auth: bool = False, allowed_hosts: Sequence[str] = (),
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
    """Run the service with uvicorn until interrupted (`no_auth`: demo mode on the loopback only)."""
    import sys  # noqa: PLC0415

    import uvicorn  # noqa: PLC0415

    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO line holds FHIR URLs with patient ids
    if not no_auth:
        service_url = service_url or (auth.service_url if auth else None) or f"http://{host}:{port}"
    hosts = default_hosts(host, port, service_url) + list(allowed_hosts)
    app = create_app(database, as_of=as_of, source_url=source_url, cors_origins=cors_origins,
                     fhir_timeout=fhir_timeout, auth=auth, service_url=service_url, allow_unauthenticated=no_auth,
                     allowed_hosts=hosts, max_body_bytes=max_body_bytes)
    started = time.perf_counter()  # the store is read before the port opens: no first request pays for it
    patients = app.state.checklist.warm()
    print(f"CDS service: {patients:,} stored patients loaded in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)
    if no_auth:
        print("WARNING: the CDS service runs WITHOUT AUTHENTICATION (demo mode, --no-auth): anyone who can "
              f"reach {host}:{port} gets any stored patient's cards. Never with real patients.", file=sys.stderr)
    else:
        print(f"CDS service: JWT required from {len(auth.issuers)} trusted issuer(s); audience "
              f"{service_url}/cds-services/…; Host allowed: {', '.join(hosts)}", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="info")
