"""Handouts and reports: the de-identified conference handout and the identified follow-up report.

Both are one self-contained HTML file (charts as inline PNG images from Kaleido) and a PDF printed from it
by Chromium; nothing needs the network.
"""

from dashboard.reports.follow_up import FollowUpReport, build_report, report_for
from dashboard.reports.handout import Handout, build_handout
from dashboard.reports.render import ReportError

__all__ = ["FollowUpReport", "Handout", "ReportError", "build_handout", "build_report", "report_for"]
