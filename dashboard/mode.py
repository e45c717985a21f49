"""Demo or production: one switch, read in one place.

Production is the default. Demo mode must be asked for (`SPINE_DASHBOARD_MODE=demo`): it signs in with the
public demo passwords, so it runs on a store of its own (`var/demo.db`) that holds the synthetic demo cohort,
never on the clinic's store. A store of real patients can therefore not open with the demo passwords by
forgetting a setting.
"""

from __future__ import annotations

import os

MODE_ENV = "SPINE_DASHBOARD_MODE"


def demo_mode() -> bool:
    """True only when demo mode was asked for."""
    return os.environ.get(MODE_ENV, "production").strip().lower() == "demo"
