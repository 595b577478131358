"""The live engine replays history bar by bar and gives the batch path's posteriors."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regimes.config.loading import load_config
from regimes.config.timeframes import SeasonalConfig
from regimes.data import sql as db
from regimes.data.bars import resample_symbols
from regimes.data.synth import SynthConfig, generate
from regimes.errors import BadInputError
from regimes.features.online import OnlineFeatureBuffer
from regimes.features.store import plan_units, run_features
from regimes.live.engine import ANSWER_REASONS, DatabaseHistory, InferenceEngine
from regimes.model.hmm.filtering import filter_sequences
from regimes.model.loaded import LoadedModel
from regimes.model.pipeline import load_training_frame
from regimes.model.scaling import stationarize
from regimes.training.grid import z_sequences
from regimes.training.train import train_timeframe
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration
CONFIG = load_config(REPO_ROOT / "config")
# The model of these tests has a seasonal adjustment that adjusts (hour buckets hold
# enough of its training rows), so every parity, restart and replay test runs with it.
SEASONAL = SeasonalConfig(bucket_minutes=60, min_bucket_rows=20)


def _with_seasonal(config, timeframe: str, seasonal):
    timeframes = dict(config.timeframes.timeframes)
    timeframes[timeframe] = timeframes[timeframe].model_copy(update={"seasonal": seasonal})
    return replace(
        config, timeframes=config.timeframes.model_copy(update={"timeframes": timeframes})
    )


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
        engine,
        _with_seasonal(CONFIG, "15m", SEASONAL),
        "15m",
        home / "models",
        grid={"K": [6], "covariance": ["diag"]},
        seed=1,
    )
    yield engine, result
    engine.dispose()


def test_bar_by_bar_replay_equals_the_batch_path(model):
    engine, result = model
    live = InferenceEngine(LoadedModel.load(result.path))
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
    straight = InferenceEngine(LoadedModel.load(result.path))
    expected = pd.concat([straight.step(g) for g in steps], ignore_index=True)
    first = InferenceEngine(LoadedModel.load(result.path))
    half = len(steps) // 2
    answers = [first.step(g) for g in steps[:half]]
    path = first.save(tmp_path / "engine.npz")
    second = InferenceEngine(LoadedModel.load(result.path)).load(path)
    answers += [second.step(g) for g in steps[half:]]
    pd.testing.assert_frame_equal(pd.concat(answers, ignore_index=True), expected)


def test_replay_command_writes_the_engines_answers(model, tmp_path):
    from regimes.storage.registry import Registry
    from tests.integration.test_cli import last_json, run

    engine, result = model
    home = tmp_path / "home"
    # The model's home: the CLI finds artifacts under <home>/models and the DB by URL.
    import shutil

    shutil.copytree(result.path.rsplit("/timeframe=", 1)[0], home / "models")
    url = str(engine.url)
    registry = Registry(str(home / "registry"))
    registry.register("15m", result.model_id, artifact_path=result.path, actor="t", reason="test")
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
    assert missing.returncode == 2 and "no champion model for 15m" in missing.stderr
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


def _steps(engine):
    bars = db.read_bars(engine, "15m")
    return [group.reset_index(drop=True) for _, group in bars.groupby("ts", sort=True)]


def test_bad_rows_are_refused_one_by_one_and_change_nothing_else(model):
    engine, result = model
    steps = _steps(engine)
    live = InferenceEngine(LoadedModel.load(result.path))
    reference = InferenceEngine(LoadedModel.load(result.path))
    for group in steps[:150]:
        live.step(group)
        reference.step(group)
    good = steps[150]
    before = steps[149].iloc[[0]].assign(symbol=good["symbol"].iloc[0])
    bad = [
        good.iloc[[0]],  # the same symbol twice in the batch
        steps[149].iloc[[1]],  # another bar time than the batch's
        good.iloc[[0]].assign(symbol="NEW1", close=np.nan),
        good.iloc[[0]].assign(symbol="NEW2", low=-1.0),
        good.iloc[[0]].assign(symbol="NEW3", high=np.inf),
        good.iloc[[0]].assign(symbol="NEW4", timeframe="1h"),
        good.iloc[[0]].assign(symbol="NEW5", ts=good["ts"].iloc[0] + pd.Timedelta("15min")),
        good.iloc[[0]].assign(symbol="../etc"),
    ]
    batch = pd.concat([good.assign(timeframe="15m"), *bad], ignore_index=True)
    answers = live.step(batch)
    expected = reference.step(good)
    pd.testing.assert_frame_equal(answers, expected)
    rejected = live.last_rejected
    assert list(rejected["row"]) == list(range(len(good), len(batch)))
    reasons = list(rejected["reason"])
    assert reasons[0] == "symbol appears twice in the batch"
    assert reasons[1].startswith("ts differs from the batch's bar time")
    assert all(r.startswith("invalid prices") for r in reasons[2:5])
    assert reasons[5].startswith("bar of another timeframe")
    assert reasons[6].startswith("ts differs")
    assert reasons[7].startswith("unsafe symbol")
    assert live.counters()["rejected"] == len(bad)
    # A bar the engine already processed (duplicate) and an older one (out of order).
    again = live.step(pd.concat([good.iloc[[0]], before], ignore_index=True))
    assert again.empty
    assert list(live.last_rejected["reason"].str.split(" ").str[0]) == ["duplicate", "ts"]
    assert live.step(before).empty
    assert live.last_rejected["reason"].iloc[0].startswith("out-of-order bar")
    assert "NEW1" not in live.symbols and "../etc" not in live.symbols
    follow = steps[151]
    pd.testing.assert_frame_equal(live.step(follow), reference.step(follow))
    with pytest.raises(BadInputError, match="timezone-aware"):
        live.step(follow.assign(ts=follow["ts"].dt.tz_localize(None)))
    with pytest.raises(BadInputError, match="lack column"):
        live.step(follow.drop(columns=["close"]))


def test_a_new_symbol_warms_up_from_database_history(model):
    engine, result = model
    steps = _steps(engine)
    start = 400
    straight = InferenceEngine(LoadedModel.load(result.path))
    expected = pd.concat([straight.step(g) for g in steps], ignore_index=True)
    expected = expected[expected["ts"] >= steps[start]["ts"].iloc[0]].reset_index(drop=True)
    cold = InferenceEngine(LoadedModel.load(result.path), history=DatabaseHistory(engine, "15m"))
    late = pd.concat([cold.step(g) for g in steps[start:]], ignore_index=True)
    assert cold.counters()["cold_started"] == 2
    assert late["ood_reason"].iloc[:2].ne("warming up").all()
    assert len(late) == len(expected)
    # Same bars and features; only the filter's distant past differs, and it fades.
    agree = (late["raw_state_id"] == expected["raw_state_id"]).mean()
    assert agree >= 0.97, agree
    tail = late.index >= 40
    p = [f"p_{k:02d}" for k in range(cold.K)]
    assert np.nanmax(np.abs(late.loc[tail, p].to_numpy() - expected.loc[tail, p].to_numpy())) < 1e-6
    # Without history the same engine start reports "warming up" first.
    blind = InferenceEngine(LoadedModel.load(result.path))
    first = blind.step(steps[start])
    assert set(first["ood_reason"]) == {"warming up"}
    assert blind.counters()["cold_started"] == 0


def test_counters_for_a_monitor(model):
    engine, result = model
    live = InferenceEngine(LoadedModel.load(result.path))
    answers = pd.concat([live.step(g) for g in _steps(engine)], ignore_index=True)
    counters = live.counters()
    assert counters["bars"] == len(answers)
    assert counters["known"] == int((~answers["is_unknown"]).sum())
    reasons = answers["ood_reason"].value_counts()
    for reason, count in reasons.items():
        assert counters[reason] == count
    assert counters["known"] + sum(counters[r] for r in ANSWER_REASONS) == counters["bars"]
    switches = live.switch_counts()
    assert (switches["raw_switches"] >= switches["published_switches"]).all()
    assert counters["raw_switches"] == switches["raw_switches"].sum() > 0
    raw = answers.dropna(subset=["p_00"]).groupby("symbol")["raw_state_id"]
    assert counters["raw_switches"] == sum(int((s.diff().fillna(0) != 0).sum()) for _, s in raw)
    assert isinstance(counters["occupancy_collapse"], list)


def test_snapshots_are_npz_and_refused_when_they_do_not_fit(model, tmp_path):
    engine, result = model
    live = InferenceEngine(LoadedModel.load(result.path))
    for group in _steps(engine)[:50]:
        live.step(group)
    path = live.save(tmp_path / "engine.npz")
    with np.load(path, allow_pickle=False) as data:
        assert "engine/posterior" in data.files
    restored = InferenceEngine(LoadedModel.load(result.path)).load(path)
    assert restored.counters() == live.counters()
    # A snapshot of the previous release (version 3) held log alpha: restored warm, its
    # answers afterwards agree with the uninterrupted engine's (exp(log) is within an ulp).
    old = live.snapshot()
    old["engine/version"] = np.array(3)
    with np.errstate(divide="ignore"):
        old["engine/log_alpha"] = np.log(old.pop("engine/posterior"))
    upgraded = InferenceEngine(LoadedModel.load(result.path)).restore(old)
    going_on = copy.deepcopy(live)
    for group in _steps(engine)[50:60]:
        expected, got = going_on.step(group), upgraded.step(group)
        np.testing.assert_allclose(got["p_00"], expected["p_00"], rtol=0, atol=1e-12)
        assert (got["state_id"].to_numpy() == expected["state_id"].to_numpy()).all()
    state = live.snapshot()
    state["engine/model_id"] = np.array("other-model")
    with pytest.raises(BadInputError, match="snapshot is of model other-model"):
        InferenceEngine(LoadedModel.load(result.path)).restore(state)
    state = live.snapshot()
    state["engine/window"] = state["engine/window"][:1]
    with pytest.raises(BadInputError, match="engine/window"):
        InferenceEngine(LoadedModel.load(result.path)).restore(state)
    (tmp_path / "junk.npz").write_bytes(b"not a snapshot")
    with pytest.raises(BadInputError, match="not an engine snapshot"):
        InferenceEngine(LoadedModel.load(result.path)).load(tmp_path / "junk.npz")
    with pytest.raises(BadInputError, match="no engine snapshot"):
        InferenceEngine(LoadedModel.load(result.path)).load(tmp_path / "missing.npz")


def test_snapshots_of_an_older_release_or_of_other_features_are_refused(model):
    """The engine's buffer holds only the features its model reads (engine snapshot
    version 3): a version 2 snapshot, or one whose buffer computes other features, is
    refused (a shard then cold-starts that engine, with a warning)."""
    engine, result = model
    live = InferenceEngine(LoadedModel.load(result.path))
    for group in _steps(engine)[:20]:
        live.step(group)
    assert live.buffer.names == tuple(live.pipeline.features_)
    assert live.buffer.selected_from == tuple(live.model.feature_names)
    assert len(live.buffer.names) < len(live.model.feature_names)
    state = live.snapshot()
    state["engine/version"] = np.array(2)
    with pytest.raises(BadInputError, match="version 2 is not supported"):
        InferenceEngine(LoadedModel.load(result.path)).restore(state)
    model_ = live.model
    whole = OnlineFeatureBuffer(
        model_.feature_spec, model_.session, live.symbols, names=model_.feature_names
    )
    state = {k: v for k, v in live.snapshot().items() if not k.startswith("buffer/")}
    state.update({f"buffer/{k}": v for k, v in whole.snapshot().items()})
    with pytest.raises(BadInputError, match="its feature buffer computes"):
        InferenceEngine(LoadedModel.load(result.path)).restore(state)


def test_open_engine_runs_the_champion_by_default(model, tmp_path):
    import shutil

    from regimes.errors import ArtifactIntegrityError
    from regimes.live.engine import open_engine
    from regimes.storage.registry import Registry

    _, result = model
    registry = Registry(str(tmp_path / "registry"))
    models = tmp_path / "models"
    with pytest.raises(BadInputError, match="no champion model for 15m"):
        open_engine(models, registry, "15m")
    copy = models / "timeframe=15m" / f"model_id={result.model_id}"
    shutil.copytree(result.path, copy)
    registry.register("15m", result.model_id, artifact_path=str(copy), actor="t", reason="test")
    registry.promote("15m", result.model_id, actor="t", reason="test")
    assert open_engine(models, registry, "15m").model_id == result.model_id
    with pytest.raises(BadInputError, match="no artifact"):
        open_engine(models, registry, "15m", model_id="15m-missing")
    with pytest.raises(BadInputError, match="is a 15m model, not 1h"):
        shutil.copytree(copy, models / "timeframe=1h" / f"model_id={result.model_id}")
        open_engine(models, registry, "1h", model_id=result.model_id)
    with open(copy / "hmm.pkl", "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ArtifactIntegrityError):
        open_engine(models, registry, "15m")


def test_the_offline_batch_path_gives_the_engines_answers(model):
    engine, result = model
    bars = db.read_bars(engine, "15m")
    live = InferenceEngine(LoadedModel.load(result.path))
    stepped = pd.concat([live.step(g) for _, g in bars.groupby("ts", sort=True)])
    stepped = stepped.sort_values(["symbol", "ts"]).reset_index(drop=True)
    fresh = InferenceEngine(LoadedModel.load(result.path))
    batch = fresh.replay_batch(bars.sample(frac=1.0, random_state=0))  # any row order
    assert fresh.counters()["bars"] == 0 and fresh.symbols == []
    exact = ["symbol", "ts", "timeframe", "model_id", "state_id", "raw_state_id", "is_unknown"]
    pd.testing.assert_frame_equal(batch[exact], stepped[exact])
    assert batch["ood_reason"].fillna("").tolist() == stepped["ood_reason"].fillna("").tolist()
    numeric = [c for c in stepped.columns if c.startswith(("z_", "p_"))]
    numeric += ["state_prob", "loglik", "entropy"]
    np.testing.assert_allclose(
        batch[numeric].to_numpy(float), stepped[numeric].to_numpy(float), rtol=0, atol=1e-9
    )
    assert "warming up" in set(stepped["ood_reason"]) and (~stepped["is_unknown"]).sum() > 500
    with pytest.raises(BadInputError, match="another timeframe"):
        fresh.replay_batch(bars.assign(timeframe="1h"))


def test_a_snapshot_that_does_not_fit_changes_nothing(model, tmp_path):
    engine, result = model
    steps = _steps(engine)
    live = InferenceEngine(LoadedModel.load(result.path))
    for group in steps[:60]:
        live.step(group)
    good = live.snapshot()
    target = InferenceEngine(LoadedModel.load(result.path))
    for group in steps[:30]:
        target.step(group)
    before = target.snapshot()
    bad_cases = {
        "symbols differ": {**good, "engine/symbols": np.array(["SYN001", "SYN000"])},
        "window of another config": {**good, "chatter/history": good["chatter/history"][:, :1]},
        "ood window": {**good, "ood/entropy": good["ood/entropy"][:, :10]},
        "no counters": {k: v for k, v in good.items() if k != "engine/counts"},
    }
    for case, state in bad_cases.items():
        with pytest.raises(BadInputError):
            target.restore(state)
        after = target.snapshot()
        assert after.keys() == before.keys(), case
        for key in before:
            np.testing.assert_array_equal(after[key], before[key], err_msg=f"{case}: {key}")


def test_a_text_price_cell_or_missing_ts_refuses_only_its_row(model):
    engine, result = model
    steps = _steps(engine)
    live = InferenceEngine(LoadedModel.load(result.path))
    for group in steps[:40]:
        live.step(group)
    batch = steps[40].astype({"close": object})
    batch.loc[0, "close"] = "abc"
    answers = live.step(batch)
    assert len(answers) == len(batch) - 1
    assert live.last_rejected["reason"].iloc[0].startswith("invalid prices")
    nat = steps[41].copy()
    nat.loc[0, "ts"] = pd.NaT
    live.step(nat)
    assert live.last_rejected["reason"].iloc[0] == "missing ts"


def test_cold_start_warm_up_switches_are_not_counted(model):
    engine, result = model
    steps = _steps(engine)
    # SYN000's history ends 50 bars before SYN001's: both are new to the engine.
    bars = db.read_bars(engine, "15m")
    cut = steps[350]["ts"].iloc[0]
    bars = bars[(bars["symbol"] != "SYN000") | (bars["ts"] < cut)]

    def history(symbols, before, n):
        rows = bars[bars["symbol"].isin(symbols) & (bars["ts"] < before)]
        return rows.groupby("symbol").tail(n)

    live = InferenceEngine(LoadedModel.load(result.path), history=history)
    live.step(steps[400])
    counts = live.switch_counts()
    # At most the live bar's own switch; none of the warm-up's (it had 8 for SYN000).
    assert (counts["raw_switches"] <= 1).all() and (counts["published_switches"] <= 1).all()


def test_the_seasonal_adjustment_is_stored_and_applied_live_as_offline(model):
    """The adjuster travels in the artifact; live steps, the replay and the training
    pipeline put the same bars in the same buckets: the same z."""
    engine, result = model
    loaded = LoadedModel.load(result.path)
    adjuster = loaded.pipeline.seasonal_
    assert loaded.metadata["format_version"] == 3 and "seasonal.pkl" in loaded.metadata["files"]
    assert adjuster.bucket_minutes == 60 and adjuster.adjusted_.sum() >= 6
    assert "tod_sin" not in loaded.pipeline.features_
    bars = db.read_bars(engine, "15m")
    live = InferenceEngine(loaded)
    stepped = pd.concat([live.step(g) for _, g in bars.groupby("ts", sort=True)])
    stepped = stepped.dropna(subset=["z_00"]).sort_values(["symbol", "ts"])
    frame = load_training_frame(engine, CONFIG, "15m")
    batch = loaded.pipeline.transform(frame)
    z = [f"z_{k:02d}" for k in range(loaded.d)]
    merged = batch.merge(stepped, on=["symbol", "ts"], suffixes=("_batch", "_live"))
    assert len(merged) == len(batch) == len(stepped)
    # z within rounding of the encoder's matrix product over blocks of other sizes...
    np.testing.assert_allclose(
        merged[[c + "_batch" for c in z]].to_numpy(),
        merged[[c + "_live" for c in z]].to_numpy(),
        rtol=0,
        atol=1e-12,
    )
    # ...and the adjusted rows the encoder reads bit for bit: the engine's newest window
    # row of each symbol is the batch path's adjusted row of its last usable bar.
    pipeline = loaded.pipeline
    X = stationarize(frame, loaded.feature_spec, pipeline.features_, frame["close"])
    X = X[pipeline.features_].to_numpy()
    usable = ~(frame["is_warmup"] | frame["is_gap"]).to_numpy() & np.isfinite(X).all(axis=1)
    adjusted = adjuster.transform(
        pipeline.scaler_.transform(X[usable]), pipeline._minutes(frame)[usable]
    )
    last = frame[usable].reset_index(drop=True).groupby("symbol").tail(1)
    rows = live.buffer.rows_of(last["symbol"])
    np.testing.assert_array_equal(live._rows.window[rows, -1], adjusted[last.index.to_numpy()])
    # Without the adjustment the same model encodes other z: it is really applied.
    unadjusted = replace_seasonal(loaded.pipeline, None).transform(frame)
    assert np.abs(unadjusted[z].to_numpy() - batch[z].to_numpy()).max() > 0.1


def replace_seasonal(pipeline, seasonal):
    import copy

    clone = copy.copy(pipeline)
    clone.seasonal_ = seasonal
    return clone


def test_a_format_2_artifact_still_loads_and_answers_without_adjustment(model, tmp_path):
    """Artifacts written before the adjustment (format 2, no seasonal.pkl) load and
    answer as the code of their time did: scaler straight into the encoder."""
    from regimes.errors import ArtifactIntegrityError
    from regimes.model.artifact import read_file, verify_artifact, write_artifact

    engine, result = model
    source = Path(result.path)
    original = verify_artifact(source)
    contents = {name: read_file(source, name, original) for name in original["files"]}
    document = {k: v for k, v in original.items() if k != "files"}
    document["format_version"] = 2
    with_seasonal = write_artifact(tmp_path / "a", "15m", result.model_id, contents, document)
    with pytest.raises(ArtifactIntegrityError, match="format-2 artifact cannot hold seasonal"):
        LoadedModel.load(with_seasonal)
    contents.pop("seasonal.pkl")
    old = LoadedModel.load(
        write_artifact(tmp_path / "b", "15m", result.model_id, contents, document)
    )
    assert old.pipeline.seasonal_ is None
    bars = db.read_bars(engine, "15m")
    answers = InferenceEngine(old).replay_batch(bars).dropna(subset=["z_00"])
    stepper = InferenceEngine(old)
    stepped = pd.concat([stepper.step(g) for _, g in bars.groupby("ts", sort=True)])
    stepped = stepped.dropna(subset=["z_00"]).sort_values(["symbol", "ts"])
    z = [f"z_{k:02d}" for k in range(old.d)]
    frame = load_training_frame(engine, CONFIG, "15m")
    current = LoadedModel.load(result.path)
    by_hand = replace_seasonal(current.pipeline, None).transform(frame)  # scaler -> encoder
    for got in (answers, stepped):
        merged = by_hand.merge(got, on=["symbol", "ts"], suffixes=("_hand", "_old"))
        assert len(merged) == len(by_hand)
        np.testing.assert_allclose(
            merged[[c + "_hand" for c in z]].to_numpy(),
            merged[[c + "_old" for c in z]].to_numpy(),
            rtol=0,
            atol=1e-12,
        )
    adjusted = current.pipeline.transform(frame)
    assert np.abs(adjusted[z].to_numpy() - by_hand[z].to_numpy()).max() > 0.1
