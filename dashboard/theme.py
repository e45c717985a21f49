"""Colours and labels shared by every page, chart and report (Okabe–Ito palette: safe for colour-blind
readers and legible on a projector). Presentation only: no clinical logic here."""

from __future__ import annotations

from dashboard.clinical.wording import MODALITY_WORDS, STATUS_WORDS, URGENCY_WORDS

URGENCY_COLOURS = {"emergency": "#D55E00", "urgent": "#E69F00", "routine": "#0072B2"}
URGENCY_LABELS = URGENCY_WORDS  # the core's words (dashboard.clinical.wording)
URGENCY_ICONS = {"emergency": ":material/emergency:", "urgent": ":material/priority_high:",
                 "routine": ":material/schedule:"}
STATUS_COLOURS = {
    "new_deficit": "#D55E00", "deteriorating": "#D55E00", "behind": "#E69F00", "on_track": "#009E73",
    "recovered": "#009E73", "no_deficit": "#009E73", "no_baseline": "#6E6E6E", "insufficient_data": "#6E6E6E",
}
STATUS_LABELS = STATUS_WORDS  # the core's words (dashboard.clinical.wording), one place for every screen
MUSCLE_SHORT = {"hip_flexion": "Hip flexion", "knee_extension": "Knee extension",
                "ankle_dorsiflexion": "Ankle dorsiflexion", "great_toe_extension": "Great-toe extension",
                "ankle_plantarflexion": "Plantar flexion"}
MODALITY_LABELS = MODALITY_WORDS
CATEGORY_LABELS = {"red_flag": "Red flag", "compression": "Compression", "recurrence": "Recurrence (disc or scar)",
                   "hardware": "Hardware", "recovery": "Recovery"}
BAND_FILL = "rgba(86, 180, 233, 0.25)"  # sky blue
EXPECTED_LINE = "#0072B2"
MEASURED = "#000000"
BASELINE = "#CC79A7"
