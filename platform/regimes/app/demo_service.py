"""The demo's live-service step: a shadow registered beside a champion, the last
synthetic day posted over HTTP to ``regimes serve``'s app, and what a user sees of it
(answers, a composite record, shadow agreement, metrics)."""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import time

from regimes.app import rollout, training
from regimes.app.executors import LocalExecutor
from regimes.app.orchestrators import DirectOrchestrator
from regimes.app.progress import Notify, Progress, ticking
from regimes.app.serving import ServeRequest, start_service
from regimes.app.workspace import Workspace
from regimes.live.api_keys import KEYS_ENV
from regimes.timeframes import TIMEFRAME_DURATION, TIMEFRAMES

SHADOW_TIMEFRAME = "1h"
METRIC_LINES = (
    "regimes_bars_total",
    "regimes_http_request_duration_seconds_count",
    'regimes_answers_total{timeframe="1m",role="champion",outcome="known"}',
    "regimes_shadow_agreement_ratio",
)


# 1m bars posted: the day's last two hours (the other timeframes post the whole day).
ONE_MINUTE_BARS_POSTED = 120


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def add_shadow(workspace: Workspace, seed: int, say: Notify) -> str | None:
    """Train a second 1h model (the champion's K and covariance, another seed: a candidate
    that should agree with it) and put it in the shadow role."""
    from regimes.model.loaded import LoadedModel

    registry = workspace.registry
    champion = registry.champion(SHADOW_TIMEFRAME)
    path = workspace.model_path(SHADOW_TIMEFRAME, champion)
    metadata = LoadedModel.load(path).metadata
    grid = {"K": [int(metadata["K"])], "covariance": [metadata["covariance_type"]]}
    request = training.TrainRequest((SHADOW_TIMEFRAME,), None, grid, seed + 1)
    [result] = training.train(
        workspace, request, LocalExecutor(), DirectOrchestrator("demo")
    ).models
    request = rollout.PromoteRequest(
        SHADOW_TIMEFRAME,
        result["model_id"],
        actor="demo",
        reason="a candidate (another seed) runs beside the champion before any switch",
        to="shadow",
    )
    say(f"   promote {result['model_id']} --to shadow: the drift gate runs first")
    try:
        moved = rollout.promote(workspace, request, say)
    except rollout.PromotionRefusedError as exc:
        say(f"   refused: {exc}")
        say("   (the demo forces it, recorded as forced, to show a shadow in the service)")
        moved = rollout.promote(
            workspace,
            dataclasses.replace(request, force=True, reason=request.reason + "; gate overridden"),
        )
    else:
        for check in moved.transition.evidence.get("checks", []):
            say(f"   {'pass' if check['passed'] else 'FAIL'} {check['name']}: {check['value']}")
    for line in moved.summary():
        say("   " + line)
    return result["model_id"]


def run_service_step(workspace: Workspace, seed: int, say: Notify, progress: Progress) -> dict:
    """Start the service, post the last synthetic day of every timeframe in bar-close
    order, show what came back; the service is stopped at the end."""
    import httpx
    import numpy as np
    import orjson
    import pandas as pd

    from regimes.data import sql as db
    from regimes.errors import RegimesError

    shadow = None
    if workspace.registry.champion(SHADOW_TIMEFRAME) is None:
        say(f"   no {SHADOW_TIMEFRAME} champion: no shadow to run beside it")
    else:
        try:
            shadow = add_shadow(workspace, seed, say)
        except RegimesError as exc:
            say(f"   no shadow: {exc}")
    summary = db.bars_summary(workspace.engine)
    synthetic = summary[summary["symbol"].str.startswith("SYN")]
    symbols = sorted(synthetic["symbol"].unique())
    zone = workspace.config.timeframes.session.timezone
    last_1m = pd.Timestamp(synthetic.loc[synthetic["timeframe"] == "1m", "last_ts"].max())
    day_start = last_1m.tz_convert(zone).normalize().tz_convert("UTC")
    key = secrets.token_urlsafe(24)
    os.environ[KEYS_ENV] = key
    batches = []
    for timeframe in TIMEFRAMES:
        if workspace.registry.champion(timeframe) is None:
            continue
        start = day_start - pd.Timedelta(days=4) if timeframe == "1d" else day_start
        if timeframe == "1m":  # the day's last two hours: one request per bar is the slow part
            start = last_1m - pd.Timedelta(minutes=ONE_MINUTE_BARS_POSTED - 1)
        bars = db.read_bars(workspace.engine, timeframe, symbols, start)
        for ts, group in bars.groupby("ts", sort=True):
            batches.append((ts + TIMEFRAME_DURATION[timeframe], timeframe, group))
    batches.sort(key=lambda item: (item[0], TIMEFRAMES.index(item[1])))
    with start_service(workspace, ServeRequest(port=_free_port()), say) as service:
        client = httpx.Client(
            base_url=service.url, timeout=60, headers={"Authorization": f"Bearer {key}"}
        )
        latency: dict[str, list[float]] = {}
        counts: dict[str, dict[str, int]] = {}
        reasons: dict[str, dict[str, int]] = {}
        with progress("POST /v1/bars", len(batches)) as tick:
            for _, timeframe, group in ticking(batches, tick):
                rows = group[["symbol", "open", "high", "low", "close", "volume", "is_gap"]]
                body = {
                    "ts": pd.Timestamp(group["ts"].iloc[0]).isoformat(),
                    "bars": rows.to_dict("records"),
                }
                began = time.perf_counter()
                # orjson: a gap row's missing prices (NaN) go as null, refused per row
                reply = client.post(
                    f"/v1/bars/{timeframe}",
                    content=orjson.dumps(body),
                    headers={"Content-Type": "application/json"},
                )
                latency.setdefault(timeframe, []).append(time.perf_counter() - began)
                reply.raise_for_status()
                tally = counts.setdefault(timeframe, {"answers": 0, "known": 0, "refused": 0})
                answers = reply.json()["answers"]
                tally["answers"] += len(answers)
                tally["known"] += sum(not a["is_unknown"] for a in answers)
                tally["refused"] += len(reply.json()["refused"])
                for row in reply.json()["refused"]:
                    why = row["reason"].split(" (")[0]
                    reasons.setdefault(timeframe, {}).setdefault(why, 0)
                    reasons[timeframe][why] += 1
        table = pd.DataFrame(
            [
                {
                    "timeframe": tf,
                    "requests": len(latency[tf]),
                    **counts[tf],
                    "p50 ms": round(1000 * float(np.percentile(latency[tf], 50)), 1),
                    "p99 ms": round(1000 * float(np.percentile(latency[tf], 99)), 1),
                }
                for tf in latency
            ]
        )
        say(
            f"the last synthetic day posted over HTTP ({len(symbols)} symbols per request, "
            "bar-close order across timeframes; 1m: its last two hours, each symbol "
            "cold-started from the stored bars before them):"
        )
        say(table.to_string(index=False))
        for timeframe, why in reasons.items():
            say(f"   {timeframe} refused rows: " + ", ".join(f"{k} x{v}" for k, v in why.items()))
        at = (last_1m + pd.Timedelta(minutes=1)).isoformat()
        reply = client.get(f"/v1/states/{symbols[0]}", params={"at": at})
        record = reply.json()
        say("")
        say(f"GET /v1/states/{symbols[0]}?at={at} (the composite record):")
        for timeframe, cell in record.get("timeframes", {}).items():
            state = (
                f"{cell['state_id']} {cell['label'] or ''} (p={cell['state_prob']:.2f})"
                if cell["state_id"] >= 0
                else f"UNKNOWN: {cell['reason']}"
            )
            age = "-" if cell["age_s"] is None else f"{cell['age_s']:.0f}s old"
            say(f"   {timeframe:>3}: {state}, {age}")
        if reply.status_code != 200:
            say(f"   {reply.status_code}: {record.get('error')}")
        figures = {}
        if shadow is not None:
            comparison = client.get(f"/v1/shadow/{SHADOW_TIMEFRAME}").json()
            figures = comparison["shadows"].get(shadow, {})
            say("")
            say(
                f"GET /v1/shadow/{SHADOW_TIMEFRAME}: champion {comparison['champion']} vs {shadow}:"
            )
        if figures:
            say(
                f"   bars compared {figures['bars_compared']}, agreement "
                f"{_share(figures['agreement'])} (after Hungarian alignment), mean |Δ posterior| "
                f"{_share(figures['mean_abs_posterior_diff'])}, switches champion "
                f"{figures['switches']['champion']} / shadow {figures['switches']['shadow']}"
            )
        metrics = client.get("/metrics").text.splitlines()
        shown = [line for line in metrics if line.startswith(METRIC_LINES)][:8]
        say("")
        say("GET /metrics (a few lines):")
        for line in shown:
            say("   " + line)
        say(
            f"   service: {service.url} (OpenAPI {service.url}/v1/openapi.json, dashboard "
            f"{service.url}/dashboard); stopping it"
        )
        client.close()
    return {
        "url": service.url,
        "started_in_s": round(service.started_in_s, 1),
        "requests": json_records(table),
        "composite": record,
        "shadow": {"model_id": shadow, **figures},
    }


def _share(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def json_records(table) -> list[dict]:
    import json

    return json.loads(table.to_json(orient="records"))
