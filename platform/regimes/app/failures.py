"""Expected errors across an orchestrator's boundary.

A user mistake (:data:`USER_MISTAKES`) inside a Prefect task is returned as data
(:func:`as_failure`) instead of raised: Prefect then neither prints a task traceback nor
retries it, and the caller raises the same error type again with the same one-line
message (:func:`raise_failure`).
"""

from __future__ import annotations

from typing import Any

from regimes import errors
from regimes.errors import RegimesError

FAILURE_KEY = "expected_error"
USER_MISTAKES = (errors.BadInputError, errors.ConfigError)
"""What crosses the boundary as data. Anything else (a store down, an artifact that does
not verify, a registry conflict, a fit that diverged) is raised inside the task, so the
orchestrator retries it and marks the run failed."""


def as_failure(exc: RegimesError) -> dict[str, Any]:
    """A plain, serialisable record of an expected error."""
    return {FAILURE_KEY: {"type": type(exc).__name__, "message": str(exc)}}


def raise_failure(row: Any) -> None:
    """Raise the error recorded by :func:`as_failure` in ``row``, if it is one."""
    if not isinstance(row, dict) or FAILURE_KEY not in row:
        return
    failure = row[FAILURE_KEY]
    kind = getattr(errors, str(failure.get("type")), None)
    if not (isinstance(kind, type) and issubclass(kind, RegimesError)):
        kind = RegimesError
    raise kind(failure.get("message", "failed"))
