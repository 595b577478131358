"""Multi-timeframe synchronisation: carried-forward states, TTL, no look-ahead, and only
the champion model's answers."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from regimes.config.loading import load_config
from regimes.errors import BadInputError
from regimes.live.sync import TimeframeSynchronizer
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit


def _answer(symbol, timeframe, ts, state, unknown=False, reason=None, model_id="champ"):
    return pd.DataFrame(
        [
            {
                "symbol": symbol,
                "timeframe": timeframe,
                "model_id": model_id,
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
    sync.set_champion("1h", "champ")
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
    sync.set_champion("5m", "champ")
    sync.update(_answer("B", "5m", "2024-01-02 14:30Z", 0, unknown=True, reason="loglik"))
    row = sync.composite(["B", "C"], "2024-01-02 14:36Z")
    assert row.loc[0, "reason_5m"] == "loglik" and row.loc[1, "reason_5m"] == "no state yet"
    with pytest.raises(BadInputError, match="timezone-aware"):
        sync.composite(["B"], "2024-01-02 14:36")


def test_only_the_champions_answers_are_kept_and_a_new_champion_starts_fresh():
    sync = TimeframeSynchronizer({"1h": timedelta(hours=4)})
    sync.set_champion("1h", "m-a")
    sync.update(_answer("A", "1h", "2024-01-02 14:30Z", 3, model_id="m-a"))
    # A shadow's newer answer for the same bar and a later one are ignored.
    sync.update(_answer("A", "1h", "2024-01-02 14:30Z", 7, model_id="m-shadow"))
    sync.update(_answer("A", "1h", "2024-01-02 15:30Z", 7, model_id="m-shadow"))
    later = sync.composite(["A"], "2024-01-02 17:00Z").iloc[0]
    assert later["state_1h"] == 3 and later["age_s_1h"] == 5400.0
    # The shadow is promoted: the old champion's state is not carried over to it.
    sync.set_champion("1h", "m-shadow")
    fresh = sync.composite(["A"], "2024-01-02 17:00Z").iloc[0]
    assert fresh["state_1h"] == -1 and fresh["reason_1h"] == "no state yet"
    sync.update(_answer("A", "1h", "2024-01-02 16:30Z", 1, model_id="m-a"))  # old champion
    sync.update(_answer("A", "1h", "2024-01-02 15:30Z", 7, model_id="m-shadow"))
    assert sync.composite(["A"], "2024-01-02 17:40Z").iloc[0]["state_1h"] == 7
    # Setting the same champion again keeps what it has.
    sync.set_champion("1h", "m-shadow")
    assert sync.composite(["A"], "2024-01-02 17:40Z").iloc[0]["state_1h"] == 7


def test_a_per_symbol_champion_wins_over_the_pooled_one():
    sync = TimeframeSynchronizer({"1h": timedelta(hours=4)})
    sync.set_champion("1h", "pooled")
    sync.set_champion("1h", "spy-only", symbol="SPY")
    assert sync.champion("1h", "SPY") == "spy-only" and sync.champion("1h", "QQQ") == "pooled"
    for symbol, model_id, state in [
        ("SPY", "pooled", 1),
        ("SPY", "spy-only", 2),
        ("QQQ", "pooled", 3),
        ("QQQ", "spy-only", 4),
    ]:
        sync.update(_answer(symbol, "1h", "2024-01-02 14:30Z", state, model_id=model_id))
    states = sync.composite(["SPY", "QQQ"], "2024-01-02 16:00Z")["state_1h"].tolist()
    assert states == [2, 3]
    # A new pooled champion starts QQQ afresh but leaves SPY (own champion) alone.
    sync.set_champion("1h", "pooled-2")
    states = sync.composite(["SPY", "QQQ"], "2024-01-02 16:00Z")["state_1h"].tolist()
    assert states == [2, -1]


def test_answers_of_a_timeframe_without_a_champion_are_refused():
    sync = TimeframeSynchronizer({"1h": timedelta(hours=4)})
    with pytest.raises(BadInputError, match=r"no champion model set for 1h \(A\)"):
        sync.update(_answer("A", "1h", "2024-01-02 14:30Z", 3))
    sync.set_champion("1h", "m-a", symbol="A")
    batch = pd.concat(
        [
            _answer("A", "1h", "2024-01-02 14:30Z", 3, model_id="m-a"),
            _answer("B", "1h", "2024-01-02 14:30Z", 3, model_id="m-a"),
        ]
    )
    with pytest.raises(BadInputError, match=r"no champion model set for 1h \(B\)"):
        sync.update(batch)
    # The whole batch was refused: A's valid answer was not kept either.
    assert sync.composite(["A"], "2024-01-02 16:00Z").iloc[0]["reason_1h"] == "no state yet"
    with pytest.raises(BadInputError, match="no state TTL configured for 5m"):
        sync.set_champion("5m", "m")
    with pytest.raises(BadInputError, match="answers need a model_id column"):
        sync.update(batch.drop(columns="model_id"))


def test_the_champions_own_ttl_replaces_the_configured_one():
    """A model carries its TTL: a config edit never makes its states stale sooner."""
    sync = TimeframeSynchronizer({"1h": timedelta(hours=1)})
    sync.set_champion("1h", "champ", ttl=timedelta(hours=4))
    sync.update(_answer("A", "1h", "2024-01-02 14:30Z", 3))
    kept = sync.composite(["A"], "2024-01-02 18:00Z").iloc[0]
    assert kept["state_1h"] == 3  # 2.5 h after the close: stale under 1 h, fresh under 4 h
    with pytest.raises(BadInputError, match="positive timedelta"):
        sync.set_champion("1h", "champ", ttl=timedelta(0))
