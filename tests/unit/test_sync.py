"""Multi-timeframe synchronisation: carried-forward states, TTL, no look-ahead."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from regimes.config.loading import load_config
from regimes.errors import BadInputError
from regimes.live.sync import TimeframeSynchronizer
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit


def _answer(symbol, timeframe, ts, state, unknown=False, reason=None):
    return pd.DataFrame(
        [
            {
                "symbol": symbol,
                "timeframe": timeframe,
                "ts": pd.Timestamp(ts),
                "state_id": -1 if unknown else state,
                "state_prob": 0.8,
                "is_unknown": unknown,
                "ood_reason": reason,
            }
        ]
    )


def test_higher_timeframe_states_are_carried_with_ttl_and_never_early():
    sync = TimeframeSynchronizer({"1m": timedelta(minutes=5), "1h": timedelta(hours=4)})
    sync.update(_answer("A", "1h", "2024-01-02 14:30Z", 3))
    # Before the 1h bar closes (15:30) it is not used.
    early = sync.composite(["A"], "2024-01-02 15:00Z").iloc[0]
    assert early["state_1h"] == -1 and early["reason_1h"] == "no state yet"
    fresh = sync.composite(["A"], "2024-01-02 16:00Z").iloc[0]
    assert fresh["state_1h"] == 3 and fresh["age_s_1h"] == 1800.0
    stale = sync.composite(["A"], "2024-01-02 20:00Z").iloc[0]
    assert stale["state_1h"] == -1 and stale["reason_1h"].startswith("stale: 4:30:00 old")
    sync.update(_answer("A", "1h", "2024-01-02 15:30Z", 5))
    sync.update(_answer("A", "1h", "2024-01-02 14:30Z", 1))  # older: ignored
    assert sync.composite(["A"], "2024-01-02 16:40Z").iloc[0]["state_1h"] == 5
    # A query before the newest bar closed still sees the one before.
    assert sync.composite(["A"], "2024-01-02 16:00Z").iloc[0]["state_1h"] == 3


def test_unknown_states_keep_their_reason_and_config_ttls_load():
    sync = TimeframeSynchronizer.from_config(load_config(REPO_ROOT / "config"))
    sync.update(_answer("B", "5m", "2024-01-02 14:30Z", 0, unknown=True, reason="loglik"))
    row = sync.composite(["B", "C"], "2024-01-02 14:36Z")
    assert row.loc[0, "reason_5m"] == "loglik" and row.loc[1, "reason_5m"] == "no state yet"
    with pytest.raises(BadInputError, match="timezone-aware"):
        sync.composite(["B"], "2024-01-02 14:36")
