"""Shared fixtures.

* Random seeds come from ``REGIMES_TEST_SEED`` (default 0) and are printed.
* ``home`` is a factory-made, unique, removed-afterwards home directory.
* ``engine`` runs a test once on SQLite and once on PostgreSQL. PostgreSQL comes from
  ``REGIMES_TEST_PG_URL`` (default: the machines' server on 127.0.0.1:5432, database
  ``test``); each test session works in a schema of its own, dropped at the end. If the
  server does not answer, the PostgreSQL tests fail: a skipped test is a missing test.
* ``make test`` runs the suite on two pytest-xdist workers, a test file per worker at a
  time (``--dist loadfile``: a module's fixtures start once). Session fixtures that are
  costly to build and only read (a trained home) go through :func:`built_once`, so the
  workers build them once between them.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from regimes.data import sql as db

TEST_SEED = int(os.environ.get("REGIMES_TEST_SEED", "0"))
PG_URL = os.environ.get("REGIMES_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REPO_ROOT = Path(__file__).resolve().parents[1]


def built_once(tmp_path_factory, name: str, build: Callable[[Path], Any]) -> Any:
    """``build(directory)`` run once per test run, even across pytest-xdist workers: the
    first worker to get here builds into ``<basetemp>/<name>`` under a file lock and
    pickles what ``build`` returns; the others wait for the lock and read it. What is
    built is shared, so tests must treat it as read-only (copy it to change it)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's basetemp, above each worker's own
    directory = root / name
    done = root / f"{name}.pickle"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not done.exists():
                directory.mkdir()
                value = build(directory)
                done.write_bytes(pickle.dumps(value))
            return pickle.loads(done.read_bytes())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def pytest_report_header(config):
    return [f"REGIMES_TEST_SEED={TEST_SEED}", f"PostgreSQL under test: {PG_URL}"]


@pytest.fixture
def seed() -> int:
    return TEST_SEED


@pytest.fixture
def home(tmp_path_factory) -> Path:
    """A fresh, unique home directory (pytest removes old ones)."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture
def workspace(home):
    """A Workspace on a fresh home (SQLite inside it), blind to the caller's REGIMES_*
    variables; its database engine is disposed afterwards."""
    from regimes.app.workspace import Workspace

    with Workspace.open(home=home, environ={}) as opened:
        yield opened


@pytest.fixture(scope="session")
def pg_schema_url():
    """A PostgreSQL URL whose connections default to a fresh schema of this session."""
    import sqlalchemy as sa

    schema = f"regimes_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL)
    try:
        with admin.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {PG_URL} does not answer ({exc.orig}); start it "
            "(.ci/ensure-postgres.sh does) or set REGIMES_TEST_PG_URL",
            pytrace=False,
        )
    separator = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{separator}options=-csearch_path%3D{schema}", schema
    with admin.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def _empty_pg_engine(url: str):
    engine = db.make_engine(url)
    db.metadata.drop_all(engine)
    db.create_schema(engine)
    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, home):
    """A fresh, empty database with the schema: SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        engine = db.make_engine(f"sqlite:///{home / 'regimes.db'}")
        db.create_schema(engine)
    else:
        url, _ = request.getfixturevalue("pg_schema_url")
        engine = _empty_pg_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def db_url(request, home) -> str:
    """A database URL for CLI tests (SQLite in the home)."""
    return f"sqlite:///{home / 'regimes.db'}"


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole test session (starting one takes seconds)."""
    import ray

    from regimes.jobs.runtime import ensure_ray

    where = ensure_ray(num_cpus=2)
    yield where
    ray.shutdown()
