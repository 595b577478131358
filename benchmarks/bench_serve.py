"""The live service end to end over HTTP on 127.0.0.1, against the engine's own step.

* service: the real Serve app (ingress, the 1m engine shards and the writer, with
  ``config/serve.yaml``'s shard count and write cadences) on a local Ray;
  ``POST /v1/bars/1m`` with 1,000-symbol batches, one bar time per request, sent one
  after the other by one client (bar times must arrive in order), first with
  the champion only, then with one shadow beside it. Each phase first posts enough bar
  times to take every symbol past its warm-up (not timed), then times STEPS requests:
  symbol-bars/s, p50 and p99 latency per request as the client sees it.
* columnar: after the champion-only phase, the next STEPS bar times as columnar bodies
  (``application/vnd.regimes.columns+json``), answered in columns.
* concurrent: CLIENTS clients at once, each with its own 1,000 symbols (their order
  per symbol is kept; the service overlaps their requests).
* anchor: the same batches through ``InferenceEngine.step`` called directly in this
  process (a fresh engine of the champion, same warm-up): the ratio is what the HTTP
  service costs on top of the engine.
* ``GET /v1/states/{symbol}``: composite records per second, one client.
* shadow lag: the batches still queued for the shadow when the shadow phase ends
  (shadows step between champion requests; this says they kept up).
* snapshots: what a checkpoint costs per engine of 1,000 symbols, in process: the
  copy of its state (on the shard's request loop) and the ``.npz`` write (in a thread).
* writes: after the champion-only phase, how long the writer takes to put everything
  still landed into the database, ``current_states`` and the Delta state store, and the
  rate of that phase counting this time too (the shards only land; the writer catches
  up at a lower CPU priority).

Goals (issue 13): at least 100,000 symbol-bars/s through HTTP, p99 at most 100 ms per
1,000-symbol batch, a shadow adding at most 15% to the champion's p99.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIMEFRAME, SYMBOLS, STEPS, CLIENTS = "1m", 1000, 150, 3
KEY = "bench-key-0123456789abcdef"
GOAL_RATE, GOAL_P99_MS, GOAL_SHADOW = 100_000, 100.0, 0.15


def _train(config, home: Path, engine, seed: int, K: int):
    from regimes.training.train import train_timeframe

    grid = {"encoder": ["pca"], "d": [8], "K": [K], "covariance": ["diag"]}
    return train_timeframe(engine, config, TIMEFRAME, home / "models", grid=grid, seed=seed)


def _home(config, home: Path):
    from regimes.data import sql as db
    from regimes.data.synth import SynthConfig, generate
    from regimes.features.store import plan_units, run_features
    from regimes.storage.registry import Registry

    engine = db.make_engine(f"sqlite:///{home / 'regimes.db'}")
    db.create_schema(engine)
    market = generate(SynthConfig(symbols=2, days=6, seed=5), config.timeframes.session)
    db.upsert_bars(engine, market.bars)
    run_features(engine, config, plan_units(engine, [TIMEFRAME]))
    registry = Registry(str(home / "registry"))
    champion, shadow = _train(config, home, engine, 1, 8), _train(config, home, engine, 2, 9)
    for result in (champion, shadow):
        registry.register(
            TIMEFRAME, result.model_id, artifact_path=result.path, actor="b", reason="b"
        )
    registry.promote(TIMEFRAME, champion.model_id, actor="b", reason="bench")
    times = pd.DatetimeIndex(np.sort(db.read_bars(engine, TIMEFRAME)["ts"].unique()))
    engine.dispose()
    return registry, champion, shadow, times


def _bodies(steps: list[pd.DataFrame]) -> list[bytes]:
    import orjson

    columns = ["symbol", "open", "high", "low", "close", "volume"]
    return [
        orjson.dumps(
            {"ts": pd.Timestamp(s["ts"].iloc[0]).isoformat(), "bars": s[columns].to_dict("records")}
        )
        for s in steps
    ]


def _column_bodies(steps: list[pd.DataFrame]) -> list[bytes]:
    import orjson

    columns = ["open", "high", "low", "close", "volume"]
    return [
        orjson.dumps(
            {
                "ts": pd.Timestamp(s["ts"].iloc[0]).isoformat(),
                "columns": {
                    "symbol": s["symbol"].tolist(),
                    **{c: s[c].to_numpy() for c in columns},
                },
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        for s in steps
    ]


def _post_all(client, bodies: list[bytes], headers: dict | None = None) -> list[float]:
    latencies = []
    for body in bodies:
        started = time.perf_counter()
        reply = client.post(f"/v1/bars/{TIMEFRAME}", content=body, headers=headers)
        latencies.append(time.perf_counter() - started)
        if reply.status_code != 200 or reply.json()["refused"]:
            raise RuntimeError(f"bench: {reply.status_code} {reply.text[:300]}")
    return latencies


def _phase(client, warm: list[bytes], timed: list[bytes], headers: dict | None = None) -> dict:
    _post_all(client, warm, headers)
    started = time.perf_counter()
    latencies = _post_all(client, timed, headers)
    seconds = time.perf_counter() - started
    return {
        "rate": SYMBOLS * len(timed) / seconds,
        "p50": 1000 * float(np.percentile(latencies, 50)),
        "p99": 1000 * float(np.percentile(latencies, 99)),
    }


def _measure() -> dict:
    import httpx

    from regimes.config.loading import load_config
    from regimes.config.serving import ServeConfig, load_serve_config
    from regimes.jobs.runtime import ensure_ray
    from regimes.live.engine import InferenceEngine
    from regimes.model.loaded import LoadedModel
    from regimes.serve.app import run_service, stop_service

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_inference import random_walk_bars

    config = load_config(ROOT / "config")
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(11)
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        registry, champion, shadow, times = _home(config, home)
        model = LoadedModel.load(champion.path)
        warmup = InferenceEngine(model).cold_start_bars + 5
        need = 2 * (warmup + STEPS) + STEPS
        if len(times) < need:
            raise RuntimeError(f"bench: {len(times)} bar times, need {need}")
        symbols = [f"B{i:05d}" for i in range(SYMBOLS)]
        steps = random_walk_bars(symbols, times[:need], rng)
        # The anchor: the engine's own step on the champion phase's batches.
        anchor = InferenceEngine(model)
        for batch in steps[:warmup]:
            anchor.step(batch)
        started = time.perf_counter()
        for batch in steps[warmup : warmup + STEPS]:
            anchor.step(batch)
        engine_rate = SYMBOLS * STEPS / (time.perf_counter() - started)
        snapshot = _snapshot_costs(anchor, home)

        bodies = _bodies(steps)
        os.environ["REGIMES_API_KEYS"] = KEY
        ensure_ray()
        port = 8765
        # config/serve.yaml as shipped (shards, flush, store and checkpoint cadences).
        serve_config = load_serve_config(ROOT / "config").model_copy(update={"port": port})
        serve_config = ServeConfig.model_validate(serve_config.model_dump())
        params = {
            "home": str(home),
            "db_url": f"sqlite:///{home / 'regimes.db'}",
            "config_dir": str(ROOT / "config"),
        }
        url = run_service(params, serve_config, [TIMEFRAME])
        client = httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {KEY}"})
        try:
            alone = _phase(client, bodies[:warmup], bodies[warmup : warmup + STEPS])
            alone["drain_s"] = _drain()
            alone["with_writes"] = (
                SYMBOLS * STEPS / (SYMBOLS * STEPS / alone["rate"] + alone["drain_s"])
            )
            first = warmup + STEPS
            columnar = _phase(
                client,
                [],
                _column_bodies(steps[first : first + STEPS]),
                {"Content-Type": "application/vnd.regimes.columns+json"},
            )
            _drain()
            registry.set_role(TIMEFRAME, shadow.model_id, "shadow", actor="b", reason="bench")
            client.post("/v1/admin/reload").raise_for_status()
            second = first + STEPS
            with_shadow = _phase(
                client, bodies[second : second + warmup], bodies[second + warmup : need]
            )
            with_shadow["lag"] = _shadow_lag()
            concurrent = _concurrent(url, config, times, rng)
            gets = _gets(client, symbols)
        finally:
            client.close()
            try:
                stop_service()
            except TimeoutError as exc:  # a loaded machine: the figures are measured already
                print(f"bench: the service did not stop in time ({exc})", file=sys.stderr)
    return {
        "engine_rate": engine_rate,
        "alone": alone,
        "columnar": columnar,
        "shadow": with_shadow,
        "concurrent": concurrent,
        "gets": gets,
        "snapshot": snapshot,
        "shards": serve_config.shards[TIMEFRAME],
        "load": (load_before, os.getloadavg()[0]),
    }


def _concurrent(url, config, times, rng) -> dict:
    """CLIENTS clients at once, each posting its own symbols' bar times in order."""
    import httpx
    from bench_inference import random_walk_bars

    warm, timed = 40, 60
    batches = [
        _bodies(
            random_walk_bars([f"C{c}_{i:04d}" for i in range(SYMBOLS)], times[: warm + timed], rng)
        )
        for c in range(CLIENTS)
    ]
    results: list[list[float]] = [[] for _ in range(CLIENTS)]

    def client_run(index: int, bodies: list[bytes]):
        with httpx.Client(
            base_url=url, timeout=120, headers={"Authorization": f"Bearer {KEY}"}
        ) as c:
            results[index] = _post_all(c, bodies)

    threads = [
        threading.Thread(target=client_run, args=(c, b[:warm])) for c, b in enumerate(batches)
    ]
    [t.start() for t in threads]
    [t.join() for t in threads]
    threads = [
        threading.Thread(target=client_run, args=(c, b[warm:])) for c, b in enumerate(batches)
    ]
    started = time.perf_counter()
    [t.start() for t in threads]
    [t.join() for t in threads]
    seconds = time.perf_counter() - started
    latencies = np.concatenate(results)
    return {
        "rate": CLIENTS * SYMBOLS * timed / seconds,
        "p50": 1000 * float(np.percentile(latencies, 50)),
        "p99": 1000 * float(np.percentile(latencies, 99)),
    }


def _snapshot_costs(engine, home: Path) -> dict:
    from regimes.live.snapshot import write_snapshot

    started = time.perf_counter()
    state = engine.snapshot()
    copied = time.perf_counter()
    write_snapshot(state, home / "bench-snapshot.npz")
    written = time.perf_counter()
    return {
        "copy_ms": 1000 * (copied - started),
        "write_ms": 1000 * (written - copied),
        "mb": (home / "bench-snapshot.npz").stat().st_size / 1e6,
    }


def _shadow_lag() -> int:
    """Batches still queued for the shadows of the 1m shard right now."""
    from ray import serve

    handle = serve.get_deployment_handle(f"engine-{TIMEFRAME}-0", app_name="regimes")
    return int(handle.counters.remote().result(timeout_s=60)["queued_shadow_batches"])


def _drain() -> float:
    """Seconds until every shard has landed what it holds and the writer has written
    everything landed."""
    from ray import serve

    started = time.perf_counter()
    serve.get_deployment_handle(f"engine-{TIMEFRAME}-0", app_name="regimes").flush.remote().result(
        timeout_s=600
    )
    return time.perf_counter() - started


def _gets(client, symbols) -> dict:
    """Composite records per second over 3 s (a new symbol each time, as a dashboard
    going through a watch list), and the slowest single request."""
    n, slowest, started = 0, 0.0, time.perf_counter()
    while time.perf_counter() - started < 3.0:
        asked = time.perf_counter()
        reply = client.get(f"/v1/states/{symbols[n % len(symbols)]}")
        reply.raise_for_status()
        slowest = max(slowest, time.perf_counter() - asked)
        n += 1
    return {"rate": n / (time.perf_counter() - started), "n": n, "slowest_ms": 1000 * slowest}


def section(r: dict) -> str:
    alone, shadow, concurrent = r["alone"], r["shadow"], r["concurrent"]
    columnar = r["columnar"]
    added = shadow["p99"] / alone["p99"] - 1

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    rows = [
        ["engine step, in process (anchor)", f"{r['engine_rate']:,.0f}", "-", "-", "1.00"],
        [
            "HTTP, champion only",
            f"{alone['rate']:,.0f}",
            f"{alone['p50']:.1f}",
            f"{alone['p99']:.1f}",
            f"{alone['rate'] / r['engine_rate']:.2f}",
        ],
        [
            "HTTP, champion only, counting the writer's catch-up",
            f"{alone['with_writes']:,.0f}",
            "-",
            "-",
            f"{alone['with_writes'] / r['engine_rate']:.2f}",
        ],
        [
            "HTTP, champion only, columnar body and answers",
            f"{columnar['rate']:,.0f}",
            f"{columnar['p50']:.1f}",
            f"{columnar['p99']:.1f}",
            f"{columnar['rate'] / r['engine_rate']:.2f}",
        ],
        [
            "HTTP, champion + 1 shadow",
            f"{shadow['rate']:,.0f}",
            f"{shadow['p50']:.1f}",
            f"{shadow['p99']:.1f}",
            f"{shadow['rate'] / r['engine_rate']:.2f}",
        ],
        [
            f"HTTP, {CLIENTS} clients at once (champion + shadow)",
            f"{concurrent['rate']:,.0f}",
            f"{concurrent['p50']:.1f}",
            f"{concurrent['p99']:.1f}",
            f"{concurrent['rate'] / r['engine_rate']:.2f}",
        ],
    ]
    best = max(alone["rate"], columnar["rate"], concurrent["rate"])
    return "\n".join(
        [
            "## serve: the live service over HTTP (issue 13)",
            "",
            f"`POST /v1/bars/{TIMEFRAME}`, {SYMBOLS:,}-symbol batches, {STEPS} timed requests per "
            f"phase after warm-up, {r['shards']} 1m engine shard(s) and the writer "
            "(`config/serve.yaml` as shipped); anchor = the same "
            "batches through `InferenceEngine.step` in process. Latency is per request as "
            "the client sees it.",
            "",
            table(rows, ["path", "symbol-bars/s", "p50 ms", "p99 ms", "x engine"]),
            "",
            f"- `GET /v1/states/{{symbol}}`: {r['gets']['rate']:,.1f} requests/s (one client, "
            f"{r['gets']['n']} requests, the slowest {r['gets']['slowest_ms']:.0f} ms)",
            f"- shadow lag: {shadow['lag']} batch(es) still queued for the shadow when its "
            "phase ended (shadows step between champion requests)",
            f"- snapshots (every `checkpoint_interval_s`, per engine of {SYMBOLS:,} symbols, in "
            f"process): state copy {r['snapshot']['copy_ms']:.1f} ms on the shard's request "
            f"loop, `.npz` write {r['snapshot']['write_ms']:.1f} ms in a thread "
            f"({r['snapshot']['mb']:.1f} MB)",
            f"- writes: after the champion-only phase the writer needed {alone['drain_s']:.1f} s "
            "more to put every landed bar and answer into the database, `current_states` and "
            "the Delta state store",
            f"- machine load average (1 min) at the start / end of the run: "
            f"{r['load'][0]:.1f} / {r['load'][1]:.1f} (a shared machine: other work ran "
            "beside this benchmark)",
            f"- goal >= {GOAL_RATE:,} symbol-bars/s: {verdict(best >= GOAL_RATE)} "
            f"(best {best:,.0f})",
            f"- goal p99 <= {GOAL_P99_MS:.0f} ms: {verdict(alone['p99'] <= GOAL_P99_MS)} "
            f"({alone['p99']:.1f} ms)",
            f"- goal: a shadow adds <= {GOAL_SHADOW:.0%} to p99: {verdict(added <= GOAL_SHADOW)} "
            f"({added:+.0%})",
        ]
    )


def run() -> str:
    return section(_measure())


if __name__ == "__main__":
    print(run())
