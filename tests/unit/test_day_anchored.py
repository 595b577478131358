"""Day-anchored VWAP and volume windows (``anchor: market_day``, the shipped default since
spec version 2): they reset where each symbol's market starts its trading day, batch and
online agree bit for bit (through snapshots too), 1d windows roll, and a spec without
anchors (version 1's) keeps its fingerprint."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regimes.config.markets import MarketConfig
from regimes.config.spec import DAY_ANCHORABLE, FIXED_FEATURES, FeatureSpec
from regimes.data.bars import align_minutes
from regimes.data.calendars import MarketCalendar
from regimes.data.markets import SymbolCalendars
from regimes.data.synth import SynthConfig, generate
from regimes.errors import BadInputError
from regimes.features.batch import compute_batch
from regimes.features.definitions import blocks_for
from regimes.features.market_days import DAY_NS, trading_day_numbers
from regimes.features.online import OnlineFeatureBuffer
from tests.unit.test_features import SESSION, SPEC, _aligned_market, _sp500
from tests.unit.test_features import _replay as replay

pytestmark = pytest.mark.unit
ANCHORED_SPEC = SPEC  # the shipped spec
# The spec as shipped before anchors were on (version 1): every window rolls.
ROLLING_SPEC = FeatureSpec.model_validate(
    {
        "version": 1,
        "features": {
            name: {key: value for key, value in item.items() if key != "anchor"}
            for name, item in SPEC.model_dump(mode="json")["features"].items()
        },
    }
)
FX = MarketCalendar("fx", MarketConfig(calendar="24x5"))
CRYPTO = MarketCalendar("crypto", MarketConfig(calendar="24x7", timezone="Asia/Tokyo"))


def _replay(buffer, bars, spec, calendar, snapshot_at=None):
    """test_features' replay with this spec and calendar: the online frame only."""
    return replay(buffer, bars, snapshot_at, spec, calendar)[0]


def _assert_identical(batch: pd.DataFrame, online: pd.DataFrame) -> None:
    batch = batch.sort_values(["symbol", "ts"]).reset_index(drop=True)
    assert (batch["ts"].to_numpy() == online["ts"].to_numpy()).all()
    assert (batch["is_warmup"].to_numpy() == online["is_warmup"].to_numpy()).all()
    for name in FIXED_FEATURES:
        x, y = batch[name].to_numpy(), online[name].to_numpy()
        assert np.isfinite(x).any(), f"{name}: never computed"
        assert np.array_equal(x, y, equal_nan=True), f"{name}: batch and online differ"


def _market_bars(calendar: MarketCalendar, prefix: str, days: int, seed: int) -> pd.DataFrame:
    market = generate(
        SynthConfig(symbols=1, days=days, seed=seed, symbol_prefix=prefix, start=_START),
        calendar,
    )
    bars = market.bars.assign(is_gap=False)
    return bars[bars["ts"].dt.minute % 10 == 0].reset_index(drop=True)  # fewer live steps


_START = pd.Timestamp("2024-03-07").date()  # FX data runs across the US DST change


def test_the_shipped_spec_anchors_vwap_and_volume_and_a_rolling_spec_keeps_its_fingerprint():
    anchored = {name for name, item in SPEC.features.items() if item.anchor == "market_day"}
    assert anchored == set(DAY_ANCHORABLE) and SPEC.version == 2
    assert {b.anchored for b in blocks_for(SPEC, ["vwap_60", "relvol_60", "vol_z_60"])} == {True}
    assert not any(block.anchored for block in blocks_for(ROLLING_SPEC, FIXED_FEATURES))
    # A spec without anchors (version 1, and what its models' artifacts store) dumps, and
    # so fingerprints, without the key: an explicit `rolling` is the same spec.
    assert all("anchor" not in item for item in ROLLING_SPEC.model_dump()["features"].values())
    explicit = ROLLING_SPEC.model_dump(mode="json")
    explicit["features"]["vwap_60"]["anchor"] = "rolling"
    assert FeatureSpec.model_validate(explicit).fingerprint() == ROLLING_SPEC.fingerprint()
    assert ANCHORED_SPEC.fingerprint() != ROLLING_SPEC.fingerprint()
    assert ANCHORED_SPEC.model_dump()["features"]["vwap_60"]["anchor"] == "market_day"
    round_trip = FeatureSpec.model_validate(ANCHORED_SPEC.model_dump(mode="json"))
    assert round_trip.fingerprint() == ANCHORED_SPEC.fingerprint()
    wrong = ROLLING_SPEC.model_dump(mode="json")
    wrong["features"]["rv_15"]["anchor"] = "market_day"
    with pytest.raises(ValueError, match=r"\['rv_15'\]: anchor: market_day applies to"):
        FeatureSpec.model_validate(wrong)
    wrong["features"]["rv_15"]["anchor"] = "weekly"
    with pytest.raises(ValueError, match="rolling"):
        FeatureSpec.model_validate(wrong)


def test_windows_reset_at_each_session_day_and_batch_equals_online(seed):
    bars = _aligned_market(seed, symbols=2, days=2)
    batch = compute_batch(bars, ANCHORED_SPEC, SESSION)
    buffer = OnlineFeatureBuffer(ANCHORED_SPEC, SESSION, timeframe="1m")
    online = _replay(buffer, bars, ANCHORED_SPEC, SESSION, snapshot_at=700)
    _assert_identical(batch, online)
    # Features without an anchor are exactly the rolling spec's.
    rolling = compute_batch(bars, ROLLING_SPEC, SESSION)
    for name in set(FIXED_FEATURES) - set(DAY_ANCHORABLE):
        assert np.array_equal(batch[name], rolling[name], equal_nan=True), name

    # Against a plain per-day computation: window = the day's last min(60, k) real bars.
    real = bars[~bars["is_gap"]].sort_values(["symbol", "ts"]).reset_index(drop=True)
    values = batch[~batch["is_gap"]].sort_values(["symbol", "ts"]).reset_index(drop=True)
    day = real["ts"].dt.tz_convert(SESSION.timezone).dt.date
    typical = (real["high"] + real["low"] + real["close"]) / 3
    grouped = lambda s: s.groupby([real["symbol"], day])  # noqa: E731
    tpv = grouped(typical * real["volume"]).rolling(60, min_periods=1).sum()
    volume = grouped(real["volume"]).rolling(60, min_periods=1).sum()
    vwap = (tpv / volume).reset_index(drop=True)
    logv = np.log1p(real["volume"])
    mean = grouped(logv).rolling(60, min_periods=1).mean().reset_index(drop=True)
    std = grouped(logv).rolling(60, min_periods=1).std(ddof=0).reset_index(drop=True)
    warm = values["vwap_60"].notna()
    assert warm.sum() > 1000
    assert np.allclose(values.loc[warm, "vwap_60"], vwap[warm], rtol=1e-12)
    z = (logv - mean) / std.where(std > 1e-9 * mean.abs())
    assert np.allclose(values.loc[warm, "vol_z_60"], z[warm].fillna(0.0), atol=1e-9)
    # A day's first real bar: a one-bar window.
    first = warm & (grouped(real["ts"]).cumcount() == 0).to_numpy()
    assert first.sum() >= 2  # every symbol, every day after the warm-up
    assert (values.loc[first, "relvol_60"] == 1.0).all()
    assert (values.loc[first, "vol_z_60"] == 0.0).all()
    assert np.allclose(values.loc[first, "vwap_60"], typical[first], rtol=1e-12)
    across = rolling[~rolling["is_gap"]].sort_values(["symbol", "ts"]).reset_index(drop=True)
    assert (values.loc[first, "vwap_60"] != across.loc[first, "vwap_60"]).all()


def test_fx_and_crypto_reset_at_their_own_day_starts_bit_for_bit_with_restarts(seed):
    calendars = SymbolCalendars({"FX000": FX, "BTC000": CRYPTO})
    bars = pd.concat(
        [_market_bars(FX, "FX", 3, seed), _market_bars(CRYPTO, "BTC", 3, seed + 1)],
        ignore_index=True,
    )
    batch = compute_batch(bars, ANCHORED_SPEC, calendars)
    online = _replay(
        OnlineFeatureBuffer(ANCHORED_SPEC, calendars, timeframe="1m"),
        bars,
        ANCHORED_SPEC,
        calendars,
        snapshot_at=300,
    )
    _assert_identical(batch, online)
    # FX days start at 17:00 New York (22:00 UTC in winter, 21:00 UTC on the Sunday
    # after the 2024-03-10 change), the crypto days at midnight Tokyo (15:00 UTC): there
    # relvol restarts at 1 (a one-bar window); the bar before belongs to the day before.
    indexed = batch.set_index(["symbol", "ts"])["relvol_60"]
    for symbol, stamp, before in (
        ("FX000", "2024-03-07 22:00", True),
        ("FX000", "2024-03-10 21:00", False),
        ("BTC000", "2024-03-08 15:00", True),
    ):
        start = pd.Timestamp(stamp, tz="UTC")
        assert indexed.loc[(symbol, start)] == 1.0
        if before:
            assert indexed.loc[(symbol, start - pd.Timedelta("10min"))] != 1.0
    days = trading_day_numbers(
        pd.DatetimeIndex(["2024-03-08 21:59", "2024-03-10 21:00"], tz="UTC").asi8, FX
    )
    assert [str(pd.Timestamp(d * DAY_NS).date()) for d in days] == ["2024-03-08", "2024-03-11"]
    assert set(bars.loc[bars["symbol"] == "FX000", "ts"].dt.date.astype(str)) >= {"2024-03-10"}


def test_daily_windows_roll_on_the_1d_timeframe():
    bars = _sp500().iloc[:250]
    anchored = compute_batch(bars, ANCHORED_SPEC, SESSION)
    rolling = compute_batch(bars, ROLLING_SPEC, SESSION)
    pd.testing.assert_frame_equal(anchored, rolling)
    online = _replay(
        OnlineFeatureBuffer(ANCHORED_SPEC, SESSION, timeframe="1d"),
        bars,
        ANCHORED_SPEC,
        SESSION,
        snapshot_at=120,
    )
    _assert_identical(anchored, online)


@pytest.mark.parametrize("version", [2, 3])
def test_snapshots_of_versions_2_and_3_restore_without_anchors_and_are_refused_with_them(
    version,
):
    # 2: before partial buffers and day-anchored windows; 3: selected_from, no last_day.
    # They can only come from a spec without anchors (version 1's).
    bars = _aligned_market(5, symbols=1, days=1).iloc[:200]
    buffer = OnlineFeatureBuffer(ROLLING_SPEC, SESSION, timeframe="1m")
    _replay(buffer, bars.iloc[:100], ROLLING_SPEC, SESSION)
    old = buffer.snapshot()
    old["__version__"] = np.array(version)
    del old["last_day"], old["__timeframe__"]
    if version == 2:
        del old["__selected_from__"]
    restored = OnlineFeatureBuffer.restore(old, ROLLING_SPEC, SESSION)
    assert restored.selected_from == buffer.selected_from
    straight = _replay(buffer, bars.iloc[100:], ROLLING_SPEC, SESSION)
    again = _replay(restored, bars.iloc[100:], ROLLING_SPEC, SESSION)
    pd.testing.assert_frame_equal(straight, again)

    anchored = OnlineFeatureBuffer(ANCHORED_SPEC, SESSION)
    state = anchored.snapshot()
    state["__version__"] = np.array(version)
    with pytest.raises(BadInputError, match="predates day-anchored windows"):
        OnlineFeatureBuffer.restore(state, ANCHORED_SPEC, SESSION)
    state["__version__"] = np.array(1)
    with pytest.raises(BadInputError, match="snapshot version 1 is not supported"):
        OnlineFeatureBuffer.restore(state, ANCHORED_SPEC, SESSION)


def test_a_new_day_on_the_aligned_grid_restarts_after_a_gap_at_the_open():
    # The first minutes of a day missing: the day starts at its first real bar.
    market = generate(SynthConfig(symbols=1, days=2, seed=3, missing_rate=0.0), SESSION)
    bars, _ = align_minutes(market.bars, SESSION)
    second_day = bars["ts"].dt.date == bars["ts"].dt.date.max()
    first_minutes = second_day & (second_day.cumsum() <= 5)
    bars.loc[first_minutes, "is_gap"] = True
    out = compute_batch(bars, ANCHORED_SPEC, SESSION)
    opening = out.index[second_day & ~bars["is_gap"]][0]
    assert out.loc[opening, "relvol_60"] == 1.0
    assert out.loc[first_minutes, "relvol_60"].isna().all()
