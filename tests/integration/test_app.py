"""The application layer end to end: use cases on a real Workspace (SQLite, Delta),
the Prefect path's user mistakes as one line, partial failures as exit code 4."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from regimes.app import data, features, training
from regimes.app.executors import LocalExecutor
from regimes.app.orchestrators import DirectOrchestrator
from regimes.app.workspace import Workspace
from regimes.errors import BadInputError
from tests.integration.test_cli import last_json, run

pytestmark = pytest.mark.integration

WALK_FORWARD = "walk-forward: 208 timestamps cannot hold"


@pytest.fixture(scope="module")
def short_home(tmp_path_factory):
    """8 trading days of 15m bars and features for 2 symbols: too short to train."""
    home = tmp_path_factory.mktemp("short")
    with Workspace.open(home=home, environ={}) as workspace:
        data.synth(workspace, data.SynthRequest(symbols=2, days=8, seed=3))
        data.resample(workspace, data.ResampleRequest(timeframes=("15m",)))
        result = features.features(
            workspace, features.FeaturesRequest(timeframes=("15m",)), LocalExecutor()
        )
        assert result.failed == [] and result.as_dict()["rows_written"] == {"15m": 2 * 8 * 26}
    return home


def test_train_on_too_few_bars_is_one_line_and_starts_no_flow(short_home):
    result = run("train", "--timeframe", "15m", home=short_home, check=False)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"regimes train: error: {WALK_FORWARD}")
    # Refused before any orchestration: no Prefect server was started for it.
    assert not (short_home / "prefect").exists()


def test_the_use_case_checks_every_unit_before_training_any(short_home):
    with Workspace.open(home=short_home, environ={}) as workspace:
        with pytest.raises(BadInputError, match=WALK_FORWARD):
            training.train(
                workspace,
                training.TrainRequest(timeframes=("15m",)),
                LocalExecutor(),
                DirectOrchestrator(),
            )
        assert not workspace.models_dir.exists() and workspace.registry.current().empty


def test_a_mistake_inside_the_prefect_flow_leaves_it_quietly(short_home, tmp_path):
    """Past the up-front check (called here without it), the unit refuses inside the
    flow's task: the error comes back as the same type and one line, the task is not
    retried, Prefect prints no traceback, and nothing is printed after the answer."""
    script = textwrap.dedent(
        """
        import json, sys
        from regimes.app.executors import LocalExecutor
        from regimes.app.orchestrators import PrefectOrchestrator
        from regimes.app.training import TrainRequest
        from regimes.app.workspace import Workspace
        from regimes.errors import BadInputError

        orchestrator = PrefectOrchestrator()
        error = None
        with Workspace.open(sys.argv[1]) as workspace, orchestrator.session(workspace):
            try:
                orchestrator.train(
                    workspace, TrainRequest(("15m",)), [("15m", None)], LocalExecutor()
                )
            except BadInputError as exc:
                error = exc
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                runs = client.read_task_runs()
            print(json.dumps([[r.name, r.run_count, r.state_type.value] for r in runs]))
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        """
    )
    home = tmp_path / "home"
    import shutil

    shutil.copytree(short_home, home)
    result = subprocess.run(
        [sys.executable, "-c", script, str(home)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [result.stderr.splitlines()[-1]], (
        f"more than the answer on stderr:\n{result.stderr}"
    )
    assert result.stderr.startswith(f"error: BadInputError: {WALK_FORWARD}")
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(name.split("-")[0], count) for name, count, _ in runs] == [("train", 1)]
    assert runs[0][2] == "COMPLETED"  # returned as data: no failed state, so no retry


def test_a_failed_feature_unit_is_a_result_field_and_exit_code_4(workspace):
    from regimes.data import sql as db

    data.synth(workspace, data.SynthRequest(symbols=3, days=1, seed=2))
    bars = db.read_bars(workspace.engine, "1m", ["SYN001"])
    broken = bars.iloc[[10]].copy()
    broken[["open", "high", "low", "close"]] = np.nan  # no prices, yet not a gap
    db.upsert_bars(workspace.engine, broken)
    result = features.features(
        workspace, features.FeaturesRequest(timeframes=("1m",)), LocalExecutor()
    )
    assert [r.symbol for r in result.failed] == ["SYN001"]
    assert result.as_dict()["failed"][0]["symbol"] == "SYN001"
    home = workspace.home
    cli = run("features", "--timeframe", "1m", "--executor", "local", home=home, check=False)
    assert cli.returncode == 4, cli.stderr
    out = last_json(cli)
    assert [f["symbol"] for f in out["failed"]] == ["SYN001"] and out["units"] == 3
    assert "FAILED SYN001 1m" in cli.stderr


def test_models_and_states_use_cases_on_an_empty_workspace(workspace, tmp_path):
    from regimes.app import states

    listed = training.models(workspace, training.ModelsRequest())
    assert listed.as_dict() == {
        "command": "models",
        "registry": str(workspace.home / "registry"),
        "models": [],
    }
    assert "is empty" in listed.summary()[0]
    with pytest.raises(BadInputError, match="no state table at"):
        states.export_states(workspace, states.ExportRequest("15m", "m1", tmp_path / "x"))
    with pytest.raises(BadInputError, match="no state table at"):
        states.compact_states(workspace, states.CompactRequest())
    assert not (tmp_path / "x").exists()


def test_stopping_the_local_prefect_server_delivers_its_logs_first(tmp_path):
    """Run logs go to the API from a background worker; stopped before they are sent,
    Prefect prints "Error logging to API" after the command's answer."""
    script = textwrap.dedent(
        """
        import sys
        from regimes.app.workspace import Workspace
        from regimes.flows.server import ensure_prefect_server

        server = ensure_prefect_server(Workspace.open(sys.argv[1]).prefect_home)
        # Imported once PREFECT_API_URL points at the server, as the orchestrator does.
        from prefect import flow, get_run_logger

        @flow
        def noisy():
            get_run_logger().warning("a warning bound for the API")

        noisy()
        server.stop()
        print("the answer", file=sys.stderr)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "home")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "a warning bound for the API" in result.stderr  # the run did log
    assert result.stderr.splitlines()[-1] == "the answer", result.stderr
    assert "Error logging to API" not in result.stderr


def test_a_state_store_on_s3_gets_its_credentials_from_the_workspace(tmp_path, s3_environ):
    """REGIMES_STATES_URI and the AWS variables are read once, by the settings; the
    Workspace hands them to the store (moto's S3 server, a real Delta round trip)."""
    from regimes.app import states

    root = f"{s3_environ['REGIMES_TEST_BUCKET']}/states"
    environ = {**s3_environ, "REGIMES_STATES_URI": root}
    with Workspace.open(home=tmp_path / "home", environ=environ) as workspace:
        store = workspace.state_store
        assert store.root == root and store.storage_options["AWS_ALLOW_HTTP"] == "true"
        assert "state store" not in workspace.local_locations()
        assert not store.exists()  # the bucket answered, with the workspace's credentials
        with pytest.raises(BadInputError, match=f"no state table at {root}"):
            states.export_states(workspace, states.ExportRequest("15m", "m1", tmp_path / "x"))


def test_promote_names_the_champion_it_replaces(workspace):
    from regimes.app import rollout

    registry = workspace.registry
    for model_id in ("15m-first", "15m-second"):
        registry.register("15m", model_id, artifact_path="elsewhere", actor="t", reason="test")
    first = rollout.promote(
        workspace,
        rollout.PromoteRequest(
            "15m", "15m-first", actor="ops", reason="gate passed elsewhere", force=True
        ),
    )
    assert first.previous_champion is None and first.as_dict()["from_role"] == "candidate"
    second = rollout.promote(
        workspace,
        rollout.PromoteRequest("15m", "15m-second", actor="ops", reason="better", force=True),
    )
    assert second.previous_champion == "15m-first"
    assert "replacing 15m-first" in second.summary()[0]
    roles = workspace.registry.current("15m").set_index("model_id")["role"].to_dict()
    assert roles == {"15m-first": "retired", "15m-second": "champion"}
    with pytest.raises(BadInputError, match="only a candidate or shadow can be promoted"):
        rollout.promote(
            workspace,
            rollout.PromoteRequest("15m", "15m-first", actor="ops", reason="again", force=True),
        )


def test_promote_shadow_and_rollback_through_the_cli(tmp_path):
    """The commands a person runs: roles change in one commit each, `models` shows them,
    mistakes are one line with exit code 2 and change nothing."""
    from regimes.storage.registry import Registry

    home = tmp_path / "home"
    with Workspace.open(home=home, environ={}) as workspace:
        registry_root = workspace.registry_root
    registry = Registry(registry_root)
    for model_id in ("1h-a", "1h-b", "1h-c"):
        registry.register("1h", model_id, artifact_path="elsewhere", actor="t", reason="trained")

    def roles() -> dict[str, str]:
        return Registry(registry_root).current("1h").set_index("model_id")["role"].to_dict()

    first = last_json(
        run(
            "promote",
            "--timeframe",
            "1h",
            "--model-id",
            "1h-a",
            "--reason",
            "first",
            "--force",
            home=home,
        )
    )
    assert first["to_role"] == "champion" and first["previous_champion"] is None
    assert first["actor"].startswith("cli")
    shadow = run(
        "promote", "--timeframe", "1h", "--model-id", "1h-c", "--to", "shadow",
        "--reason", "watch it", "--actor", "ops", "--force", home=home,
    )  # fmt: skip
    assert "1h-c is a shadow of 1h" in shadow.stderr
    second = last_json(
        run(
            "promote",
            "--timeframe",
            "1h",
            "--model-id",
            "1h-b",
            "--reason",
            "better",
            "--force",
            home=home,
        )
    )
    assert second["previous_champion"] == "1h-a"
    assert roles() == {"1h-a": "retired", "1h-b": "champion", "1h-c": "shadow"}
    listed = last_json(run("models", "--timeframe", "1h", home=home))
    assert {m["model_id"]: m["role"] for m in listed["models"]} == roles()

    refused = run(
        "rollback", "--timeframe", "1h", "--to", "1h-c", "--reason", "x", home=home, check=False
    )
    assert refused.returncode == 2 and "not an earlier good champion" in refused.stderr
    back = last_json(
        run("rollback", "--timeframe", "1h", "--to", "1h-a", "--reason", "drifted", home=home)
    )
    assert back["champion"] == "1h-a" and back["retired"] == "1h-b"
    assert roles() == {"1h-a": "champion", "1h-b": "retired", "1h-c": "shadow"}
    version = Registry(registry_root).version()

    for args, message in [
        (("rollback", "--timeframe", "1h", "--reason", "x"), "no earlier champion"),
        (
            ("promote", "--timeframe", "1h", "--model-id", "1h-b", "--reason", "x", "--force"),
            "1h-b",
        ),
        (("promote", "--timeframe", "1h", "--model-id", "nope", "--reason", "x"), "nope"),
        (("promote", "--timeframe", "1h", "--model-id", "1h-c"), "--reason"),
        (("rollback", "--timeframe", "4h", "--reason", "x"), "unknown timeframe"),
    ]:
        result = run(*args, home=home, check=False)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, (
            args,
            result.stderr,
        )
    assert Registry(registry_root).version() == version  # nothing was written
