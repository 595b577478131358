"""Parsing of user-typed values shared by several use cases."""

from __future__ import annotations

from regimes.errors import BadInputError


def aware_timestamp(value: str | None, what: str):
    """``value`` as a timezone-aware ``pandas.Timestamp`` (None stays None).

    Raises
    ------
    BadInputError
        Naming ``what`` (e.g. ``--start``) when the text is not an ISO timestamp or has
        no time zone.
    """
    import pandas as pd

    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        raise BadInputError(f"{what}: expected an ISO timestamp, got {value!r}") from None
    if stamp.tzinfo is None:
        raise BadInputError(f"{what}: expected a timezone-aware timestamp, got {value!r}")
    return stamp
