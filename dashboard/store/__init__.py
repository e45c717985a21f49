"""Persistent store: SQLAlchemy models, Alembic migrations, bulk import, read-back and decisions.

SQLite file `var/dashboard.db` by default, PostgreSQL (or another SQLite file) via $SPINE_DASHBOARD_DB_URL.
"""

from dashboard.store.db import (
    ENV_VAR,
    current_revision,
    database_url,
    get_engine,
    head_revision,
    upgrade_to_head,
)
from dashboard.store.decisions import decision_history, latest_decisions, record_decision
from dashboard.store.identity import IdentityConflictError
from dashboard.store.importer import FileCounts, ImportResult, StoreImportError, import_records
from dashboard.store.loader import import_history, load_records, patient_chunks
from dashboard.store.models import DECISIONS

__all__ = [
    "DECISIONS",
    "ENV_VAR",
    "FileCounts",
    "IdentityConflictError",
    "ImportResult",
    "StoreImportError",
    "current_revision",
    "database_url",
    "decision_history",
    "get_engine",
    "head_revision",
    "import_history",
    "import_records",
    "latest_decisions",
    "load_records",
    "patient_chunks",
    "record_decision",
    "upgrade_to_head",
]
