"""Training: reproducible artifacts, the Ray grid (survives a killed worker), the registry,
the Prefect flow and its deployments, and the bad inputs of the train command."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

from regimes.config.loading import load_config
from regimes.data import sql as db
from regimes.data.synth import SynthConfig, generate
from regimes.errors import BadInputError
from regimes.features.store import plan_units, run_features
from regimes.model.artifact import load_pickle, verify_artifact
from regimes.storage.registry import Registry
from regimes.training.grid import expand_grid
from regimes.training.train import train_timeframe
from tests.conftest import REPO_ROOT
from tests.integration.test_cli import last_json, run

pytestmark = pytest.mark.integration
CONFIG = load_config(REPO_ROOT / "config")
GRID = {"K": [6], "covariance": ["diag"]}


def fifteen_minute_home(home):
    """The SQLite engine of ``home``, filled with 15m bars and features of 3 synthetic
    symbols x 30 days: enough for one walk-forward split."""
    from regimes.data.bars import resample_symbols

    engine = db.make_engine(f"sqlite:///{home / 'regimes.db'}")
    db.create_schema(engine)
    market = generate(SynthConfig(symbols=3, days=30, seed=5), CONFIG.timeframes.session)
    db.upsert_bars(engine, market.bars)
    resample_symbols(engine, CONFIG.timeframes.session, 0.2, timeframes=["15m"])
    run_features(engine, CONFIG, plan_units(engine, ["15m"]))
    return engine


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory):
    """A home with 15m bars and features for 3 symbols x 30 days."""
    home = tmp_path_factory.mktemp("train")
    engine = fifteen_minute_home(home)
    yield home, engine
    engine.dispose()


def test_same_inputs_give_the_same_model_id_and_bit_identical_parameters(trained_home, tmp_path):
    home, engine = trained_home
    first = train_timeframe(engine, CONFIG, "15m", tmp_path / "a", grid=GRID, seed=7)
    second = train_timeframe(engine, CONFIG, "15m", tmp_path / "b", grid=GRID, seed=7)
    assert first.model_id == second.model_id
    a, b = load_pickle(first.path, "hmm.pkl"), load_pickle(second.path, "hmm.pkl")
    for name in ("startprob", "transmat", "means", "covars"):
        np.testing.assert_array_equal(getattr(a.params_, name), getattr(b.params_, name))
    assert verify_artifact(first.path)["files"] == verify_artifact(second.path)["files"]
    other = train_timeframe(engine, CONFIG, "15m", tmp_path / "c", grid=GRID, seed=8)
    assert other.model_id != first.model_id
    # Written again into the same root: a no-op, not a second copy.
    again = train_timeframe(engine, CONFIG, "15m", tmp_path / "a", grid=GRID, seed=7)
    assert again.path == first.path
    metadata = verify_artifact(first.path)
    assert {
        "scaler.pkl",
        "encoder.pkl",
        "encoder.onnx",
        "hmm.pkl",
        "feature_spec.yaml",
        "resolved_config.json",
    } == set(metadata["files"])
    assert metadata["metrics"]["selection_rule"].startswith("Among grid cells")
    assert metadata["ood_threshold"] < 0 and metadata["state_labels"]
    assert metadata["versions"]["packages"]["hmmlearn"]


def test_the_final_model_is_the_grids_own_fit_of_the_last_fold(trained_home, tmp_path, monkeypatch):
    """The winner is not fitted twice: no fit after the grid, and the artifact's HMM
    equals a fresh fit of the winning cell on the last fold's training window, bit for bit."""
    import regimes.training.train as train_module
    from regimes.model.splits import walk_forward_splits
    from regimes.training.grid import expand_grid, fit_cell
    from regimes.training.train import drop_short_symbols, load_training_frame

    _, engine = trained_home
    refits = []
    monkeypatch.setattr(
        train_module, "fit_cell", lambda *args, **kw: refits.append(args) or fit_cell(*args, **kw)
    )
    result = train_timeframe(engine, CONFIG, "15m", tmp_path / "m", grid=GRID, seed=3)
    assert refits == []
    frame, _ = drop_short_symbols(load_training_frame(engine, CONFIG, "15m"))
    last = walk_forward_splits(frame["ts"], CONFIG.timeframes.preprocessing.splits)[-1]
    [cell] = expand_grid(CONFIG, "15m", GRID)
    pipeline, hmm = fit_cell(frame, last, cell, CONFIG, "15m", 3)
    stored = load_pickle(result.path, "hmm.pkl")
    # The artifact's states are named and relabelled only against a champion: none here.
    for name in ("startprob", "transmat", "means", "covars"):
        np.testing.assert_array_equal(getattr(stored.params_, name), getattr(hmm.params_, name))
    assert result.metadata["metrics"]["selected_features"] == pipeline.features_


def test_ray_grid_matches_serial_and_survives_a_killed_worker(trained_home, tmp_path, ray_local):
    from regimes.jobs.training import ray_runner

    home, engine = trained_home
    grid = {"K": [6, 9], "covariance": ["diag"]}
    serial = train_timeframe(engine, CONFIG, "15m", tmp_path / "serial", grid=grid, seed=3)
    killed = []

    def kill_one_grid_worker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        command = handle.read()
                except OSError:
                    continue
                if command.startswith(b"ray::grid_task"):
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_grid_worker)
    killer.start()
    ticks = []
    on_ray = train_timeframe(
        engine,
        CONFIG,
        "15m",
        tmp_path / "ray",
        grid=grid,
        seed=3,
        runner=ray_runner(progress=ticks.append),
    )
    killer.join()
    assert killed, "no grid worker was seen to kill"
    assert len(ticks) == 2 * 3 and on_ray.grid["error"].isna().all()
    assert on_ray.model_id == serial.model_id


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"K": [1]}, r"K=1 outside \[2, 12\] \(the 15m range \[6, 12\] and below it\)"),
        ({"K": [13]}, r"K=13 outside \[2, 12\]"),
        ({"d": [20]}, r"d=20 outside the 15m range \[6, 16\]"),
        ({"covariance": ["banded"]}, "covariance 'banded' not among"),
        ({"encoder": ["lstm"]}, "encoder 'lstm'"),
        ({"layers": [2]}, "unknown key"),
    ],
)
def test_bad_grids_are_refused(grid, message):
    with pytest.raises(BadInputError, match=message):
        expand_grid(CONFIG, "15m", grid)


def test_train_command_runs_the_prefect_flow_and_registers_a_candidate(trained_home):
    home, _ = trained_home
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    result = run(
        "train",
        "--timeframe",
        "15m",
        "--grid",
        '{"K": [6], "covariance": ["diag"]}',
        "--executor",
        "local",
        home=home,
        env=env,
    )
    out = last_json(result)
    # The flow ran on the server the CLI started and named, not on a temporary server of
    # Prefect's own (what a process that imported prefect before the server existed does).
    said = result.stdout + result.stderr
    server = re.search(r"Prefect flow 'train' on (http://127\.0\.0\.1:\d+)/api", said)
    assert server and f"View at {server.group(1)}/runs/flow-run/" in said, said[-3000:]
    assert "temporary server" not in said
    model = out["models"][0]
    assert model["role"] == "candidate" and model["model_id"].startswith("15m-")
    # The flow wrote the model's validation report and returned its verdicts.
    report = home / "reports" / "validation" / "15m" / model["model_id"] / "report.html"
    assert model["report"] == str(report) and report.is_file()
    assert {c["name"] for c in model["verdicts"]["checks"]} == {
        "dwell",
        "diagonal_dominance",
        "confidence",
    }
    listed = last_json(run("models", home=home, env=env))
    assert [m["model_id"] for m in listed["models"]] == [model["model_id"]]
    assert (home / "prefect" / "server.log").exists()  # the CLI started its own server


def test_train_mistakes_are_one_line_errors(trained_home):
    home, _ = trained_home
    bad_url = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    result = run(
        "train", "--timeframe", "15m", "--grid", '{"K": [6]}', home=home, env=bad_url, check=False
    )
    assert (
        result.returncode == 2
        and "PREFECT_API_URL=http://127.0.0.1:9/api does not answer" in result.stderr
    )
    # A Ray cluster address nothing answers at: one line before any work (ray.init alone
    # retries for a minute and prints its own warnings); a malformed one names the form.
    for address, message in (
        ("127.0.0.1:9", "RAY_ADDRESS=127.0.0.1:9: no Ray cluster answers there"),
        ("nonsense", "RAY_ADDRESS=nonsense: expected host:port"),
    ):
        result = run(
            "features",
            "--timeframe",
            "1h",
            home=home,
            env={**os.environ, "RAY_ADDRESS": address},
            check=False,
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert lines[-1].startswith("regimes features: error: " + message), lines
    result = run(
        "train",
        "--timeframe",
        "1h",
        "--orchestrator",
        "direct",
        "--executor",
        "local",
        home=home,
        check=False,
    )
    assert result.returncode == 2 and "no 1h features stored" in result.stderr
    result = run("train", "--grid", "{K: 6}", home=home, check=False)
    assert result.returncode == 2 and "--grid: not valid JSON" in result.stderr


def test_deployments_carry_the_retrain_cadence():
    from regimes.flows.deployments import build_deployments

    deployments = {d.name: d for d in build_deployments(CONFIG, "/h", "sqlite:///x.db", "/c")}
    assert set(deployments) == {f"train-{tf}" for tf in ("1m", "5m", "15m", "1h", "1d")}

    def cron(name):
        return deployments[name].schedules[0].schedule.cron

    assert cron("train-1m") == "0 6 * * 6"
    assert cron("train-5m") == cron("train-15m") == "0 6 1 * *"
    assert cron("train-1h") == cron("train-1d") == "0 6 1 1,4,7,10 *"
    assert deployments["train-1h"].parameters["timeframes"] == ["1h"]


def test_scope_symbol_trains_one_model_per_symbol(trained_home):
    from regimes.training.units import scope_units

    home, engine = trained_home
    units = scope_units(engine, ["15m"], None, "symbol")
    assert units == [("15m", ["SYN000"]), ("15m", ["SYN001"]), ("15m", ["SYN002"])]
    assert scope_units(engine, ["15m"], None, "pooled") == [("15m", None)]
    out = last_json(
        run(
            "train",
            "--timeframe",
            "15m",
            "--scope",
            "symbol",
            "--symbols",
            "SYN001",
            "--grid",
            '{"K": [6], "covariance": ["diag"]}',
            "--orchestrator",
            "direct",
            "--executor",
            "local",
            home=home,
        )
    )
    [model] = out["models"]
    metadata = verify_artifact(model["path"])
    assert metadata["universe"] == ["SYN001"]
    # Registered in its own scope: the timeframe and its one symbol.
    registered = Registry(out["registry"]).current("15m").set_index("model_id")
    assert registered.loc[model["model_id"], "symbol"] == "SYN001"
    assert registered.loc[model["model_id"], "role"] == "candidate"
    with pytest.raises(BadInputError, match="no 15m features for"):
        scope_units(engine, ["15m"], ["NOPE"], "symbol")


def test_a_retrain_is_aligned_to_the_champion(trained_home, tmp_path):
    from regimes.training.grid import PreviousModel

    _, engine = trained_home
    registry = Registry(str(tmp_path / "registry"))
    first = train_timeframe(engine, CONFIG, "15m", tmp_path / "models", grid=GRID, seed=1)
    registry.register(
        "15m", first.model_id, artifact_path=str(first.path), actor="t", reason="trained"
    )
    registry.promote("15m", first.model_id, actor="t", reason="promoted")
    champion = registry.champion("15m")
    previous = PreviousModel.load(registry.artifact_path("15m", champion))
    second = train_timeframe(
        engine, CONFIG, "15m", tmp_path / "models", grid=GRID, seed=2, previous=previous
    )
    alignment = second.metadata["metrics"]["alignment_to_champion"]
    assert alignment["model_id"] == first.model_id and alignment["method"] == "co_occupancy"
    assert sorted(int(v) for v in alignment["mapping"].values()) == list(range(6))
    assert "alignment_cost" in second.grid.columns
    assert second.metadata["metrics"]["selection_rule"].count("alignment cost") == 1
    # Relabelled: on the shared validation bars the new states mostly agree with the old.
    assert alignment["cost"] <= 0.5 and not alignment["unstable"]


def test_a_symbol_with_too_few_rows_is_left_out_by_name(tmp_path):
    from regimes.training.train import MIN_SYMBOL_ROWS, drop_short_symbols

    ts = pd.date_range("2024-01-02 14:30", periods=300, freq="15min", tz="UTC")
    frame = pd.DataFrame(
        {
            "symbol": ["LONG"] * 300 + ["TINY"] * 20,
            "ts": list(ts) + list(ts[:20]),
            "is_warmup": False,
            "is_gap": False,
        }
    )
    kept, skipped = drop_short_symbols(frame)
    assert skipped == {"TINY": 20} and set(kept["symbol"]) == {"LONG"}
    with pytest.raises(BadInputError, match=f"no symbol has {MIN_SYMBOL_ROWS} usable rows"):
        drop_short_symbols(frame[frame["symbol"] == "TINY"])
