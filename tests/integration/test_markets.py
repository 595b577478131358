"""Markets through the pipeline: ingest with --market, per-market resampling and features,
a pooled model over several markets trained, replayed and backfilled; bad input refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from regimes.app import data, features, training
from regimes.app.backfill import BackfillRequest, backfill
from regimes.app.executors import LocalExecutor
from regimes.app.orchestrators import DirectOrchestrator
from regimes.app.replay import ReplayRequest, replay
from regimes.app.report import periods_per_year
from regimes.app.states import ExportRequest, export_states
from regimes.app.workspace import Workspace
from regimes.config.loading import default_config_dir, load_config
from regimes.data import sql as db
from regimes.errors import BadInputError, ConfigError
from regimes.model.loaded import LoadedModel

pytestmark = pytest.mark.integration

GRID = {"K": [3], "covariance": ["diag"]}


def _hourly_csv(frame: pd.DataFrame, path) -> None:
    out = frame.loc[~frame["is_gap"], ["ts", "open", "high", "low", "close", "volume"]].copy()
    out["ts"] = pd.DatetimeIndex(out["ts"]).strftime("%Y-%m-%dT%H:%M:%SZ")
    out.to_csv(path, index=False)


@pytest.fixture(scope="module")
def mixed_home(tmp_path_factory):
    """FX (24x5) 1h bars ingested from a file, a 24x7 symbol at 5m and 1h, all with
    features; a pooled 1h model over both markets."""
    home = tmp_path_factory.mktemp("markets")
    with Workspace.open(home=home, environ={}) as workspace:
        data.synth(
            workspace, data.SynthRequest(symbols=1, days=24, seed=5, market="fx", prefix="FX")
        )
        data.synth(
            workspace,
            data.SynthRequest(symbols=1, days=24, seed=6, market="crypto", prefix="BTC"),
        )
        data.resample(workspace, data.ResampleRequest(timeframes=("5m", "1h")))
        csv = home / "eurusd_1h.csv"
        source = db.read_bars(workspace.engine, "1h", "FX000")
        assert len(source) == 24 * 24  # 24 FX days of 24 hours, weekends left out
        _hourly_csv(source, csv)
        ingested = data.ingest(
            workspace, data.IngestRequest(csv, "EURUSD", "1h", market="fx")
        ).report
        assert ingested.rows_written == (~source["is_gap"]).sum() and ingested.market == "fx"
        result = features.features(
            workspace,
            features.FeaturesRequest(timeframes=("1h", "5m"), symbols=("EURUSD", "BTC000")),
            LocalExecutor(),
        )
        assert result.failed == []
        trained = training.train(
            workspace,
            training.TrainRequest(
                timeframes=("1h",), symbols=("EURUSD", "BTC000"), grid=GRID, report=True
            ),
            LocalExecutor(),
            DirectOrchestrator(),
        )
        model_id = trained.models[0]["model_id"]
        row = trained.models[0]
        assert row.get("report") and not row.get("report_error"), row.get("report_error")
    return home, model_id


def test_bars_and_features_follow_each_market(mixed_home):
    home, _ = mixed_home
    with Workspace.open(home=home, environ={}) as workspace:
        assert db.read_markets(workspace.engine) == {
            "BTC000": "crypto",
            "EURUSD": "fx",
            "FX000": "fx",
        }
        fx = db.read_bars(workspace.engine, "1h", "EURUSD")
        local = pd.DatetimeIndex(fx["ts"]).tz_convert("America/New_York")
        assert not ((local.weekday == 5) | ((local.weekday == 4) & (local.hour >= 17))).any()
        crypto_1m = db.read_bars(workspace.engine, "1m", "BTC000")
        assert (pd.DatetimeIndex(crypto_1m["ts"]).weekday >= 5).any()  # weekends trade
        assert len(db.read_bars(workspace.engine, "5m", "BTC000")) == 24 * 288
        feats = db.read_features(workspace.engine, "1h", "EURUSD")
        first_hour = feats.loc[
            pd.DatetimeIndex(feats["ts"]).tz_convert("America/New_York").hour == 17, "tod_sin"
        ]
        assert len(first_hour) and np.allclose(first_hour, 0.0)  # the FX day opens at 17:00


def test_a_model_over_two_markets_carries_both_calendars_and_replays(mixed_home, tmp_path):
    home, model_id = mixed_home
    with Workspace.open(home=home, environ={}) as workspace:
        model = LoadedModel.load(workspace.models_dir / "timeframe=1h" / f"model_id={model_id}")
        calendars = model.session.as_dict()
        # annualised on the two calendars: (262 FX days + 366 days) / 2 x 24 one-hour bars
        assert periods_per_year(model) == pytest.approx((262 + 366) / 2 * 24)
        assert calendars["EURUSD"]["calendar"] == "24x5"
        assert calendars["BTC000"]["calendar"] == "24x7"
        out = tmp_path / "replay.parquet"
        universe = ("EURUSD", "BTC000")
        with pytest.raises(BadInputError, match="symbol FX000: not in the model's universe"):
            replay(workspace, ReplayRequest("1h", out, model_id=model_id))
        replayed = replay(workspace, ReplayRequest("1h", out, model_id=model_id, symbols=universe))
        answers = pd.read_parquet(out)
        bars = db.read_bars(workspace.engine, "1h", ["EURUSD", "BTC000"])
        assert replayed.rows == len(answers) == len(bars)
        assert set(answers["symbol"]) == {"EURUSD", "BTC000"}
        run = backfill(
            workspace,
            BackfillRequest("1h", model_id, symbols=universe),
            LocalExecutor(),
            DirectOrchestrator(),
        )
        assert run.rows_written == len(bars)
        exported = tmp_path / "states.json"
        export_states(workspace, ExportRequest("1h", model_id, exported, format="json"))
        assert exported.stat().st_size > 0


def test_editing_markets_yaml_changes_new_models_only(mixed_home, tmp_path):
    home, model_id = mixed_home
    config_dir = tmp_path / "config"
    shutil.copytree(default_config_dir(), config_dir)
    text = (config_dir / "markets.yaml").read_text()
    (config_dir / "markets.yaml").write_text(
        text.replace("crypto: {calendar: 24x7}", "crypto: {calendar: 24x7, day_start: '17:00'}")
    )
    with Workspace.open(home=home, config_dir=config_dir, environ={}) as workspace:
        model = LoadedModel.load(workspace.models_dir / "timeframe=1h" / f"model_id={model_id}")
        assert model.session.of("BTC000").config.day_start is None  # the model's own
        assert any(
            d.startswith("markets.crypto.day_start")
            for d in model.differences_from(workspace.config)
        )


def test_ingest_refuses_closed_hours_per_row_naming_the_market(tmp_path):
    with Workspace.open(home=tmp_path / "home", environ={}) as workspace:
        path = tmp_path / "fx.csv"
        path.write_text(
            "ts,open,high,low,close,volume\n"
            "2024-01-12T21:00:00Z,1,1,1,1,1\n"  # Friday 16:00 New York: open
            "2024-01-12T22:00:00Z,1,1,1,1,1\n"  # Friday 17:00: closed
            "2024-01-13T15:00:00Z,1,1,1,1,1\n"  # Saturday: closed
        )
        with pytest.raises(BadInputError) as refused:
            data.ingest(workspace, data.IngestRequest(path, "EURUSD", "1h", market="fx"))
        message = str(refused.value)
        assert "3 bad row(s)" not in message and "2 bad row(s)" in message
        assert "closed hours (market fx: Sunday 17:00 to Friday 17:00" in message
        assert "row 2" in message and "row 3" in message
        assert db.count_rows(workspace.engine, "bars") == 0
        assert db.read_markets(workspace.engine) == {}
        with pytest.raises(ConfigError, match="--market: unknown market 'forex'"):
            data.ingest(workspace, data.IngestRequest(path, "EURUSD", "1h", market="forex"))


def test_a_symbol_without_a_market_is_refused_when_markets_yaml_has_no_default(tmp_path):
    config_dir = tmp_path / "config"
    shutil.copytree(default_config_dir(), config_dir)
    text = (config_dir / "markets.yaml").read_text()
    (config_dir / "markets.yaml").write_text(text.replace("default: equities", "default: null"))
    path = tmp_path / "bars.csv"
    path.write_text("ts,open,high,low,close,volume\n2024-01-02T14:30:00Z,1,1,1,1,1\n")
    with Workspace.open(home=tmp_path / "home", config_dir=config_dir, environ={}) as workspace:
        with pytest.raises(BadInputError, match="symbol SPY: no market"):
            data.ingest(workspace, data.IngestRequest(path, "SPY", "1m"))
        assert db.count_rows(workspace.engine, "bars") == 0
        data.ingest(workspace, data.IngestRequest(path, "SPY", "1m", market="equities"))
        assert json.loads(json.dumps(db.read_markets(workspace.engine))) == {"SPY": "equities"}


def test_an_unknown_calendar_in_markets_yaml_names_file_and_field(tmp_path):
    config_dir = tmp_path / "config"
    shutil.copytree(default_config_dir(), config_dir)
    text = (config_dir / "markets.yaml").read_text()
    (config_dir / "markets.yaml").write_text(
        text.replace("crypto: {calendar: 24x7}", "crypto: {calendar: XNYZ}")
    )
    with pytest.raises(
        ConfigError, match=r"markets.yaml: markets.crypto.calendar: unknown calendar 'XNYZ'"
    ):
        load_config(config_dir)


def test_daily_bars_of_a_24x5_market_open_at_17_new_york(tmp_path):
    with Workspace.open(home=tmp_path / "home", environ={}) as workspace:
        path = tmp_path / "fx_daily.csv"
        rows = [
            "2024-01-08,1,1,1,1,1",  # Monday's FX day: opens Sunday 17:00 New York
            "2024-01-08T22:00:00Z,1,1,1,1,1",  # Tuesday's day, stamped with its open
            "2024-01-13,1,1,1,1,1",  # a Saturday: no FX day
        ]
        path.write_text("ts,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
        with pytest.raises(BadInputError, match=r"1 bad row\(s\).*row 3.*trading day's date"):
            data.ingest(workspace, data.IngestRequest(path, "EURUSD", "1d", market="fx"))
        path.write_text("ts,open,high,low,close,volume\n" + "\n".join(rows[:2]) + "\n")
        report = data.ingest(
            workspace, data.IngestRequest(path, "EURUSD", "1d", market="fx")
        ).report
        assert report.moved_to_session_open == 1
        stored = db.read_bars(workspace.engine, "1d", "EURUSD")
        assert list(
            pd.DatetimeIndex(stored["ts"]).tz_convert("America/New_York").strftime("%a %H:%M")
        ) == ["Sun 17:00", "Mon 17:00"]


def test_the_session_markets_days_come_from_its_own_symbols_only(tmp_path):
    """A day no equity traded is a holiday for the equities, even when FX traded then."""
    with Workspace.open(home=tmp_path / "home", environ={}) as workspace:
        start = pd.Timestamp("2024-01-08").date()  # a Monday
        data.synth(workspace, data.SynthRequest(symbols=2, days=3, seed=1, start=start))
        data.synth(
            workspace,
            data.SynthRequest(symbols=1, days=3, seed=2, start=start, market="fx", prefix="FX"),
        )
        equities = db.read_bars(workspace.engine, "1m", ["SYN000", "SYN001"])
        local_day = pd.DatetimeIndex(equities["ts"]).tz_convert("America/New_York").day
        db.rewrite_bars(
            workspace.engine,
            equities.loc[local_day != 9],  # nobody traded Tuesday
            ["SYN000", "SYN001"],
            timeframes=["1m"],
        )
        result = data.resample(workspace, data.ResampleRequest(timeframes=("1d",)))
        daily = db.read_bars(workspace.engine, "1d")
        per_symbol = daily.groupby("symbol").size().to_dict()
        assert per_symbol == {"FX000": 3, "SYN000": 2, "SYN001": 2}
        assert not daily["is_gap"].any() and result.short_days == 0


def test_day_anchored_windows_live_equal_offline_on_two_markets(tmp_path):
    """A model of the shipped spec, whose VWAP and volume windows reset at each market's
    day (FX at 17:00 New York, crypto at midnight UTC): the engine bar by bar, restarted
    midway from a snapshot, gives the offline batch path's answers."""
    from regimes.live.engine import InferenceEngine

    home = tmp_path / "home"
    with Workspace.open(home=home, environ={}) as workspace:
        for seed, market, prefix in ((7, "fx", "FX"), (8, "crypto", "BTC")):
            request = data.SynthRequest(symbols=1, days=12, seed=seed, market=market, prefix=prefix)
            data.synth(workspace, request)
        data.resample(workspace, data.ResampleRequest(timeframes=("1h",)))
        features.features(workspace, features.FeaturesRequest(timeframes=("1h",)), LocalExecutor())
        trained = training.train(
            workspace,
            training.TrainRequest(timeframes=("1h",), grid=GRID, report=False),
            LocalExecutor(),
            DirectOrchestrator(),
        )
        path = workspace.models_dir / "timeframe=1h" / f"model_id={trained.models[0]['model_id']}"
        model = LoadedModel.load(path)
        assert model.feature_spec.features["relvol_60"].anchor == "market_day"
        bars = db.read_bars(workspace.engine, "1h")
    steps = [group for _, group in bars.groupby("ts", sort=True)]
    live = InferenceEngine(model)
    answers = [live.step(group) for group in steps[: len(steps) // 2]]
    snapshot = live.save(tmp_path / "engine.npz")
    restarted = InferenceEngine(LoadedModel.load(path)).load(snapshot)
    answers += [restarted.step(group) for group in steps[len(steps) // 2 :]]
    stepped = pd.concat(answers).sort_values(["symbol", "ts"]).reset_index(drop=True)
    batch = InferenceEngine(LoadedModel.load(path)).replay_batch(bars)
    exact = ["symbol", "ts", "state_id", "raw_state_id", "is_unknown"]
    pd.testing.assert_frame_equal(batch[exact], stepped[exact])
    numeric = [c for c in stepped.columns if c.startswith(("z_", "p_"))]
    # Features agree bit for bit (tests/unit/test_day_anchored.py); the encoder and filter
    # run batched offline and per step live, as in test_inference.
    np.testing.assert_allclose(
        batch[numeric].to_numpy(float), stepped[numeric].to_numpy(float), rtol=0, atol=1e-9
    )
    assert (~stepped["is_unknown"]).sum() > 100


def test_the_demo_names_the_day_anchored_windows_and_where_each_markets_day_starts(tmp_path):
    """Demo step 11's line comes from features.yaml and markets.yaml, not from the demo."""
    import yaml

    from regimes.app.demo_markets import day_anchored_windows
    from regimes.config.spec import DAY_ANCHORABLE

    days = {"fx": pd.Timestamp("2024-03-11").date(), "crypto": pd.Timestamp("2024-03-11").date()}
    with Workspace.open(home=tmp_path / "home", environ={}) as workspace:
        shipped = day_anchored_windows(workspace, days)
    assert shipped["features"] == list(DAY_ANCHORABLE)
    # FX's Monday opened Sunday 17:00 New York (after the DST change: 21:00 UTC).
    assert shipped["day_starts"] == {"fx": "17:00 America/New_York", "crypto": "00:00 UTC"}
    assert shipped["line"].endswith("fx at 17:00 America/New_York, crypto at 00:00 UTC")

    config_dir = tmp_path / "config"
    shutil.copytree(default_config_dir(), config_dir)
    spec = yaml.safe_load((config_dir / "features.yaml").read_text())
    spec["version"] += 1
    for item in spec["features"].values():
        item.pop("anchor", None)
    (config_dir / "features.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    markets = (config_dir / "markets.yaml").read_text()
    markets = markets.replace(
        "crypto: {calendar: 24x7}",
        "crypto: {calendar: 24x7, timezone: Asia/Tokyo, day_start: '09:00'}",
    )
    (config_dir / "markets.yaml").write_text(markets)
    with Workspace.open(home=tmp_path / "other", config_dir=config_dir, environ={}) as workspace:
        edited = day_anchored_windows(workspace, days)
    assert edited["features"] == [] and "anchors no window" in edited["line"]
    assert edited["day_starts"]["crypto"] == "09:00 Asia/Tokyo"
