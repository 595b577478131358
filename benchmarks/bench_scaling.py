"""Scaling: the backfill on a multi-node Ray cluster, one worker node against two.

A ``ray.cluster_utils.Cluster`` on this machine: a head with 0 CPUs (it schedules, runs
nothing) and 1-CPU worker nodes, each its own raylet, reached through ``RAY_ADDRESS`` as
a real cluster is. The real ``regimes backfill`` (the CLI, ``--executor ray
--orchestrator direct``) of one registered 1m model over N synthetic symbols x D trading
days of 1m bars in SQLite, into a Delta state store of its own per run:

* anchor: one worker node; then a second node is added and the same backfill runs
  again on the same input into a fresh store. The two stores must hold identical rows
  (asserted, symbol by symbol), as many as there are bars. Reported: rows/s of each and
  the speed-up.
* units: on one node, the first few symbols as units of 1 symbol (the CLI's default)
  against one unit of all of them (``--symbols-per-unit``).
* profile: one unit in this process under ``cProfile``: where a backfill's time goes.

Sizes: the full run is 1,000 symbols x 21 trading days (~8.2 M bars; 47 min and ~5 GB
of temporary disk on the 2-core machine), so ``benchmarks/run.py`` runs this section only
when named (``python benchmarks/run.py scaling``). Smaller runs for a smoke test:
``REGIMES_BENCH_SCALING_SYMBOLS`` / ``_DAYS`` / ``_SYMBOLS_PER_UNIT`` / ``_NARROW``
(symbols of the units comparison; 0 skips it) / ``_DIR`` (where the temporary home
goes), or ``python benchmarks/bench_scaling.py --symbols 60 --days 12`` (prints the
section, writes nothing to BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIMEFRAME = "1m"
SEED = 21
TRAIN_SYMBOLS = 4
GRID = {"K": [8], "covariance": ["diag"]}
INSERT_CHUNK = 100  # symbols per bar upsert
COMPARE_CHUNK = 50  # symbols per read when the two stores are compared


@dataclass(frozen=True)
class Size:
    symbols: int = 1000
    days: int = 21
    per_unit: int = 50
    narrow: int = 50

    @classmethod
    def from_env(cls, env=os.environ) -> Size:
        prefix = "REGIMES_BENCH_SCALING_"
        names = {"symbols": "SYMBOLS", "days": "DAYS", "per_unit": "SYMBOLS_PER_UNIT"}
        names["narrow"] = "NARROW"
        values = {}
        for attr, name in names.items():
            raw = env.get(prefix + name)
            if raw is None:
                continue
            try:
                values[attr] = int(raw)
            except ValueError:
                raise SystemExit(f"{prefix}{name}: expected an integer, got {raw!r}") from None
        return cls(**values).check()

    def check(self) -> Size:
        if self.symbols < TRAIN_SYMBOLS:
            raise SystemExit(f"symbols: expected >= {TRAIN_SYMBOLS}, got {self.symbols}")
        if self.days < 10:
            raise SystemExit(
                f"days: expected >= 10 (the model's walk-forward folds), got {self.days}"
            )
        if self.per_unit < 1 or self.narrow < 0:
            raise SystemExit("symbols per unit: expected >= 1; narrow: expected >= 0")
        return self


@dataclass
class LoadSampler:
    """The 1-minute load average every ``every`` seconds while a run goes on."""

    every: float = 10.0
    samples: list[float] = field(default_factory=list)

    def __enter__(self):
        self._stop = threading.Event()
        self.samples.append(os.getloadavg()[0])

        def sample():
            while not self._stop.wait(self.every):
                self.samples.append(os.getloadavg()[0])

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def text(self) -> str:
        return f"{min(self.samples):.1f}-{max(self.samples):.1f}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def prepare(home: Path, size: Size) -> tuple[str, int, float]:
    """A home with the 1m bars of every symbol and a registered champion 1m model trained
    on the first few symbols; returns (model_id, bars, seconds)."""
    from regimes.config.loading import load_config
    from regimes.data import sql as db
    from regimes.data.synth import SynthConfig, generate
    from regimes.features.store import plan_units, run_features
    from regimes.storage.registry import Registry
    from regimes.training.train import train_timeframe

    started = time.perf_counter()
    config = load_config(ROOT / "config")
    engine = db.make_engine(f"sqlite:///{home / 'regimes.db'}")
    db.create_schema(engine)
    bars = generate(
        SynthConfig(symbols=size.symbols, days=size.days, seed=SEED), config.timeframes.session
    ).bars
    symbols = sorted(bars["symbol"].unique())
    first = bars[bars["symbol"].isin(symbols[:TRAIN_SYMBOLS])]
    db.upsert_bars(engine, first)
    run_features(engine, config, plan_units(engine, [TIMEFRAME], symbols[:TRAIN_SYMBOLS]))
    result = train_timeframe(
        engine, config, TIMEFRAME, home / "models", symbols=symbols[:TRAIN_SYMBOLS], grid=GRID
    )
    registry = Registry(str(home / "registry"))
    registry.register(
        TIMEFRAME, result.model_id, artifact_path=result.path, actor="bench", reason="bench"
    )
    registry.promote(TIMEFRAME, result.model_id, actor="bench", reason="the champion mirrors")
    rest = symbols[TRAIN_SYMBOLS:]
    for i in range(0, len(rest), INSERT_CHUNK):
        db.upsert_bars(engine, bars[bars["symbol"].isin(rest[i : i + INSERT_CHUNK])])
    total = len(bars)
    engine.dispose()
    return result.model_id, total, time.perf_counter() - started


def backfill(address: str, home: Path, states: Path, model_id: str, per_unit: int, symbols=None):
    """``regimes backfill`` on the cluster at ``address`` into ``states``; returns
    (wall seconds, its JSON summary)."""
    env = {
        **os.environ,
        "RAY_ADDRESS": address,
        "REGIMES_STATES_URI": str(states),
        "PREFECT_API_URL": "",
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    command = [sys.executable, "-m", "regimes", "--home", str(home), "backfill"]
    command += ["--timeframe", TIMEFRAME, "--model-id", model_id]
    command += ["--symbols-per-unit", str(per_unit), "--orchestrator", "direct"]
    command += ["--executor", "ray"]
    if symbols:
        command += ["--symbols", *symbols]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=7200)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"backfill failed ({done.returncode}): {done.stderr[-3000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    if summary["failed"]:
        raise RuntimeError(f"backfill units failed: {summary['failed'][:3]}")
    return seconds, summary


def same_rows(a: Path, b: Path, model_id: str, symbols: list[str]) -> tuple[int, float]:
    """Assert the two stores hold the same rows: every column equal, floats to 1e-12
    (units of other sizes step their symbols in arrays of other shapes, which moves the
    last bit of a sum). Returns (rows, the largest float difference)."""
    import numpy as np

    from regimes.storage.state_store import StateStore

    left, right = StateStore(str(a)), StateStore(str(b))
    rows, largest = 0, 0.0
    for i in range(0, len(symbols), COMPARE_CHUNK):
        chunk = symbols[i : i + COMPARE_CHUNK]
        x, y = (
            s.read(TIMEFRAME, model_id, chunk).sort_values(["symbol", "ts"]).reset_index(drop=True)
            for s in (left, right)
        )
        where = f"symbols {chunk[0]}..{chunk[-1]}"
        assert list(x.columns) == list(y.columns) and len(x) == len(y), where
        for column in x.columns:
            if x[column].dtype.kind == "f":
                u, v = x[column].to_numpy(), y[column].to_numpy()
                assert np.array_equal(np.isnan(u), np.isnan(v)), f"{column}, {where}"
                gap = float(np.nanmax(np.abs(u - v), initial=0.0))
                assert gap <= 1e-12, f"{column} differs by {gap}, {where}"
                largest = max(largest, gap)
            else:
                assert x[column].equals(y[column]), f"{column} differs, {where}"
        rows += len(x)
    return rows, largest


PROFILE_STAGES = [
    ("bar reads (`db.read_bars`, SQLite)", "sql.py", "read_bars"),
    ("model load (`LoadedModel.load`, verified)", "loaded.py", "load"),
    ("replay (`InferenceEngine.replay_batch`)", "engine.py", "replay_batch"),
    ("stored-key look-up (`_stored_keys`)", "backfill.py", "_stored_keys"),
    ("Delta merge (`StateStore.write`)", "state_store.py", "write"),
    ("- of which validation and sorting (`to_state_table`)", "state_table.py", "to_state_table"),
    ("- of which the MERGE itself (deltalake `merge_execute`)", "", "merge_execute"),
    ("`current_states` mirror (`_mirror`)", "recording.py", "_mirror"),
]


OWNER = {"merge_execute": "'deltalake._internal.RawDeltaTable' objects"}


def profile_unit(home: Path, model_id: str, symbols: list[str]) -> tuple[list[list[str]], int]:
    """One unit of ``symbols`` in this process under cProfile, into a scratch store."""
    from regimes.config.loading import load_config
    from regimes.data import sql as db
    from regimes.storage.backfill import backfill_unit, plan_backfill
    from regimes.storage.registry import Registry
    from regimes.storage.state_store import StateStore

    config = load_config(ROOT / "config")
    engine = db.make_engine(f"sqlite:///{home / 'regimes.db'}")
    registry = Registry(str(home / "registry"))
    (unit,) = plan_backfill(
        engine, registry, home / "models", TIMEFRAME, model_id, symbols, len(symbols)
    )
    store = StateStore(str(home / "states-profile"))
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    result = backfill_unit(engine, config, store, registry, unit)
    profiler.disable()
    wall = time.perf_counter() - started
    engine.dispose()
    stats = pstats.Stats(profiler).stats

    def cumulative(filename: str, name: str) -> float:
        return sum(
            value[3]
            for (path, _, function), value in stats.items()
            if function in (name, f"<method '{name}' of {OWNER.get(name, '')}>")
            and path.endswith(filename)
        )

    total = cumulative("backfill.py", "backfill_unit")

    rows = []
    accounted = 0.0
    for label, filename, name in PROFILE_STAGES:
        seconds = cumulative(filename, name)
        if not label.startswith("-"):
            accounted += seconds
        rows.append([label, f"{seconds:.1f} s", f"{seconds / total:.0%}"])
    rest = total - accounted
    rows.append(["everything else", f"{rest:.1f} s", f"{rest / total:.0%}"])
    rows.append(["`backfill_unit`, profiled", f"{total:.1f} s (wall {wall:.1f} s)", "100%"])
    shutil.rmtree(home / "states-profile", ignore_errors=True)
    return rows, result.bars


def run(size: Size | None = None) -> str:
    from ray.cluster_utils import Cluster

    size = size or Size.from_env()
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = time.perf_counter()
    where = os.environ.get("REGIMES_BENCH_SCALING_DIR") or None
    home = Path(tempfile.mkdtemp(prefix="bench-scaling-", dir=where))
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        with LoadSampler() as load_all:
            model_id, n_bars, prepare_seconds = prepare(home, size)
            print(f"prepared {n_bars:,} bars in {prepare_seconds:.0f} s", file=sys.stderr)
            from regimes.data import sql as db

            engine = db.make_engine(f"sqlite:///{home / 'regimes.db'}")
            symbols = db.list_symbols(engine, TIMEFRAME)
            engine.dispose()
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
            try:
                cluster.add_node(num_cpus=1)
                cluster.wait_for_nodes()
                units_rows = []
                if size.narrow:
                    narrow = symbols[: size.narrow]
                    for per_unit in (1, len(narrow)):
                        seconds, summary = backfill(
                            cluster.address,
                            home,
                            home / f"states-narrow-{per_unit}",
                            model_id,
                            per_unit,
                            narrow,
                        )
                        units_rows.append((per_unit, seconds, summary))
                        print(f"units of {per_unit}: {seconds:.0f} s", file=sys.stderr)
                    _, narrow_gap = same_rows(
                        home / "states-narrow-1",
                        home / f"states-narrow-{len(narrow)}",
                        model_id,
                        narrow,
                    )
                    for per_unit in (1, len(narrow)):
                        shutil.rmtree(home / f"states-narrow-{per_unit}")
                runs = {}
                for nodes in (1, 2):
                    if nodes == 2:
                        cluster.add_node(num_cpus=1)
                        cluster.wait_for_nodes()
                    with LoadSampler() as load:
                        seconds, summary = backfill(
                            cluster.address,
                            home,
                            home / f"states-{nodes}",
                            model_id,
                            size.per_unit,
                        )
                    runs[nodes] = (seconds, summary, load)
                    print(f"{nodes} node(s): {seconds:.0f} s", file=sys.stderr)
            finally:
                cluster.shutdown()
            stored, gap = same_rows(home / "states-1", home / "states-2", model_id, symbols)
            assert stored == n_bars, (stored, n_bars)
            disk = sum(f.stat().st_size for f in (home / "states-1").rglob("*") if f.is_file())
            files = sum(1 for f in (home / "states-1").rglob("*.parquet"))
            profile_rows, profile_bars = profile_unit(home, model_id, symbols[: size.per_unit])
    finally:
        shutil.rmtree(home, ignore_errors=True)
    total_seconds = time.perf_counter() - started

    def rate(nodes: int) -> float:
        seconds, summary, _ = runs[nodes]
        return summary["rows_written"] / seconds

    result_rows = [
        [
            f"{nodes} worker node{'s' if nodes > 1 else ''} (1 CPU each)",
            f"{summary['units']} units of {size.per_unit}",
            f"{summary['rows_written']:,}",
            f"{seconds:.0f} s",
            f"{rate(nodes):,.0f} rows/s",
            load.text(),
            "1.00 (anchor)" if nodes == 1 else f"{rate(2) / rate(1):.2f}x",
        ]
        for nodes, (seconds, summary, load) in runs.items()
    ]
    lines = [
        "## scaling: the backfill on a 2-node Ray cluster (issue 18)",
        "",
        f"`regimes backfill --timeframe 1m --symbols-per-unit {size.per_unit} --executor ray "
        "--orchestrator direct` through `RAY_ADDRESS` to a `ray.cluster_utils.Cluster` on "
        "this machine (a 0-CPU head and 1-CPU worker nodes, each its own raylet), of one "
        f"registered 1m model (K = {GRID['K'][0]}, diag; trained in the run on "
        f"{TRAIN_SYMBOLS} symbols) over {size.symbols:,} synthetic symbols x {size.days} "
        f"trading days of 1m bars ({n_bars:,} bars, SQLite), into a fresh local Delta state "
        "store per run. Anchor: the same backfill on one worker node. The two stores hold "
        f"the same rows, {stored:,} of them, one per bar (asserted; largest difference of a "
        f"float: {gap:.1e}). Runs on demand only "
        "(`python benchmarks/run.py scaling`; `make bench` keeps this section as it is).",
        "",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores shared by the nodes, the driver and "
        "every other process on the machine",
        f"- load average (1 min) over the whole benchmark: {load_all.text()} (each run's "
        "own in the table; above ~2 on these 2 cores, other work shared the machine)",
        f"- the state store after one run: {disk / 1e9:.2f} GB in {files:,} Parquet files "
        "(partitions timeframe/model_id/symbol/date)",
        f"- preparing the input (synthetic bars into SQLite, features and training on "
        f"{TRAIN_SYMBOLS} symbols): {prepare_seconds:.0f} s; the whole benchmark "
        f"{total_seconds / 60:.0f} min",
        "",
        table(
            result_rows,
            ["cluster", "units", "rows written", "wall", "rows/s", "load (1 min)", "speed-up"],
        ),
    ]
    if size.narrow:
        narrow_rows = [
            [
                f"{summary['units']} unit{'s' if summary['units'] > 1 else ''} of {per_unit}",
                f"{summary['rows_written']:,}",
                f"{seconds:.0f} s",
                f"{summary['rows_written'] / seconds:,.0f} rows/s",
            ]
            for per_unit, seconds, summary in units_rows
        ]
        slow = units_rows[0][1] / units_rows[1][1]
        lines += [
            "",
            f"Unit size, on one worker node, the first {size.narrow} symbols (the same rows in "
            f"both stores, asserted; floats within {narrow_gap:.1e}: arrays of other shapes "
            f"sum in another order): units of 1 symbol (the CLI's default) take {slow:.2f}x "
            "as long as one wide unit.",
            "",
            table(narrow_rows, ["units", "rows written", "wall", "rows/s"]),
        ]
    lines += [
        "",
        f"Where a unit's time goes: one unit of {size.per_unit} symbols ({profile_bars:,} bars) "
        "run in the benchmark's process under `cProfile` into a fresh store (cumulative "
        "time per stage; the profiler inflates Python-level work, so shares are indicative).",
        "",
        table(profile_rows, ["stage", "time", "share"]),
    ]
    print(f"scaling: {total_seconds:.0f} s, stamp {stamp}", file=sys.stderr)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Size.from_env()
    parser.add_argument("--symbols", type=int, default=defaults.symbols)
    parser.add_argument("--days", type=int, default=defaults.days)
    parser.add_argument("--symbols-per-unit", type=int, default=defaults.per_unit)
    parser.add_argument("--narrow", type=int, default=defaults.narrow)
    args = parser.parse_args(argv)
    size = Size(args.symbols, args.days, args.symbols_per_unit, args.narrow).check()
    print(run(size))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
