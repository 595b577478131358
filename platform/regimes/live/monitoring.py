"""What the monitoring dashboard shows (plan 9.1), computed from a champion's newest
answers: posterior entropy (mean and p95), the OOD rate by reason and the state
occupancy, over time buckets of bar times.

Examples
--------
>>> import pandas as pd
>>> frame = pd.DataFrame({"ts": pd.date_range("2024-01-02", periods=4, freq="1h", tz="UTC"),
...     "state_id": [0, 0, 1, -1], "is_unknown": [False, False, False, True],
...     "ood_reason": [None, None, None, "loglik"], "p_00": [1.0, 0.5, 0.0, None],
...     "p_01": [0.0, 0.5, 1.0, None]})
>>> series = monitor_series(frame, buckets=2)
>>> series["ood_rate"]["loglik"]
[0.0, 0.5]
>>> series["occupancy_now"]
{'0': 0.666667, '1': 0.333333}
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from regimes.live.answer_frame import ANSWER_REASONS


def monitor_series(answers: pd.DataFrame, buckets: int = 30) -> dict:
    """Per time bucket: entropy mean and p95 (nats), share of answers per UNKNOWN reason;
    and the occupancy of the known states over all of ``answers``."""
    if answers.empty:
        return {
            "times": [],
            "entropy_mean": [],
            "entropy_p95": [],
            "ood_rate": {},
            "occupancy_now": {},
            "answers": 0,
        }
    frame = answers.sort_values("ts", kind="stable").reset_index(drop=True)
    posterior = frame[sorted(c for c in frame.columns if c.startswith("p_"))].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(np.where(posterior > 0, posterior * np.log(posterior), 0.0), axis=1)
    entropy[~np.isfinite(posterior).all(axis=1)] = np.nan
    ts = pd.DatetimeIndex(frame["ts"])
    codes = np.asarray(pd.factorize(ts, sort=True)[0])
    n_times = int(codes.max()) + 1
    bucket = np.minimum(codes * buckets // max(n_times, 1), buckets - 1)
    times, mean, p95 = [], [], []
    rates: dict[str, list[float]] = {reason: [] for reason in ANSWER_REASONS}
    for b in np.unique(bucket):
        rows = bucket == b
        values = entropy[rows]
        values = values[np.isfinite(values)]
        times.append(ts[rows].min().isoformat())
        mean.append(round(float(values.mean()), 6) if values.size else None)
        p95.append(round(float(np.percentile(values, 95)), 6) if values.size else None)
        reasons = frame.loc[rows, "ood_reason"]
        for reason in ANSWER_REASONS:
            rates[reason].append(round(float((reasons == reason).mean()), 6))
    known = frame.loc[~frame["is_unknown"].astype(bool), "state_id"].astype(int)
    occupancy = known.value_counts(normalize=True).sort_index()
    return {
        "times": times,
        "entropy_mean": mean,
        "entropy_p95": p95,
        "ood_rate": {r: v for r, v in rates.items() if any(v)},
        "occupancy_now": {str(k): round(float(v), 6) for k, v in occupancy.items()},
        "answers": int(len(frame)),
    }
