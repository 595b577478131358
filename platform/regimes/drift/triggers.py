"""Retrain triggers (plan 9.5): is the champion of a timeframe due for a retrain?

Each trigger is a figure against a limit, like a gate check (:mod:`regimes.drift.gates`),
but read the other way: a trigger *fires* when its figure crosses the limit. A figure
without enough data does not fire (a retrain is not started on a guess either; the
trigger says "too little data").

- **cadence**: days since the champion was promoted, against the timeframe's
  ``retrain_cadence`` (weekly 7, biweekly 14, monthly 30, quarterly 91 days);
- **log-likelihood decay**: the current window's mean predictive log-likelihood below
  the reference (training) window's mean, in reference standard deviations;
- **log-likelihood z-score**: the current window's mean against the means of the
  ``trailing_windows`` windows of the same length just before it;
- **entropy spikes**: the share of current bars whose posterior entropy is above the
  reference window's ``entropy_quantile`` (expected: 1 - quantile);
- **occupancy collapse**: one state holds more than ``top_state_share`` of the current
  bars while it held less in the reference window;
- **drift**: the failed checks of the champion's drift report (PSI/KL of features, z,
  states and log-likelihood; :func:`regimes.drift.gates.drift_checks`).

Examples
--------
>>> import pandas as pd
>>> cadence_trigger(pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-10", tz="UTC"),
...                 "weekly").line()
'FIRED cadence: 9 days since promotion (limit 7 days, weekly)'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from regimes.drift.gates import Check

CADENCE_DAYS = {"weekly": 7.0, "biweekly": 14.0, "monthly": 30.0, "quarterly": 91.0}


@dataclass(frozen=True)
class Trigger:
    """One retrain trigger: ``value`` against ``limit``; ``fired`` when crossed."""

    name: str
    value: float | None
    limit: float
    fired: bool
    detail: str = ""

    def line(self) -> str:
        verdict = "FIRED" if self.fired else "quiet"
        if self.value is None:
            return f"{verdict} {self.name}: {self.detail or 'too little data'}"
        return f"{verdict} {self.name}: {self.detail}".rstrip()

    def as_dict(self) -> dict:
        return asdict(self)


def _quiet(name: str, limit: float, why: str) -> Trigger:
    return Trigger(name, None, limit, False, f"too little data ({why})")


def cadence_trigger(since: pd.Timestamp, now: pd.Timestamp, cadence: str) -> Trigger:
    """Days since ``since`` (the champion's promotion) against the cadence's days."""
    limit = CADENCE_DAYS[cadence]
    days = (now - since).total_seconds() / 86_400
    detail = f"{days:.0f} days since promotion (limit {limit:g} days, {cadence})"
    return Trigger("cadence", round(days, 3), limit, days > limit, detail)


def _encoded(answers: pd.DataFrame) -> pd.DataFrame:
    """Rows the model encoded (warm-up, gaps and unknown states left out)."""
    loglik = answers["loglik"].to_numpy(dtype=float)
    keep = np.isfinite(loglik) & (answers["raw_state_id"].to_numpy() >= 0)
    return answers.loc[keep, ["ts", "loglik", "entropy", "raw_state_id"]]


def loglik_triggers(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    trailing: pd.DataFrame,
    window_bars: int,
    *,
    decay_limit: float,
    z_limit: float,
    trailing_windows: int,
    min_rows: int,
) -> list[Trigger]:
    """Decay against the reference window, and the z-score against trailing windows.

    ``trailing`` holds the encoded rows before the current window; it is cut into
    windows of ``window_bars`` bar times (the newest ``trailing_windows`` of them)."""
    if min(len(reference), len(current)) < min_rows:
        why = f"reference {len(reference)}, current {len(current)} bars; {min_rows} needed"
        return [
            _quiet("log-likelihood decay", decay_limit, why),
            _quiet("log-likelihood z-score", z_limit, why),
        ]
    ref = reference["loglik"].to_numpy(dtype=float)
    now = float(current["loglik"].mean())
    spread = float(ref.std()) or 1.0
    decay = (float(ref.mean()) - now) / spread
    triggers = [
        Trigger(
            "log-likelihood decay",
            round(decay, 4),
            decay_limit,
            decay > decay_limit,
            f"mean {now:.3f} vs {ref.mean():.3f} in training: {decay:.2f} sd lower "
            f"(limit {decay_limit:g})",
        )
    ]
    times = np.sort(trailing["ts"].unique())
    usable = len(times) // window_bars
    if usable < 2:
        why = f"{usable} trailing window(s) of {window_bars} bar times before the current one"
        return triggers + [_quiet("log-likelihood z-score", z_limit, why)]
    windows = min(usable, trailing_windows)
    edges = times[len(times) - windows * window_bars :: window_bars]
    codes = np.searchsorted(edges, trailing["ts"].to_numpy(), side="right") - 1
    past = trailing.assign(window=codes)
    means = past[past["window"] >= 0].groupby("window")["loglik"].mean().to_numpy()
    sd = float(means.std(ddof=1)) if len(means) > 1 else 0.0
    fall = (float(means.mean()) - now) / sd if sd > 0 else 0.0
    triggers.append(
        Trigger(
            "log-likelihood z-score",
            round(-fall, 4),
            z_limit,
            fall > z_limit,
            f"current mean {now:.3f} vs {len(means)} trailing windows {means.mean():.3f} "
            f"(sd {sd:.3f}): z = {-fall:.2f} (fires below -{z_limit:g})",
        )
    )
    return triggers


def entropy_trigger(
    reference: pd.DataFrame, current: pd.DataFrame, quantile: float, limit: float, min_rows: int
) -> Trigger:
    """Share of current bars above the reference's ``quantile`` of posterior entropy."""
    name = "entropy spikes"
    ref = reference["entropy"].to_numpy(dtype=float)
    cur = current["entropy"].to_numpy(dtype=float)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if min(len(ref), len(cur)) < min_rows:
        return _quiet(name, limit, f"reference {len(ref)}, current {len(cur)} bars")
    threshold = float(np.quantile(ref, quantile))
    share = float((cur > threshold).mean())
    detail = (
        f"{share:.1%} of current bars above the training p{quantile * 100:g} entropy "
        f"{threshold:.3f} nats (expected {1 - quantile:.1%}; limit {limit:.1%})"
    )
    return Trigger(name, round(share, 6), limit, share > limit, detail)


def occupancy_trigger(
    reference: pd.DataFrame, current: pd.DataFrame, top_share: float, min_rows: int
) -> Trigger:
    """One state holding more than ``top_share`` of the current bars (not so in training)."""
    name = "occupancy collapse"
    if min(len(reference), len(current)) < min_rows:
        return _quiet(name, top_share, f"reference {len(reference)}, current {len(current)} bars")
    now = current["raw_state_id"].value_counts(normalize=True)
    before = reference["raw_state_id"].value_counts(normalize=True)
    state, share = int(now.index[0]), float(now.iloc[0])
    collapsed = share > top_share and float(before.iloc[0]) <= top_share
    detail = (
        f"state {state} holds {share:.1%} of the current bars (most in training "
        f"{before.iloc[0]:.1%}; limit {top_share:.0%})"
    )
    return Trigger(name, round(share, 6), top_share, collapsed, detail)


def drift_triggers(checks: list[Check]) -> list[Trigger]:
    """The drift report's checks as triggers: a failed check fires (too little data does
    not)."""
    out = []
    for check in checks:
        too_little = check.value is None or check.name == "rows"
        out.append(
            Trigger(
                f"drift: {check.name}",
                check.value,
                check.limit,
                not check.passed and not too_little,
                check.figure() if not too_little else (check.detail or "too little data"),
            )
        )
    return out


def window_rows(answers: pd.DataFrame, windows) -> tuple[pd.DataFrame, ...]:
    """Encoded answers of the reference window, the current window, and everything
    before the current window (the trailing history)."""
    rows = _encoded(answers)
    ts = pd.DatetimeIndex(rows["ts"])
    reference = rows[(ts >= windows.reference_start) & (ts < windows.reference_end)]
    current = rows[(ts >= windows.current_start) & (ts < windows.current_end)]
    trailing = rows[ts < windows.current_start]
    return reference, current, trailing
