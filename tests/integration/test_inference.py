"""The live engine replays history bar by bar and gives the batch path's posteriors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regimes import db
from regimes.bars import resample_symbols
from regimes.config import load_config
from regimes.feature_store import plan_units, run_features
from regimes.hmm.filtering import filter_sequences
from regimes.inference import InferenceEngine
from regimes.preprocessing import load_training_frame
from regimes.synth import SynthConfig, generate
from regimes.training import train_timeframe, z_sequences
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration
CONFIG = load_config(REPO_ROOT / "config")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    home = tmp_path_factory.mktemp("engine")
    engine = db.make_engine(f"sqlite:///{home / 'regimes.db'}")
    db.create_schema(engine)
    market = generate(
        SynthConfig(symbols=2, days=25, seed=8, missing_rate=0.01), CONFIG.timeframes.session
    )
    db.upsert_bars(engine, market.bars)
    resample_symbols(engine, CONFIG.timeframes.session, 0.2, timeframes=["15m"])
    run_features(engine, CONFIG, plan_units(engine, ["15m"]))
    result = train_timeframe(
        engine, CONFIG, "15m", home / "models", grid={"K": [6], "covariance": ["diag"]}, seed=1
    )
    yield engine, result
    engine.dispose()


def test_bar_by_bar_replay_equals_the_batch_path(model):
    engine, result = model
    live = InferenceEngine(result.path, CONFIG)
    bars = db.read_bars(engine, "15m")
    answers = pd.concat(
        [live.step(group) for _, group in bars.groupby("ts", sort=True)], ignore_index=True
    )
    frame = load_training_frame(engine, CONFIG, "15m")
    z, Z, lengths = z_sequences(live.pipeline.transform(frame), live.pipeline.d)
    batch = z[["symbol", "ts"]].copy()
    posterior = np.exp(filter_sequences(Z, lengths, live.hmm.params_)[0])
    probabilities = [f"p_{k:02d}" for k in range(live.K)]
    batch[probabilities] = posterior
    encoded = answers.dropna(subset=["p_00"])
    merged = batch.merge(encoded, on=["symbol", "ts"], suffixes=("_batch", "_live"))
    assert len(merged) == len(batch) == len(encoded)
    difference = np.abs(
        merged[[p + "_batch" for p in probabilities]].to_numpy()
        - merged[[p + "_live" for p in probabilities]].to_numpy()
    )
    assert difference.max() <= 1e-9
    unknown = answers[answers["is_unknown"]]
    assert set(unknown["ood_reason"]) <= {
        "warming up",
        "gap",
        "settling",
        "loglik",
        "entropy_spike",
    }
    assert (answers.loc[~answers["is_unknown"], "state_id"] >= 0).all()
    known = answers[~answers["is_unknown"]]
    assert len(known) > 0.5 * len(encoded)


def test_a_restart_midway_gives_the_same_answers(model, tmp_path):
    engine, result = model
    bars = db.read_bars(engine, "15m")
    steps = [group for _, group in bars.groupby("ts", sort=True)]
    straight = InferenceEngine(result.path, CONFIG)
    expected = pd.concat([straight.step(g) for g in steps], ignore_index=True)
    first = InferenceEngine(result.path, CONFIG)
    half = len(steps) // 2
    answers = [first.step(g) for g in steps[:half]]
    path = first.save(tmp_path / "engine.pkl")
    second = InferenceEngine(result.path, CONFIG).load(path)
    answers += [second.step(g) for g in steps[half:]]
    pd.testing.assert_frame_equal(pd.concat(answers, ignore_index=True), expected)


def test_replay_command_writes_the_engines_answers(model, tmp_path):
    from regimes.store import Registry
    from tests.integration.test_cli import last_json, run

    engine, result = model
    home = tmp_path / "home"
    # The model's home: the CLI finds artifacts under <home>/models and the DB by URL.
    import shutil

    shutil.copytree(result.path.rsplit("/timeframe=", 1)[0], home / "models")
    url = str(engine.url)
    registry = Registry.at_home(home)
    registry.transition(
        "15m", result.model_id, "candidate", actor="t", reason="test", artifact_path=result.path
    )
    missing = run(
        "--db-url",
        url,
        "replay",
        "--timeframe",
        "15m",
        "--out",
        tmp_path / "x.parquet",
        home=home,
        check=False,
    )
    assert missing.returncode == 2 and "no production model for 15m" in missing.stderr
    out = last_json(
        run(
            "--db-url",
            url,
            "replay",
            "--timeframe",
            "15m",
            "--model-id",
            result.model_id,
            "--start",
            "2024-01-20T00:00:00Z",
            "--out",
            tmp_path / "replay.parquet",
            home=home,
        )
    )
    frame = pd.read_parquet(tmp_path / "replay.parquet")
    assert out["rows"] == len(frame) > 0 and frame["ts"].min() >= pd.Timestamp(
        "2024-01-20", tz="UTC"
    )
    assert {
        "state_id",
        "raw_state_id",
        "state_prob",
        "loglik",
        "entropy",
        "is_unknown",
        "ood_reason",
        "z_00",
        "p_00",
    } <= set(frame.columns)
