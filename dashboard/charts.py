"""Plotly figures built from core results (PatientView, curve tables). Drawing only: no clinical logic.

Time runs in weeks since the index operation, so the same figures serve identified and de-identified views.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.core.grades import MUSCLE_ROOTS, MUSCLES, SIDES, format_mrc
from dashboard.core.patient_view import PatientView
from dashboard.theme import BAND_FILL, BASELINE, EXPECTED_LINE, MEASURED, MUSCLE_SHORT, STATUS_COLOURS, STATUS_LABELS

WEEK = 7.0
WEEK_TICKS = [-4, 0, 2, 6, 13, 26, 52, 78, 104]
FONT = dict(family="Source Sans Pro, Arial, sans-serif", size=15)


def _band_polygon(curve: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    weeks = curve["day"].to_numpy() / WEEK
    return (np.concatenate([weeks, weeks[::-1]]),
            np.concatenate([curve["expected_high"].to_numpy(), curve["expected_low"].to_numpy()[::-1]]))


def panel_title(muscle: str, side: str) -> str:
    """'L4 Ankle dorsiflexion — left': short enough for two panels side by side on a projector."""
    return f"{MUSCLE_ROOTS[muscle]} {MUSCLE_SHORT[muscle]} — {'left' if side == 'L' else 'right'}"


def muscles_with_weakness(view: PatientView) -> list[str]:
    """Muscles graded below normal on either side at any exam: the panels worth a surgeon's time."""
    weak = set(view.exams.loc[view.exams["mrc"] < 5, "muscle"])
    return [m for m in MUSCLES if m in weak]


@functools.lru_cache(maxsize=8)
def _grid_layout(n_rows: int) -> str:
    """The layout of an n×2 grid with shared axes, made once by make_subplots and reused (as JSON)."""
    grid = make_subplots(rows=n_rows, cols=2, shared_xaxes=True, shared_yaxes=True,
                         subplot_titles=[f"title-{i}" for i in range(n_rows * 2)],
                         vertical_spacing=0.06 if n_rows > 3 else 0.1, horizontal_spacing=0.04)
    return json.dumps(grid.to_dict()["layout"])


def _axis(r: int, c: int) -> str:
    """Axis suffix of panel (row, col) in a two-column grid: '' for the first, then 2, 3, …"""
    index = (r - 1) * 2 + c
    return "" if index == 1 else str(index)


def strength_figure(view: PatientView, large: bool = False, show_all: bool = False) -> go.Figure:
    """Small multiples: one row per muscle (weak ones unless show_all), left and right, against the band.

    The figure is assembled as a plain specification and validated by plotly once at the end: building
    it trace by trace cost a quarter of a second per patient, too slow for a two-minute clinic review.
    """
    examined = [m for m in MUSCLES if m in set(view.muscles["muscle"])] or list(MUSCLES[2:])
    if not show_all:
        examined = muscles_with_weakness(view) or examined
    layout = json.loads(_grid_layout(len(examined)))
    titles = iter(panel_title(m, s) for m in examined for s in SIDES)
    for annotation in layout["annotations"]:
        annotation["text"] = next(titles)
    max_week = max(26.0, (view.exams["day"].max() / WEEK + 4) if view.exams["day"].notna().any() else 26.0)
    legend_shown: set[str] = set()

    def legend(name: str) -> bool:
        first = name not in legend_shown
        legend_shown.add(name)
        return first

    traces, annotations, shapes = [], [], []
    for r, muscle in enumerate(examined, start=1):
        for c, side in enumerate(SIDES, start=1):
            axis = _axis(r, c)
            on_axes = {"xaxis": f"x{axis}", "yaxis": f"y{axis}", "type": "scatter"}
            traces.append({**on_axes, "x": [None], "y": [None], "showlegend": False, "hoverinfo": "skip"})
            curve = view.curves[(view.curves["muscle"] == muscle) & (view.curves["side"] == side)]
            curve = curve[curve["day"] <= max_week * WEEK]
            if not curve.empty:
                x, y = _band_polygon(curve)
                traces.append({**on_axes, "x": x, "y": y, "fill": "toself", "fillcolor": BAND_FILL,
                               "line": {"width": 0}, "hoverinfo": "skip", "mode": "lines",
                               "name": "Expected band (10th–90th percentile)", "legendgroup": "band",
                               "showlegend": legend("band")})
                traces.append({**on_axes, "x": (curve["day"] / WEEK).to_numpy(), "y": curve["expected_mrc"].to_numpy(),
                               "mode": "lines", "line": {"color": EXPECTED_LINE, "dash": "dash", "width": 2},
                               "name": "Expected (median)", "legendgroup": "expected",
                               "showlegend": legend("expected"),
                               "hovertemplate": "week %{x:.0f}: expected %{y:.1f}<extra></extra>"})
            exams = view.exams[(view.exams["muscle"] == muscle) & (view.exams["side"] == side)]
            pre, post = exams[exams["day"] < 0], exams[exams["day"] >= 0]
            if not pre.empty:
                traces.append({**on_axes, "x": (pre["day"] / WEEK).to_numpy(), "y": pre["mrc"].to_numpy(),
                               "mode": "markers", "marker": {"symbol": "diamond", "size": 13 if large else 10,
                                                             "color": BASELINE,
                                                             "line": {"color": "black", "width": 1}},
                               "name": "Pre-operative grade", "legendgroup": "pre", "showlegend": legend("pre"),
                               "text": [format_mrc(v) for v in pre["mrc"]],
                               "hovertemplate": "pre-op week %{x:.0f}: MRC %{text}<extra></extra>"})
            if not post.empty:
                traces.append({**on_axes, "x": (post["day"] / WEEK).to_numpy(), "y": post["mrc"].to_numpy(),
                               "mode": "lines+markers", "line": {"color": MEASURED, "width": 2.5},
                               "marker": {"size": 11 if large else 8, "color": MEASURED},
                               "name": "Measured grade", "legendgroup": "measured",
                               "showlegend": legend("measured"), "text": [format_mrc(v) for v in post["mrc"]],
                               "hovertemplate": "week %{x:.0f}: MRC %{text}<extra></extra>"})
            status = view.muscles[(view.muscles["muscle"] == muscle) & (view.muscles["side"] == side)]["status"]
            label = STATUS_LABELS.get(status.iloc[0], status.iloc[0]) if not status.empty else "Not examined"
            colour = STATUS_COLOURS.get(status.iloc[0], "#6E6E6E") if not status.empty else "#6E6E6E"
            annotations.append({"x": 0.02, "y": 0.06, "xref": f"x{axis} domain", "yref": f"y{axis} domain",
                                "text": f"<b>{label}</b>", "showarrow": False, "xanchor": "left",
                                "yanchor": "bottom", "font": {"color": colour, "size": 16 if large else 13},
                                "bgcolor": "rgba(255,255,255,0.85)"})
            shapes.append({"type": "line", "x0": 0, "x1": 0, "y0": 0, "y1": 1, "xref": f"x{axis}",
                           "yref": f"y{axis} domain", "line": {"color": "#6E6E6E", "width": 1, "dash": "dot"}})
    for r in range(1, len(examined) + 1):
        for c in (1, 2):
            axis = _axis(r, c)
            layout[f"xaxis{axis}"].update(range=[-4.5, max_week], tickvals=WEEK_TICKS, gridcolor="#E5E5E5")
            layout[f"yaxis{axis}"].update(range=[-0.2, 5.3], tickvals=[0, 1, 2, 3, 4, 5], gridcolor="#E5E5E5")
        layout[f"yaxis{_axis(r, 1)}"]["title"] = {"text": "MRC"}
    for c in (1, 2):
        layout[f"xaxis{_axis(len(examined), c)}"]["title"] = {"text": "Weeks since the operation"}
    height = (260 if large else 210) * len(examined) + 190
    layout.update(
        annotations=[*layout["annotations"], *annotations], shapes=shapes,
        height=height, margin={"l": 60, "r": 20, "t": 70, "b": 140},
        font={**FONT, "size": 18 if large else FONT["size"]}, plot_bgcolor="white",
        legend={"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 8 / height, "x": 0},
        title={"text": "Strength against the expected recovery band", "x": 0, "yref": "container",
               "yanchor": "top", "y": 1 - 10 / height, "font": {"size": 20 if large else 17}},
    )
    return go.Figure({"data": traces, "layout": layout}, skip_invalid=True)


def prom_figure(view: PatientView, large: bool = False) -> go.Figure:
    """ODI and leg and back pain over time; missing scores are gaps, not zeros."""
    visits = view.visits.dropna(subset=["day"])
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    for column, name, colour, dash in (("leg_pain_nrs", "Leg pain (NRS 0–10)", "#D55E00", "solid"),
                                       ("back_pain_nrs", "Back pain (NRS 0–10)", "#0072B2", "dot")):
        rows = visits.dropna(subset=[column])
        figure.add_trace(go.Scatter(x=rows["day"] / WEEK, y=rows[column], name=name, mode="lines+markers",
                                    line=dict(color=colour, dash=dash, width=2.5)), secondary_y=False)
    rows = visits.dropna(subset=["odi"])
    figure.add_trace(go.Scatter(x=rows["day"] / WEEK, y=rows["odi"], name="ODI (%)", mode="lines+markers",
                                line=dict(color="#009E73", width=2.5), marker=dict(symbol="square")),
                     secondary_y=True)
    figure.update_yaxes(title_text="Pain (NRS)", range=[-0.3, 10.3], secondary_y=False, gridcolor="#E5E5E5")
    figure.update_yaxes(title_text="ODI (%)", range=[-3, 103], secondary_y=True, showgrid=False)
    figure.update_xaxes(title_text="Weeks since the operation", tickvals=WEEK_TICKS, gridcolor="#E5E5E5")
    figure.update_layout(height=380 if large else 320, font={**FONT, "size": 18 if large else FONT["size"]},
                         plot_bgcolor="white", margin=dict(l=60, r=60, t=60, b=50),
                         title=dict(text="Pain and disability", x=0),
                         legend=dict(orientation="h", y=1.12, x=0))
    if visits[["leg_pain_nrs", "back_pain_nrs", "odi"]].isna().all().all():
        figure.add_annotation(text="No pain or ODI scores recorded", x=0.5, y=0.5, xref="paper", yref="paper",
                              showarrow=False, font=dict(size=16, color="#6E6E6E"))
    return figure


def timeline_figure(view: PatientView) -> go.Figure:
    """Operations, examinations, visits and findings on one time axis."""
    lanes = []
    exam_days = view.exams.drop_duplicates("exam_date")
    lanes.append(("Strength exam", exam_days["day"], "circle", "#000000"))
    lanes.append(("Visit", view.visits["day"], "square", "#0072B2"))
    finding_columns = ["radicular_pain", "saddle_anesthesia", "urinary_retention", "fecal_incontinence", "fever",
                       "wound_drainage", "calf_swelling", "screw_lucency", "implant_migration", "rod_fracture",
                       "numbness"]
    present = [c for c in finding_columns if c in view.visits]
    findings = view.visits[view.visits[present].fillna(False).astype(bool).any(axis=1)] if present else view.visits[:0]
    lanes.append(("Finding", findings["day"], "x", "#D55E00"))
    figure = go.Figure()
    for name, days, symbol, colour in lanes:
        texts = []
        if name == "Finding":
            for _, visit in findings.iterrows():
                texts.append(", ".join(c.replace("_", " ") for c in present if visit[c] is True))
        figure.add_trace(go.Scatter(
            x=days / WEEK, y=[name] * len(days), mode="markers", name=name,
            marker=dict(symbol=symbol, size=12, color=colour),
            text=texts or None, hovertemplate="week %{x:.1f}<br>%{text}<extra></extra>" if texts else
            "week %{x:.1f}<extra></extra>"))
    figure.add_vline(x=0, line=dict(color="#6E6E6E", dash="dot"), annotation_text="operation")
    figure.update_xaxes(title_text="Weeks since the operation", tickvals=WEEK_TICKS, gridcolor="#E5E5E5")
    figure.update_layout(height=230, showlegend=False, plot_bgcolor="white", font=FONT,
                         margin=dict(l=110, r=20, t=40, b=50), title=dict(text="Timeline", x=0))
    return figure


def reference_figure(curve: pd.DataFrame, baseline: float, title: str) -> go.Figure:
    """One expected curve with its band, for the reference-curve page."""
    figure = go.Figure()
    x, y = _band_polygon(curve)
    figure.add_trace(go.Scatter(x=x, y=y, fill="toself", fillcolor=BAND_FILL, line=dict(width=0),
                                name="10th–90th percentile", hoverinfo="skip"))
    figure.add_trace(go.Scatter(x=curve["day"] / WEEK, y=curve["expected_mrc"], mode="lines", name="Expected",
                                line=dict(color=EXPECTED_LINE, dash="dash", width=3)))
    figure.add_trace(go.Scatter(x=[0], y=[baseline], mode="markers", name="Pre-operative grade",
                                marker=dict(symbol="diamond", size=14, color=BASELINE)))
    figure.update_yaxes(range=[-0.2, 5.3], title_text="MRC grade", gridcolor="#E5E5E5")
    figure.update_xaxes(title_text="Weeks since the operation", tickvals=WEEK_TICKS[1:], gridcolor="#E5E5E5")
    figure.update_layout(height=440, font=FONT, plot_bgcolor="white", title=dict(text=title, x=0),
                         legend=dict(orientation="h", y=1.1, x=0), margin=dict(l=60, r=20, t=80, b=50))
    return figure
