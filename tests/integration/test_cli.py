"""The ``regimes`` command end to end, as a user runs it (real processes, real databases)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from regimes.data import sql as db
from regimes.data.sql import BAR_COLUMNS
from regimes.data.synth import content_sha256

pytestmark = pytest.mark.integration


def run(*args, home=None, env=None, check=True, timeout=300):
    command = [sys.executable, "-m", "regimes"]
    if home is not None:
        command += ["--home", str(home)]
    result = subprocess.run(
        command + [str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def last_json(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def stored_bars_hash(url: str) -> str:
    engine = db.make_engine(url)
    try:
        return content_sha256(db.read_bars(engine), BAR_COLUMNS)
    finally:
        engine.dispose()


def test_synth_is_deterministic_by_seed_across_homes(tmp_path_factory):
    homes = [tmp_path_factory.mktemp("synth") for _ in range(3)]
    seeds = [1, 1, 2]
    results = [
        run("synth", "--symbols", 4, "--days", 10, "--seed", s, home=h)
        for h, s in zip(homes, seeds, strict=True)
    ]
    hashes = [stored_bars_hash(f"sqlite:///{h / 'regimes.db'}") for h in homes]
    assert hashes[0] == hashes[1] != hashes[2]
    printed = [last_json(r)["bars_sha256"] for r in results]
    assert printed[0] == printed[1] != printed[2]
    out = last_json(results[0])
    assert out["symbols"] == ["SYN000", "SYN001", "SYN002", "SYN003"]
    assert out["bars_written"] + out["missing_bars"] == 4 * 10 * 390
    assert (homes[0] / "synth" / "truth.parquet").is_file()
    assert "synth: 4 symbols x 10 trading days" in results[0].stderr


def test_synth_variant_writes_the_named_market_with_its_own_seed(tmp_path):
    from regimes.config.loading import load_config
    from regimes.data.synth import generate
    from regimes.data.synth_variants import VARIANTS
    from tests.conftest import REPO_ROOT

    result = run("synth", "--variant", "k2-vol", "--symbols", 2, "--days", 3, home=tmp_path)
    variant = VARIANTS["k2-vol"].with_size(2, 3)
    expected = generate(variant.config, load_config(REPO_ROOT / "config").timeframes.session)
    assert last_json(result)["bars_sha256"] == expected.bars_sha256()
    params = json.loads((tmp_path / "synth" / "params.json").read_text())
    assert params["config"]["seed"] == 21
    assert [r["name"] for r in params["slow_regimes"]] == ["low_vol", "high_vol"]
    refused = run("synth", "--variant", "k9", home=tmp_path, check=False)
    assert refused.returncode == 2 and "expected one of" in refused.stderr
    assert "k2-vol" in refused.stderr


def test_synth_then_resample_on_postgresql(home, pg_schema_url):
    url, _ = pg_schema_url
    engine = db.make_engine(url)
    db.metadata.drop_all(engine)
    run("--db-url", url, "synth", "--symbols", 2, "--days", 3, "--seed", 5, home=home)
    result = run("--db-url", url, "resample", "--timeframes", "5m", "1d", home=home)
    out = last_json(result)
    assert out["rows_written"]["5m"] == 2 * 3 * 78 and out["rows_written"]["1d"] == 6
    summary = db.bars_summary(engine).set_index(["symbol", "timeframe"])["bars"]
    assert summary[("SYN000", "1m")] == 3 * 390 and summary[("SYN001", "5m")] == 3 * 78
    engine.dispose()


def test_demo_runs_end_to_end_and_says_where_things_went(home):
    # ~145 s alone on a quiet machine; the suite runs it beside another test file.
    result = run("demo", "--symbols", 2, "--days", 3, home=home, timeout=900)
    out = last_json(result)
    assert out["bars"] == {"1m": 2340, "5m": 468, "15m": 156, "1h": 42, "1d": 6}
    assert out["features"] == out["bars"] and out["feature_failures"] == []
    assert out["usable_features"]["1m"] > 2000 and out["usable_features"]["1d"] == 0
    # Three days are too short to train the synthetic timeframes (reported, not fatal); the
    # 1d model trains on the S&P 500 history through the Prefect flow.
    trained = {row["timeframe"]: row for row in out["trained"]}
    assert "1d" in trained and trained["1d"]["role"] == "champion"
    assert "not trained" in result.stderr and "trained models" in result.stderr
    for text in ("bars per timeframe", "computed_features read back", "synthetic truth", str(home)):
        assert text in result.stderr
    assert (home / "regimes.db").is_file()
    # Step 6: the last day through the live engine of every trained timeframe.
    engines = {row["timeframe"]: row for row in out["live"]["engines"]}
    assert set(engines) == set(trained) and engines["1d"]["cold-started"] == 2
    assert set(out["live"]["composite"]) == {"midday", "close"}
    assert "through the live engine" in result.stderr
    # Step 7: every trained model backfilled into Delta and read back.
    assert {row["timeframe"] for row in out["states"]["backfills"]} == set(trained)
    assert out["states"]["summary"][0]["rows"] > 0 and out["states"]["current_states"] > 0
    assert "state history read back from" in result.stderr
    # Step 8: validation reports from the stored states (1h was not trained on 3 days).
    assert set(out["reports"]) == {"1d"} and "validation reports" in result.stderr
    assert (home / "reports" / "validation" / "1d").is_dir()
    assert out["reports"]["1d"]["html"].endswith("report.html")
    # Step 9: the live service over HTTP, every champion's timeframe (no 1h champion on
    # three days, so no shadow).
    served = {row["timeframe"]: row for row in out["service"]["requests"]}
    assert set(served) == set(trained) and served["1d"]["answers"] > 0
    assert "no 1h champion: no shadow" in result.stderr and "/dashboard" in result.stderr
    # Step 10 (rollout, rollback, drift, monitor) needs a 1h champion; its path on trained
    # models is tests/integration/test_monitor.py::test_the_demo_rollout_step.
    assert out["rollout"] == {} and "no 1h champion: nothing to roll out" in result.stderr
    # Step 11: an FX-like (24x5, 1h) and a crypto-like (24x7, 5m) symbol through every
    # step; on the Sunday after FX's last Friday its 1h state is fresh in market time.
    markets = {row["market"]: row for row in out["markets"]["markets"]}
    assert set(markets) == {"fx", "crypto"} and all(
        m["states stored"] > 0 for m in markets.values()
    )
    assert set(out["markets"]["day_anchored"]["day_starts"]) == {"fx", "crypto"}
    assert "day-anchored windows" in result.stderr
    sunday = out["markets"]["composite"]["on the Sunday after FX's last Friday, 12:00 New York"]
    fx = next(row for row in sunday if row["symbol"] == "FX000")
    assert not fx["1h"].startswith("UNKNOWN"), sunday


def test_ingest_and_resample_via_cli(home, tmp_path):
    path = tmp_path / "x.csv"
    path.write_text(
        "ts,open,high,low,close,volume\n"
        "2024-01-02T14:31:00Z,10,11,9,10.5,100\n"
        "2024-01-02T14:30:00Z,10,11,9,10.5,100\n"
    )
    out = last_json(run("ingest", path, "--symbol", "XYZ", "--timeframe", "1m", home=home))
    assert out["rows_written"] == 2 and out["reordered_rows"] == 1
    out = last_json(run("resample", "--symbols", "XYZ", home=home))
    # One session day: 388 of 390 minutes are gap rows; the 1h and 1d bars are gaps.
    assert out["gap_rows_added"] == 388 and out["rows_written"]["1h"] == 7


@pytest.mark.parametrize(
    "args, expected",
    [
        (["ingest", "{missing}", "--symbol", "X", "--timeframe", "1m"], "file not found"),
        (["ingest", "{bad}", "--symbol", "X", "--timeframe", "1m"], "row 1 (line 2): high < low"),
        (["ingest", "{bad}", "--symbol", "../X", "--timeframe", "1m"], "path separator"),
        (["ingest", "{bad}", "--symbol", "X", "--timeframe", "7m"], "unknown timeframe '7m'"),
        (["synth", "--symbols", "0"], "--symbols: expected 1..10000"),
        (["synth", "--start", "yesterday"], "expected a date YYYY-MM-DD"),
        (["resample", "--symbols", "NOPE"], "no 1m bars stored"),
        (["resample", "--timeframes", "2h"], "unknown timeframe '2h'"),
        (["--db-url", "nosuch://x", "synth"], "cannot use database URL"),
        (["--config-dir", "{tmp}", "synth"], "config file not found"),
        (["frobnicate"], "invalid choice"),
        (["states", "--timeframe", "15m", "--model-id", "m1", "--out", "x"], "no state table"),
        (["backfill", "--timeframe", "15m", "--model-id", "m1"], "not in the registry"),
        (["backfill", "--timeframe", "15m", "--model-id", "../m"], "path separator"),
        (["backfill", "--timeframe", "15m", "--model-id", "m", "--rows-per-commit", "0"], ">= 1"),
        (["replay", "--timeframe", "15m", "--out", "x"], "no champion model for 15m"),
        (["report", "--timeframe", "15m", "--model-id", "m1"], "not in the registry"),
        (["report", "--timeframe", "15m", "--model-id", "../m"], "path separator"),
    ],
)
def test_user_mistakes_exit_nonzero_with_one_line_and_no_traceback(home, tmp_path, args, expected):
    bad = tmp_path / "bad.csv"
    bad.write_text("ts,open,high,low,close,volume\n2024-01-02T14:30:00Z,10,9,11,10,1\n")
    filled = [a.format(missing=tmp_path / "absent.csv", bad=bad, tmp=tmp_path) for a in args]
    result = run(*filled, home=home, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert result.stdout == ""


def test_help_texts_name_every_command():
    result = run("--help")
    for command in (
        "synth",
        "ingest",
        "resample",
        "features",
        "encode",
        "train",
        "monitor",
        "models",
        "replay",
        "backfill",
        "states",
        "demo",
    ):
        assert command in result.stdout
    assert "REGIMES_HOME" in result.stdout and "REGIMES_DB_URL" in result.stdout


def test_rerunning_synth_and_resample_leaves_nothing_stale(home):
    run("synth", "--symbols", 2, "--days", 3, "--seed", 1, home=home)
    run("resample", home=home)
    run("synth", "--symbols", 2, "--days", 2, "--seed", 2, home=home)
    url = f"sqlite:///{home / 'regimes.db'}"
    engine = db.make_engine(url)
    stored = db.read_bars(engine, "1m")
    assert db.bars_summary(engine)["timeframe"].unique().tolist() == ["1m"]  # derived cleared
    from regimes.data.synth import read_truth

    truth = read_truth(home / "synth")
    present = truth.loc[~truth["missing"], ["symbol", "ts"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(stored[["symbol", "ts"]].reset_index(drop=True), present)
    run("resample", home=home)
    assert len(db.read_bars(engine, "1d")) == 2 * 2
    engine.dispose()


def test_a_home_that_is_a_file_is_a_one_line_error(tmp_path):
    home = tmp_path / "afile"
    home.write_text("x")
    result = run("synth", "--symbols", 1, "--days", 1, home=home, check=False)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "cannot create" in result.stderr


def test_encode_reports_state_vectors_and_writes_curves(home):
    run("synth", "--symbols", 2, "--days", 20, "--seed", 4, home=home)
    run("resample", "--timeframes", "15m", home=home)
    run("features", "--timeframe", "15m", "--executor", "local", home=home)
    result = run("encode", "--timeframe", "15m", home=home)
    report = last_json(result)["timeframes"]["15m"]
    assert 6 <= report["d"] <= 16 and report["explained_variance"] >= 0.9
    assert set(report["selected"]) <= set(load_config_names())
    assert (home / "reports" / "state_vectors" / "latent_dim_15m.png").is_file()
    assert "leakage guard passed" in result.stderr
    empty = run("models", home=home)
    assert last_json(empty)["models"] == [] and "registry" in empty.stderr


def load_config_names():
    from regimes.config.spec import FIXED_FEATURES

    return FIXED_FEATURES
