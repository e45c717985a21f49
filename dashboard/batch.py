"""Batch assessment straight from the store, chunk by chunk, with memory bounded by the chunk size.

Patients are independent, so the cohort is assessed in consecutive ranges of patient ids. The output is
the same JSON as `assess --format json`: patients ordered by their most urgent prompt, then patient_id.
Since chunks arrive in patient_id order, each chunk's patients are appended to one spool file per urgency
and the spools are concatenated at the end: sorted output without holding the cohort.
"""

from __future__ import annotations

import json
import tempfile
from datetime import date
from typing import TextIO

from sqlalchemy import Engine

from dashboard.clinical.assessment import URGENCY_ORDER, assess, to_json_dict
from dashboard.clinical.curves import Reference, load_reference
from dashboard.store import load_records, patient_chunks


def assess_store(engine: Engine, out: TextIO, as_of: date, chunk_patients: int = 5000,
                 reference: Reference | None = None) -> int:
    """Write the assessment of every stored patient as JSON to `out`; returns the number of patients."""
    reference = reference or load_reference()
    spools = [tempfile.TemporaryFile("w+", encoding="utf-8") for _ in range(len(URGENCY_ORDER) + 1)]
    counts = [0] * len(spools)
    try:
        for patient_range in patient_chunks(engine, chunk_patients):
            records = load_records(engine, as_of=as_of, patient_range=patient_range)
            for patient in to_json_dict(assess(records, as_of=as_of, reference=reference))["patients"]:
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
