"""Where the store lives and how to connect: engine creation and schema migrations.

One function, `get_engine`, is the way in for the app: it applies the connection settings the import
relies on (SQLite foreign keys, WAL, real transactions) and brings the schema to the latest Alembic
revision, so a fresh checkout and an old database both just work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from dashboard.mode import demo_mode
from dashboard.private_files import tighten

ENV_VAR = "SPINE_DASHBOARD_DB_URL"
STORE_DIR = Path(__file__).resolve().parent
REPO_ROOT = STORE_DIR.parents[1]
DEFAULT_DB_PATH = REPO_ROOT / "var" / "dashboard.db"
DEMO_DB_PATH = REPO_ROOT / "var" / "demo.db"  # demo mode's own store: the demo cohort only
MIGRATIONS_DIR = STORE_DIR / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def database_url(url: str | None = None) -> str:
    """The URL to use: the argument, else $SPINE_DASHBOARD_DB_URL, else var/dashboard.db in the repo."""
    return url or os.environ.get(ENV_VAR) or f"sqlite:///{DEMO_DB_PATH if demo_mode() else DEFAULT_DB_PATH}"


def get_engine(url: str | None = None, *, migrate: bool = True) -> Engine:
    """Create an engine for the store and bring its schema to head (idempotent).

    Parameters are hidden from SQL errors and nothing is echoed: statements carry patients' names, MRNs
    and notes, which must never reach a log. Cache the result in the app (e.g. st.cache_resource): an
    engine owns a connection pool.
    """
    url = database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tighten(Path(database).expanduser())
        engine = create_engine(parsed, hide_parameters=True)
        _configure_sqlite(engine)
    else:
        engine = create_engine(parsed, hide_parameters=True, pool_pre_ping=True)
    if migrate:
        upgrade_to_head(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    """Foreign keys on, WAL (readers do not block the importer), and transactions that include DDL.

    pysqlite starts transactions lazily and not before DDL; the import creates staging tables inside
    its transaction, so we take over BEGIN ourselves (SQLAlchemy's documented recipe).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:  # DBAPI objects are untyped
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable in WAL except on power loss mid-checkpoint
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # `immediate=True` (engine.execution_options): take the write lock at BEGIN, for transactions that read
        # then write while others may write too (a deferred one would fail with "database is locked").
        immediate = connection.get_execution_options().get("immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def alembic_config() -> Config:
    """Alembic configuration that does not depend on the working directory or an ini file."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Apply every migration not yet applied, in one transaction; does nothing when already at head."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at (None for an empty database)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The latest revision shipped with the code."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
