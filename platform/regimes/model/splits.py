"""Walk-forward splits over time and the leakage guards (plan 2.5, 2.6).

Splits are defined on the *time axis shared by all symbols* (the sorted distinct bar
timestamps), so no symbol's future can enter another symbol's training window. Every
boundary leaves ``embargo_bars`` timestamps out, at least the longest feature window, so
no feature window straddles a boundary.

Every fitted transform of the pipeline (selection, scaler, encoder, later the HMM)
records the time range of the rows it was fitted on (:class:`FitRange`);
:func:`check_fitted_before` refuses, loudly, a transform whose range reaches a fold's
validation or test boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from regimes.config.timeframes import SplitConfig
from regimes.errors import BadInputError, RegimesError


class LeakageError(RegimesError, AssertionError):
    """A transform was fitted on rows at or after a boundary it must not see."""


@dataclass(frozen=True)
class FitRange:
    """The time range ``[start, end]`` (inclusive, UTC) of the rows a transform saw."""

    start: pd.Timestamp
    end: pd.Timestamp
    rows: int

    @classmethod
    def of(cls, ts) -> FitRange:
        stamps = pd.DatetimeIndex(ts)
        if len(stamps) == 0:
            raise LeakageError("a transform cannot be fitted on zero rows")
        return cls(stamps.min(), stamps.max(), len(stamps))


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: half-open windows ``[start, end)`` on the time axis."""

    index: int
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    val_start: pd.Timestamp
    val_end: pd.Timestamp
    test_start: pd.Timestamp | None
    test_end: pd.Timestamp | None

    def mask(self, ts, part: str) -> np.ndarray:
        """Rows of ``ts`` in ``part`` (train, validation or test)."""
        stamps = pd.DatetimeIndex(ts)
        bounds = {
            "train": (self.train_start, self.train_end),
            "validation": (self.val_start, self.val_end),
            "test": (self.test_start, self.test_end),
        }[part]
        if bounds[0] is None:
            return np.zeros(len(stamps), dtype=bool)
        return np.asarray((stamps >= bounds[0]) & (stamps < bounds[1]))

    def as_dict(self) -> dict:
        return {
            k: (v.isoformat() if isinstance(v, pd.Timestamp) else v)
            for k, v in self.__dict__.items()
        }


def walk_forward_splits(ts, config: SplitConfig) -> list[Fold]:
    """Folds over the distinct timestamps of ``ts`` (all symbols together).

    Fold k's training window ends ``k`` validation windows later than fold 0's:
    ``expanding`` keeps the start fixed, ``rolling`` moves it along. Each fold is
    train | embargo | validation | embargo | test.

    Raises
    ------
    BadInputError
        When the history is too short for the requested folds.
    """
    axis = pd.DatetimeIndex(pd.unique(pd.DatetimeIndex(ts))).sort_values()
    n = len(axis)
    train = int(round(config.train_fraction * n))
    val = max(1, int(round(config.validation_fraction * n)))
    test = int(round(config.test_fraction * n))
    embargo = config.embargo_bars
    step = val
    last_end = train + (config.folds - 1) * step + embargo + val + (embargo + test if test else 0)
    if train < 2 or last_end > n:
        raise BadInputError(
            f"walk-forward: {n} timestamps cannot hold {config.folds} fold(s) of train "
            f"{train}, validation {val}, test {test} with embargo {embargo}; use fewer folds, "
            "smaller fractions or a longer history"
        )

    def at(i: int) -> pd.Timestamp:
        return axis[i] if i < n else axis[-1] + pd.Timedelta(1, "ns")

    folds = []
    for k in range(config.folds):
        train_end = train + k * step
        train_start = 0 if config.mode == "expanding" else k * step
        val_start = train_end + embargo
        val_end = val_start + val
        test_start = val_end + embargo if test else None
        test_end = test_start + test if test else None
        folds.append(
            Fold(
                index=k,
                train_start=axis[train_start],
                train_end=at(train_end),
                val_start=axis[val_start],
                val_end=at(val_end),
                test_start=axis[test_start] if test else None,
                test_end=at(test_end) if test else None,
            )
        )
    return folds


def check_fitted_before(name: str, fit_range: FitRange | None, boundary: pd.Timestamp) -> None:
    """Raise :class:`LeakageError` unless ``fit_range`` ends strictly before ``boundary``."""
    if fit_range is None:
        raise LeakageError(f"{name}: no recorded fit range; cannot prove it saw no future rows")
    if fit_range.end >= boundary:
        raise LeakageError(
            f"LEAKAGE: {name} was fitted on rows up to {fit_range.end.isoformat()}, at or after "
            f"the boundary {boundary.isoformat()} it must not see ({fit_range.rows} rows)"
        )


def check_fold(fold: Fold, fit_ranges: dict[str, FitRange | None]) -> None:
    """Every fitted transform ends before the fold's validation start (and so its test)."""
    for name, fit_range in fit_ranges.items():
        check_fitted_before(name, fit_range, fold.val_start)
