"""The model registry on a real Delta table: roles per timeframe and symbol, promotion and
rollback, refused transitions, cached reads, and racing writers in two processes (local
disk and S3 through a moto server)."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import queue

import pandas as pd
import pyarrow as pa
import pytest

from regimes.config.settings import storage_options_from_env
from regimes.errors import BadInputError, RegistryConflictError, StoreError, UnsafeNameError
from regimes.storage.registry import CURRENT_COLUMNS, REGISTRY_SCHEMA, Registry
from regimes.storage.roles import ALLOWED_TRANSITIONS, ROLES, SET_ROLE_TRANSITIONS, Transition

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(home) -> Registry:
    return Registry(str(home / "registry"))


def _register(registry: Registry, model_id: str, timeframe="1h", symbol=None) -> Transition:
    return registry.register(
        timeframe,
        model_id,
        artifact_path=f"models/timeframe={timeframe}/model_id={model_id}",
        actor="trainer",
        reason="grid winner",
        symbol=symbol,
    )


def _roles(registry: Registry, timeframe="1h") -> dict[str, str]:
    return registry.current(timeframe).set_index("model_id")["role"].to_dict()


# --------------------------------------------------------------------------- lifecycle


def test_the_lifecycle_records_every_transition_with_actor_reason_evidence_and_version(registry):
    assert registry.version() is None and registry.champion("1h") is None
    with pytest.raises(BadInputError, match="m1 \\(1h\\) is not in the registry"):
        registry.promote("1h", "m1", actor="ops", reason="too early")
    assert registry.version() is None  # a refused first write creates no table
    assert registry.current().columns.tolist() == list(CURRENT_COLUMNS)
    registered = _register(registry, "m1")
    assert (registered.from_role, registered.to_role, registered.version) == (None, "candidate", 1)
    _register(registry, "m2")
    shadow = registry.set_role("1h", "m2", "shadow", actor="ops", reason="watch it")
    assert registry.shadows("1h") == ["m2"] and registry.role("1h", "m2") == "shadow"
    first = registry.promote("1h", "m1", actor="ops", reason="first", evidence={"psi": 0.02})
    assert first == Transition(
        "1h", None, "m1", "candidate", "champion", "ops", "first", {"psi": 0.02},
        first.event_ts, 4,
    )  # fmt: skip
    gate = {"drift_report": "d-17", "verdicts": {"psi": "pass", "agreement": 0.93}}
    second = registry.promote("1h", "m2", actor="rollout", reason="agreement gate", evidence=gate)
    assert second.version == 5 and second.from_role == "shadow"
    assert registry.champion("1h") == "m2" and registry.last_good_champion("1h") == "m1"
    assert registry.shadows("1h") == [] and _roles(registry) == {"m1": "retired", "m2": "champion"}

    events = registry.events()
    assert events.columns.tolist() == REGISTRY_SCHEMA.names
    # The promotion is one commit: the previous champion's retirement, then the new one.
    promotion = events[events["version"] == 5]
    assert promotion[["model_id", "from_role", "to_role"]].values.tolist() == [
        ["m1", "champion", "retired"],
        ["m2", "shadow", "champion"],
    ]
    assert set(promotion["actor"]) == {"rollout"} and set(promotion["reason"]) == {"agreement gate"}
    assert [json.loads(e) for e in promotion["evidence"]] == [gate, gate]
    assert events["version"].tolist() == [1, 2, 3, 4, 5, 5]
    assert events["operation"].tolist() == [
        "register", "register", "set_role", "promote", "promote", "promote",
    ]  # fmt: skip
    assert shadow.version == 3 and registry.version() == 5
    # The Delta log: the empty table (version 0), then one commit per write.
    history = registry.history()
    assert [h["version"] for h in history] == [5, 4, 3, 2, 1, 0]
    assert history[0]["regimes.operation"] == "promote" and history[0]["regimes.actor"] == "rollout"
    assert registry.artifact_path("1h", "m2") == "models/timeframe=1h/model_id=m2"
    current = registry.current("1h").set_index("model_id")
    assert current.loc["m2", "reason"] == "agreement gate"
    assert json.loads(current.loc["m2", "evidence"]) == gate


def test_rollback_to_a_named_earlier_champion(registry):
    for model_id in ("m1", "m2", "m3"):
        _register(registry, model_id)
        registry.promote("1h", model_id, actor="ops", reason="better")
    version = registry.version()
    for bad in ("m3", "nope"):
        with pytest.raises(BadInputError, match=f"rollback --to {bad}: not an earlier good"):
            registry.rollback("1h", actor="oncall", reason="x", to=bad)
    assert registry.version() == version
    back = registry.rollback("1h", actor="oncall", reason="both flap", to="m1")
    assert (back.model_id, back.to_role) == ("m1", "champion")
    # m2 was not rolled back (never champion-then-refused): it stays a good one to return to.
    assert registry.champion("1h") == "m1" and registry.last_good_champion("1h") == "m2"
    assert _roles(registry) == {"m1": "champion", "m2": "retired", "m3": "retired"}


def test_rollback_restores_the_last_good_champions_newest_first(registry):
    for model_id in ("m1", "m2", "m3"):
        _register(registry, model_id)
        registry.promote("1h", model_id, actor="ops", reason="better")
    back = registry.rollback("1h", actor="oncall", reason="m3 flaps", evidence={"incident": 9})
    assert (back.model_id, back.from_role, back.to_role) == ("m2", "retired", "champion")
    assert registry.champion("1h") == "m2" and registry.last_good_champion("1h") == "m1"
    # The rolled-back champion is not "good": a second rollback goes to m1, not m3.
    registry.rollback("1h", actor="oncall", reason="m2 too")
    assert registry.champion("1h") == "m1" and registry.last_good_champion("1h") is None
    assert _roles(registry) == {"m1": "champion", "m2": "retired", "m3": "retired"}
    version = registry.version()
    with pytest.raises(BadInputError, match="1h has no earlier champion to return to"):
        registry.rollback("1h", actor="oncall", reason="again")
    with pytest.raises(BadInputError, match="rollback: 5m has no champion"):
        registry.rollback("5m", actor="oncall", reason="none")
    assert registry.version() == version
    # A retired model may be re-evaluated as a candidate and promoted again.
    registry.set_role("1h", "m3", "candidate", actor="ops", reason="fixed")
    registry.promote("1h", "m3", actor="ops", reason="fixed version")
    assert registry.last_good_champion("1h") == "m1"


def test_scopes_per_symbol_are_independent_of_the_pooled_scope(registry):
    _register(registry, "pooled")
    _register(registry, "spy", symbol="SPY")
    _register(registry, "qqq", symbol="QQQ")
    registry.promote("1h", "pooled", actor="ops", reason="pooled")
    registry.promote("1h", "spy", actor="ops", reason="per symbol")
    assert registry.champion("1h") == "pooled" and registry.champion("1h", "SPY") == "spy"
    assert registry.champion("1h", "QQQ") is None and registry.champion("5m") is None
    _register(registry, "spy-2", symbol="SPY")
    registry.set_role("1h", "spy-2", "shadow", actor="ops", reason="try")
    assert registry.shadows("1h", "SPY") == ["spy-2"] and registry.shadows("1h") == []
    registry.promote("1h", "spy-2", actor="ops", reason="better")  # retires spy, not pooled
    assert registry.champion("1h") == "pooled" and registry.champion("1h", "SPY") == "spy-2"
    assert registry.last_good_champion("1h", "SPY") == "spy"
    current = registry.current("1h").set_index("model_id")
    assert current.loc["spy-2", "symbol"] == "SPY" and current.loc["pooled", "symbol"] is None
    # The same model_id names one model per timeframe, whatever its scope.
    with pytest.raises(BadInputError, match="already registered"):
        _register(registry, "spy", symbol="QQQ")


def test_transitions_outside_the_lifecycle_are_refused_and_leave_the_registry_unchanged(registry):
    _register(registry, "m1")
    registry.promote("1h", "m1", actor="ops", reason="first")
    _register(registry, "m2")
    version, events = registry.version(), registry.events()
    infinite = {"x": float("inf")}  # JSON has no infinity
    refused = [
        (lambda: _register(registry, "m1"), "m1 \\(1h\\) is already registered \\(champion\\)"),
        (
            lambda: registry.set_role("1h", "m1", "retired", actor="a", reason="r"),
            "m1 \\(1h\\) is champion: set_role cannot make it retired; allowed: none "
            "\\(promote another model or roll back\\)",
        ),
        (
            lambda: registry.set_role("1h", "m2", "champion", actor="a", reason="r"),
            "set_role cannot make it champion; allowed: \\['retired', 'shadow'\\]",
        ),
        (lambda: registry.set_role("1h", "m2", "production", actor="a", reason="r"), "role:"),
        (lambda: registry.promote("1h", "m1", actor="a", reason="r"), "only a candidate or"),
        (lambda: registry.promote("1h", "m9", actor="a", reason="r"), "m9 \\(1h\\) is not in"),
        (lambda: registry.promote("5m", "m2", actor="a", reason="r"), "m2 \\(5m\\) is not in"),
        (lambda: registry.promote("1h", "m2", actor="", reason="r"), "actor: expected a non"),
        (lambda: registry.promote("1h", "m2", actor="a", reason=None), "reason: expected a"),
        (
            lambda: registry.promote("1h", "m2", actor="a", reason="r", evidence={"x": object()}),
            "evidence: not JSON-serialisable",
        ),
        (
            lambda: registry.promote("1h", "m2", actor="a", reason="r", evidence=infinite),
            "evidence: not JSON-serialisable",
        ),
        (
            lambda: registry.promote("1h", "m2", actor="a", reason="r", evidence=["x"]),
            "evidence: expected a JSON-serialisable dict",
        ),
        (
            lambda: registry.register("1h", "m3", artifact_path="", actor="a", reason="r"),
            "artifact_path: expected a non-empty string",
        ),
    ]  # fmt: skip
    for attempt, message in refused:
        with pytest.raises(BadInputError, match=message) as error:
            attempt()
        assert "\n" not in str(error.value)
    with pytest.raises(UnsafeNameError):
        _register(registry, "../escape")
    with pytest.raises(UnsafeNameError):
        _register(registry, "m4", symbol="S P Y")
    assert registry.version() == version
    pd.testing.assert_frame_equal(registry.events(), events)


def test_the_allowed_transitions_are_the_documented_ones():
    assert ROLES == ("candidate", "shadow", "champion", "retired")
    assert SET_ROLE_TRANSITIONS == {
        ("candidate", "shadow"),
        ("shadow", "candidate"),
        ("retired", "candidate"),
        ("candidate", "retired"),
        ("shadow", "retired"),
    }
    assert SET_ROLE_TRANSITIONS < ALLOWED_TRANSITIONS
    assert {pair for pair in ALLOWED_TRANSITIONS if "champion" in pair} == {
        ("candidate", "champion"),
        ("shadow", "champion"),
        ("champion", "retired"),
        ("retired", "champion"),
    }


# --------------------------------------------------------------------------- cached reads


def test_reads_are_cached_until_the_table_changes_and_other_objects_see_changes(registry):
    _register(registry, "m1")
    reader = Registry(registry.root)
    assert reader.champion("1h") is None and reader.cache_info().loads == 1
    for _ in range(50):
        reader.champion("1h")
        reader.role("1h", "m1")
        reader.shadows("1h")
        reader.current()
    info = reader.cache_info()
    assert info.loads == 1 and info.checks == 201 and info.version == 1
    registry.promote("1h", "m1", actor="ops", reason="first")
    assert reader.champion("1h") == "m1"  # the other object's change is seen at once
    assert reader.cache_info().loads == 2 and reader.cache_info().version == 2
    # A copy sent to another process (pickle, as Ray does) starts with an empty cache.
    copy = pickle.loads(pickle.dumps(reader))
    assert copy == reader and copy.cache_info().loads == 0
    assert copy.champion("1h") == "m1" and copy.cache_info().loads == 1


def test_storage_options_come_from_the_environment_mapping_for_s3_roots_only():
    environ = {"AWS_REGION": "eu-west-1", "AWS_CONDITIONAL_PUT": "etag", "AWS_PROFILE": "x"}
    assert storage_options_from_env("s3://bucket/registry", environ) == {
        "AWS_REGION": "eu-west-1",
        "aws_conditional_put": "etag",
    }
    assert storage_options_from_env("s3://bucket/registry", {"HOME": "/root"}) is None
    assert storage_options_from_env("/data/registry", environ) is None


def test_a_registry_written_by_the_old_code_is_refused_with_how_to_recreate_it(registry):
    from deltalake import write_deltalake

    old = pa.table(
        {
            "event_ts": pa.array([pd.Timestamp("2026-01-02", tz="UTC")], pa.timestamp("us", "UTC")),
            "timeframe": ["1h"],
            "model_id": ["m1"],
            "from_status": pa.array([None], pa.string()),
            "to_status": ["production"],
            "actor": ["t"],
            "reason": ["r"],
            "artifact_path": [""],
        }
    )
    write_deltalake(registry.root, old)
    with pytest.raises(StoreError, match="older regimes .* move it aside .* register the models"):
        registry.champion("1h")
    with pytest.raises(StoreError, match="older regimes"):
        _register(registry, "m2")


# --------------------------------------------------------------------------- conflicts


def test_a_promotion_against_a_stale_view_conflicts_and_writes_nothing(registry):
    _register(registry, "m1")
    _register(registry, "m2")
    registry.promote("1h", "m1", actor="ops", reason="first")
    other = Registry(registry.root)
    assert other.champion("1h") == "m1"  # what the other operator looked at (version 3)
    registry.promote("1h", "m2", actor="alice", reason="better fit")  # version 4
    _register(registry, "m3")
    events = registry.events()
    with pytest.raises(RegistryConflictError) as error:
        other.promote("1h", "m3", actor="bob", reason="mine")
    message = str(error.value)
    assert "\n" not in message
    assert message == (
        f"registry at {registry.root} changed since version 3: 1h champion is now m2 "
        "(promoted by alice in version 4: better fit); nothing was written, re-read and retry"
    )
    pd.testing.assert_frame_equal(registry.events(), events)
    # Having re-read, bob may promote against what he now sees.
    assert other.promote("1h", "m3", actor="bob", reason="mine").version == 6
    assert registry.champion("1h") == "m3" and registry.last_good_champion("1h") == "m2"


def test_writes_in_other_scopes_or_to_other_models_do_not_conflict(registry):
    _register(registry, "m1")
    _register(registry, "m2")
    other = Registry(registry.root)
    assert other.champion("1h") is None
    _register(registry, "f1", timeframe="5m")
    registry.promote("5m", "f1", actor="ops", reason="5m only")
    _register(registry, "spy", symbol="SPY")
    registry.promote("1h", "spy", actor="ops", reason="SPY scope only")
    registry.set_role("1h", "m2", "shadow", actor="ops", reason="another model")
    assert other.promote("1h", "m1", actor="bob", reason="1h pooled").version == 8
    # A model registered elsewhere since (a training worker) was not seen: no conflict.
    flow = Registry(registry.root)
    assert flow.champion("1h") == "m1"
    _register(registry, "m-trained")
    assert flow.promote("1h", "m-trained", actor="rollout", reason="gates passed").version == 10
    # A change to the model itself does conflict.
    _register(registry, "m3")
    stale = Registry(registry.root)
    stale.role("1h", "m3")
    registry.set_role("1h", "m3", "retired", actor="ops", reason="withdrawn")
    with pytest.raises(RegistryConflictError, match="1h model m3 is now retired \\(set by ops"):
        stale.set_role("1h", "m3", "shadow", actor="bob", reason="try it")


def _race(root, storage_options, name, rounds, barrier, results) -> None:
    """One of two promoters: per round register a model, read the registry, then promote
    at the same moment as the other; report the outcome."""
    registry = Registry(root, storage_options)
    for round_number in range(rounds):
        model_id = f"1h-r{round_number:02d}-{name}"
        outcome = ("error", "")
        try:
            _register(registry, model_id)
            barrier.wait()  # both registered: the reads below see the same version
            registry.champion("1h")
            barrier.wait()
            registry.promote("1h", model_id, actor=name, reason=f"round {round_number}")
            outcome = ("won", "")
        except RegistryConflictError as exc:
            outcome = ("lost", str(exc))
        except Exception as exc:  # reported to the parent, which fails the test
            outcome = ("error", f"{type(exc).__name__}: {exc}")
        results.put((round_number, name, model_id, *outcome))
        barrier.wait()


def _run_race(root: str, storage_options: dict | None, rounds: int) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2, timeout=120)
    results = context.Queue()
    racers = [
        context.Process(target=_race, args=(root, storage_options, name, rounds, barrier, results))
        for name in ("alice", "bob")
    ]
    for racer in racers:
        racer.start()
    outcomes = []
    try:
        for _ in range(2 * rounds):
            outcomes.append(results.get(timeout=300))
    except queue.Empty:
        pytest.fail(f"the racers reported {len(outcomes)} of {2 * rounds} outcomes: {outcomes}")
    finally:
        for racer in racers:
            racer.join(timeout=60)
            if racer.is_alive():
                racer.kill()
    registry = Registry(root, storage_options)
    events = registry.events()
    champions = []
    for round_number in range(rounds):
        both = sorted(o for o in outcomes if o[0] == round_number)
        assert [o[3] for o in both if o[3] == "error"] == [], both
        won = [o for o in both if o[3] == "won"]
        lost = [o for o in both if o[3] == "lost"]
        assert len(won) == 1 and len(lost) == 1, both
        winner, message = won[0][2], lost[0][4]
        assert "\n" not in message
        assert f": 1h champion is now {winner} (promoted by {won[0][1]} in version" in message
        assert "changed since version " in message
        assert registry.role("1h", lost[0][2]) == "candidate"  # the loser wrote nothing
        champions.append(winner)
    promotions = events[(events["operation"] == "promote") & (events["to_role"] == "champion")]
    assert promotions["model_id"].tolist() == champions
    current = registry.current("1h")
    assert (current["role"] == "champion").sum() == 1
    assert registry.champion("1h") == champions[-1]
    # Version 0 creates the table; per round two registrations and one promotion.
    assert registry.version() == 3 * rounds and len(registry.history()) == 3 * rounds + 1
    assert sorted(set(events["version"])) == list(range(1, 3 * rounds + 1))


def test_of_two_processes_promoting_at_once_exactly_one_wins_each_round(registry):
    _run_race(registry.root, None, rounds=15)


def test_racing_promotions_on_s3_have_one_winner_each_round(s3_environ):
    root = f"{s3_environ['REGIMES_TEST_BUCKET']}/registry"
    options = storage_options_from_env(root, s3_environ)
    assert options["AWS_ENDPOINT_URL"] == s3_environ["AWS_ENDPOINT_URL"]
    _run_race(root, options, rounds=5)
    registry = Registry(root, options)
    assert registry.rollback("1h", actor="ops", reason="s3 rollback").version == 16


def test_a_registry_without_atomic_commits_refuses_to_write(tmp_path):
    registry = Registry(str(tmp_path / "registry"), {"AWS_S3_ALLOW_UNSAFE_RENAME": "true"})
    with pytest.raises(StoreError, match="AWS_S3_ALLOW_UNSAFE_RENAME is set"):
        registry.register("1h", "m1", artifact_path="x", actor="t", reason="t")
    assert registry.version() is None  # nothing written, not even the table
