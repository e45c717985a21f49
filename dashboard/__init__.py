"""Spine Recovery Dashboard: leg-weakness follow-up after lumbar fusion."""

__version__ = "0.1.0"
