"""Plotly figures built from core results (PatientView, curve tables). Drawing only: no clinical logic.

Time runs in weeks since the index operation, so the same figures serve identified and de-identified views.

The patient figures are assembled as plain Plotly specifications (dicts of numpy arrays) and wrapped in a
Figure without property validation: validating a figure property by property cost more than building it,
on every patient switch. tests/app/test_app.py validates every specification with Plotly in full instead.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from dashboard.clinical.curves import DEFAULT_BAND_LABEL
from dashboard.clinical.mrc import MUSCLE_ROOTS, MUSCLES, SIDES, format_mrc
from dashboard.clinical.patient_view import PatientView
from dashboard.clinical.wording import FINDING_WORDS
from dashboard.theme import BAND_FILL, BASELINE, EXPECTED_LINE, MEASURED, MUSCLE_SHORT, STATUS_COLOURS, STATUS_LABELS

WEEK = 7.0
WEEK_TICKS = [-4, 0, 2, 6, 13, 26, 52, 78, 104]
FONT = dict(family="Source Sans Pro, Arial, sans-serif", size=15)
#: Visit findings marked on the timeline (when recorded as present).
FINDING_COLUMNS = ["radicular_pain", "saddle_anesthesia", "urinary_retention", "fecal_incontinence", "fever",
                   "wound_drainage", "calf_swelling", "screw_lucency", "implant_migration", "rod_fracture",
                   "numbness"]


def _band_polygon(curve: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    weeks = curve["day"].to_numpy() / WEEK
    return (np.concatenate([weeks, weeks[::-1]]),
            np.concatenate([curve["expected_high"].to_numpy(), curve["expected_low"].to_numpy()[::-1]]))


def panel_title(muscle: str, side: str) -> str:
    """'L4 Ankle dorsiflexion, left': short enough for two panels side by side on a projector."""
    return f"{MUSCLE_ROOTS[muscle]} {MUSCLE_SHORT[muscle]}, {'left' if side == 'L' else 'right'}"


def muscles_with_weakness(view: PatientView) -> list[str]:
    """Muscles worth a panel: those whose status on some side is anything but the core's "no deficit" (normal
    before the operation by the reference's normal grade, no new weakness since). The threshold lives in the
    core (trajectory); this only reads its verdict."""
    muscles = view.muscles
    flagged = set(muscles.loc[muscles["status"] != "no_deficit", "muscle"])
    return [m for m in MUSCLES if m in flagged]


def normal_muscles(view: PatientView) -> list[str]:
    """Examined muscles with no deficit on either side (not drawn by default), in root order."""
    examined, weak = set(view.muscles["muscle"]), set(muscles_with_weakness(view))
    return [m for m in MUSCLES if m in examined and m not in weak]


def normal_line(view: PatientView) -> str:
    """'Normal throughout (no deficit on either side): L2 Hip flexion, L3 Knee extension.' or ''."""
    normal = normal_muscles(view)
    if not normal:
        return ""
    return ("Normal throughout (no deficit on either side): "
            + ", ".join(f"{MUSCLE_ROOTS[m]} {MUSCLE_SHORT[m]}" for m in normal) + ".")


#: Tick steps in weeks, from one week to a year: the first that gives at most MAX_TICKS ticks is used.
TICK_STEPS = (1, 2, 4, 13, 26, 52)
MAX_TICKS = 7


def week_ticks(low: float, high: float) -> list[float]:
    """Real ticks for any follow-up length: multiples of a step (weeks, months, quarters, years) in range,
    always including the operation (0) when in range; never a single tick."""
    span = max(high - low, 1.0)
    step = next((s for s in TICK_STEPS if span / s <= MAX_TICKS), TICK_STEPS[-1] * (int(span // 52 // MAX_TICKS) + 1))
    first = np.ceil(low / step) * step
    ticks = list(np.arange(first, high + 1e-9, step))
    if len(ticks) < 2:
        ticks = sorted({float(np.floor(low)), 0.0, float(np.ceil(high))})
    return [float(t) + 0.0 for t in ticks]  # + 0.0: no "-0" tick


def _time_range(weeks: np.ndarray) -> list[float]:
    """The time axis for visit and exam weeks: from before the first to after the last (at least −1 to 6)."""
    shown = weeks[~np.isnan(weeks)] if len(weeks) else weeks
    low = min(-1.0, float(shown.min()) - 0.5) if len(shown) else -1.0
    high = max(6.0, float(shown.max()) + 0.5) if len(shown) else 6.0
    return [low, high]


@functools.cache
def _grid_layouts() -> dict[int, str]:
    """The layouts of the n×2 grids with shared axes (n = 1 to every muscle), as JSON without a template.

    Made by make_subplots once for all sizes (each call takes tens of milliseconds); a figure takes the
    template in force when it is made, as the other figures do.
    """
    layouts = {}
    for n_rows in range(1, len(MUSCLES) + 1):
        grid = make_subplots(rows=n_rows, cols=2, shared_xaxes=True, shared_yaxes=True,
                             subplot_titles=[f"title-{i}" for i in range(n_rows * 2)],
                             vertical_spacing=0.06 if n_rows > 3 else 0.1, horizontal_spacing=0.04)
        layout = grid.to_dict()["layout"]
        layout.pop("template", None)
        layouts[n_rows] = json.dumps(layout)
    return layouts


def figure_from_spec(spec: dict) -> go.Figure:
    """A Figure of a specification built here, validated by Plotly as any figure is.

    Skipping the validation (a private argument) saved about 26 ms of a patient switch's 0.4 s: not worth
    depending on Plotly's internals (issue 19).
    """
    return go.Figure(spec)


def image_spec(spec: dict) -> dict:
    """A specification ready for the reports' image export (Kaleido): the template in force added, as
    go.Figure would add it, without building and validating a Figure for each chart (a quarter of a handout's
    Python time). The specifications are validated by the tests (tests/app/test_app.py)."""
    return {**spec, "layout": {"template": _template(pio.templates.default), **spec.get("layout", {})}}


@functools.cache
def _template(name: str) -> dict:
    return pio.templates[name].to_plotly_json()


def _panels(frame: pd.DataFrame, columns: list[str]) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """`columns` as float arrays per (muscle, side), rows in the frame's order: one pass, not a filter per panel."""
    if frame.empty:
        return {}
    arrays = {c: frame[c].to_numpy(dtype=float, na_value=np.nan) for c in columns}
    return {key: {c: values[positions] for c, values in arrays.items()}
            for key, positions in frame.groupby(["muscle", "side"], sort=False).indices.items()}


def _axis(r: int, c: int) -> str:
    """Axis suffix of panel (row, col) in a two-column grid: '' for the first, then 2, 3, …"""
    index = (r - 1) * 2 + c
    return "" if index == 1 else str(index)


def strength_figure(view: PatientView, large: bool = False, show_all: bool = False) -> go.Figure:
    """Small multiples: one row per muscle (weak ones unless show_all), left and right, against the band."""
    return figure_from_spec(strength_spec(view, large=large, show_all=show_all))


def strength_spec(view: PatientView, large: bool = False, show_all: bool = False) -> dict:
    """The strength small multiples as a Plotly specification (see strength_figure).

    Built as a plain specification: building it trace by trace through plotly's objects cost a quarter of
    a second per patient, too slow for a two-minute clinic review.
    """
    examined = [m for m in MUSCLES if m in set(view.muscles["muscle"])] or list(MUSCLES[2:])
    if not show_all:
        examined = muscles_with_weakness(view) or examined
    layout = json.loads(_grid_layouts()[len(examined)])
    titles = iter(panel_title(m, s) for m in examined for s in SIDES)
    for annotation in layout["annotations"]:
        annotation["text"] = next(titles)
        annotation["font"] = {"size": 17 if large else 14}
    max_week = max(26.0, (view.exams["day"].max() / WEEK + 4) if view.exams["day"].notna().any() else 26.0)
    legend_shown: set[str] = set()

    def legend(name: str) -> bool:
        first = name not in legend_shown
        legend_shown.add(name)
        return first

    curves = _panels(view.curves[view.curves["day"] <= max_week * WEEK],
                     ["day", "expected_mrc", "expected_low", "expected_high"])
    exams_by_panel = _panels(view.exams, ["day", "mrc"])
    statuses: dict[tuple[str, str], str] = {}
    for muscle_side, status in zip(zip(view.muscles["muscle"], view.muscles["side"], strict=True),
                                   view.muscles["status"], strict=True):
        statuses.setdefault(muscle_side, status)
    traces, annotations, shapes = [], [], []
    for r, muscle in enumerate(examined, start=1):
        for c, side in enumerate(SIDES, start=1):
            axis = _axis(r, c)
            on_axes = {"xaxis": f"x{axis}", "yaxis": f"y{axis}", "type": "scatter"}
            traces.append({**on_axes, "x": [None], "y": [None], "showlegend": False, "hoverinfo": "skip"})
            curve = curves.get((muscle, side))
            if curve is not None:
                weeks = curve["day"] / WEEK
                traces.append({**on_axes, "x": np.concatenate([weeks, weeks[::-1]]),
                               "y": np.concatenate([curve["expected_high"], curve["expected_low"][::-1]]),
                               "fill": "toself", "fillcolor": BAND_FILL,
                               "line": {"width": 0}, "hoverinfo": "skip", "mode": "lines",
                               "name": band_legend(view.band_label), "legendgroup": "band",
                               "showlegend": legend("band")})
                traces.append({**on_axes, "x": weeks, "y": curve["expected_mrc"],
                               "mode": "lines", "line": {"color": EXPECTED_LINE, "dash": "dash", "width": 2},
                               "name": "Expected (median)", "legendgroup": "expected",
                               "showlegend": legend("expected"),
                               "hovertemplate": "week %{x:.0f}: expected %{y:.1f}<extra></extra>"})
            exams = exams_by_panel.get((muscle, side))
            if exams is not None:
                pre, post = exams["day"] < 0, exams["day"] >= 0
                if pre.any():
                    grades = exams["mrc"][pre]
                    traces.append({**on_axes, "x": exams["day"][pre] / WEEK, "y": grades,
                                   "mode": "markers", "marker": {"symbol": "diamond", "size": 13 if large else 10,
                                                                 "color": BASELINE,
                                                                 "line": {"color": "black", "width": 1}},
                                   "name": "Pre-operative grade", "legendgroup": "pre", "showlegend": legend("pre"),
                                   "text": [format_mrc(v) for v in grades],
                                   "hovertemplate": "pre-op week %{x:.0f}: MRC %{text}<extra></extra>"})
                if post.any():
                    grades = exams["mrc"][post]
                    traces.append({**on_axes, "x": exams["day"][post] / WEEK, "y": grades,
                                   "mode": "lines+markers", "line": {"color": MEASURED, "width": 2.5},
                                   "marker": {"size": 11 if large else 8, "color": MEASURED},
                                   "name": "Measured grade", "legendgroup": "measured",
                                   "showlegend": legend("measured"), "text": [format_mrc(v) for v in grades],
                                   "hovertemplate": "week %{x:.0f}: MRC %{text}<extra></extra>"})
            if (muscle, side) in statuses:
                status = statuses[muscle, side]
                label, colour = STATUS_LABELS.get(status, status), STATUS_COLOURS.get(status, "#6E6E6E")
            else:
                label, colour = "Not examined", "#6E6E6E"
            annotations.append({"x": 0.02, "y": 0.06, "xref": f"x{axis} domain", "yref": f"y{axis} domain",
                                "text": f"<b>{label}</b>", "showarrow": False, "xanchor": "left",
                                "yanchor": "bottom", "font": {"color": colour, "size": 16 if large else 13},
                                "bgcolor": "rgba(255,255,255,0.85)"})
            shapes.append({"type": "line", "x0": 0, "x1": 0, "y0": 0, "y1": 1, "xref": f"x{axis}",
                           "yref": f"y{axis} domain", "line": {"color": "#6E6E6E", "width": 1, "dash": "dot"}})
    for r in range(1, len(examined) + 1):
        for c in (1, 2):
            axis = _axis(r, c)
            layout[f"xaxis{axis}"].update(range=[-4.5, max_week], tickvals=week_ticks(-4.5, max_week),
                                          gridcolor="#E5E5E5")
            layout[f"yaxis{axis}"].update(range=[-0.2, 5.3], tickvals=[0, 1, 2, 3, 4, 5], gridcolor="#E5E5E5")
        layout[f"yaxis{_axis(r, 1)}"]["title"] = {"text": "MRC"}
    for c in (1, 2):
        layout[f"xaxis{_axis(len(examined), c)}"]["title"] = {"text": "Weeks since the operation"}
    height = (260 if large else 210) * len(examined) + 190
    layout.update(
        annotations=[*layout["annotations"], *annotations], shapes=shapes,
        height=height, margin={"l": 60, "r": 20, "t": 70, "b": 140},
        font={**FONT, "size": 18 if large else FONT["size"]}, plot_bgcolor="white",
        legend={"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 8 / height, "x": 0,
                "font": {"size": 16 if large else 13}},
        title={"text": "Strength against the expected recovery band", "x": 0, "yref": "container",
               "yanchor": "top", "y": 1 - 10 / height, "font": {"size": 20 if large else 17}},
    )
    return {"data": traces, "layout": layout}


def prom_figure(view: PatientView, large: bool = False) -> go.Figure:
    """ODI and leg and back pain over time; missing scores are gaps, not zeros."""
    return figure_from_spec(prom_spec(view, large=large))


def prom_spec(view: PatientView, large: bool = False) -> dict:
    """prom_figure as a Plotly specification: pain on the left axis, ODI on a second axis on the right."""
    day = _numbers(view.visits["day"])
    time_range = _time_range(day / WEEK)
    traces = []
    for column, name, colour, dash, axis, extra in (
            ("leg_pain_nrs", "Leg pain (NRS 0–10)", "#D55E00", "solid", "y", {}),
            ("back_pain_nrs", "Back pain (NRS 0–10)", "#0072B2", "dot", "y", {}),
            ("odi", "ODI (%)", "#009E73", None, "y2", {"marker": {"symbol": "square"}})):
        score = _numbers(view.visits[column])
        shown = ~np.isnan(day) & ~np.isnan(score)  # a missing score is a gap, never a zero
        traces.append({"type": "scatter", "x": day[shown] / WEEK, "y": score[shown], "name": name,
                       "mode": "lines+markers",
                       "line": {"color": colour, "width": 2.5} | ({"dash": dash} if dash else {}),
                       **extra, "xaxis": "x", "yaxis": axis})
    layout = {
        # The two-axis layout make_subplots(specs=[[{"secondary_y": True}]]) makes.
        "xaxis": {"anchor": "y", "domain": [0.0, 0.94], "title": {"text": "Weeks since the operation"},
                  "range": time_range, "tickvals": week_ticks(*time_range), "gridcolor": "#E5E5E5"},
        "yaxis": {"anchor": "x", "domain": [0.0, 1.0], "title": {"text": "Pain (NRS)"}, "range": [-0.3, 10.3],
                  "gridcolor": "#E5E5E5"},
        "yaxis2": {"anchor": "x", "overlaying": "y", "side": "right", "title": {"text": "ODI (%)"},
                   "range": [-3, 103], "showgrid": False},
        "height": 380 if large else 320, "font": {**FONT, "size": 18 if large else FONT["size"]},
        "plot_bgcolor": "white", "margin": {"l": 60, "r": 60, "t": 96, "b": 50},
        "title": {"text": "Pain and disability", "x": 0, "yref": "container", "y": 0.98, "yanchor": "top",
                  "font": {"size": 20 if large else 17}},
        "legend": {"orientation": "h", "yref": "paper", "y": 1.02, "yanchor": "bottom", "x": 0},
    }
    if not any(len(trace["y"]) for trace in traces):
        layout["annotations"] = [{"text": "No pain or ODI scores recorded", "x": 0.5, "y": 0.5, "xref": "paper",
                                  "yref": "paper", "showarrow": False, "font": {"size": 16, "color": "#6E6E6E"}}]
    return {"data": traces, "layout": layout}


def timeline_figure(view: PatientView) -> go.Figure:
    """Operations, examinations, visits and findings on one time axis."""
    return figure_from_spec(timeline_spec(view))


def timeline_spec(view: PatientView) -> dict:
    """timeline_figure as a Plotly specification."""
    visit_days = _numbers(view.visits["day"])
    # A visit's findings: the finding columns recorded as True on it.
    flags = {c: view.visits[c].to_numpy(dtype=bool, na_value=False) for c in FINDING_COLUMNS if c in view.visits}
    found = np.logical_or.reduce(list(flags.values())) if flags else np.zeros(len(visit_days), dtype=bool)
    texts = [", ".join(FINDING_WORDS.get(c, c) for c, flag in flags.items() if flag[i]) for i in np.flatnonzero(found)]
    exam_dates = view.exams["exam_date"].to_numpy()
    first_exam_of_day = np.sort(np.unique(exam_dates, return_index=True)[1]) if len(exam_dates) else []
    exam_days = _numbers(view.exams["day"])
    time_range = _time_range(np.concatenate([visit_days, exam_days]) / WEEK)
    traces = []
    for name, days, symbol, colour, text in (
            ("Strength exam", exam_days[first_exam_of_day], "circle", "#000000", []),
            ("Visit", visit_days, "square", "#0072B2", []),
            ("Finding", visit_days[found], "x", "#D55E00", texts)):
        trace = {"type": "scatter", "x": days / WEEK, "y": [name] * len(days), "mode": "markers", "name": name,
                 "marker": {"symbol": symbol, "size": 12, "color": colour},
                 "hovertemplate": "week %{x:.1f}<br>%{text}<extra></extra>" if text else
                 "week %{x:.1f}<extra></extra>"}
        if text:
            trace["text"] = text
        traces.append(trace)
    layout = {
        # The dotted line at the operation, and its label above the plot area, beside the line (not across it).
        "shapes": [{"type": "line", "x0": 0, "x1": 0, "xref": "x", "y0": 0, "y1": 1, "yref": "y domain",
                    "line": {"color": "#6E6E6E", "dash": "dot"}}],
        "annotations": [{"text": "operation", "showarrow": False, "x": 0, "xanchor": "left", "xshift": 4,
                         "xref": "x", "y": 1, "yanchor": "bottom", "yref": "y domain",
                         "font": {"color": "#444444", "size": 13}}],
        "xaxis": {"title": {"text": "Weeks since the operation"}, "range": time_range,
                  "tickvals": week_ticks(*time_range), "gridcolor": "#E5E5E5"},
        "yaxis": {"categoryorder": "array", "categoryarray": ["Finding", "Visit", "Strength exam"]},
        "height": 250, "showlegend": False, "plot_bgcolor": "white", "font": FONT,
        "margin": {"l": 110, "r": 20, "t": 60, "b": 50}, "title": {"text": "Timeline", "x": 0, "yref": "container",
                                                                   "y": 0.97, "yanchor": "top"},
    }
    return {"data": traces, "layout": layout}


def _numbers(values: pd.Series) -> np.ndarray:
    return values.to_numpy(dtype=float, na_value=np.nan)


def band_legend(label: str | None) -> str:
    """The band's legend entry: what the reference file says the band is, never a percentile it is not."""
    label = (label or DEFAULT_BAND_LABEL).strip()
    return label[:1].upper() + label[1:]


def reference_figure(curve: pd.DataFrame, baseline: float, title: str, band_label: str | None = None) -> go.Figure:
    """One expected curve with its band, for the reference-curve page."""
    figure = go.Figure()
    x, y = _band_polygon(curve)
    figure.add_trace(go.Scatter(x=x, y=y, fill="toself", fillcolor=BAND_FILL, line=dict(width=0),
                                name=band_legend(band_label), hoverinfo="skip"))
    figure.add_trace(go.Scatter(x=curve["day"] / WEEK, y=curve["expected_mrc"], mode="lines", name="Expected",
                                line=dict(color=EXPECTED_LINE, dash="dash", width=3)))
    figure.add_trace(go.Scatter(x=[0], y=[baseline], mode="markers", name="Pre-operative grade",
                                marker=dict(symbol="diamond", size=14, color=BASELINE)))
    figure.update_yaxes(range=[-0.2, 5.3], title_text="MRC grade", gridcolor="#E5E5E5")
    weeks = curve["day"].to_numpy() / WEEK
    figure.update_xaxes(title_text="Weeks since the operation", gridcolor="#E5E5E5",
                        tickvals=week_ticks(float(weeks.min(initial=0)), float(weeks.max(initial=26))))
    figure.update_layout(height=440, font=FONT, plot_bgcolor="white", title=dict(text=title, x=0),
                         legend=dict(orientation="h", y=1.1, x=0), margin=dict(l=60, r=20, t=80, b=50))
    return figure
