"""The FHIR data of one CDS Hooks request: prefetch checked against the templates, the rest fetched.

The service's prefetch templates (`PREFETCH`) are the ones the CDS Hooks 2.0 specification recommends:
one instance read and type searches, each with `{{context.patientId}}`. For each template key the
request's `prefetch` is either usable as it is, or it is not:

- the key is absent (the CDS Client chose not to, or could not, satisfy it), or holds an OperationOutcome
  (the client's prefetch failed), or a searchset Bundle with an error OperationOutcome entry;
- the Bundle is one page of several (`link` with relation `next`: the client paginated it).

What is not usable is fetched from `fhirServer` with the `fhirAuthorization` bearer token (a read, or a
search followed page by page), each HTTP request with a timeout. Without both, or when the FHIR server
cannot give it, the request is refused with `Unusable`, which the service answers with HTTP 412
Precondition Failed as the specification says. A key whose value is `null` means "no such data" and is
used as an empty result (a `null` Patient: there is no patient to assess, also 412).

Whatever the data's origin, `check_same_patient` refuses any of it that is not provably about
`context.patientId` alone. The access token is sent only to `fhirServer` (https, or http on the loopback
interface for local testing), never to a `next` link elsewhere, and is never logged or echoed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

log = logging.getLogger(__name__)

#: The prefetch templates of the service (discovery), by key: an instance read and type searches.
PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
    "procedures": "Procedure?patient={{context.patientId}}",
    "encounters": "Encounter?patient={{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}",
}
#: Resource types the checklist reads: each must be tied to the patient in context by its subject.
TIED_TYPES = ("Encounter", "Observation", "Procedure")
DEFAULT_TIMEOUT = 5.0  # seconds per HTTP request to the FHIR server
MAX_PAGES = 50  # per search: a patient with more pages than this is not assessed (412)
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
_HISTORY = re.compile(r"/_history/[^/]+$")
_KNOWN_TYPES = {*TIED_TYPES, "Condition", "OperationOutcome"}
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TOKEN = "{{context.patientId}}"


class Unusable(Exception):  # noqa: N818 — a refusal, not a programming error
    """The FHIR data cannot be used for the patient in context: answered with 412 Precondition Failed.

    The message is neutral by construction (fixed texts, template keys and HTTP status codes only): it
    never carries an id, name, MRN, token or any other content of the data it refuses.
    """


# ------------------------------------------------------------------------------------ same patient
def entries(value: Any) -> list[tuple[str | None, dict[str, Any]]]:
    """(fullUrl, resource) of a prefetch value: a Bundle's entries or a single resource."""
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") != "Bundle":
        return [(None, value)]
    out = []
    for entry in value.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict):
            full_url = entry.get("fullUrl")
            out.append((full_url if isinstance(full_url, str) else None, resource))
    return out


def check_same_patient(prefetch: dict[str, Any] | None, patient_id: str, fhir_server: str | None = None) -> None:
    """Refuse (`Unusable`) data that is not provably about `patient_id` alone.

    Refused: a Patient other than `patient_id` (or without an id), more than one Patient, and any resource
    whose `subject` or `patient` does not point at `patient_id` — as `Patient/<id>` (optionally
    `/_history/<v>`), as `<fhirServer>/Patient/<id>`, or as the `fullUrl` (e.g. `urn:uuid:…`) of the
    requested Patient's entry. An Encounter, Observation or Procedure without a subject cannot be tied to
    anyone and is refused too. The messages name what is wrong, never whose data it is.
    """
    resources = [(key, url, resource) for key, value in (prefetch or {}).items() for url, resource in entries(value)]
    patients = [(url, resource) for _, url, resource in resources if resource.get("resourceType") == "Patient"]
    ids = {resource.get("id") for _, resource in patients}
    if len(ids) > 1:
        raise Unusable("the prefetched data holds more than one Patient; a request is about one patient")
    if patients and ids != {patient_id}:
        raise Unusable("the prefetched Patient is not the patient in context (context.patientId)")
    own = {f"Patient/{patient_id}"} | {url for url, _ in patients if url}
    if fhir_server:
        own.add(f"{fhir_server.rstrip('/')}/Patient/{patient_id}")
    for key, _, resource in resources:
        kind = resource.get("resourceType")
        if kind == "Patient":
            continue
        named = kind if kind in _KNOWN_TYPES else "resource"  # only names the service knows are echoed
        where = f"prefetch '{key}': a {named}" if key in PREFETCH else f"prefetch: a {named}"
        pointers = [resource[e] for e in ("subject", "patient") if e in resource]
        if not pointers and kind in TIED_TYPES:
            raise Unusable(f"{where} has no subject: it cannot be tied to the patient in context")
        for pointer in pointers:
            target = pointer.get("reference") if isinstance(pointer, dict) else None
            if not isinstance(target, str) or _HISTORY.sub("", target) not in own:
                raise Unusable(f"{where} is about another subject than the patient in context "
                               "(context.patientId)")


# ------------------------------------------------------------------------------------ completeness
def _failed(value: dict[str, Any]) -> bool:
    """An OperationOutcome (or a Bundle carrying one of severity error/fatal): the client's fetch failed."""
    outcomes = [value] if value.get("resourceType") == "OperationOutcome" else [
        r for _, r in entries(value) if r.get("resourceType") == "OperationOutcome"]
    return any(value.get("resourceType") == "OperationOutcome" or issue.get("severity") in ("error", "fatal")
               for outcome in outcomes for issue in (outcome.get("issue") or [{}]) if isinstance(issue, dict))


def next_link(bundle: dict[str, Any]) -> str | None:
    """The `next` page of a paged Bundle, if any."""
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None


def shortfalls(prefetch: dict[str, Any] | None) -> dict[str, str]:
    """Template key → why its prefetch is not usable as it is ('missing', 'failed', 'paged', 'invalid')."""
    prefetch = prefetch or {}
    out = {}
    for key in PREFETCH:
        if key not in prefetch:
            out[key] = "missing"
            continue
        value = prefetch[key]
        if value is None:
            continue  # the client has no data for this template: an empty result
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            out[key] = "invalid"
        elif _failed(value):
            out[key] = "failed"
        elif value.get("resourceType") == "Bundle" and next_link(value):
            out[key] = "paged"
    return out


WHY = {"missing": "is missing", "failed": "holds an OperationOutcome (the prefetch failed)",
       "paged": "is one page of several (Bundle.link next)", "invalid": "is not a FHIR resource"}


# ---------------------------------------------------------------------------------------- fetching
def _same_origin(url: httpx.URL, base: httpx.URL) -> bool:
    base_path = base.path.rstrip("/") + "/"
    return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port) and (
        url.path.rstrip("/") + "/").startswith(base_path)


class FhirSource:
    """Reads and searches on the CDS Client's FHIR server, with its bearer token and a timeout."""

    def __init__(self, base: str, token: str, timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base = httpx.URL(base.rstrip("/") + "/")
        if self.base.scheme != "https" and not (self.base.scheme == "http" and self.base.host in LOOPBACK):
            raise Unusable("fhirServer must be an https URL (the access token is not sent in clear text)")
        self.timeout = timeout
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout), transport=transport, follow_redirects=False,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"})

    def __enter__(self) -> FhirSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def _get(self, url: httpx.URL, key: str) -> dict[str, Any] | None:
        if not _same_origin(url, self.base):
            raise Unusable(f"prefetch '{key}': a next link points outside fhirServer; the token is not sent there")
        try:
            response = self._client.get(url)
        except httpx.TimeoutException:
            raise Unusable(f"prefetch '{key}': the FHIR server did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as problem:
            raise Unusable(f"prefetch '{key}': the FHIR server cannot be reached ({type(problem).__name__})") from None
        if response.status_code in (404, 410):
            return None
        if response.status_code != 200:
            raise Unusable(f"prefetch '{key}': the FHIR server answered HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise Unusable(f"prefetch '{key}': the FHIR server's answer is not JSON") from None
        if not isinstance(data, dict):
            raise Unusable(f"prefetch '{key}': the FHIR server's answer is not a FHIR resource")
        return data

    def template(self, key: str, patient_id: str) -> dict[str, Any] | None:
        """The template of `key` for the patient: the Patient (None when there is none) or a searchset."""
        path = PREFETCH[key].replace(_TOKEN, quote(patient_id, safe=""))
        data = self._get(self.base.join(path), key)
        if key == "patient":
            if data is not None and data.get("resourceType") != "Patient":
                raise Unusable(f"prefetch '{key}': the FHIR server did not answer with a Patient")
            return data
        if data is None or data.get("resourceType") != "Bundle":
            raise Unusable(f"prefetch '{key}': the FHIR server did not answer with a search Bundle")
        return self.rest(key, data)

    def rest(self, key: str, bundle: dict[str, Any]) -> dict[str, Any]:
        """A paged Bundle with all its following pages: one Bundle of every entry."""
        out = {k: v for k, v in bundle.items() if k != "link"} | {"entry": list(bundle.get("entry") or [])}
        url, pages = next_link(bundle), 1
        while url:
            pages += 1
            if pages > MAX_PAGES:
                raise Unusable(f"prefetch '{key}': more than {MAX_PAGES} pages; not assessed")
            page = self._get(self.base.join(url), key)
            if page is None or page.get("resourceType") != "Bundle":
                raise Unusable(f"prefetch '{key}': a following page is not a search Bundle")
            if _failed(page):
                raise Unusable(f"prefetch '{key}': the FHIR server answered with an OperationOutcome")
            out["entry"] += list(page.get("entry") or [])
            url = next_link(page)
        return out


def complete(prefetch: dict[str, Any] | None, patient_id: str, fhir_server: str | None,
             authorization: dict[str, Any] | None, *, timeout: float = DEFAULT_TIMEOUT,
             transport: httpx.BaseTransport | None = None,
             on_fetch: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The prefetch with every template key usable, fetching what is not; `Unusable` when it cannot be had."""
    gaps = shortfalls(prefetch)
    data = {key: (prefetch or {}).get(key) for key in PREFETCH}
    if gaps:
        if not fhir_server or not authorization:
            key, why = next(iter(gaps.items()))
            more = f" (and {len(gaps) - 1} more)" if len(gaps) > 1 else ""
            raise Unusable(f"prefetch '{key}' {WHY[why]}{more}, and the request gives no fhirServer with "
                           "fhirAuthorization to fetch it from")
        if not _FHIR_ID.match(patient_id) or set(patient_id) == {"."}:
            raise Unusable("context.patientId is not a FHIR id; nothing is fetched")
        with FhirSource(fhir_server, authorization["access_token"], timeout, transport) as source:
            for key, why in gaps.items():
                if on_fetch is not None:
                    on_fetch(key)
                value = data[key] if why == "paged" else None
                data[key] = source.rest(key, value) if value is not None else source.template(key, patient_id)
        log.info("patient-view: %d prefetch key(s) fetched from the FHIR server", len(gaps))
    if data["patient"] is None:
        raise Unusable("the Patient in context is not there (prefetch 'patient' is null or not found)")
    return data
