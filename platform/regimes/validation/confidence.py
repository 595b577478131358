"""Posterior confidence (plan 8.3): the distribution of max(alpha_t), per state and
over time. ``state_prob`` of a stored answer is max_k alpha_t(k), the filtered
posterior's largest probability."""

from __future__ import annotations

import numpy as np
import pandas as pd

from regimes.answers import UNKNOWN
from regimes.validation.periods import period_of_bar


def confidence_table(states: pd.DataFrame, K: int) -> pd.DataFrame:
    """Per state (the filtered argmax, ``raw_state_id``): bars and the 10th, 50th and
    90th percentiles of max(alpha_t), and the share of bars below 0.5."""
    known = states[(states["raw_state_id"] != UNKNOWN) & states["state_prob"].notna()]
    grouped = known.groupby("raw_state_id")["state_prob"]
    table = pd.DataFrame(index=pd.RangeIndex(K, name="state"))
    table["bars"] = grouped.size().reindex(table.index).fillna(0).astype(int)
    for q in (0.1, 0.5, 0.9):
        table[f"p{int(q * 100)}"] = grouped.quantile(q).reindex(table.index)
    table["below_half"] = grouped.apply(lambda x: float((x < 0.5).mean())).reindex(table.index)
    return table


def confidence_histogram(states: pd.DataFrame, K: int, bins: int = 20) -> dict:
    """Counts of max(alpha_t) per state on ``bins`` equal bins from 1/K to 1."""
    known = states[(states["raw_state_id"] != UNKNOWN) & states["state_prob"].notna()]
    edges = np.linspace(1.0 / K, 1.0, bins + 1)
    counts = {
        int(k): np.histogram(known.loc[known["raw_state_id"] == k, "state_prob"], edges)[0].tolist()
        for k in range(K)
    }
    return {"edges": edges.round(4).tolist(), "counts": counts}


def confidence_over_time(states: pd.DataFrame, periods: int = 60) -> pd.DataFrame:
    """Per period: median and 10th percentile of max(alpha_t), mean entropy."""
    known = states[states["state_prob"].notna()]
    if known.empty:
        return pd.DataFrame(columns=["period", "median", "p10", "entropy"])
    period = period_of_bar(known["ts"], periods)
    grouped = known.groupby(period)
    return (
        pd.DataFrame(
            {
                "median": grouped["state_prob"].median(),
                "p10": grouped["state_prob"].quantile(0.1),
                "entropy": grouped["entropy"].mean(),
            }
        )
        .rename_axis("period")
        .reset_index()
    )


def median_confidence(states: pd.DataFrame) -> float:
    """Median max(alpha_t) over the bars with a posterior (NaN when none)."""
    values = states["state_prob"].dropna()
    return float(values.median()) if len(values) else float("nan")
