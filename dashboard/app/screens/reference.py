"""Reference curves: the expected band for a chosen baseline and patient, with every parameter's source."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.app import data
from dashboard.app.auth import require_screen
from dashboard.charts import reference_figure
from dashboard.clinical.curves import curve_table, load_reference, modifier_flags
from dashboard.clinical.mrc import MRC_TOKENS

require_screen(__file__)  # first: signed in, in a role of SCREEN_ROLES, before any data is read

st.title("Expected recovery curves")
files = data.reference_files()
title = st.selectbox("Reference", list(files), help="Published, or calibrated from a clinic's own follow-ups")
reference = load_reference(files[title])

cols = st.columns(4)
baseline_token = cols[0].select_slider("Pre-operative grade", [t for t in MRC_TOKENS if t != "5"], value="3")
age = cols[1].number_input("Age at operation", 18, 100, 60)
diabetes = cols[2].radio("Diabetes", ["no", "yes", "unknown"], horizontal=True)
deficit_weeks = cols[3].number_input("Weeks of weakness before the operation", 0, 520, 2)
factors = {"age": float(age), "diabetes": None if diabetes == "unknown" else diabetes == "yes",
           "deficit_days": float(deficit_weeks * 7)}
baseline = MRC_TOKENS[baseline_token]
curve = curve_table(baseline, factors, reference, np.arange(0, 731, 3))
group = reference.groups.set_index("id").loc[curve["curve_group"].iloc[0]]
st.plotly_chart(reference_figure(curve, baseline, group["label"], reference.band_label), width="stretch")
st.caption(f"Reference: {reference.title}. Shaded: {reference.band_label}. Confidence {group['confidence']}. "
           f"{group['evidence'] or reference.band.get('evidence', '')}")

at = curve_table(baseline, factors, reference, np.array([14, 42, 91, 182, 365, 730]))
st.dataframe(at.assign(weeks=(at["day"] / 7).round(0)).round(2)[["weeks", "expected_low", "expected_mrc",
                                                                  "expected_high"]],
             hide_index=True, column_config={"weeks": "Weeks", "expected_low": "Lower edge",
                                             "expected_mrc": "Expected", "expected_high": "Upper edge"})

st.subheader("Parameters and their sources")
st.caption(f"{reference.reference_id} · {reference.kind} · {reference.path.name}")
for row in reference.groups.itertuples():
    with st.expander(f"{row.label} — Rmax {row.rmax_median:g} (lower edge {row.rmax_p10:g}, upper edge "
                     f"{row.rmax_p90:g}), "
                     f"tau {row.tau_median:g} days · confidence {row.confidence}",
                     expanded=row.Index == 0 or row.id == group.name):
        for source in row.sources:
            cited = reference.sources[source["key"]]
            url = cited.get("url", "")
            st.markdown(f"- {source['figure']} — *{cited['citation']}* [{url}]({url})")
        for parameter, basis in (row.basis or {}).items():
            st.markdown(f"- `{parameter}`: {basis}")
st.markdown("**Patient modifiers**")
flags = modifier_flags(pd.DataFrame([factors]), reference).iloc[0]
for row in reference.modifiers.itertuples():
    applies = {True: "✔ applies", False: "does not apply"}.get(flags[row.id], "unknown: not applied")
    with st.expander(f"{row.label}: Rmax × {row.rmax_factor:g}, tau × {row.tau_factor:g} ({applies})"):
        for source in row.sources:
            cited = reference.sources[source["key"]]
            st.markdown(f"- {source['figure']} — *{cited['citation']}*")
if reference.provenance:
    with st.expander("Provenance of this reference"):
        st.json(reference.provenance)
