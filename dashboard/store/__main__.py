"""Store administration: `python -m dashboard.store {upgrade,current} [--url URL]`.

The app migrates by itself on start; this is for operators who want to migrate (or check) ahead of time,
from any working directory. The URL defaults to $SPINE_DASHBOARD_DB_URL, else var/dashboard.db.
"""

from __future__ import annotations

import argparse

from dashboard.store.db import current_revision, get_engine, head_revision, upgrade_to_head


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboard.store", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["upgrade", "current"])
    parser.add_argument("--url", help="database URL (default: $SPINE_DASHBOARD_DB_URL or var/dashboard.db)")
    args = parser.parse_args(argv)
    engine = get_engine(args.url, migrate=False)
    try:
        if args.command == "upgrade":
            upgrade_to_head(engine)
        print(f"database at revision {current_revision(engine) or '(empty)'}; code head {head_revision()}")
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
