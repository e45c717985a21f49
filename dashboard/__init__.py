"""Spine Recovery Dashboard: leg-weakness follow-up after lumbar fusion."""

from dashboard._entry_guard import pages_only_through_the_entry_point

__version__ = "0.1.0"

pages_only_through_the_entry_point()  # before any page can import patient data: see dashboard/_entry_guard.py
