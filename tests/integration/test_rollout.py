"""The rollout (plan 9.4): a candidate goes drift gate -> shadow -> agreement gate ->
champion; a failing gate stops it (through the Prefect flow too) and leaves the model
where it was; two rollouts of one timeframe at once are refused."""

from __future__ import annotations

import json
import shutil

import pytest

from regimes.app.orchestrators import DirectOrchestrator
from regimes.app.rollouts import RolloutRequest, rollout_lock, run_rollout
from regimes.app.workspace import Workspace
from regimes.data import sql as db
from regimes.errors import BadInputError
from regimes.live.engine import InferenceEngine
from regimes.model.loaded import LoadedModel
from regimes.storage.recording import record_states
from tests.conftest import REPO_ROOT
from tests.integration.conftest import copy_home
from tests.integration.test_cli import run

pytestmark = pytest.mark.integration
TF = "15m"
LENIENT = (
    "defaults: {champion_occupancy_psi: 50, occupancy_psi: 50, loglik_psi: 50,\n"
    "           max_drifted_share: 1.0, shadow_min_bars: 100, shadow_agreement: 0.2}\n"
)


def _home(two_models_home, tmp_path, gates: str | None):
    source, models = two_models_home
    home = copy_home(source, tmp_path / "home")
    if gates is not None:
        config = home / "config"
        shutil.copytree(REPO_ROOT / "config", config, ignore=shutil.ignore_patterns("*.py"))
        (config / "gates.yaml").write_text(gates)
    return home, models


def _record_both(workspace, models) -> None:
    """Both models' answers over the last days in the state store, as the live service
    records a champion and its shadow."""
    bars = db.read_bars(workspace.engine, TF)
    bars = bars[bars["ts"] >= bars["ts"].max() - __import__("pandas").Timedelta(days=8)]
    for model in models:
        loaded = LoadedModel.load(model.path)
        answers = InferenceEngine(loaded).replay_batch(bars)
        record_states(
            workspace.state_store, workspace.engine, workspace.registry, answers, loaded.d, loaded.K
        )


def test_a_candidate_rolls_out_to_champion(two_models_home, tmp_path):
    home, models = _home(two_models_home, tmp_path, LENIENT)
    champion, candidate = models
    with Workspace.open(home=home, environ={}) as workspace:
        _record_both(workspace, models)
        request = RolloutRequest(TF, candidate.model_id, actor="test")
        result = run_rollout(workspace, request, DirectOrchestrator())
        assert [s["step"] for s in result.steps] == ["shadow", "shadow bars", "champion"]
        assert result.steps[2]["previous"] == champion.model_id
        assert workspace.registry.champion(TF) == candidate.model_id
        assert workspace.registry.last_good_champion(TF) == champion.model_id
        events = workspace.registry.events()
        assert "drift_report" in events["evidence"].iloc[-1]


def test_a_failing_gate_stops_the_flow_and_leaves_the_model(two_models_home, tmp_path):
    """Through the CLI and the Prefect flow 'rollout' (a local server for the run)."""
    strict = "defaults: {champion_occupancy_psi: 0.000001}\n"
    home, models = _home(two_models_home, tmp_path, strict)
    with Workspace.open(home=home, environ={}) as workspace:
        version = workspace.registry.version()
    result = run(
        "rollout", "--timeframe", TF, "--model-id", models[1].model_id, home=home, check=False
    )
    assert result.returncode == 2, result.stderr
    assert "occupancy vs champion PSI" in result.stderr.strip().splitlines()[-1]
    with Workspace.open(home=home, environ={}) as workspace:
        assert workspace.registry.version() == version
        assert workspace.registry.role(TF, models[1].model_id) == "candidate"
    assert not (home / "locks" / f"rollout-{TF}.lock").exists()


def test_two_rollouts_of_one_timeframe_are_refused(two_models_home, tmp_path):
    home, models = _home(two_models_home, tmp_path, LENIENT)
    with Workspace.open(home=home, environ={}) as workspace:
        request = RolloutRequest(TF, models[1].model_id, actor="test")
        with rollout_lock(workspace, TF):
            with pytest.raises(BadInputError, match="already running"):
                run_rollout(workspace, request, DirectOrchestrator())
        # A shadow without enough bars beside the champion stays a shadow.
        with pytest.raises(BadInputError, match="it stays a shadow"):
            run_rollout(workspace, request, DirectOrchestrator())
        assert workspace.registry.role(TF, models[1].model_id) == "shadow"
        # A lock left by a process that died is taken over.
        (home / "locks" / f"rollout-{TF}.lock").write_text('{"pid": 999999}')
        with pytest.raises(BadInputError, match="it stays a shadow"):
            run_rollout(workspace, request, DirectOrchestrator())


def test_the_validation_reports_verdicts_join_the_gate(two_models_home, tmp_path):
    """A model whose validation report failed its dwell verdict is refused by the gate,
    the verdict's reason in the refusal."""
    from regimes.errors import GateFailedError
    from regimes.validation.verdicts import ValidationVerdicts, Verdict

    home, models = _home(two_models_home, tmp_path, LENIENT)
    candidate = models[1].model_id
    verdicts = ValidationVerdicts(
        candidate,
        TF,
        (
            Verdict("dwell", False, "states [2]: dwell off by more than 2.0x"),
            Verdict("confidence", True, "median max(alpha) 0.99 >= 0.6"),
        ),
    )
    folder = home / "reports" / "validation" / TF / candidate
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"verdicts": verdicts.as_dict()}))
    with Workspace.open(home=home, environ={}) as workspace:
        request = RolloutRequest(TF, candidate, actor="test")
        with pytest.raises(GateFailedError, match="validation dwell.*dwell off by more than"):
            run_rollout(workspace, request, DirectOrchestrator())
        assert workspace.registry.role(TF, candidate) == "candidate"
