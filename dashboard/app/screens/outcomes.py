"""Outcomes (surgeons, admins): the clinic's own recovery, band coverage, PROMs, follow-up, and how the prompts
perform. Definitions and limits: docs/outcomes.md."""

from __future__ import annotations

import streamlit as st

from dashboard.app import data, outcomes_data
from dashboard.app.auth import audit_export, require_screen
from dashboard.clinical.outcomes import ENDPOINTS, GROUPINGS, MILESTONE_MONTHS, PROMS, SCHEDULE, SMALL_GROUP
from dashboard.theme import URGENCY_LABELS

require_screen(__file__)  # first: signed in, in a role of SCREEN_ROLES, before any data is read

MAX_ROWS = 1_000

cohort = data.cohort()
outcomes = outcomes_data.outcomes(cohort)
rules, states, reasons, undecided = outcomes_data.prompt_performance(cohort)

st.title("Outcomes")
st.caption(f"The clinic's own patients as known on {outcomes.as_of:%d %b %Y} · reference: "
           f"{cohort.assessment.reference.title} · {len(outcomes.operations):,} operations of "
           f"{outcomes.operations['patient_id'].nunique():,} patients · definitions and limits: docs/outcomes.md")

controls = st.columns([2, 3, 2])
grouping = controls[0].selectbox("Group by", list(GROUPINGS), format_func=GROUPINGS.get, key="outcomes_grouping")
endpoint = controls[1].selectbox("Recovery means", list(ENDPOINTS), format_func=ENDPOINTS.get,
                                 key="outcomes_endpoint")


def in_grouping(frame):
    return frame[frame["grouping"] == grouping].drop(columns="grouping")


SECTIONS = ("Recovery", "Against the expected band", "PROMs", "Follow-up", "How the prompts perform")
alarm_count = int(states["alarm"].sum())
if alarm_count:
    st.error(f"{alarm_count} emergency prompt(s) open for more than a day: see 'How the prompts perform'.",
             icon=":material/emergency:")
gone_emergencies = int(rules["emergencies_went_away_undecided"].sum())
if gone_emergencies:
    st.warning(f"{gone_emergencies} emergency prompt(s) went away with no decision recorded (missed follow-through?): "
               "see 'How the prompts perform'.", icon=":material/history:")
section = st.radio("Show", SECTIONS, horizontal=True, key="outcomes_section", label_visibility="collapsed")

if section == SECTIONS[0]:
    curves, milestones = outcomes.recovery(grouping, endpoint)
    st.caption(f"Weak muscle-sides (baseline 4+ or weaker): time from the operation to the first exam at which "
               f"{ENDPOINTS[endpoint]}; censored at the last exam. Kaplan–Meier (lifelines); 95% CI by resampling "
               "patients (a patient's muscles recover together). "
               "Muscle-sides left out: "
               + "; ".join(f"{n:,} {why}" for why, n in outcomes.left_out.items()) + ".")
    if curves.empty:
        st.info("No weak muscle-side has a baseline and a post-operative exam.")
    else:
        st.plotly_chart(outcomes_data.figure(cohort, outcomes, "recovery", grouping, endpoint), width="stretch",
                        config={"displayModeBar": False})
        # Two narrow tables, so that each fits a 1024-pixel screen without sideways scrolling.
        shown = milestones.assign(
            recovered=[("—" if s != s else f"{s:.0%} ({lo:.0%}–{hi:.0%})")
                       for s, lo, hi in zip(milestones["share_recovered"], milestones["low"], milestones["high"],
                                            strict=True)],
            at_risk_text=[f"{sides:,} ({patients:,})" for sides, patients in
                          zip(milestones["at_risk"], milestones["patients_at_risk"], strict=True)])
        wide = shown.pivot(index="group", columns="months", values="recovered")
        wide.columns = [f"{m} months" for m in wide.columns]
        st.markdown("**Share recovered (95% CI)**")
        st.dataframe(wide, width="stretch")
        first = milestones.groupby("group")[["muscle_sides", "patients"]].first()
        risk = shown.pivot(index="group", columns="months", values="at_risk_text")
        risk.columns = [f"{m} months" for m in risk.columns]
        risk.insert(0, "at the start", [f"{sides:,} ({patients:,})" for sides, patients in
                                        zip(first["muscle_sides"], first["patients"], strict=True)])
        st.markdown("**At risk: muscle-sides (patients)**")
        st.dataframe(risk, width="stretch")
        small = first.index[first["muscle_sides"] < SMALL_GROUP]
        if len(small):
            st.caption(f"Fewer than {SMALL_GROUP} muscle-sides (unstable): " + ", ".join(map(str, small)))
        st.caption(f"Share recovered at {', '.join(map(str, MILESTONE_MONTHS))} months with its 95% CI; '—' past "
                   "the group's longest follow-up. At risk: muscle-sides still followed and not yet recovered, and "
                   "in brackets the patients they belong to.")

elif section == SECTIONS[1]:
    coverage = in_grouping(outcomes.coverage)
    st.caption("Each weak muscle-side's latest exam in each follow-up window against the band the patient view "
               "shows (edges rounded to the MRC step, modifiers applied). Near 10% below and 10% above means the "
               "reference fits this clinic.")
    if coverage.empty:
        st.info("No post-operative exam with a baseline in a reference group.")
    else:
        st.plotly_chart(outcomes_data.figure(cohort, outcomes, "coverage", grouping), width="stretch",
                        config={"displayModeBar": False})
        st.dataframe(coverage, hide_index=True, width="stretch", column_config={
            **{f"share_{p}": st.column_config.NumberColumn(p, format="percent") for p in ("below", "inside", "above")},
            "muscle_sides": "muscle-sides", "below": "n below", "inside": "n inside", "above": "n above"})

elif section == SECTIONS[2]:
    proms = in_grouping(outcomes.proms)
    if proms.empty:
        st.info("No ODI or pain scores recorded.")
    else:
        columns = st.columns(len(PROMS))
        for column, measure in zip(columns, PROMS, strict=True):
            column.plotly_chart(outcomes_data.figure(cohort, outcomes, "proms", grouping, measure=measure),
                                width="stretch", config={"displayModeBar": False}, key=f"proms_{measure}")
        with st.expander("Table"):
            st.dataframe(proms, hide_index=True, width="stretch")

elif section == SECTIONS[3]:
    st.caption("Schedule and tolerance windows (days after the operation): " + "; ".join(
        f"{label} {first}–{last}" for label, _, first, last in SCHEDULE)
        + ". Due: the window has closed; done: an exam or visit in it. Lost: the two latest due windows missed.")
    follow = in_grouping(outcomes.follow_up)
    done = follow.pivot(index="group", columns="window", values="share_done")[[w for w, *_ in SCHEDULE]]
    due = follow.pivot(index="group", columns="window", values="due")[[w for w, *_ in SCHEDULE]]
    due.columns = [f"due {w}" for w in due.columns]
    st.dataframe(done.join(due), width="stretch", column_config={
        w: st.column_config.NumberColumn(w, format="percent") for w, *_ in SCHEDULE})
    lost = in_grouping(outcomes.lost)
    st.dataframe(lost, hide_index=True, width="stretch", column_config={
        "share_lost": st.column_config.NumberColumn("share lost", format="percent"),
        "followed": st.column_config.NumberColumn("followed ≥ 2 windows")})

else:
    st.caption("Per rule: prompts fired (every prompt ever logged, firing now or decided on), prompts on the "
               "assessment day, patients ever prompted, decisions in force, days from the evidence that fired the "
               "prompt to the first decision on it, prompts open past their urgency (emergency 1 day, urgent 7, "
               "routine 42), logged prompts that went away with no decision on them (emergencies counted apart) "
               "and, where visits record `imaging_modality` and `imaging_finding`, how often the imaging found what "
               "was asked.")
    st.dataframe(rules, hide_index=True, width="stretch", column_config={
        "rule_id": "Rule", "urgency": st.column_config.TextColumn("Urgency"), "fired": "Fired",
        "prompts_now": "Prompts now", "went_away_undecided": "Went away undecided",
        "emergencies_went_away_undecided": "of them emergencies",
        "imaging_yield": st.column_config.NumberColumn("Imaging yield", format="percent"),
        "median_days_to_decision": st.column_config.NumberColumn("Median days to decision", format="%.1f"),
        "q1_days_to_decision": st.column_config.NumberColumn("Q1", format="%.1f"),
        "q3_days_to_decision": st.column_config.NumberColumn("Q3", format="%.1f")})
    overdue = states[states["overdue"]]
    with st.expander(f"Prompts open past their urgency ({len(overdue):,}; emergency first, the longest open first)",
                     expanded=bool(alarm_count)):
        shown = overdue.assign(_rank=overdue["urgency"].map({"emergency": 0, "urgent": 1, "routine": 2})).sort_values(
            ["_rank", "days_open"], ascending=[True, False]).head(MAX_ROWS)
        st.dataframe(shown.assign(urgency=shown["urgency"].map(URGENCY_LABELS))[
            ["patient_id", "rule_id", "urgency", "first_seen", "days_open", "decision"]], hide_index=True,
            width="stretch")
        if len(overdue) > MAX_ROWS:
            st.caption(f"The first {MAX_ROWS:,} of {len(overdue):,}.")
    with st.expander(f"Prompts that went away with no decision ({len(undecided):,}; emergency first, the latest "
                     "first)", expanded=bool(gone_emergencies)):
        gone = undecided.assign(_rank=undecided["urgency"].map({"emergency": 0, "urgent": 1, "routine": 2})
                                ).sort_values(["_rank", "first_seen"], ascending=[True, False]).head(MAX_ROWS)
        st.dataframe(gone.assign(urgency=gone["urgency"].map(URGENCY_LABELS))[
            ["patient_id", "rule_id", "urgency", "first_seen", "first_shown_at"]], hide_index=True, width="stretch",
            column_config={"first_seen": st.column_config.DateColumn("Evidence of"),
                           "first_shown_at": st.column_config.DatetimeColumn("First shown (UTC)")})
        if len(undecided) > MAX_ROWS:
            st.caption(f"The first {MAX_ROWS:,} of {len(undecided):,}.")
    with st.expander(f"Reasons given for 'not indicated' ({int(reasons['decisions'].sum()) if len(reasons) else 0})"):
        st.dataframe(reasons, hide_index=True, width="stretch")

exports = controls[2].container()
if controls[2].button("Prepare export", key="outcomes_prepare", help="The outcome tables as HTML and CSV"):
    from dashboard.reports.outcomes import outcomes_csv, outcomes_html  # noqa: PLC0415 — only when asked

    st.session_state["outcomes_export"] = (outcomes_html(outcomes, rules, reasons, cohort.assessment.reference.title),
                                           outcomes_csv(outcomes, rules, reasons))
if "outcomes_export" in st.session_state:
    html, csv = st.session_state["outcomes_export"]
    exports.download_button("Download HTML", html, file_name=f"outcomes-{outcomes.as_of}.html", mime="text/html",
                            on_click=audit_export, args=("outcomes", "html"),
                            kwargs={"patients": int(outcomes.operations["patient_id"].nunique())})
    exports.download_button("Download CSV", csv, file_name=f"outcomes-{outcomes.as_of}.csv", mime="text/csv",
                            on_click=audit_export, args=("outcomes", "csv"),
                            kwargs={"patients": int(outcomes.operations["patient_id"].nunique())})
