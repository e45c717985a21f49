"""Patient identity: one patient id is one person.

Two ids that a person reads as the same (`P00001`, `p00001`, `Р00001` with a Cyrillic Р, a full-width `Ｐ00001`)
must never become two patients, and one person must never be filed under two ids. So ids are compared by a
*match key*: Unicode NFKC normalisation, case folding, and the Cyrillic and Greek letters that look like Latin
ones mapped to those Latin letters (the look-alikes of Unicode's confusables list that occur in ids). An id that
mixes scripts (Latin with Cyrillic or Greek letters) is refused outright: no clinic system issues one.

An MRN names one person too: the same MRN under two patient ids is an error. MRNs are compared after NFKC,
case folding and removing white space.

The checks of one file are here (used by records validation); the checks of a file against the store use the
same keys (dashboard.store.identity).
"""

from __future__ import annotations

import unicodedata

import numpy as np
import pandas as pd

#: Cyrillic and Greek letters that render like a Latin letter, as that letter (after case folding).
_LOOK_ALIKES = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "m", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ζ": "z", "ϲ": "c",
})
#: Scripts whose letters are told apart here (anything else counts as its own script name).
_SCRIPT_PREFIXES = ("LATIN", "CYRILLIC", "GREEK")


def id_match_key(patient_id: str) -> str:
    """The form two ids are compared in: equal keys mean a reader could take them for the same id."""
    if patient_id.isascii():  # NFKC leaves ASCII as it is and no look-alike is ASCII: the same key, faster
        return patient_id.lower()
    return unicodedata.normalize("NFKC", patient_id).casefold().translate(_LOOK_ALIKES)


def mrn_match_key(mrn: str) -> str:
    if mrn.isascii():  # letters and digits only (most MRNs): no white space to remove
        return mrn.lower() if mrn.isalnum() else "".join(mrn.lower().split())
    return "".join(unicodedata.normalize("NFKC", mrn).casefold().split())


def scripts_of(text: str) -> set[str]:
    """The scripts of the letters in `text` (digits and punctuation belong to none)."""
    scripts = set()
    for char in unicodedata.normalize("NFKC", text):
        if char.isalpha():
            name = unicodedata.name(char, "UNKNOWN")
            scripts.add(next((p for p in _SCRIPT_PREFIXES if name.startswith(p)), name.split(" ")[0]))
    return scripts


def id_problems(ids: pd.Series) -> list[tuple[int, str]]:
    """(row position, message) for each id of one patients file that mixes scripts or matches an earlier id.

    Exact repeats are the duplicate-key check's business; here only ids that differ as text but match.
    """
    problems: list[tuple[int, str]] = []
    values = ids.tolist()
    keys: list[str | None] = []
    for position, patient_id in enumerate(values):
        scripts = () if not isinstance(patient_id, str) or patient_id.isascii() else scripts_of(patient_id)
        if len(scripts) > 1:  # ASCII letters are all Latin
            problems.append((position, f"mixes letters of different scripts ({', '.join(sorted(scripts)).lower()}): "
                                       "look-alike letters make two ids that read the same"))
        keys.append(id_match_key(patient_id) if isinstance(patient_id, str) and len(scripts) <= 1 else None)
    for position, first in _matching_an_earlier_row(keys, values):
        problems.append((position, f"reads the same as patient_id '{values[first]}' on line {first + 2} "
                                   "(case or look-alike letters differ): one person cannot have two ids"))
    return sorted(problems)


def mrn_problems(patients: pd.DataFrame) -> list[tuple[int, str]]:
    """(row position, message) for each MRN that an earlier row of the file gave to another patient id."""
    if "mrn" not in patients.columns:
        return []
    owners = patients["patient_id"].tolist()
    keys = [mrn_match_key(mrn) if isinstance(mrn, str) and isinstance(owner, str) and mrn.strip() else None
            for mrn, owner in zip(patients["mrn"].tolist(), owners, strict=True)]
    return [(position, f"is also the MRN of patient_id '{owners[first]}' on line {first + 2}: one MRN is one person")
            for position, first in _matching_an_earlier_row(keys, owners)]


def _matching_an_earlier_row(keys: list[str | None], owners: list) -> list[tuple[int, int]]:
    """(row, first row) for each row whose key (None: none) the first row with that key holds for another owner,
    in row order."""
    codes, _ = pd.factorize(np.asarray(keys, dtype=object))  # None: -1
    rows = np.flatnonzero(codes >= 0)
    if not len(rows):
        return []
    kept = codes[rows]
    _, first_of_key = np.unique(kept, return_index=True)  # codes are 0…n-1: a code's first row, by code
    first = rows[first_of_key][kept]
    owner = np.asarray(owners, dtype=object)
    other = np.flatnonzero(owner[rows] != owner[first])
    return list(zip(rows[other].tolist(), first[other].tolist(), strict=True))
