"""The feature store: `regimes features` on SQLite and PostgreSQL, and its Ray fan-out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regimes.config.loading import load_config
from regimes.config.settings import resolve_settings
from regimes.data import sql as db
from regimes.data.synth import SynthConfig, generate
from regimes.errors import BadInputError
from regimes.features.store import load_features, plan_units, run_features
from tests.conftest import REPO_ROOT
from tests.integration.test_cli import last_json, run

pytestmark = pytest.mark.integration
CONFIG = load_config(REPO_ROOT / "config")


def _table(url: str) -> pd.DataFrame:
    engine = db.make_engine(url)
    try:
        return (
            db.read_features(engine)
            .sort_values(["symbol", "timeframe", "ts"])
            .reset_index(drop=True)
        )
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_features_command_is_idempotent(home, backend, request):
    if backend == "sqlite":
        url = f"sqlite:///{home / 'regimes.db'}"
    else:
        url, _ = request.getfixturevalue("pg_schema_url")
        engine = db.make_engine(url)
        db.metadata.drop_all(engine)
        engine.dispose()
    run("--db-url", url, "synth", "--symbols", 2, "--days", 3, "--seed", 3, home=home)
    run("--db-url", url, "resample", home=home)
    first = last_json(run("--db-url", url, "features", "--executor", "local", home=home))
    assert first["failed"] == [] and first["rows_written"]["1m"] == 2 * 3 * 390
    before = _table(url)
    second = last_json(run("--db-url", url, "features", "--executor", "local", home=home))
    after = _table(url)
    assert second["rows_written"] == first["rows_written"]
    pd.testing.assert_frame_equal(before, after)
    assert (after["feature_spec_version"] == CONFIG.features.version).all()
    daily = after[after["timeframe"] == "1d"]
    assert daily["tod_sin"].isna().all()  # not in the 1d down-selection: stored as NULL


def test_loader_reads_a_time_range_and_drops_unusable_rows(engine):
    market = generate(SynthConfig(symbols=2, days=2, seed=9), CONFIG.timeframes.session)
    db.upsert_bars(engine, market.bars)
    results = run_features(engine, CONFIG, plan_units(engine, ["1m"]))
    assert [r.error for r in results] == [None, None]
    start, end = "2024-01-03T15:00:00Z", "2024-01-03T16:00:00Z"
    window = load_features(engine, CONFIG, "1m", ["SYN001"], start, end)
    assert len(window) == 60 and set(window["symbol"]) == {"SYN001"}
    assert window["ts"].min() == pd.Timestamp(start) and window["ts"].max() < pd.Timestamp(end)
    usable = load_features(engine, CONFIG, "1m", drop_unusable=True)
    assert not usable["is_warmup"].any() and usable["r60"].notna().all()
    other = CONFIG.features.model_copy(deep=True)
    other.features["r5"].windows["n"] = 7  # same version number, another window
    changed = type(CONFIG)(
        features=other, timeframes=CONFIG.timeframes, source_dir=CONFIG.source_dir
    )
    with pytest.raises(Exception, match="another feature spec"):
        load_features(engine, changed, "1m")
    with engine.begin() as connection:
        connection.execute(db.computed_features.update().values(feature_spec_version=99))
    with pytest.raises(Exception, match="another feature spec"):
        load_features(engine, CONFIG, "1m")


def test_features_of_spec_version_1_are_refused_until_recomputed(engine):
    """Version 2 anchors the VWAP and volume windows at the market's day: rows stored by
    version 1 (rolling windows) would not mean what the config says."""
    from regimes.config.spec import FeatureSpec

    dumped = CONFIG.features.model_dump(mode="json")
    for item in dumped["features"].values():
        item.pop("anchor", None)
    version_1 = type(CONFIG)(
        features=FeatureSpec.model_validate({**dumped, "version": 1}),
        timeframes=CONFIG.timeframes,
        source_dir=CONFIG.source_dir,
    )
    db.upsert_bars(
        engine, generate(SynthConfig(symbols=1, days=2, seed=5), CONFIG.timeframes.session).bars
    )
    assert [r.error for r in run_features(engine, version_1, plan_units(engine, ["1m"]))] == [None]
    stored = len(db.read_features(engine, "1m"))  # every bar of the 2 days
    assert stored > 700
    expected = (
        rf"{stored} stored 1m row\(s\) were computed under another feature spec "
        rf"\(version\(s\) \[1\]\); the config is version {CONFIG.features.version}; "
        r"run `regimes features` again"
    )
    with pytest.raises(BadInputError, match=expected):
        load_features(engine, CONFIG, "1m")
    rolling = load_features(engine, version_1, "1m", drop_unusable=True)
    assert [r.error for r in run_features(engine, CONFIG, plan_units(engine, ["1m"]))] == [None]
    anchored = load_features(engine, CONFIG, "1m", drop_unusable=True)
    assert anchored["ts"].equals(rolling["ts"])  # the same warm-up: n bars of the symbol
    # The second day's first bar: a one-bar window now, the last 60 bars before.
    day = anchored["ts"].dt.date
    first = (day != day.shift()) & day.shift().notna()
    assert first.sum() == 1 and (anchored.loc[first, "relvol_60"] == 1.0).all()
    assert (rolling.loc[first, "relvol_60"] != 1.0).all()


def test_features_computed_on_another_market_are_refused_naming_symbol_and_market(engine):
    from regimes.data.markets import MarketBook

    fx = MarketBook(CONFIG.markets, CONFIG.timeframes.session).calendar("fx")
    config = SynthConfig(symbols=1, days=2, seed=4, symbol_prefix="FX")
    db.upsert_bars(engine, generate(config, fx).bars)
    db.assign_markets(engine, {"FX000": "fx"})
    assert [r.error for r in run_features(engine, CONFIG, plan_units(engine, ["1m"]))] == [None]
    assert len(load_features(engine, CONFIG, "1m")) > 0
    db.assign_markets(engine, {"FX000": "crypto"})  # e.g. re-ingested with --market crypto
    with pytest.raises(Exception, match=r"FX000 \(market crypto\) were computed under"):
        load_features(engine, CONFIG, "1m")
    assert [r.error for r in run_features(engine, CONFIG, plan_units(engine, ["1m"]))] == [None]
    assert len(load_features(engine, CONFIG, "1m")) > 0


def test_features_of_symbols_without_bars_are_pruned(engine):
    market = generate(SynthConfig(symbols=2, days=1, seed=9), CONFIG.timeframes.session)
    db.upsert_bars(engine, market.bars)
    run_features(engine, CONFIG, plan_units(engine, ["1m"]))
    with engine.begin() as connection:
        connection.execute(db.bars.delete().where(db.bars.c.symbol == "SYN001"))
    plan_units(engine, ["1m"])
    assert db.features_summary(engine)["symbol"].tolist() == ["SYN000"]


def test_ray_fan_out_reports_a_failed_symbol_and_keeps_the_others(home, ray_local):
    from regimes.jobs.features import run_features_on_ray

    url = f"sqlite:///{home / 'regimes.db'}"
    engine = db.make_engine(url)
    db.create_schema(engine)
    market = generate(SynthConfig(symbols=3, days=2, seed=4), CONFIG.timeframes.session)
    db.upsert_bars(engine, market.bars)
    # A corrupt stored bar (no prices, yet not marked a gap) makes one unit fail.
    broken = market.bars[market.bars["symbol"] == "SYN001"].iloc[[10]].copy()
    broken[["open", "high", "low", "close"]] = np.nan
    db.upsert_bars(engine, broken)
    units = plan_units(engine, ["1m"])
    ticks = []
    results = run_features_on_ray(
        resolve_settings(home, url, environ={}), CONFIG, units, progress=ticks.append
    )
    assert len(ticks) == 3
    failed = {r.symbol: r.error for r in results if r.error}
    assert list(failed) == ["SYN001"] and "not gaps have missing" in failed["SYN001"]
    stored = db.features_summary(engine)
    assert stored["symbol"].tolist() == ["SYN000", "SYN002"]
    expected = market.bars.groupby("symbol").size()
    assert stored["rows"].tolist() == [expected["SYN000"], expected["SYN002"]]
    engine.dispose()


def test_features_cli_on_ray_and_its_mistakes(home):
    synth = last_json(run("synth", "--symbols", 2, "--days", 1, "--seed", 2, home=home))
    out = last_json(run("features", "--timeframe", "1m", home=home))
    assert out["executor"] == "ray" and out["rows_written"] == {"1m": synth["bars_written"]}
    result = run("features", "--symbols", "NOPE", home=home, check=False)
    assert result.returncode == 2 and "no bars stored for symbol(s) ['NOPE']" in result.stderr
