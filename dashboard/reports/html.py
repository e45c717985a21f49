"""HTML building blocks shared by the handout and the follow-up report: page style, badges, checklist.

Every value from the records is escaped (notes or reasons could hold markup). The page carries a Content
Security Policy that allows inline data images and styles only, so even a stray reference could not reach
the network when the file is opened.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import pandas as pd

from dashboard.clinical.mrc import format_mrc
from dashboard.clinical.patient_view import band_in_steps
from dashboard.clinical.wording import plain
from dashboard.theme import (
    CATEGORY_LABELS,
    MODALITY_LABELS,
    STATUS_COLOURS,
    STATUS_LABELS,
    URGENCY_COLOURS,
    URGENCY_LABELS,
)

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
NO_PROMPT_COLOUR = "#009E73"
# Text on the badge: white where it contrasts enough, near-black on the light orange (projector glare).
BADGE_TEXT = {"emergency": "#FFFFFF", "urgent": "#1A1A1A", "routine": "#FFFFFF", None: "#FFFFFF"}

STYLE = """
@page { size: A4; margin: 12mm 12mm 13mm 12mm; }
* { box-sizing: border-box; }
body { font-family: "Source Sans Pro", "Source Sans 3", Arial, "Liberation Sans", "DejaVu Sans", sans-serif;
       color: #1A1A1A; font-size: 18px; line-height: 1.4; max-width: 1180px; margin: 0 auto; padding: 24px; }
h1 { font-size: 2.1em; margin: 0 0 0.2em; }
h2 { font-size: 1.8em; margin: 0 0 0.2em; }
h3 { font-size: 1.25em; margin: 1em 0 0.4em; border-bottom: 2px solid #E5E5E5; padding-bottom: 2px;
     break-after: avoid; }
p { margin: 0.3em 0; }
.lead { font-size: 1.15em; }
.muted { color: #555555; }
.small { font-size: 0.85em; }
.badge { display: inline-block; padding: 2px 12px; border-radius: 12px; font-weight: 700; font-size: 0.9em;
         vertical-align: middle; }
.case { break-before: page; padding-top: 0.2em; }
.case-head { display: flex; align-items: baseline; gap: 0.8em; flex-wrap: wrap; }
.facts { font-size: 1.1em; margin: 0.2em 0 0.6em; }
.facts b { font-weight: 700; }
figure { margin: 0.5em 0; break-inside: avoid; }
img.chart { display: block; width: 100%; height: auto; max-height: 228mm; object-fit: contain; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; margin: 0.3em 0 0.6em; }
th, td { border-bottom: 1px solid #DDDDDD; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #F3F3F3; font-weight: 700; }
tr { break-inside: avoid; }
td.nowrap { white-space: nowrap; }
.status { font-weight: 700; }
.prompt { border: 1px solid #CFCFCF; border-left: 8px solid #6E6E6E; border-radius: 6px; padding: 8px 14px;
          margin: 10px 0; break-inside: avoid; }
.prompt h4 { font-size: 1.15em; margin: 0.35em 0 0.25em; }
.prompt ul { margin: 0.2em 0 0.3em 1.2em; padding: 0; }
.rule { font-family: "DejaVu Sans Mono", monospace; font-size: 0.8em; color: #444444; }
.decision { margin-top: 0.4em; padding: 4px 10px; border-radius: 4px; background: #EAF3FA; }
.decision.stale { background: #FFF4DC; }
.decision.none { background: #F3F3F3; }
.missing { background: #FFF8E6; border-left: 6px solid #E69F00; padding: 6px 12px; margin: 0.4em 0; }
.missing ul { margin: 0.2em 0 0.2em 1.2em; padding: 0; }
.note { font-size: 0.85em; color: #444444; border-top: 1px solid #DDDDDD; margin-top: 1.2em; padding-top: 0.4em; }
@media print {
  body { font-size: 10.5pt; padding: 0; max-width: none; }
  .case-head h2 { font-size: 1.9em; }
}
"""


def esc(value: object) -> str:
    """Any value as escaped HTML text; missing reads 'not recorded' (never blank, never normal)."""
    if value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)):
        return "not recorded"
    return html.escape(str(value))


def yes_no(value: object) -> str:
    if value is None or (not isinstance(value, bool) and pd.isna(value)):
        return "not recorded"
    return "yes" if bool(value) else "no"


def page(title: str, body: str) -> str:
    """A complete, self-contained HTML document."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def badge(urgency: str | None) -> str:
    """The app's urgency badge (theme colours), or 'No open prompt' in green."""
    if urgency is None or pd.isna(urgency):
        return f'<span class="badge" style="background:{NO_PROMPT_COLOUR};color:#FFFFFF">No open prompt</span>'
    return (f'<span class="badge" style="background:{URGENCY_COLOURS[urgency]};color:{BADGE_TEXT[urgency]}">'
            f"{esc(URGENCY_LABELS[urgency])}</span>")


def status_cell(status: str | None) -> str:
    if status is None or pd.isna(status):
        return '<span class="status" style="color:#6E6E6E">Not examined</span>'
    return (f'<span class="status" style="color:{STATUS_COLOURS.get(status, "#6E6E6E")}">'
            f"{esc(STATUS_LABELS.get(status, status))}</span>")


def figure(image_ref: str, alt: str) -> str:
    """An inline chart image; `image_ref` is a data URI or a placeholder filled in later."""
    return f'<figure><img class="chart" src="{image_ref}" alt="{esc(alt)}"></figure>'


def muscle_table(muscles: pd.DataFrame, latest_column: str, latest_heading: str, latest_format: Callable,
                 compact: bool = False, band_label: str | None = None) -> str:
    """Root, muscle, side, pre-operative and latest grade, expected grade and range in MRC steps, and status,
    one row per side; `band_label` (what the range is) goes in a note below the table.

    `compact` leaves out the muscle-sides with no deficit (counted in a line below the table).
    """
    rows = []
    shown = muscles[muscles["status"] != "no_deficit"] if compact else muscles
    hidden = len(muscles) - len(shown)
    for m in shown.itertuples(index=False):
        grade, shown_range = (shown[0] for shown in band_in_steps([m.expected_mrc], [m.expected_low],
                                                                   [m.expected_high]))
        expected = grade if shown_range in ("—", grade) else f"{grade} ({shown_range})"
        rows.append(f"<tr><td>{esc(m.root)}</td><td>{esc(m.label)}</td><td>{esc(m.side)}</td>"
                    f"<td>{esc(format_mrc(m.baseline_mrc))}</td><td>{esc(format_mrc(m.latest_mrc))}</td>"
                    f'<td class="nowrap">{latest_format(getattr(m, latest_column))}</td><td>{esc(expected)}</td>'
                    f'<td class="nowrap">{status_cell(m.status)}</td></tr>')
    more = (f'<p class="small muted">{hidden} other muscle-side{"s" if hidden != 1 else ""}: no deficit '
            "(normal before the operation, no new weakness since).</p>") if hidden else ""
    if band_label and rows:
        more += (f'<p class="small muted">Expected grade and, in brackets, the expected range: '
                 f"{esc(band_label)}; in MRC steps.</p>")
    if not rows:
        return more or '<p class="muted">No strength examination recorded.</p>'
    return ("<table><thead><tr><th>Root</th><th>Muscle</th><th>Side</th><th>Pre-op</th><th>Latest</th>"
            f"<th>{esc(latest_heading)}</th><th>Expected (expected range)</th><th>Status</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{more}")


def prompt_card(prompt: dict, decision_html: str) -> str:
    """One checklist prompt: urgency, category and rule, summary, imaging, evidence, source, decision."""
    colour = URGENCY_COLOURS.get(prompt["urgency"], "#6E6E6E")
    evidence = "".join(f"<li>{esc(readable(line))}</li>" for line in prompt["evidence"])
    return (f'<div class="prompt" style="border-left-color:{colour}">'
            f'<p>{badge(prompt["urgency"])} &nbsp;<b>{esc(CATEGORY_LABELS.get(prompt["category"], prompt["category"]))}'
            f"</b></p>"
            f'<h4>{esc(prompt["summary"])}</h4>'
            f'<p><b>Suggested imaging:</b> {esc(MODALITY_LABELS.get(prompt["modality"], prompt["modality"]))}</p>'
            f"<p><b>Why:</b></p><ul>{evidence}</ul>"
            f'<p class="small muted"><b>Source:</b> {esc(prompt["source"])} '
            f'<span class="rule">(checklist rule {esc(prompt["rule_id"])})</span></p>'
            f"{decision_html}</div>")


def readable(line: str) -> str:
    """Evidence codes as words, by the one plain-language renderer (dashboard.clinical.wording.plain)."""
    return plain(line)


def missing_block(notes: list[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{esc(plain(note))}</li>" for note in notes)
    return f'<div class="missing"><b>Missing data</b> (not shown as normal):<ul>{items}</ul></div>'


# A chart's place in the text until its image is rendered. It starts with "<", which esc() turns into
# "&lt;" in every record value, so no text in a record can forge a slot ("@@image-999@@" in a procedure
# crashed the handout when the slot was made of characters a record can hold).
IMAGE_SLOT = "<@image-{}@>"
_SLOT = re.compile(r"<@image-(\d+)@>")


def fill_images(document: str, uris: list[str]) -> str:
    """Put the rendered images into their slots (after the text was checked without them); a slot without
    an image is an error naming it, never an IndexError."""
    def image(match: re.Match) -> str:
        number = int(match[1])
        if number >= len(uris):
            raise ValueError(f"image slot {number} has no rendered image ({len(uris)} rendered)")
        return uris[number]

    return _SLOT.sub(image, document)
