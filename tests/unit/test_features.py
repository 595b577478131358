"""The 21 features: batch and online agree exactly, no look-ahead, defined fallbacks,
snapshots restore exactly, and bad bars are refused without touching the state."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regimes.config.loading import load_config
from regimes.config.spec import FIXED_FEATURES
from regimes.data.bars import align_minutes, session_open_utc
from regimes.data.synth import SynthConfig, generate
from regimes.errors import BadInputError
from regimes.features.batch import compute_batch
from regimes.features.definitions import warmup_lengths
from regimes.features.online import OnlineFeatureBuffer
from regimes.features.selection import selected_features
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit
CONFIG = load_config(REPO_ROOT / "config")
SPEC, SESSION = CONFIG.features, CONFIG.timeframes.session
TOLERANCE = 1e-9  # max |batch - online| relative to each feature's scale


def _aligned_market(seed: int, symbols: int = 3, days: int = 4) -> pd.DataFrame:
    market = generate(
        SynthConfig(symbols=symbols, days=days, seed=seed, missing_rate=0.01, outage_rate=0.3),
        SESSION,
    )
    frames = [align_minutes(group, SESSION)[0] for _, group in market.bars.groupby("symbol")]
    return pd.concat(frames, ignore_index=True)


def _sp500() -> pd.DataFrame:
    from arch.data import sp500

    raw = sp500.load()
    return pd.DataFrame(
        {
            "symbol": "SPX",
            "timeframe": "1d",
            "ts": session_open_utc(pd.DatetimeIndex(raw.index), SESSION),
            "open": raw["Open"].to_numpy(),
            "high": raw["High"].to_numpy(),
            "low": raw["Low"].to_numpy(),
            "close": raw["Close"].to_numpy(),
            "volume": raw["Volume"].to_numpy(dtype=float),
            "is_gap": False,
        }
    )


def _replay(
    buffer: OnlineFeatureBuffer, bars: pd.DataFrame, snapshot_at=None, spec=SPEC, session=SESSION
):
    """Feed bars step by step (all symbols of one ts together); optionally snapshot and
    restore into a fresh buffer mid-stream. Returns the online frame and the buffer."""
    rows = []
    for step, (_, group) in enumerate(bars.groupby("ts", sort=True)):
        if snapshot_at is not None and step == snapshot_at:
            buffer = OnlineFeatureBuffer.restore(buffer.snapshot(), spec, session)
        result = buffer.update(
            group["symbol"].tolist(),
            group["ts"],
            group["open"],
            group["high"],
            group["low"],
            group["close"],
            group["volume"],
            group["is_gap"],
        )
        rows.append(result.frame(group["ts"].to_numpy()))
    online = pd.concat(rows, ignore_index=True)
    return online.sort_values(["symbol", "ts"]).reset_index(drop=True), buffer


def _assert_parity(batch: pd.DataFrame, online: pd.DataFrame, names=FIXED_FEATURES):
    batch = batch.sort_values(["symbol", "ts"]).reset_index(drop=True)
    assert (batch["ts"].to_numpy() == online["ts"].to_numpy()).all()
    assert (batch["is_warmup"].to_numpy() == online["is_warmup"].to_numpy()).all()
    assert (batch["is_gap"].to_numpy() == online["is_gap"].to_numpy()).all()
    for name in names:
        x, y = batch[name].to_numpy(), online[name].to_numpy()
        assert (np.isnan(x) == np.isnan(y)).all(), f"{name}: NaN pattern differs"
        finite = np.isfinite(x)
        assert finite.any(), f"{name}: never computed"
        scale = max(np.abs(x[finite]).max(), 1e-300)
        worst = np.abs(x[finite] - y[finite]).max() / scale
        assert worst <= TOLERANCE, f"{name}: relative difference {worst:.2e}"


def test_online_equals_batch_on_synthetic_data_with_gaps(seed):
    bars = _aligned_market(seed)
    assert bars["is_gap"].sum() > 20  # outages and missing minutes are in there
    batch = compute_batch(bars, SPEC, SESSION)
    buffer = OnlineFeatureBuffer(SPEC, SESSION, sorted(bars["symbol"].unique()))
    online, _ = _replay(buffer, bars)
    _assert_parity(batch, online)
    assert batch.loc[batch["is_gap"], list(FIXED_FEATURES)].isna().all().all()


def test_online_equals_batch_on_sp500_daily_with_a_restart_midway():
    bars = _sp500()
    batch = compute_batch(bars, SPEC, SESSION)
    # Told its timeframe: the spec's day-anchored windows roll on 1d, as in compute_batch.
    buffer = OnlineFeatureBuffer(SPEC, SESSION, timeframe="1d")
    online, _ = _replay(buffer, bars, snapshot_at=2_500)
    _assert_parity(batch, online)
    assert np.allclose(batch["tod_sin"].dropna(), 0.0)  # daily bars open at the open


def test_snapshot_restore_mid_stream_gives_identical_outputs(tmp_path, seed):
    bars = _aligned_market(seed + 1, symbols=2, days=2)
    straight, _ = _replay(OnlineFeatureBuffer(SPEC, SESSION), bars)
    restarted, _ = _replay(OnlineFeatureBuffer(SPEC, SESSION), bars, snapshot_at=333)
    pd.testing.assert_frame_equal(straight, restarted)
    # Through a file, too.
    buffer = OnlineFeatureBuffer(SPEC, SESSION)
    first, last = bars.iloc[: len(bars) // 2], bars.iloc[len(bars) // 2 :]
    _, buffer = _replay(buffer, first)
    path = buffer.save(tmp_path / "buffer.npz")
    loaded = OnlineFeatureBuffer.load(path, SPEC, SESSION)
    tail_a, _ = _replay(buffer, last)
    tail_b, _ = _replay(loaded, last)
    pd.testing.assert_frame_equal(tail_a, tail_b)


def test_a_buffer_of_some_features_equals_one_of_the_whole_selection_bit_for_bit(seed):
    """The live engine computes only its model's features (``selected_from``): their
    values and warm-up flags are exactly those of a buffer of the whole selection, also
    across a restart, while a buffer of the subset alone warms up sooner."""
    bars = _aligned_market(seed, symbols=2, days=2)
    subset = ("r5", "sma_20", "rv_15", "range_1")
    whole, _ = _replay(OnlineFeatureBuffer(SPEC, SESSION), bars)
    part, buffer = _replay(
        OnlineFeatureBuffer(SPEC, SESSION, names=subset, selected_from=FIXED_FEATURES),
        bars,
        snapshot_at=333,
    )
    columns = ["symbol", "ts", *subset, "is_warmup", "is_gap"]
    pd.testing.assert_frame_equal(part, whole[columns], check_exact=True)
    assert buffer.names == subset and buffer.selected_from == FIXED_FEATURES
    assert buffer.warmup_bars == max(warmup_lengths(SPEC).values())
    alone, _ = _replay(OnlineFeatureBuffer(SPEC, SESSION, names=subset), bars)
    assert alone["is_warmup"].sum() < part["is_warmup"].sum()
    with pytest.raises(BadInputError, match="not among selected_from"):
        OnlineFeatureBuffer(SPEC, SESSION, names=("r5",), selected_from=("clv",))


def test_no_look_ahead_appending_bars_never_changes_earlier_features(seed):
    bars = _aligned_market(seed + 2, symbols=1, days=2)
    full = compute_batch(bars, SPEC, SESSION)
    cut = len(bars) // 3
    prefix = compute_batch(bars.iloc[:cut], SPEC, SESSION)
    pd.testing.assert_frame_equal(prefix, full.iloc[:cut].reset_index(drop=True))


def test_short_history_stays_warm_up_without_crashing():
    bars = _aligned_market(5, symbols=1, days=1).iloc[:30]
    out = compute_batch(bars, SPEC, SESSION)
    assert out["is_warmup"].all()
    longest = max(warmup_lengths(SPEC).values())
    assert longest == 75 and out["vol_of_vol"].isna().all() and out["clv"].notna().any()
    assert compute_batch(bars.iloc[:0], SPEC, SESSION).empty


def test_zero_volume_and_flat_bars_have_defined_values():
    n = 80
    ts = pd.date_range("2024-01-02 14:30", periods=n, freq="1min", tz="UTC")
    bars = pd.DataFrame(
        {
            "symbol": "FLAT",
            "timeframe": "1m",
            "ts": ts,
            "open": 10.0,
            "high": 10.0,
            "low": 10.0,
            "close": 10.0,
            "volume": 0.0,
            "is_gap": False,
        }
    )
    out = compute_batch(bars, SPEC, SESSION)
    last = out.iloc[-1]
    assert last["clv"] == 0.0 and last["stoch_k"] == 50.0 and last["range_1"] == 0.0
    assert last["relvol_60"] == 1.0 and last["vol_z_60"] == 0.0 and last["range_z_60"] == 0.0
    assert last["vwap_60"] == 10.0 and last["dist_vwap_60"] == 0.0
    values = out.loc[~out["is_warmup"], list(FIXED_FEATURES)]
    assert np.isfinite(values.to_numpy()).all()
    online, _ = _replay(OnlineFeatureBuffer(SPEC, SESSION), bars)
    _assert_parity(out, online, names=["clv", "stoch_k", "relvol_60", "vwap_60", "tod_sin"])


def test_out_of_order_and_duplicate_bars_are_refused_without_state_change(seed):
    bars = _aligned_market(seed + 3, symbols=2, days=1).sort_values(["ts", "symbol"]).iloc[:200]
    buffer = OnlineFeatureBuffer(SPEC, SESSION)
    _, buffer = _replay(buffer, bars.iloc[:100])
    before = buffer.snapshot()
    last = bars.iloc[[99]]
    for ts, what in ((last["ts"], "twice"), (last["ts"] - pd.Timedelta(minutes=5), "out of order")):
        with pytest.raises(BadInputError, match=f"arrived {what}.*no state changed"):
            buffer.update(
                last["symbol"].tolist(),
                ts,
                last["open"],
                last["high"],
                last["low"],
                last["close"],
                last["volume"],
            )
        after = buffer.snapshot()
        assert before.keys() == after.keys()
        assert all(np.array_equal(before[k], after[k]) for k in before)
    other = [s for s in bars["symbol"].unique() if s != last["symbol"].iloc[0]][0]
    with pytest.raises(BadInputError, match="malformed bar"):
        buffer.update([other], last["ts"] + pd.Timedelta(hours=1), [10], [9], [11], [10], [1])
    with pytest.raises(BadInputError, match="appears twice"):
        buffer.update(
            ["A", "A"],
            pd.to_datetime(["2024-01-05 15:00"] * 2, utc=True),
            [1, 1],
            [1, 1],
            [1, 1],
            [1, 1],
            [1, 1],
        )
    after = buffer.snapshot()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_snapshots_of_another_spec_are_refused():
    buffer = OnlineFeatureBuffer(SPEC, SESSION, ["A"])
    state = buffer.snapshot()
    other = SPEC.model_copy(update={"version": SPEC.version + 1})
    with pytest.raises(BadInputError, match="another feature spec"):
        OnlineFeatureBuffer.restore(state, other, SESSION)
    with pytest.raises(BadInputError, match="another trading session"):
        OnlineFeatureBuffer.restore(state, SPEC, None)


def test_non_gap_bars_without_prices_are_refused():
    ts = pd.date_range("2024-01-02 14:30", periods=3, freq="1min", tz="UTC")
    bars = pd.DataFrame(
        {
            "symbol": "X",
            "timeframe": "1m",
            "ts": ts,
            "open": [10.0, np.nan, 10.0],
            "high": 11.0,
            "low": 9.0,
            "close": 10.0,
            "volume": 1.0,
            "is_gap": False,
        }
    )
    with pytest.raises(BadInputError, match=r"X: 1 bar\(s\) that are not gaps have missing"):
        compute_batch(bars, SPEC, SESSION)


def test_down_selection_follows_the_timeframe_config():
    daily = selected_features(SPEC, CONFIG.timeframe("1d"))
    assert "tod_sin" not in daily and len(daily) == 16
    assert selected_features(SPEC, CONFIG.timeframe("1m")) == FIXED_FEATURES
    bars = _sp500().iloc[:100]
    out = compute_batch(bars, SPEC, SESSION, daily)
    assert list(out.columns[3:-2]) == list(daily)
    with pytest.raises(BadInputError, match="unknown feature"):
        compute_batch(bars, SPEC, SESSION, ["clv", "rsi_14"])


def test_a_refused_step_registers_nothing_and_is_gap_shapes_are_checked():
    buffer = OnlineFeatureBuffer(SPEC, SESSION, ["A"])
    t0 = pd.Timestamp("2024-01-02 14:30", tz="UTC")
    buffer.update(["A"], pd.DatetimeIndex([t0]), [10], [11], [9], [10], [1])
    before = buffer.snapshot()
    stamps = pd.DatetimeIndex([t0 + pd.Timedelta(minutes=1), t0])  # A's bar is stale
    with pytest.raises(BadInputError, match="arrived twice"):
        buffer.update(["NEW", "A"], stamps[[0, 1]], [10, 10], [11, 11], [9, 9], [10, 10], [1, 1])
    assert buffer.symbols == ["A"]
    after = buffer.snapshot()
    assert before.keys() == after.keys() and all(
        np.array_equal(before[k], after[k]) for k in before
    )
    for is_gap in (False, [True]):
        with pytest.raises(BadInputError, match="is_gap has shape"):
            buffer.update(
                ["A", "B"],
                pd.DatetimeIndex([stamps[0]] * 2),
                [10, 10],
                [11, 11],
                [9, 9],
                [10, 10],
                [1, 1],
                is_gap=is_gap,
            )
    after = buffer.snapshot()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_symbols_added_one_at_a_time_keep_parity_and_snapshots_stay_compact(seed):
    bars = _aligned_market(seed + 4, symbols=3, days=1)
    buffer = OnlineFeatureBuffer(SPEC, SESSION)  # symbols arrive as their first bar does
    online, buffer = _replay(buffer, bars)
    _assert_parity(compute_batch(bars, SPEC, SESSION), online)
    state = buffer.snapshot()
    assert state["count"].shape == (3,)
    truncated = dict(state, count=state["count"][:2])
    with pytest.raises(BadInputError, match="'count' has shape"):
        OnlineFeatureBuffer.restore(truncated, SPEC, SESSION)
    missing = {k: v for k, v in state.items() if k != "last_ts"}
    with pytest.raises(BadInputError, match="incomplete"):
        OnlineFeatureBuffer.restore(missing, SPEC, SESSION)


def test_rows_of_remembers_a_fully_tracked_batch_and_stays_right():
    buffer = OnlineFeatureBuffer(SPEC, SESSION, ["A", "B", "C"])
    batch = np.array(["C", "A", "B"], dtype=object)
    np.testing.assert_array_equal(buffer.rows_of(batch), [2, 0, 1])
    rows = buffer.rows_of(batch.copy())  # the remembered look-up: equal names, new objects
    np.testing.assert_array_equal(rows, [2, 0, 1])
    rows[:] = 9  # the caller's copy: the remembered rows are not touched
    np.testing.assert_array_equal(buffer.rows_of(batch), [2, 0, 1])
    # Other names, another order, an unseen symbol (not remembered: it may be added later).
    np.testing.assert_array_equal(
        buffer.rows_of(np.array(["A", "C", "B"], dtype=object)), [0, 2, 1]
    )
    unseen = np.array(["A", "D", "B"], dtype=object)
    np.testing.assert_array_equal(buffer.rows_of(unseen), [0, -1, 1])
    buffer.add_symbols(["D"])
    np.testing.assert_array_equal(buffer.rows_of(unseen), [0, 3, 1])
    np.testing.assert_array_equal(buffer.rows_of(["C", "A", "B"]), [2, 0, 1])  # a list
