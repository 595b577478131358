"""Backfills into the Delta state store: the engine's answers, the current_states mirror,
resuming after a kill, Ray and the Prefect flow through the CLI, and the exports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from regimes.config.loading import load_config
from regimes.data import sql as db
from regimes.data.bars import resample_symbols
from regimes.data.synth import SynthConfig, generate
from regimes.errors import BadInputError
from regimes.features.store import plan_units, run_features
from regimes.live.engine import InferenceEngine
from regimes.model.loaded import LoadedModel
from regimes.storage.backfill import plan_backfill, run_backfill
from regimes.storage.recording import publishing_models, record_states
from regimes.storage.registry import Registry
from regimes.storage.state_store import StateStore
from regimes.training.train import train_timeframe
from tests.conftest import REPO_ROOT
from tests.integration.test_cli import last_json, run

pytestmark = pytest.mark.integration
CONFIG = load_config(REPO_ROOT / "config")
KEY = ["symbol", "timeframe", "model_id", "ts"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A home with 15m bars of three symbols and a registered 15m model."""
    home = tmp_path_factory.mktemp("backfill")
    url = f"sqlite:///{home / 'regimes.db'}"
    engine = db.make_engine(url)
    db.create_schema(engine)
    market = generate(
        SynthConfig(symbols=3, days=25, seed=8, missing_rate=0.01), CONFIG.timeframes.session
    )
    db.upsert_bars(engine, market.bars)
    resample_symbols(engine, CONFIG.timeframes.session, 0.2, timeframes=["15m"])
    run_features(engine, CONFIG, plan_units(engine, ["15m"]))
    result = train_timeframe(
        engine, CONFIG, "15m", home / "models", grid={"K": [6], "covariance": ["diag"]}, seed=1
    )
    registry = home_registry(home)
    registry.register("15m", result.model_id, artifact_path=result.path, actor="t", reason="test")
    registry.promote("15m", result.model_id, actor="t", reason="the champion backfills mirror")
    bars = db.read_bars(engine, "15m")
    expected = InferenceEngine(LoadedModel.load(result.path)).replay_batch(bars)
    engine.dispose()
    return home, url, result, expected


def home_registry(home) -> Registry:
    """The registry where the CLI of this home keeps it."""
    return Registry(str(home / "registry"))


def _fresh_home(trained, tmp_path):
    """A copy of the trained home without states (each test writes its own table)."""
    import shutil

    home, _, result, expected = trained
    copy = tmp_path / "home"
    shutil.copytree(home, copy, ignore=shutil.ignore_patterns("states", "prefect"))
    return copy, f"sqlite:///{copy / 'regimes.db'}", result, expected


def _compare(stored: pd.DataFrame, expected: pd.DataFrame) -> None:
    stored = stored.drop(columns=["date"], errors="ignore").sort_values(["symbol", "ts"])
    expected = expected.sort_values(["symbol", "ts"])
    assert len(stored) == len(expected)
    assert not stored.duplicated(KEY).any()
    for column in ["symbol", "timeframe", "model_id", "state_id", "raw_state_id", "is_unknown"]:
        assert stored[column].tolist() == expected[column].tolist(), column
    assert (stored["ts"].to_numpy() == expected["ts"].to_numpy()).all()
    numeric = [c for c in expected.columns if c.startswith(("z_", "p_"))]
    # One symbol per unit vs all at once: batched matrix products round differently.
    np.testing.assert_allclose(
        stored[numeric].to_numpy(float), expected[numeric].to_numpy(float), rtol=0, atol=1e-12
    )


def test_backfill_stores_the_engines_answers_and_mirrors_current_states(trained, tmp_path):
    home, url, result, expected = _fresh_home(trained, tmp_path)
    engine = db.make_engine(url)
    registry = home_registry(home)
    store = StateStore(str(home / "states"))
    units = plan_backfill(engine, registry, home / "models", "15m", result.model_id)
    assert [u.symbols for u in units] == [("SYN000",), ("SYN001",), ("SYN002",)]
    # 26 bars a day per symbol: 7 whole days per commit.
    results = run_backfill(engine, CONFIG, store, registry, units, rows_per_commit=7 * 26)
    assert all(r.error is None for r in results)
    assert sum(r.rows_written for r in results) == len(expected)
    days = expected["ts"].dt.floor("D").nunique()
    assert all(r.commits == -(-days // 7) for r in results)
    _compare(store.read("15m", result.model_id), expected)
    # The newest state per symbol is mirrored into current_states.
    current = db.read_current_states(engine, "15m").sort_values("symbol")
    latest = expected.sort_values("ts").groupby("symbol").tail(1).sort_values("symbol")
    assert current["symbol"].tolist() == latest["symbol"].tolist()
    assert (current["ts"].to_numpy() == latest["ts"].to_numpy()).all()
    assert current["state_id"].tolist() == latest["state_id"].tolist()
    assert set(current["model_id"]) == {result.model_id}
    # Again: nothing to write, nothing duplicated, no new commit.
    version = store.version()
    again = run_backfill(engine, CONFIG, store, registry, units)
    assert sum(r.rows_written for r in again) == 0
    assert sum(r.rows_already_stored for r in again) == len(expected)
    assert store.version() == version
    engine.dispose()


def test_only_champion_answers_reach_current_states(trained, tmp_path):
    home, url, result, expected = _fresh_home(trained, tmp_path)
    engine = db.make_engine(url)
    registry = home_registry(home)
    store = StateStore(str(home / "states"))
    rows = expected[expected["symbol"] == "SYN000"].tail(5)
    # The trained model is the champion: its answers are stored and mirrored.
    assert record_states(store, engine, registry, rows.iloc[:3], d=6, K=6) == 3
    mirrored = db.read_current_states(engine, "15m")
    assert mirrored["model_id"].tolist() == [result.model_id]
    assert mirrored["ts"].tolist() == [rows["ts"].iloc[2]]
    # A shadow's newer answers go to the state store under its own model_id only.
    registry.register("15m", "15m-shadow", artifact_path="elsewhere", actor="t", reason="test")
    registry.set_role("15m", "15m-shadow", "shadow", actor="t", reason="test")
    shadow_rows = rows.assign(model_id="15m-shadow")
    assert record_states(store, engine, registry, shadow_rows, d=6, K=6) == 5
    assert len(store.read("15m", "15m-shadow")) == 5
    pd.testing.assert_frame_equal(db.read_current_states(engine, "15m"), mirrored)
    # Promoted, the shadow publishes; the retired champion no longer does.
    registry.promote("15m", "15m-shadow", actor="t", reason="agreement gate passed")
    assert record_states(store, engine, registry, rows.iloc[3:4], d=6, K=6) == 1
    pd.testing.assert_frame_equal(db.read_current_states(engine, "15m"), mirrored)
    assert record_states(store, engine, registry, shadow_rows.iloc[4:], d=6, K=6) == 1
    after = db.read_current_states(engine, "15m")
    assert after["model_id"].tolist() == ["15m-shadow"]
    assert after["ts"].tolist() == [rows["ts"].iloc[4]]
    engine.dispose()


def test_promote_and_rollback_republish_current_states(trained, tmp_path):
    """current_states follows the registry at once: after a promotion or a rollback it
    holds the new champion's newest stored state per symbol, never the retired model's
    (even when the retired model's answer is newer)."""
    from regimes.app import rollout
    from regimes.app.workspace import Workspace

    home, url, result, expected = _fresh_home(trained, tmp_path)
    with Workspace.open(home=home, db_url=url, environ={}) as workspace:
        engine, store, registry = workspace.engine, workspace.state_store, workspace.registry
        older = expected.groupby("symbol").nth(slice(-6, -3))  # three older bars per symbol
        record_states(store, engine, registry, expected.groupby("symbol").tail(2), d=6, K=6)
        registry.register("15m", "15m-next", artifact_path="elsewhere", actor="t", reason="t")
        assert record_states(store, engine, registry, older.assign(model_id="15m-next"), 6, 6)
        before = db.read_current_states(engine, "15m")
        assert set(before["model_id"]) == {result.model_id}
        promoted = rollout.promote(
            workspace,
            rollout.PromoteRequest("15m", "15m-next", actor="t", reason="better", force=True),
        )
        assert promoted.previous_champion == result.model_id
        after = db.read_current_states(engine, "15m").set_index("symbol")
        newest = older.sort_values("ts").groupby("symbol").tail(1).set_index("symbol")
        assert set(after["model_id"]) == {"15m-next"}
        assert after["ts"].sort_index().tolist() == newest["ts"].sort_index().tolist()
        rollout.rollback(workspace, rollout.RollbackRequest("15m", actor="t", reason="drift"))
        back = db.read_current_states(engine, "15m").set_index("symbol").sort_index()
        assert set(back["model_id"]) == {result.model_id}
        pd.testing.assert_frame_equal(
            back.drop(columns="updated_at"),
            before.set_index("symbol").sort_index().drop(columns="updated_at"),
        )


def test_no_model_writes_current_states_while_its_scope_has_no_champion(trained, tmp_path):
    home, url, _, expected = _fresh_home(trained, tmp_path)
    engine = db.make_engine(url)
    registry = Registry(str(tmp_path / "other-registry"))  # the trained model is unknown here
    registry.register("15m", "15m-alone", artifact_path="elsewhere", actor="t", reason="test")
    rows = expected[expected["symbol"] == "SYN000"].tail(5).assign(model_id="15m-alone")
    assert record_states(StateStore(str(home / "states")), engine, registry, rows, d=6, K=6) == 5
    assert db.read_current_states(engine, "15m").empty
    # A champion of SYN001's own scope publishes SYN001 only, not the pooled scope.
    registry.register(
        "15m", "15m-syn1", artifact_path="elsewhere", actor="t", reason="test", symbol="SYN001"
    )
    registry.promote("15m", "15m-syn1", actor="t", reason="test")
    both = expected[expected["symbol"].isin(["SYN000", "SYN001"])].groupby("symbol").tail(5)
    store = StateStore(str(home / "states"))
    assert record_states(store, engine, registry, both.assign(model_id="15m-syn1"), 6, 6) == 10
    assert db.read_current_states(engine, "15m")["symbol"].tolist() == ["SYN001"]
    # The pooled champion publishes every symbol without a champion of its own.
    registry.promote("15m", "15m-alone", actor="t", reason="test")
    assert publishing_models(registry, "15m", ["SYN000", "SYN001"]) == {
        "SYN000": "15m-alone",
        "SYN001": "15m-syn1",
    }
    assert record_states(store, engine, registry, both.assign(model_id="15m-alone"), 6, 6) == 10
    mirrored = db.read_current_states(engine, "15m").sort_values("symbol")
    assert mirrored["model_id"].tolist() == ["15m-alone", "15m-syn1"]
    engine.dispose()


def test_a_model_trained_for_one_symbol_is_backfilled_over_that_symbol(trained, tmp_path):
    home, url, result, _ = _fresh_home(trained, tmp_path)
    engine = db.make_engine(url)
    registry = Registry(str(tmp_path / "per-symbol-registry"))
    registry.register(
        "15m", result.model_id, artifact_path=result.path, actor="t", reason="t", symbol="SYN001"
    )
    units = plan_backfill(engine, registry, home / "models", "15m", result.model_id)
    assert [u.symbols for u in units] == [("SYN001",)]
    engine.dispose()


def test_backfill_mistakes_are_refused_before_anything_is_written(trained, tmp_path):
    home, url, result, _ = _fresh_home(trained, tmp_path)
    engine = db.make_engine(url)
    registry = home_registry(home)
    with pytest.raises(BadInputError, match="not in the registry"):
        plan_backfill(engine, registry, home / "models", "15m", "15m-unknown")
    with pytest.raises(BadInputError, match=r"no 15m bars stored for symbol\(s\) \['NOPE'\]"):
        plan_backfill(engine, registry, home / "models", "15m", result.model_id, ["NOPE"])
    with pytest.raises(BadInputError, match="no 1h bars stored|not in the registry"):
        plan_backfill(engine, registry, home / "models", "1h", result.model_id)
    with pytest.raises(Exception, match="path separator"):
        plan_backfill(engine, registry, home / "models", "15m", "../x")
    assert not StateStore(str(home / "states")).exists()
    engine.dispose()


def test_a_killed_backfill_resumes_with_no_duplicates_and_no_gaps(trained, tmp_path):
    home, url, result, expected = _fresh_home(trained, tmp_path)
    log = home / "states" / "_delta_log"
    command = [
        sys.executable,
        "-m",
        "regimes",
        "--home",
        str(home),
        "backfill",
        "--timeframe",
        "15m",
        "--model-id",
        result.model_id,
        "--executor",
        "local",
        "--orchestrator",
        "direct",
        "--rows-per-commit",
        "1",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if log.is_dir() and len(list(log.glob("*.json"))) >= 6:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the backfill finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    store = StateStore(str(home / "states"))
    partial = store.read("15m", result.model_id)
    assert 0 < len(partial) < len(expected)
    assert not partial.duplicated(KEY).any()
    # Whole commits only: per symbol, the stored rows are a prefix of its history.
    for symbol, rows in partial.groupby("symbol"):
        history = expected.loc[expected["symbol"] == symbol, "ts"].sort_values()
        assert rows["ts"].tolist() == history.iloc[: len(rows)].tolist()
    out = last_json(
        run(
            "backfill",
            "--timeframe",
            "15m",
            "--model-id",
            result.model_id,
            "--executor",
            "local",
            "--orchestrator",
            "direct",
            home=home,
        )
    )
    assert out["rows_already_stored"] == len(partial)
    assert out["rows_written"] == len(expected) - len(partial)
    _compare(store.read("15m", result.model_id), expected)


def test_backfill_through_the_prefect_flow_on_ray_and_the_exports(trained, tmp_path):
    home, url, result, expected = _fresh_home(trained, tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    out = last_json(
        run("backfill", "--timeframe", "15m", "--model-id", result.model_id, home=home, env=env)
    )
    assert out["rows_written"] == len(expected) and out["failed"] == []
    assert (home / "prefect" / "server.log").exists()
    store = StateStore(str(home / "states"))
    _compare(store.read("15m", result.model_id), expected)
    start, end = "2024-01-10T00:00:00Z", "2024-01-12T00:00:00Z"
    for fmt in ("csv", "parquet", "json"):
        path = tmp_path / f"states.{fmt}"
        exported = last_json(
            run(
                "states",
                "--timeframe",
                "15m",
                "--model-id",
                result.model_id,
                "--symbols",
                "SYN001",
                "--start",
                start,
                "--end",
                end,
                "--format",
                fmt,
                "--out",
                path,
                home=home,
            )
        )
        if fmt == "csv":
            frame = pd.read_csv(path)
        elif fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_json(path, lines=True)
        wanted = expected[
            (expected["symbol"] == "SYN001")
            & (expected["ts"] >= pd.Timestamp(start))
            & (expected["ts"] < pd.Timestamp(end))
        ]
        assert exported["rows"] == len(frame) == len(wanted) > 0
        assert list(frame.columns) == list(store.read("15m", result.model_id).columns.drop("date"))
        assert frame["state_id"].tolist() == wanted.sort_values("ts")["state_id"].tolist()
    compacted = last_json(run("states", "--compact", "--vacuum-hours", "0", home=home))
    assert compacted["compacted"]["numFilesRemoved"] >= compacted["compacted"]["numFilesAdded"]
    _compare(store.read("15m", result.model_id), expected)
    bad = run(
        "states",
        "--timeframe",
        "15m",
        "--model-id",
        result.model_id,
        "--start",
        "2024-01-10",
        "--out",
        tmp_path / "x.csv",
        home=home,
        check=False,
    )
    assert bad.returncode == 2 and "timezone-aware" in bad.stderr
    missing = run(
        "backfill", "--timeframe", "15m", "--model-id", "15m-nope", home=home, check=False
    )
    assert missing.returncode == 2 and "not in the registry" in missing.stderr
    assert json.loads(json.dumps(out))["store"] == str(home / "states")


def test_rows_recorded_live_never_hide_older_missing_rows(trained, tmp_path):
    home, url, result, expected = _fresh_home(trained, tmp_path)
    engine = db.make_engine(url)
    registry = home_registry(home)
    store = StateStore(str(home / "states"))
    # The live path recorded SYN000's last day before any backfill ran.
    last_day = expected[
        (expected["symbol"] == "SYN000") & (expected["ts"] >= expected["ts"].max().floor("D"))
    ]
    assert record_states(store, engine, registry, last_day, d=6, K=6) == len(last_day)
    units = plan_backfill(engine, registry, home / "models", "15m", result.model_id)
    results = run_backfill(engine, CONFIG, store, registry, units)
    assert sum(r.rows_already_stored for r in results) == len(last_day)
    assert sum(r.rows_written for r in results) == len(expected) - len(last_day)
    _compare(store.read("15m", result.model_id), expected)
    engine.dispose()
