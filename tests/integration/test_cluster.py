"""A multi-node Ray cluster on this machine (a head that only schedules and two worker
nodes, each its own raylet, all on this machine): the training grid and a backfill fan out
over it through ``RAY_ADDRESS``, as on a real cluster, and a worker node removed while
they run costs nothing — the same winner as an undisturbed run, the same stored rows,
none twice.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import pytest
from threadpoolctl import threadpool_limits

from regimes.config.loading import load_config
from regimes.data import sql as db
from regimes.data.bars import resample_symbols
from regimes.data.synth import SynthConfig, generate
from regimes.features.store import plan_units, run_features
from regimes.live.engine import InferenceEngine
from regimes.model.loaded import LoadedModel
from regimes.storage.state_store import StateStore
from regimes.training.train import train_timeframe
from tests.conftest import REPO_ROOT
from tests.integration.test_backfill import _compare

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]  # bounded: a hang fails
CONFIG = load_config(REPO_ROOT / "config")
TF = "15m"
GRID = {"K": [2, 3, 4], "covariance": ["diag"]}
SEED = 5
WORKER_CPUS = 1


@pytest.fixture(scope="module")
def cluster():
    """A head (0 CPUs: it schedules, runs nothing) and two 1-CPU worker nodes."""
    from ray.cluster_utils import Cluster

    # Ray gives a raylet 30 s to register; three of them starting at once on a busy
    # 2-core machine can need more.
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
    # No dashboard: its port (8265) may be another Ray's on this machine (a parallel
    # test worker's), and Ray then drops its unclosed port probe (a ResourceWarning).
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    for _ in range(2):
        cluster.add_node(num_cpus=WORKER_CPUS)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A home with the 15m bars and features of four symbols, and the winner of the grid
    evaluated in this process (the undisturbed reference)."""
    home = tmp_path_factory.mktemp("cluster")
    url = f"sqlite:///{home / 'regimes.db'}"
    engine = db.make_engine(url)
    db.create_schema(engine)
    market = generate(
        SynthConfig(symbols=4, days=25, seed=11, missing_rate=0.005), CONFIG.timeframes.session
    )
    db.upsert_bars(engine, market.bars)
    resample_symbols(engine, CONFIG.timeframes.session, 0.2, timeframes=[TF])
    run_features(engine, CONFIG, plan_units(engine, [TF]))
    # One BLAS thread, as every Ray task runs (regimes.jobs.runtime): the same arithmetic.
    with threadpool_limits(limits=1):
        reference = train_timeframe(
            engine,
            CONFIG,
            TF,
            tmp_path_factory.mktemp("reference") / "models",
            grid=GRID,
            seed=SEED,
        )
    engine.dispose()
    return home, url, reference


def _alive_workers(cluster) -> int:
    return sum(
        1 for node in cluster.list_all_nodes() if not node.head and node.remaining_processes_alive()
    )


def _run_removing_a_node(cluster, args, home, bar: str, after: int):
    """Run ``regimes --home HOME ARGS`` on the cluster; once its progress bar ``bar`` has
    counted ``after`` finished tasks, remove a worker node (its raylet and every worker
    process on it die). Returns the finished process and where the removal happened."""
    env = {
        **os.environ,
        "RAY_ADDRESS": cluster.address,
        "REGIMES_PROGRESS": "1",
        "PREFECT_API_URL": "",
    }
    command = [sys.executable, "-m", "regimes", "--home", str(home), *map(str, args)]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    victim = next(node for node in cluster.worker_nodes)
    removed: dict = {}
    stderr: list[str] = []
    pattern = re.compile(rf"{re.escape(bar)}:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")

    def watch():
        text = ""
        while chunk := process.stderr.read(1):
            text += chunk
            if removed:
                continue
            counts = pattern.findall(text)
            if counts and int(counts[-1][0]) >= after:
                done, total = map(int, counts[-1])
                cluster.remove_node(victim)
                removed.update(done=done, total=total)
        stderr.append(text)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        stdout = process.communicate(timeout=900)[0]
    finally:
        if process.poll() is None:
            process.kill()
        watcher.join(timeout=30)
    return process.returncode, stdout, "".join(stderr), removed


def test_grid_and_backfill_survive_a_worker_node_removed_mid_run(cluster, prepared):
    home, url, reference = prepared
    assert _alive_workers(cluster) == 2

    # The grid: 3 cells x the folds, one task each, two nodes busy when one goes.
    code, stdout, stderr, removed = _run_removing_a_node(
        cluster,
        [
            "train",
            "--timeframe",
            TF,
            "--grid",
            json.dumps(GRID),
            "--seed",
            SEED,
            "--no-report",
            "--orchestrator",
            "direct",
            "--executor",
            "ray",
        ],
        home,
        bar=f"grid {TF}",
        after=1,
    )
    assert code == 0, stderr[-3000:]
    assert removed and removed["done"] < removed["total"] - 1, removed
    assert _alive_workers(cluster) == 1
    (model,) = json.loads(stdout.strip().splitlines()[-1])["models"]
    assert model["cell"] == reference.winner["cell"]
    validation = reference.metadata["metrics"]["validation"]
    assert model["val_loglik_per_bar"] == validation["loglik_per_bar"]
    # The same model: its answers on every bar are compared through the backfill below
    # (pickles of sklearn objects may differ in bytes that do not change an answer).
    assert model["model_id"] == reference.model_id

    # The backfill: one unit per symbol; a node goes after the first unit is stored.
    cluster.add_node(num_cpus=WORKER_CPUS)
    cluster.wait_for_nodes()
    code, stdout, stderr, removed = _run_removing_a_node(
        cluster,
        [
            "backfill",
            "--timeframe",
            TF,
            "--model-id",
            model["model_id"],
            "--symbols-per-unit",
            "1",
            "--orchestrator",
            "direct",
            "--executor",
            "ray",
        ],
        home,
        bar="backfill",
        after=1,
    )
    assert code == 0, stderr[-3000:]
    assert removed and removed["done"] < removed["total"], removed
    engine = db.make_engine(url)
    try:
        bars = db.read_bars(engine, TF)
    finally:
        engine.dispose()
    # Expected: the undisturbed reference model's answers on the same bars.
    expected = InferenceEngine(LoadedModel.load(reference.path)).replay_batch(bars)
    stored = StateStore(str(home / "states")).read(timeframe=TF, model_id=model["model_id"])
    _compare(stored, expected)  # every row once, equal to the engine's replay


def test_without_ray_address_a_command_starts_its_own_ray_beside_a_running_cluster(cluster):
    # ray.init() alone joins the newest cluster it finds on the machine; a command without
    # RAY_ADDRESS must not run its work on someone else's cluster.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    probe = (
        "from regimes.jobs.runtime import ensure_ray, shutdown_ray\n"
        "print(ensure_ray(num_cpus=1)); shutdown_ray()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "Ray local (1 CPUs)", result.stdout
