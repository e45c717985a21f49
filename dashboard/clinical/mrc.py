"""The MRC grading scale and the key-muscle → nerve-root map, defined once for the whole project.

Clinics record near-normal strength with +/- modifiers (4-, 4+, 5-). We place them a third of a grade
either side of the whole grade, so the scale stays on 0–5 and differences read in grades:
4- = 3.67, 4 = 4, 4+ = 4.33, 5- = 4.67. Decimals 0–5 are accepted as written.
Inter-rater agreement on the modifiers is poor (Chiropr Man Therap 2017, doi 10.1186/s12998-017-0159-6),
so trajectory thresholds treat changes under one whole grade with caution.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Symbolic grades and their place on the numeric scale.
MRC_TOKENS: dict[str, float] = {
    "0": 0.0,
    "1": 1.0,
    "2": 2.0,
    "3": 3.0,
    "4-": 11 / 3,
    "4": 4.0,
    "4+": 13 / 3,
    "5-": 14 / 3,
    "5": 5.0,
}
MRC_MIN = 0.0
MRC_MAX = 5.0
MRC_EXPECTED = "an MRC grade (0–5, 4-, 4+, 5-)"

#: Key muscle (ASIA/ISNCSCI lower-limb key muscles) → its main nerve root, in cranio-caudal order.
MUSCLE_ROOTS: dict[str, str] = {
    "hip_flexion": "L2",
    "knee_extension": "L3",
    "ankle_dorsiflexion": "L4",
    "great_toe_extension": "L5",
    "ankle_plantarflexion": "S1",
}
MUSCLE_LABELS: dict[str, str] = {
    "hip_flexion": "Hip flexion (iliopsoas)",
    "knee_extension": "Knee extension (quadriceps)",
    "ankle_dorsiflexion": "Ankle dorsiflexion (tibialis anterior)",
    "great_toe_extension": "Great-toe extension (EHL)",
    "ankle_plantarflexion": "Ankle plantar flexion (gastrocnemius–soleus)",
}
MUSCLES: tuple[str, ...] = tuple(MUSCLE_ROOTS)
ROOTS: tuple[str, ...] = tuple(MUSCLE_ROOTS.values())
SIDES: tuple[str, ...] = ("L", "R")


def parse_mrc(raw: pd.Series) -> pd.Series:
    """Parse MRC grades to floats, vectorised; anything that is not a grade becomes NaN.

    Works on the distinct values only (a cohort has a handful), so a million rows cost one lookup each.
    """
    text = raw.astype("string").str.strip()
    codes, uniques = pd.factorize(text, use_na_sentinel=True)
    parsed = np.array([_parse_one(u) for u in uniques], dtype=float)
    out = np.full(len(text), np.nan)
    known = codes >= 0
    out[known] = parsed[codes[known]] if len(parsed) else np.nan
    return pd.Series(out, index=raw.index, name=raw.name)


def _parse_one(token: str) -> float:
    if token in MRC_TOKENS:
        return MRC_TOKENS[token]
    try:
        value = float(token)
    except ValueError:
        return np.nan
    if not np.isfinite(value) or not (MRC_MIN <= value <= MRC_MAX):
        return np.nan
    return value


def format_mrc(value: float | None) -> str:
    """Show a numeric grade the way clinicians write it (4.33 → '4+'); missing stays visible as '—'."""
    if value is None or pd.isna(value):
        return "—"
    for token, number in MRC_TOKENS.items():
        if abs(value - number) < 1e-6:
            return token
    return f"{value:.1f}"


def format_mrc_series(values: pd.Series) -> pd.Series:
    """format_mrc for a whole column, through its distinct values; missing reads 'missing'."""
    codes, uniques = pd.factorize(values)
    shown = np.array([format_mrc(v) for v in uniques] + ["missing"], dtype=object)
    return pd.Series(shown[codes], index=values.index)
