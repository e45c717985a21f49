"""Batch assessment straight from the store, chunk by chunk, with memory bounded by the chunk size.

Patients are independent, so the cohort is assessed in consecutive ranges of patient ids. The output is
the same JSON as `assess --format json`: patients ordered by their most urgent prompt, then patient_id.
Since chunks arrive in patient_id order, each chunk's patients are appended to one spool file per urgency
and the spools are concatenated at the end: sorted output without holding the cohort.

Each chunk's prompts can be written to the store's prompt log as they are computed (`on_assessed`, and
`log_store_prompts` for the import), so prompt performance knows every prompt the store ever produced.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TextIO

from sqlalchemy import Engine

from dashboard.clinical.assessment import URGENCY_ORDER, Assessment, assess, to_json_dict
from dashboard.clinical.curves import Reference, load_reference
from dashboard.store import load_records, patient_chunks
from dashboard.store.prompt_log import record_prompts


def assess_store(engine: Engine, out: TextIO, as_of: date, chunk_patients: int = 5000,
                 reference: Reference | None = None,
                 on_assessed: Callable[[Assessment], None] | None = None) -> int:
    """Write the assessment of every stored patient as JSON to `out`; returns the number of patients.
    `on_assessed` is called with each chunk's assessment (the command line logs its prompts)."""
    reference = reference or load_reference()
    spools = [tempfile.TemporaryFile("w+", encoding="utf-8") for _ in range(len(URGENCY_ORDER) + 1)]
    counts = [0] * len(spools)
    try:
        for patient_range in patient_chunks(engine, chunk_patients):
            records = load_records(engine, as_of=as_of, patient_range=patient_range)
            result = assess(records, as_of=as_of, reference=reference)
            if on_assessed is not None:
                on_assessed(result)
            for patient in to_json_dict(result)["patients"]:
                rank = min((URGENCY_ORDER[p["urgency"]] for p in patient["prompts"]), default=len(URGENCY_ORDER))
                spools[rank].write(("," if counts[rank] else "") + json.dumps(patient, ensure_ascii=False))
                counts[rank] += 1
        out.write(f'{{"as_of": "{as_of.isoformat()}", "reference": {json.dumps(reference.reference_id)}, '
                  '"patients": [')
        written = 0
        for spool, count in zip(spools, counts, strict=True):
            if not count:
                continue
            spool.seek(0)
            if written:
                out.write(",")
            while block := spool.read(1 << 20):
                out.write(block)
            written += count
        out.write("]}\n")
        return written
    finally:
        for spool in spools:
            spool.close()


@dataclass
class LoggedPrompts:
    """What log_store_prompts did: prompts computed, rows added to the log, patients assessed."""

    prompts: int = 0
    added: int = 0
    patients: int = 0

    def add(self, result: Assessment, engine: Engine) -> None:
        """Log one chunk's prompts (insert-if-absent) and count them."""
        self.added += record_prompts(engine, result.prompts, result.as_of)
        self.prompts += len(result.prompts)
        self.patients += len(result.patients)


def log_store_prompts(engine: Engine, as_of: date, chunk_patients: int = 5000,
                      reference: Reference | None = None, patient_ids: Sequence[str] | None = None) -> LoggedPrompts:
    """Assess stored patients chunk by chunk and log the prompts not logged yet: every patient, or only
    `patient_ids` (after an import: the patients it added or changed, whose prompts are known to have fired even
    if they are gone before anyone opens the app; the others' prompts are logged when the app assesses them)."""
    reference = reference or load_reference()
    logged = LoggedPrompts()
    if patient_ids is None:
        for patient_range in patient_chunks(engine, chunk_patients):
            logged.add(assess(load_records(engine, as_of=as_of, patient_range=patient_range), as_of=as_of,
                              reference=reference), engine)
        return logged
    ids = sorted(patient_ids)
    for first in range(0, len(ids), chunk_patients):
        records = load_records(engine, as_of=as_of, patient_ids=ids[first:first + chunk_patients])
        logged.add(assess(records, as_of=as_of, reference=reference), engine)
    return logged
