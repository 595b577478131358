"""Drift reports and the promotion gate on real data paths: an undrifted window passes, a
window with three times the volatility fails with the drifted features named, a refused
promotion changes nothing, --force is recorded, and the figures equal the hand
computation on the same bins."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regimes.app.drift import DriftRequest, drift
from regimes.app.workspace import Workspace
from regimes.data import sql as db
from regimes.drift.binning import bin_codes, reference_edges
from regimes.drift.report import evidently_drift
from regimes.drift.statistics import bin_shares, kl_div, psi
from regimes.errors import BadInputError
from regimes.model.loaded import LoadedModel
from regimes.storage.drift_reports import DriftReports
from tests.conftest import REPO_ROOT
from tests.integration.conftest import copy_home
from tests.integration.test_cli import last_json, run

pytestmark = pytest.mark.integration
TF = "15m"


def test_evidently_figures_equal_the_hand_computation_on_the_same_bins():
    rng = np.random.default_rng(3)
    reference = rng.normal(0, 1, 5000)
    current = rng.normal(0.4, 1.5, 1200)
    edges = reference_edges(reference, 10)
    labels = np.array([f"b{k:02d}" for k in range(len(edges) + 1)], dtype=object)
    ref_codes, cur_codes = bin_codes(reference, edges), bin_codes(current, edges)
    figures = evidently_drift(
        pd.DataFrame({"x": labels[ref_codes]}), pd.DataFrame({"x": labels[cur_codes]})
    )["x"]
    shares = bin_shares(ref_codes, cur_codes)
    assert figures["psi"] == pytest.approx(psi(*shares), rel=1e-12)
    assert figures["kl"] == pytest.approx(kl_div(*shares), rel=1e-12)
    # The same reference gives the same bins whatever the current window holds: a
    # current window twice as long with the same distribution gives the same PSI.
    doubled = np.concatenate([cur_codes, cur_codes])
    assert psi(*bin_shares(ref_codes, doubled)) == pytest.approx(psi(*shares))


@pytest.fixture(scope="module")
def drift_home(tmp_path_factory, two_models_home):
    source, models = two_models_home
    home = copy_home(source, tmp_path_factory.mktemp("drift") / "home")
    return home, models


def _drift_last_days(home, days: int, factor: float) -> pd.Timestamp:
    """Multiply the volatility of every symbol's last ``days`` days of 15m bars."""
    engine = db.make_engine(f"sqlite:///{home / 'regimes.db'}")
    bars = db.read_bars(engine, TF)
    start = bars["ts"].max().normalize() - pd.Timedelta(days=days)
    frames = []
    for _, group in bars[bars["ts"] >= start].groupby("symbol"):
        group = group.sort_values("ts").copy()
        returns = np.log(group["close"] / group["open"]).to_numpy() * factor
        up = np.log(group["high"] / group[["open", "close"]].max(axis=1)).to_numpy() * factor
        down = np.log(group[["open", "close"]].min(axis=1) / group["low"]).to_numpy() * factor
        opens = group["open"].iloc[0] * np.exp(np.concatenate([[0.0], np.cumsum(returns)[:-1]]))
        closes = opens * np.exp(returns)
        group["open"], group["close"] = opens, closes
        group["high"] = np.maximum(opens, closes) * np.exp(up)
        group["low"] = np.minimum(opens, closes) * np.exp(-down)
        frames.append(group)
    db.upsert_bars(engine, pd.concat(frames))
    engine.dispose()
    return start


def test_an_undrifted_window_passes_and_a_drifted_one_fails(drift_home):
    home, models = drift_home
    champion, candidate = models
    with Workspace.open(home=home, environ={}) as workspace:
        # Undrifted: the second half of the training window against the whole of it
        # (the default current window, the newest bars, may sit in one regime: features
        # chosen for regime persistence then drift by design).
        window = LoadedModel.load(champion.path).metadata["training_window"]
        start, end = pd.Timestamp(window["start"]), pd.Timestamp(window["end"])
        half = (start + (end - start) / 2).isoformat()
        calm = drift(
            workspace, DriftRequest(TF, champion.model_id, current=(half, end.isoformat()))
        )
        assert calm.passed, [c.line() for c in calm.failed_checks]
        assert calm.report["rows"]["current"] >= 200
        html = calm.report["html"]
        size = __import__("os").path.getsize(html)
        assert size < 8_000_000
        start = _drift_last_days(home, 5, 3.0)
        current = (start.isoformat(), (start + pd.Timedelta(days=6)).isoformat())
        stormy = drift(workspace, DriftRequest(TF, champion.model_id, current=current))
        assert not stormy.passed
        failed = {c.name for c in stormy.failed_checks}
        assert "features drifted (share)" in failed
        named = next(c for c in stormy.failed_checks if c.name == "features drifted (share)")
        assert "realized_vol" in named.detail or "atr" in named.detail or "range" in named.detail
        stored = DriftReports(workspace.settings.drift_reports_root).read(TF, champion.model_id)
        assert list(stored["report_id"]) == [calm.report["report_id"], stormy.report["report_id"]]
        assert list(stored["passed"]) == [True, False]
        summary = json.loads(Path(stormy.report["json"]).read_text())
        assert summary["checks"] == [c.as_dict() for c in stormy.checks]
        # The candidate's occupancy is compared with the champion's on the same bars.
        versus = drift(workspace, DriftRequest(TF, candidate.model_id)).report
        assert versus["versus_champion"]["champion"] == champion.model_id
        assert versus["versus_champion"]["bars"] > 0


def test_a_refused_promotion_changes_nothing_and_force_is_recorded(drift_home):
    home, models = drift_home
    candidate = models[1]
    # A gate this home's operator set strictly: the candidate's states must match the
    # champion's almost exactly.
    config = home / "config"
    shutil.copytree(REPO_ROOT / "config", config, ignore=shutil.ignore_patterns("*.py"))
    (config / "gates.yaml").write_text("defaults: {champion_occupancy_psi: 0.000001}\n")
    with Workspace.open(home=home, environ={}) as workspace:
        version = workspace.registry.version()
    refused = run(
        "promote", "--timeframe", TF, "--model-id", candidate.model_id, "--to", "shadow",
        "--reason", "try it", home=home, check=False,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert "refused by" in line and "FAIL" in line and "--force" in line
    with Workspace.open(home=home, environ={}) as workspace:
        assert workspace.registry.version() == version
    forced = last_json(
        run(
            "promote", "--timeframe", TF, "--model-id", candidate.model_id, "--to", "shadow",
            "--reason", "watch it anyway", "--force", home=home,
        )
    )  # fmt: skip
    assert forced["to_role"] == "shadow"
    with Workspace.open(home=home, environ={}) as workspace:
        events = workspace.registry.events()
        evidence = json.loads(events["evidence"].iloc[-1])
        assert evidence["forced"] is True


def test_drift_refuses_bad_requests(drift_home):
    home, models = drift_home
    with Workspace.open(home=home, environ={}) as workspace:
        with pytest.raises(BadInputError, match="not in the registry"):
            drift(workspace, DriftRequest(TF, "15m-nope"))
        with pytest.raises(BadInputError, match="before --reference"):
            drift(
                workspace,
                DriftRequest(
                    TF,
                    models[0].model_id,
                    reference=("2024-01-20", "2024-01-25"),
                    current=("2024-01-05", "2024-01-10"),
                ),
            )
        tiny = drift(
            workspace,
            DriftRequest(
                TF, models[0].model_id, current=("2024-02-01T15:00Z", "2024-02-01T16:00Z")
            ),
        )
        assert not tiny.passed and "too little data" in tiny.checks[0].detail
    result = run("drift", "--timeframe", TF, "--model-id", "15m-nope", home=home, check=False)
    assert result.returncode == 2 and "not in the registry" in result.stderr
