"""Plain words for people: evidence lines, statuses, findings and prompts, as every screen and report says them.

The rules engine writes evidence with the record format's codes ("great_toe_extension L (L5) 3",
"saddle_anesthesia, urinary_retention: yes", "crp_rise_from_nadir"): exact, and what the evidence hash is
computed from, but not what a clinician should read. `plain()` turns such a line into words; it is the one
renderer used by the patient page, the conference page, the reports and the CDS cards. Pure: no Streamlit,
no Plotly, no HTML (callers escape for their medium).
"""

from __future__ import annotations

import re

from dashboard.clinical.mrc import MUSCLES

#: A muscle as said in a sentence (the record format's code → words).
MUSCLE_WORDS: dict[str, str] = {
    "hip_flexion": "hip flexion", "knee_extension": "knee extension", "ankle_dorsiflexion": "ankle dorsiflexion",
    "great_toe_extension": "great-toe extension", "ankle_plantarflexion": "ankle plantar flexion",
}
SIDE_WORDS: dict[str, str] = {"L": "left", "R": "right"}
#: How soon, in words that say hours where hours matter.
URGENCY_WORDS: dict[str, str] = {"emergency": "Emergency — now, within hours", "urgent": "Urgent — within days",
                                 "routine": "Routine — next planned review"}
#: What to do, in words.
MODALITY_WORDS: dict[str, str] = {
    "mri": "MRI lumbar spine", "mri_contrast": "MRI lumbar spine with and without gadolinium",
    "ct": "CT lumbar spine (thin-slice, metal-artefact reduction)", "ct_myelography": "CT myelography",
    "radiograph": "Radiographs", "flexion_extension_radiograph": "Flexion-extension radiographs",
    "venous_duplex": "Venous duplex ultrasound of the leg",
    "electrodiagnostics": "Electrodiagnostics (EMG and nerve conduction; not imaging)",
}
#: Visit findings and derived signals as said in a sentence.
FINDING_WORDS: dict[str, str] = {
    "radicular_pain": "radicular leg pain", "numbness": "numbness", "saddle_anesthesia": "saddle anaesthesia",
    "urinary_retention": "urinary retention", "fecal_incontinence": "faecal incontinence", "fever": "fever",
    "wound_drainage": "wound drainage", "calf_swelling": "calf swelling", "screw_lucency": "lucency around a screw",
    "implant_migration": "implant migration", "rod_fracture": "rod fracture",
    "crp_rise_from_nadir": "CRP rising again from its lowest", "crp_mg_l": "CRP (mg/L)",
    "leg_pain_nrs": "leg pain (0–10)", "back_pain_nrs": "back pain (0–10)", "odi": "ODI (0–100)",
    "anal_tone_reduced": "reduced anal tone", "perianal_sensation_reduced": "reduced perianal sensation",
    "altered_mentation": "altered mentation", "respiratory_rate": "respiratory rate (/min)",
    "systolic_bp": "systolic blood pressure (mmHg)",
}
#: Muscle-side statuses of the trajectory, in words.
STATUS_WORDS: dict[str, str] = {
    "new_deficit": "Weaker than before surgery", "deteriorating": "Deteriorating", "behind": "Behind expected",
    "on_track": "On track", "recovered": "Normal now", "no_deficit": "No deficit", "no_baseline": "No baseline",
    "insufficient_data": "Insufficient data",
}
#: Record fields as headings or form labels.
FIELD_WORDS: dict[str, str] = {
    "leg_pain_nrs": "Leg pain", "back_pain_nrs": "Back pain", "odi": "ODI", "crp_mg_l": "CRP",
    "exam_date": "Date", "visit_date": "Date", "mrc": "Grade", "muscle": "Muscle", "side": "Side",
    **{code: words[0].upper() + words[1:] for code, words in FINDING_WORDS.items() if code not in
       ("crp_mg_l", "leg_pain_nrs", "back_pain_nrs", "odi", "respiratory_rate", "systolic_bp")},
    "respiratory_rate": "Respiratory rate", "systolic_bp": "Systolic BP",
}

_MUSCLE = "|".join(sorted(MUSCLES, key=len, reverse=True))
# "great_toe_extension L (L5) 3" / "ankle_dorsiflexion R 4-" / "hip_flexion L": muscle, side, root, grade.
_MUSCLE_SIDE = re.compile(rf"\b({_MUSCLE})\s+([LR])\b(\s+\((?:L\d|S\d)\))?(\s+(?:[0-5][+-]?)(?![\d.]))?")
_MUSCLE_ALONE = re.compile(rf"\b({_MUSCLE})\b")
_FINDINGS = "|".join(sorted(FINDING_WORDS, key=len, reverse=True))
# "saddle_anesthesia, urinary_retention: yes" (a list of findings, then their value)
_FINDING_LIST = re.compile(rf"\b((?:{_FINDINGS})(?:\s*,\s*(?:{_FINDINGS}))*)\s*:\s*(yes|no)\b")
_FINDING = re.compile(rf"\b({_FINDINGS})\b")
_CODE = re.compile(r"\b[a-z]+(?:_[a-z0-9]+)+\b")


def _muscle_side(match: re.Match) -> str:
    muscle, side, root, grade = match.groups()
    text = f"{SIDE_WORDS[side]} {MUSCLE_WORDS[muscle]}"
    if root:
        text += f" {root.strip()}"
    if grade:
        text += f": grade {grade.strip()}"
    return text


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _finding_list(match: re.Match) -> str:
    words = [FINDING_WORDS[code.strip()] for code in match[1].split(",")]
    return _join(words) + (" present" if match[2] == "yes" else (" absent" if len(words) == 1 else " all absent"))


def plain(text: object) -> str:
    """A line of evidence (or any note the core writes with record codes) in words; unknown codes lose their
    underscores. Dates, days and grades are kept as they are."""
    line = str(text)
    line = _MUSCLE_SIDE.sub(_muscle_side, line)
    line = _MUSCLE_ALONE.sub(lambda m: MUSCLE_WORDS[m[1]], line)
    line = _FINDING_LIST.sub(_finding_list, line)
    line = _FINDING.sub(lambda m: FINDING_WORDS[m[1]], line)
    return _CODE.sub(lambda m: m[0].replace("_", " "), line)


def evidence_lines(evidence) -> list[str]:
    """A prompt's evidence lines, each in words."""
    return [plain(line) for line in evidence]


def status_words(status: object) -> str:
    """A muscle-side status in words ("not examined" when there is none)."""
    if not isinstance(status, str):
        return "Not examined"
    return STATUS_WORDS.get(status, plain(status))


def field_words(field: object) -> str:
    """A record field as a label ("leg_pain_nrs" → "Leg pain")."""
    name = str(field)
    return FIELD_WORDS.get(name, plain(name).capitalize())
