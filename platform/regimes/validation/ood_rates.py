"""OOD rate over time by reason (plan 8.4): the share of bars answered UNKNOWN per
period, split by ``ood_reason`` (gap, out_of_range, loglik, entropy_spike)."""

from __future__ import annotations

import pandas as pd

from regimes.validation.periods import period_of_bar


def ood_over_time(states: pd.DataFrame, periods: int = 60) -> pd.DataFrame:
    """One row per period: ``bars`` and one column per reason holding its share of the
    period's bars (0 when the reason did not occur)."""
    if states.empty:
        return pd.DataFrame(columns=["period", "bars"])
    period = period_of_bar(states["ts"], periods).rename("period")
    bars = states.groupby(period).size().rename("bars")
    unknown = states[states["is_unknown"].astype(bool)]
    if unknown.empty:
        return bars.rename_axis("period").reset_index()
    counts = (
        unknown.groupby([period[unknown.index], unknown["ood_reason"].fillna("unknown")])
        .size()
        .unstack(fill_value=0)
    )
    shares = counts.reindex(bars.index, fill_value=0).div(bars, axis=0)
    return pd.concat([bars, shares], axis=1).rename_axis("period").reset_index()


def ood_totals(states: pd.DataFrame) -> dict[str, float]:
    """Share of all bars per reason, and ``"any"`` for the total."""
    if states.empty:
        return {"any": float("nan")}
    unknown = states["is_unknown"].astype(bool)
    shares = states.loc[unknown, "ood_reason"].fillna("unknown").value_counts() / len(states)
    return {"any": float(unknown.mean()), **{str(k): float(v) for k, v in shares.items()}}
