"""Free-text record fields as controlled values for de-identified output: procedure, levels, surgeon.

A procedure or surgeon field can hold anything a clinician typed, including a relative's phone number or
another patient's MRN (issue 22). De-identified output never shows such text: the procedure becomes a
term of data/vocabulary/procedures.yaml or "other procedure", levels become lumbar segments or "other
level", and the surgeon becomes a pseudonym ("Surgeon A") that is the same for every case of a cohort.
Only values built here, never the recorded text, go out. Pure: no Streamlit, no Plotly.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from dashboard.clinical.data_files import read_yaml
from dashboard.clinical.records.format import LUMBAR_SEGMENTS

VOCABULARY_PATH = Path(__file__).resolve().parents[2] / "data" / "vocabulary" / "procedures.yaml"
NOT_RECORDED = "operation not recorded"
OTHER_LEVEL = "other level"
LEVELS_NOT_RECORDED = "levels not recorded"
SURGEON_NOT_RECORDED = "surgeon not recorded"

# A lumbar segment as clinicians write it: "L4-L5", "L4/5", "L4–5", "L5-S1", "L5/S1", "L4L5".
_SEGMENT = r"l([1-5])\s*(?:-|/|–|—)?\s*(?:l?([1-5])|(s1))"
_LEVEL_CLAUSE = re.compile(rf"(?:\b(?:at|of|levels?)\s+)*\b{_SEGMENT}\b(?:\s*(?:,|;|and|&)?\s*\b{_SEGMENT}\b)*",
                           re.IGNORECASE)
_SEPARATORS = re.compile(r"[-–—/.,;:()\[\]_]+")
_TITLE = re.compile(r"^(?:dr|prof|professor|mr|mrs|ms|miss)\b\.?\s*", re.IGNORECASE)


class VocabularyError(ValueError):
    """A vocabulary file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Vocabulary:
    """Recorded spellings (normalised) to controlled terms, and the term for everything else."""

    terms: dict[str, str]  # normalised recorded spelling → term
    other: str
    path: Path

    def procedure(self, recorded: object) -> str:
        """The controlled term for a recorded procedure; `other` unless every ' + ' part is a known spelling."""
        if _missing(recorded):
            return NOT_RECORDED
        parts = [normalise_procedure(part) for part in str(recorded).split("+")]
        terms = [self.terms.get(part) for part in parts]
        if not parts or any(term is None for term in terms):
            return self.other
        return " + ".join(dict.fromkeys(terms))  # type: ignore[arg-type]  # None excluded above


@functools.lru_cache(maxsize=4)
def load_vocabulary(path: Path = VOCABULARY_PATH) -> Vocabulary:
    """The procedure vocabulary; a spelling listed under two terms is an error (which term would it be?)."""
    try:
        raw = read_yaml(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as problem:
        raise VocabularyError(f"{path}: cannot be read ({problem.__class__.__name__})") from problem
    if not isinstance(raw, dict) or not isinstance(raw.get("terms"), list) or not raw.get("other"):
        raise VocabularyError(f"{path}: needs 'other' and a list 'terms'")
    terms: dict[str, str] = {}
    for number, entry in enumerate(raw["terms"], start=1):
        if not isinstance(entry, dict) or not entry.get("term") or not isinstance(entry.get("recorded"), list):
            raise VocabularyError(f"{path}: term {number}: needs 'term' and a list 'recorded'")
        for spelling in [entry["term"], *entry["recorded"]]:
            key = normalise_procedure(str(spelling))
            if terms.get(key, entry["term"]) != entry["term"]:
                raise VocabularyError(f"{path}: term {number} ({entry['term']}): spelling {spelling!r} "
                                      f"is already listed under {terms[key]}")
            terms[key] = str(entry["term"])
    return Vocabulary(terms, str(raw["other"]), Path(path))


def normalise_procedure(text: str) -> str:
    """Recorded procedure text as compared with the vocabulary: case-folded, levels set aside, one space."""
    text = _LEVEL_CLAUSE.sub(" ", text.casefold())
    return " ".join(_SEPARATORS.sub(" ", text).split())


def procedure_term(recorded: object, vocabulary: Vocabulary | None = None) -> str:
    """A recorded procedure as a controlled term ("TLIF", "other procedure", "operation not recorded")."""
    return (vocabulary or load_vocabulary()).procedure(recorded)


def levels_term(recorded: object) -> str:
    """Recorded levels ("L4-L5;L5-S1") as "L4–L5, L5–S1"; anything that is not a lumbar segment as one
    "other level" (never its text)."""
    if _missing(recorded):
        return LEVELS_NOT_RECORDED
    shown: list[str] = []
    for part in str(recorded).split(";"):
        segment = part.strip().upper()
        if not segment:
            continue
        shown.append(segment.replace("-", "–") if segment in LUMBAR_SEGMENTS else OTHER_LEVEL)
    return ", ".join(dict.fromkeys(shown)) or LEVELS_NOT_RECORDED


def _missing(value: object) -> bool:
    return value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)) or not str(value).strip()


# ------------------------------------------------------------------------------------------------ surgeons

def surgeon_key(recorded: object) -> str | None:
    """Who a surgeon field names, for grouping: case-folded, one space, a leading title ("Dr") dropped."""
    if _missing(recorded):
        return None
    text = " ".join(str(recorded).casefold().split())
    return _TITLE.sub("", text) or text


def _letters(index: int) -> str:
    """0 → A, 25 → Z, 26 → AA: as many pseudonyms as there are surgeons."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


@dataclass(frozen=True)
class SurgeonPseudonyms:
    """"Surgeon A", "Surgeon B", … for the surgeons of a cohort.

    Letters follow a hash of each surgeon's key, not the alphabet, so a letter says nothing about a name;
    they stay the same for as long as the cohort's set of surgeons does (a new surgeon may move them).
    """

    by_key: dict[str, str]

    @classmethod
    def of(cls, recorded: Iterable[object]) -> SurgeonPseudonyms:
        keys = {key for value in recorded if (key := surgeon_key(value)) is not None}
        ordered = sorted(keys, key=lambda k: (hashlib.sha256(k.encode("utf-8")).hexdigest(), k))
        return cls({key: f"Surgeon {_letters(i)}" for i, key in enumerate(ordered)})

    def pseudonym(self, recorded: object) -> str:
        """The surgeon's pseudonym; a surgeon not in the cohort is not named at all."""
        key = surgeon_key(recorded)
        if key is None:
            return SURGEON_NOT_RECORDED
        return self.by_key.get(key, "surgeon not shown")

    @property
    def labels(self) -> list[str]:
        """Every pseudonym, A first (for a filter)."""
        return sorted(self.by_key.values(), key=lambda label: (len(label), label))
