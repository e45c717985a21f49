"""Plotly figures of the cohort outcomes (dashboard/clinical/outcomes.py). Drawing only: no clinical logic."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from dashboard.clinical.outcomes import DAYS_PER_MONTH, MILESTONE_MONTHS, WINDOWS

PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
POSITION_COLOURS = {"below": "#D55E00", "inside": "#009E73", "above": "#0072B2"}
FONT = dict(family="Source Sans Pro, Arial, sans-serif", size=14)


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"


def recovery_figure(curves: pd.DataFrame, title: str = "Share of weak muscle-sides recovered") -> go.Figure:
    """Kaplan-Meier curves (1 - S(t)) per group as steps over months, with their 95% confidence bands."""
    figure = go.Figure()
    for k, (group, curve) in enumerate(curves.groupby("group", sort=True)):
        colour = PALETTE[k % len(PALETTE)]
        months = curve["day"].to_numpy() / DAYS_PER_MONTH
        figure.add_trace(go.Scatter(x=list(months) + list(months[::-1]),
                                    y=list(curve["high"]) + list(curve["low"][::-1]), fill="toself",
                                    fillcolor=_rgba(colour, 0.15), line=dict(width=0, shape="hv"),
                                    hoverinfo="skip", showlegend=False, legendgroup=str(group)))
        figure.add_trace(go.Scatter(
            x=months, y=curve["share_recovered"], mode="lines", line=dict(color=colour, width=2.5, shape="hv"),
            name=str(group), legendgroup=str(group), customdata=curve[["at_risk", "patients_at_risk"]].to_numpy(),
            hovertemplate="%{x:.1f} months: %{y:.0%} recovered (at risk %{customdata[0]} muscle-sides of "
                          "%{customdata[1]} patients)<extra>" + str(group)
                          + "</extra>"))
    figure.update_layout(
        title=title, font=FONT, height=430, margin=dict(l=60, r=20, t=50, b=50), template="plotly_white",
        xaxis=dict(title="Months since the operation", range=[0, 25], tickvals=[0, *MILESTONE_MONTHS]),
        yaxis=dict(title="Recovered (Kaplan–Meier, 95% CI)", range=[0, 1], tickformat=".0%"),
        legend=dict(orientation="h", y=-0.2))
    return figure


def coverage_figure(coverage: pd.DataFrame, title: str) -> go.Figure:
    """Stacked shares below, inside and above the expected band per follow-up window and group."""
    figure = go.Figure()
    label = coverage["group"].astype(str) + " · " + coverage["window"].astype(str)
    for position, colour in POSITION_COLOURS.items():
        figure.add_trace(go.Bar(x=[coverage["window"], coverage["group"].astype(str)], y=coverage[f"share_{position}"],
                                name=position, marker_color=colour, customdata=coverage[position],
                                hovertext=label,
                                hovertemplate="%{hovertext}: %{y:.0%} (%{customdata} muscle-sides)<extra>"
                                              + position + "</extra>"))
    figure.update_layout(barmode="stack", title=title, font=FONT, height=400, template="plotly_white",
                         margin=dict(l=60, r=20, t=50, b=80), yaxis=dict(tickformat=".0%", range=[0, 1]),
                         xaxis=dict(categoryorder="array", categoryarray=list(WINDOWS)))
    return figure


def proms_figure(proms: pd.DataFrame, measure: str, label: str) -> go.Figure:
    """Median and interquartile range of one PROM per window, one line per group."""
    part = proms[proms["measure"] == measure]
    order = ["before", *WINDOWS]
    figure = go.Figure()
    for k, (group, rows) in enumerate(part.groupby("group", sort=True)):
        rows = rows.set_index("window").reindex([w for w in order if w in set(rows["window"])])
        colour = PALETTE[k % len(PALETTE)]
        figure.add_trace(go.Scatter(
            x=rows.index, y=rows["median"], mode="lines+markers", name=str(group), line=dict(color=colour),
            error_y=dict(type="data", symmetric=False, array=rows["q3"] - rows["median"],
                         arrayminus=rows["median"] - rows["q1"], color=_rgba(colour, 0.6)),
            customdata=rows["n"], hovertemplate="%{x}: median %{y} (n %{customdata})<extra>" + str(group)
                                                + "</extra>"))
    figure.update_layout(title=f"{label}: median and interquartile range", font=FONT, height=380,
                         template="plotly_white", margin=dict(l=60, r=20, t=50, b=50),
                         xaxis=dict(categoryorder="array", categoryarray=order))
    return figure
