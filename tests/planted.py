"""Identifiers planted in the free-text fields that reach de-identified output (issue 22, point 10).

A security review typed nine kinds of identifiers into the procedure and surgeon fields; all nine reached
the conference screen and the handout. The same kinds are planted here, in several spellings, into every
patient of the demo cohort (cycling through the variants), and NEEDLES lists what must never be found in
any de-identified output: distinctive pieces of each, so that a partly passed value is caught too.
"""

from __future__ import annotations

import re

from dashboard.clinical.records.validate import Records
from tests.builders import with_columns

#: Recorded procedure texts, each with identifiers around a known procedure name.
PROCEDURES = (
    "TLIF L4-L5 - daughter Ingrid Halvorsen +46 70 123 45 67, call her first",
    "PLIF op 2026-03-14 (14/03/2026, 14 March 2026, March 14, 2026, 14.03.26) at St Olav's Hospital, bed 12B",
    "posterolateral fusion; previous MRN8812345; ingrid.halvorsen@example.org; Storgatan 14, 114 55 Stockholm",
    "decompression, seen with wife Maren Quist 0176 5551234 on 03/04/2025",
    "@@image-999@@",
)
#: Recorded surgeon texts: a patient's name, a relative with a phone number, a bed, another MRN.
SURGEONS = (
    "Dr Tanaka",
    "Nils Berg (the patient himself)",
    "Dr Okafor, ward 7 bed 12B, brother Ingrid Halvorsen 0176 5551234",
    "Dr Moreau re MRN8812345, St Olav's Hospital",
    "@@image-999@@",
)
#: The planted kinds and pieces of them: none may appear in de-identified output (case-insensitive).
NEEDLES = {
    "a relative's name": ("Ingrid", "Halvorsen", "Maren Quist", "Quist", "daughter", "brother"),
    "a relative's phone number": ("123 45 67", "+46", "5551234", "0176"),
    "a date": ("2026-03-14", "14/03/2026", "14 March 2026", "March 14", "14.03.26", "03/04/2025"),
    "a hospital": ("Olav", "Hospital"),
    "a bed number": ("12B", "ward 7"),
    "another MRN": ("MRN8812345", "8812345"),
    "an e-mail address": ("example.org", "halvorsen@"),
    "an address": ("Storgatan", "114 55", "Stockholm"),
    "a name in the surgeon field": ("Nils Berg", "Tanaka", "Okafor", "Moreau"),
    "a forged image slot": ("@@image", "image-999"),
}


def plant(records: Records) -> Records:
    """The records with every surgery's procedure and every patient's surgeon replaced by planted text."""
    return with_columns(records, {
        "surgeries.csv": {"procedure": [PROCEDURES[i % len(PROCEDURES)] for i in range(len(records.surgeries))]},
        "patients.csv": {"surgeon": [SURGEONS[i % len(SURGEONS)] for i in range(len(records.patients))]}})


def _as_word(piece: str) -> re.Pattern:
    """A piece matched as a whole word where it starts or ends with a letter or digit: "Moreau" is found in
    "Dr Moreau" but not in the citation "LaMoreaux" of the rules' sources."""
    start = r"(?<!\w)" if re.match(r"\w", piece) else ""
    end = r"(?!\w)" if re.search(r"\w$", piece) else ""
    return re.compile(start + re.escape(piece.casefold()) + end)


def found(text: str) -> list[str]:
    """The planted kinds found in `text` (kinds, not values: a failing test names what leaked)."""
    flat = re.sub(r"\s+", " ", text).casefold()
    return [kind for kind, pieces in NEEDLES.items() if any(_as_word(piece).search(flat) for piece in pieces)]
