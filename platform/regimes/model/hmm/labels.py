"""Readable state names from state-conditioned statistics (what the user sees).

Each state is described by its bars' median realised volatility (low / mid / high, by
tercile across states), the mean return of its bars, computed from past prices only
(up / flat / down, by a t-statistic), and median relative volume (light / normal /
heavy), e.g.
``"high-vol down, heavy volume"``. Duplicate names get a ``#k`` suffix.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def state_statistics(
    states: np.ndarray, volatility: np.ndarray, returns: np.ndarray, volume: np.ndarray, K: int
) -> pd.DataFrame:
    """Per-state occupancy and conditioned statistics (states from the filter or Viterbi)."""
    frame = pd.DataFrame(
        {"state": states, "volatility": volatility, "ret": returns, "volume": volume}
    )
    grouped = frame.groupby("state")
    stats = pd.DataFrame(
        {
            "bars": grouped.size(),
            "volatility": grouped["volatility"].median(),
            "mean_return": grouped["ret"].mean(),
            "return_t": grouped["ret"].mean() / (grouped["ret"].std() / np.sqrt(grouped.size())),
            "volume": grouped["volume"].median(),
        }
    ).reindex(range(K))
    stats["occupancy"] = stats["bars"].fillna(0) / max(len(frame), 1)
    return stats


def state_labels(stats: pd.DataFrame) -> dict[int, str]:
    """Names for each state of :func:`state_statistics`."""
    seen = stats.dropna(subset=["volatility"])
    labels: dict[int, str] = {}
    if seen.empty:
        return {int(k): f"state {k}" for k in stats.index}
    low, high = np.nanquantile(seen["volatility"], [1 / 3, 2 / 3])
    vol_low, vol_high = np.nanquantile(seen["volume"], [1 / 3, 2 / 3])
    for state, row in stats.iterrows():
        if pd.isna(row["volatility"]):
            labels[int(state)] = f"unvisited #{state}"
            continue
        vol = (
            "low-vol"
            if row["volatility"] <= low
            else "high-vol"
            if row["volatility"] > high
            else "mid-vol"
        )
        t = row["return_t"]
        trend = "up" if t > 2 else "down" if t < -2 else "flat"
        volume = (
            "light volume"
            if row["volume"] <= vol_low
            else "heavy volume"
            if row["volume"] > vol_high
            else "normal volume"
        )
        labels[int(state)] = f"{vol} {trend}, {volume}"
    totals: dict[str, int] = {}
    for name in labels.values():
        totals[name] = totals.get(name, 0) + 1
    seen_so_far: dict[str, int] = {}
    for state in sorted(labels):
        name = labels[state]
        if totals[name] > 1:
            seen_so_far[name] = seen_so_far.get(name, 0) + 1
            labels[state] = f"{name} #{seen_so_far[name]}"
    return labels
