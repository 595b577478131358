"""Constrained feature selection within the fixed list (plan 2.7, 2.8).

Works on the training rows only (stationarized, before scaling), within a timeframe's
configured list, and never exceeds its budget:

1. drop features that are all-NaN or have zero variance (e.g. ``tod_sin`` on 1d bars);
2. of each pair with |Spearman rho| above ``max_abs_correlation``, drop one — the one
   outside the previous model's selection if exactly one of them was in it, otherwise the
   more redundant one (higher mean |rho| with the rest);
3. with a regime horizon h (bars), drop features that carry no regime information:
   a feature's *excess persistence* is its lag-L autocorrelation (per symbol) minus
   what its own rolling window explains (1 - L / window for overlapping windows),
   the smaller over L = h/2 and h; calendar features (``tod_sin``) are known in advance
   and score 0. Features below ``MIN_EXCESS_PERSISTENCE`` are dropped, but the
   ``MIN_FEATURES`` best always stay (the encoder needs d >= 6 inputs);
4. while over budget, drop the most redundant feature; a feature of the previous
   selection is kept over a new one when their redundancy scores are within
   ``stability_tolerance`` (stability across retrains).

Every drop is reported with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from regimes.config.spec import FIXED_FEATURES
from regimes.config.timeframes import SelectionConfig
from regimes.errors import BadInputError
from regimes.model.splits import FitRange


@dataclass
class SelectionReport:
    """What selection kept and dropped, and why."""

    candidates: list[str]
    budget: int
    selected: list[str] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)
    fit_range: FitRange | None = None
    persistence: dict[str, float] = field(default_factory=dict)

    def drop(self, name: str, reason: str) -> None:
        self.dropped.append({"feature": name, "reason": reason})

    def as_dict(self) -> dict:
        return {
            "candidates": self.candidates,
            "budget": self.budget,
            "selected": self.selected,
            "dropped": self.dropped,
            "persistence": self.persistence,
            "fit_range": None
            if self.fit_range is None
            else {
                "start": self.fit_range.start.isoformat(),
                "end": self.fit_range.end.isoformat(),
                "rows": self.fit_range.rows,
            },
        }


MIN_EXCESS_PERSISTENCE = 0.05
MIN_FEATURES = 6
CALENDAR_FEATURES = frozenset({"tod_sin"})
CURRENT_BAR_FEATURES = frozenset({"clv", "range_1", "vol_z_60", "relvol_60", "range_z_60"})
"""Features whose value is the current bar measured against its window: they overlap
their neighbours by one bar, whatever the window."""


def excess_persistence(
    train: pd.DataFrame, names: Sequence[str], horizon: float, windows: dict[str, int]
) -> dict[str, float]:
    """Per feature: the smallest, over lags L in {h/2, h}, of its lag-L autocorrelation
    within each symbol minus the overlap of its own window (max(0, 1 - L / window)).

    A feature that follows a regime lasting about ``horizon`` bars keeps its value over
    such lags beyond what its rolling window alone would give; per-bar noise and
    long-window smoothing do not.
    """
    lags = sorted({max(1, int(round(horizon / 2))), max(1, int(round(horizon)))})
    groups = train["symbol"].to_numpy() if "symbol" in train else np.zeros(len(train))
    scores = {}
    for name in names:
        if name in CALENDAR_FEATURES:
            scores[name] = 0.0
            continue
        values = train[name].to_numpy(dtype=float)
        window = 1 if name in CURRENT_BAR_FEATURES else max(int(windows.get(name, 1)), 1)
        worst = np.inf
        for lag in lags:
            same = groups[lag:] == groups[:-lag]
            a, b = values[:-lag][same], values[lag:][same]
            ok = np.isfinite(a) & np.isfinite(b)
            if ok.sum() < 10 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
                worst = min(worst, 0.0)
                continue
            rho = float(np.corrcoef(a[ok], b[ok])[0, 1])
            worst = min(worst, rho - max(0.0, 1.0 - lag / window))
        scores[name] = float(worst)
    return scores


def select_features(
    train: pd.DataFrame,
    candidates: Sequence[str],
    budget: int,
    config: SelectionConfig,
    previous: Sequence[str] | None = None,
    horizon: float | None = None,
    windows: dict[str, int] | None = None,
) -> SelectionReport:
    """Select features from ``candidates`` on training rows ``train`` (with ``ts`` and,
    for the persistence step, ``symbol``). ``horizon`` (bars) turns on step 3 with each
    feature's rolling window from ``windows``."""
    unknown = [c for c in candidates if c not in FIXED_FEATURES]
    if unknown:
        raise BadInputError(f"selection: unknown feature(s) {unknown}; only the fixed list")
    if not 1 <= budget <= len(candidates):
        raise BadInputError(
            f"selection: budget {budget} outside 1..{len(candidates)} (the candidate list)"
        )
    missing = [c for c in candidates if c not in train.columns]
    if missing:
        raise BadInputError(f"selection: training rows lack feature column(s) {missing}")
    report = SelectionReport(candidates=list(candidates), budget=budget)
    if "ts" in train.columns and len(train):
        report.fit_range = FitRange.of(train["ts"])
    previous_set = set(previous or ())
    kept = []
    for name in candidates:
        values = train[name].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            report.drop(name, "all values missing")
        elif len(finite) < 0.5 * len(values):
            report.drop(name, f"{1 - len(finite) / len(values):.0%} of values missing")
        elif np.ptp(finite) == 0 or np.std(finite) <= 1e-12 * max(1.0, abs(np.mean(finite))):
            report.drop(name, "zero variance")
        else:
            kept.append(name)
    if not kept:
        raise BadInputError("selection: every candidate feature was dropped; nothing to encode")

    rho = train[kept].rank().corr(method="pearson").abs().to_numpy()  # Spearman
    np.fill_diagonal(rho, 0.0)
    rho = np.nan_to_num(rho, nan=0.0)
    alive = np.ones(len(kept), dtype=bool)

    def redundancy(i: int) -> float:
        others = alive.copy()
        others[i] = False
        return float(rho[i, others].mean()) if others.any() else 0.0

    pairs = sorted(
        ((rho[i, j], i, j) for i in range(len(kept)) for j in range(i + 1, len(kept))),
        reverse=True,
    )
    for value, i, j in pairs:
        if value <= config.max_abs_correlation:
            break
        if not (alive[i] and alive[j]):
            continue
        in_previous = (kept[i] in previous_set, kept[j] in previous_set)
        if in_previous == (True, False):
            loser, winner = j, i
        elif in_previous == (False, True):
            loser, winner = i, j
        else:
            loser, winner = (i, j) if redundancy(i) >= redundancy(j) else (j, i)
        alive[loser] = False
        report.drop(kept[loser], f"collinear with {kept[winner]} (|rho| = {value:.3f})")

    if horizon is not None:
        survivors = [kept[i] for i in np.flatnonzero(alive)]
        scores = excess_persistence(train, survivors, horizon, windows or {})
        ranked = sorted(survivors, key=lambda n: -scores[n])
        protected = set(ranked[:MIN_FEATURES])
        report.persistence = {n: round(v, 4) for n, v in scores.items()}
        for i in np.flatnonzero(alive):
            name = kept[i]
            if scores[name] < MIN_EXCESS_PERSISTENCE and name not in protected:
                alive[i] = False
                report.drop(
                    name,
                    f"no regime persistence over {horizon:g} bars (excess autocorrelation "
                    f"{scores[name]:.3f} < {MIN_EXCESS_PERSISTENCE})",
                )

    while alive.sum() > budget:
        scores = {i: redundancy(i) for i in np.flatnonzero(alive)}
        worst = max(scores, key=scores.get)
        # Stability: among the near-worst, drop one that the previous model did not use.
        near = [i for i, s in scores.items() if scores[worst] - s <= config.stability_tolerance]
        newcomers = [i for i in near if kept[i] not in previous_set]
        loser = max(newcomers, key=scores.get) if newcomers and previous_set else worst
        alive[loser] = False
        report.drop(kept[loser], f"over the budget of {budget} (mean |rho| {scores[loser]:.3f})")
    report.selected = [kept[i] for i in np.flatnonzero(alive)]
    return report
