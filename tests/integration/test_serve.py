"""The live service on a real Ray Serve app over HTTP on 127.0.0.1: answers equal the
engine's, shadows land in Delta under their own model_id only, promotion mid-stream
without warm-up, a killed shard replica restored with identical answers and no lost
rows, every bad input and auth refusal.

The tests of this module run in order against one service (the stream goes on from
test to test, as a live feed would).
"""

from __future__ import annotations

import os
import shutil
import signal
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from regimes.data import sql as db
from regimes.live.engine import DatabaseHistory, InferenceEngine
from regimes.model.loaded import LoadedModel
from regimes.storage.registry import Registry
from regimes.storage.state_store import StateStore
from tests.conftest import REPO_ROOT
from tests.integration.conftest import copy_home

pytestmark = pytest.mark.integration

TF = "15m"
KEY = "serve-test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory, ray_local, two_models_home):
    """A copy of the session's two-model 15m home (a champion and a candidate) and the
    service running over it (two 15m shards)."""
    from regimes.app.serving import ServeRequest, start_service
    from regimes.app.workspace import Workspace

    source, models = two_models_home
    home = copy_home(source, tmp_path_factory.mktemp("serve") / "home")
    url = f"sqlite:///{home / 'regimes.db'}"
    engine = db.make_engine(url)
    registry = Registry(str(home / "registry"))
    # The service reads serve.yaml from the Workspace's config folder, as `regimes serve`.
    config_dir = home / "config"
    shutil.copytree(REPO_ROOT / "config", config_dir, ignore=shutil.ignore_patterns("*.py"))
    (config_dir / "serve.yaml").write_text(
        "shards: {15m: 2}\nflush_interval_s: 0.3\nstore_interval_s: 1.0\n"
        "checkpoint_interval_s: 2.0\nregistry_poll_s: 3600\n"
        "max_symbols_per_request: 50\nmax_body_bytes: 20000\n"
    )
    # Probation strict enough that a champion fed another market's bars is rolled back.
    (config_dir / "gates.yaml").write_text(
        "defaults: {probation_bars: 100000, probation_min_bars: 20, probation_max_ood_rate: 0.2}\n"
    )
    workspace = Workspace.open(home, url, config_dir)
    os.environ["REGIMES_API_KEYS"] = KEY
    try:
        service = start_service(workspace, ServeRequest(port=_free_port()))
    finally:
        del os.environ["REGIMES_API_KEYS"]
    assert service.timeframes == (TF,) and service.writes_enabled
    base = service.url
    bars = db.read_bars(engine, TF)
    stream = [group for _, group in bars.groupby("ts", sort=True)][-60:]
    state = {
        "home": home,
        "engine": engine,
        "registry": registry,
        "models": models,
        "stream": stream,
        "position": 0,
        "client": httpx.Client(base_url=base, timeout=60),
        "answers": [],  # every champion answer the service returned
        "reference": {},  # model_id -> engine stepping the same bars in this process
    }
    yield state
    state["client"].close()
    service.stop()
    workspace.close()
    engine.dispose()


def _body(group: pd.DataFrame) -> dict:
    rows = group[["symbol", "open", "high", "low", "close", "volume"]].to_dict("records")
    return {"ts": pd.Timestamp(group["ts"].iloc[0]).isoformat(), "bars": rows}


def _reference(served, model) -> InferenceEngine:
    refs = served["reference"]
    if model.model_id not in refs:
        refs[model.model_id] = InferenceEngine(
            LoadedModel.load(model.path), history=DatabaseHistory(served["engine"], TF)
        )
    return refs[model.model_id]


def _post(served, group, retries: int = 0) -> httpx.Response:
    for attempt in range(retries + 1):
        reply = served["client"].post(f"/v1/bars/{TF}", json=_body(group), headers=AUTH)
        if reply.status_code != 503 or attempt == retries:
            return reply
        time.sleep(1.0)
    return reply


def _stream(served, n: int, models, retries: int = 0) -> list[dict]:
    """Post the next ``n`` bar times; check each reply against the reference engines of
    ``models`` (the champion's answers; shadows' references are stepped too)."""
    replies = []
    for _ in range(n):
        group = served["stream"][served["position"]]
        served["position"] += 1
        reply = _post(served, group, retries)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        expected = [_reference(served, m).step(group) for m in models]
        _same_answers(body["answers"], expected[0])
        served["answers"].extend(body["answers"])
        replies.append(body)
    return replies


def _same_answers(records: list[dict], expected: pd.DataFrame) -> None:
    got = pd.DataFrame(records).sort_values("symbol").reset_index(drop=True)
    want = expected.sort_values("symbol").reset_index(drop=True)
    assert list(got["symbol"]) == list(want["symbol"])
    assert list(got["model_id"]) == list(want["model_id"])
    assert (got["state_id"].to_numpy() == want["state_id"].to_numpy()).all()
    posterior = np.array(
        [p if p is not None else [np.nan] * 0 for p in got["posterior"]], dtype=object
    )
    want_p = want[sorted(c for c in want.columns if c.startswith("p_"))].to_numpy()
    for row, (p, w) in enumerate(zip(posterior, want_p, strict=True)):
        if np.isfinite(w).all():
            assert np.max(np.abs(np.asarray(p) - w)) <= 1e-9, f"row {row}"
        else:
            assert p is None
    reasons = want["ood_reason"].where(want["ood_reason"].notna(), None).tolist()
    assert got["reason"].tolist() == reasons


def test_health_readiness_and_openapi(served):
    client = served["client"]
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    spec = client.get("/v1/openapi.json").json()
    assert "/v1/bars/{timeframe}" in spec["paths"]
    assert "/v1/shadow/{timeframe}" in spec["paths"]


def test_answers_equal_the_engine_bar_by_bar(served):
    replies = _stream(served, 8, [served["models"][0]])
    assert all(r["model_id"] == served["models"][0].model_id for r in replies)
    assert all(not r["refused"] for r in replies)
    # Past the cold start, the champion gives real regimes.
    assert any(a["state_id"] >= 0 for a in replies[-1]["answers"])


def test_a_columnar_body_is_answered_in_columns_equal_to_the_engine(served):
    columnar = {**AUTH, "Content-Type": "application/vnd.regimes.columns+json"}
    group = served["stream"][served["position"]]
    served["position"] += 1
    names = ["symbol", "open", "high", "low", "close", "volume"]
    body = {
        "ts": pd.Timestamp(group["ts"].iloc[0]).isoformat(),
        "columns": {name: group[name].tolist() for name in names},
    }
    bad = {**body, "columns": {**body["columns"], "close": ["x", *body["columns"]["close"][1:]]}}
    refused = served["client"].post(f"/v1/bars/{TF}", json=bad, headers=columnar)
    assert refused.status_code == 422 and "columns.close[0]" in refused.json()["error"]
    reply = served["client"].post(f"/v1/bars/{TF}", json=body, headers=columnar)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/vnd.regimes.columns+json")
    answers = reply.json()["answers"]
    records = [
        {**dict(zip(answers, row, strict=True))} for row in zip(*answers.values(), strict=True)
    ]
    for record in records:  # a posterior still undefined: K nulls in columns
        if all(p is None for p in record["posterior"]):
            record["posterior"] = None
    _same_answers(records, _reference(served, served["models"][0]).step(group))
    served["answers"].extend(records)
    spec = served["client"].get("/v1/openapi.json").json()
    content = spec["paths"]["/v1/bars/{timeframe}"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "application/vnd.regimes.columns+json"}


def test_refusals_name_the_problem_and_leave_other_symbols_alone(served):
    client = served["client"]
    group = served["stream"][served["position"]]
    body = _body(group)
    assert client.post(f"/v1/bars/{TF}", json=body).status_code == 401
    wrong = client.post(f"/v1/bars/{TF}", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and "not valid" in wrong.json()["error"]
    assert client.post("/v1/bars/1h", json=body, headers=AUTH).status_code == 404
    not_json = client.post(f"/v1/bars/{TF}", content=b"{nope", headers=AUTH)
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
    big = {"ts": body["ts"], "bars": body["bars"] * 60}
    assert client.post(f"/v1/bars/{TF}", json=big, headers=AUTH).status_code == 413
    typed = {"ts": body["ts"], "bars": [dict(body["bars"][0], open="x")]}
    reply = client.post(f"/v1/bars/{TF}", json=typed, headers=AUTH)
    assert reply.status_code == 422 and "bars[0].open" in reply.json()["error"]
    naive = client.post(f"/v1/bars/{TF}", json=dict(body, ts="2024-01-02T14:30:00"), headers=AUTH)
    assert naive.status_code == 422 and "time zone" in naive.json()["error"]
    assert client.get("/v1/states/NOPE").status_code == 404
    assert "NOPE" in client.get("/v1/states/NOPE").json()["error"]

    # One batch: the first symbol's bar is bad in each of three ways (a second copy of
    # it, a null close and a negative low on copies); plus an unsafe name. The good rows
    # of the batch are answered; only they move the engines.
    good = body["bars"]
    bad = [
        dict(good[0], close=None),
        {**good[1], "low": -1.0},
        {**good[2], "symbol": "../etc"},
    ]
    mixed = {"ts": body["ts"], "bars": [good[0], good[3], *bad]}
    reply = client.post(f"/v1/bars/{TF}", json=mixed, headers=AUTH)
    assert reply.status_code == 200, reply.text
    refused = reply.json()["refused"]
    assert [r["row"] for r in refused] == [2, 3, 4]
    reasons = " | ".join(r["reason"] for r in refused)
    assert "twice" in reasons and "../etc" in reasons
    answered = {a["symbol"] for a in reply.json()["answers"]}
    assert answered == {good[0]["symbol"], good[3]["symbol"]}
    expected = _reference(served, served["models"][0]).step(group[group["symbol"].isin(answered)])
    _same_answers(reply.json()["answers"], expected)
    served["answers"].extend(reply.json()["answers"])
    # The rest of the bar time for the other symbols, then an out-of-order bar.
    rest = group[~group["symbol"].isin(answered)]
    reply = client.post(f"/v1/bars/{TF}", json=_body(rest), headers=AUTH)
    assert reply.status_code == 200 and not reply.json()["refused"]
    _same_answers(reply.json()["answers"], _reference(served, served["models"][0]).step(rest))
    served["answers"].extend(reply.json()["answers"])
    served["position"] += 1
    old = served["stream"][served["position"] - 3]
    reply = client.post(f"/v1/bars/{TF}", json=_body(old), headers=AUTH)
    assert reply.status_code == 200 and not reply.json()["answers"]
    assert all("out-of-order" in r["reason"] for r in reply.json()["refused"])
    # A batch sent again gets the same answers (an idempotent retry).
    last = served["stream"][served["position"] - 1]
    again = client.post(f"/v1/bars/{TF}", json=_body(last), headers=AUTH).json()
    assert not again["refused"] and len(again["answers"]) == len(last)


def test_a_shadow_runs_beside_the_champion_and_lands_in_delta_only(served):
    champion, shadow = served["models"]
    served["registry"].set_role(TF, shadow.model_id, "shadow", actor="t", reason="try it")
    reload = served["client"].post("/v1/admin/reload", headers=AUTH)
    assert reload.status_code == 200 and reload.json()["roles"][TF]["shadows"] == [shadow.model_id]
    _stream(served, 10, [champion, shadow])
    models = served["client"].get("/v1/models").json()["timeframes"][TF]
    assert {m["model_id"]: m["role"] for m in models} == {
        champion.model_id: "champion",
        shadow.model_id: "shadow",
    }
    report = served["client"].get(f"/v1/shadow/{TF}").json()
    figures = report["shadows"][shadow.model_id]
    assert figures["bars_compared"] == 10 * 4
    assert 0.0 <= figures["agreement"] <= 1.0
    assert 0.0 <= figures["mean_abs_posterior_diff"] <= 1.0
    # Written off the request path within a few flushes: the shadow's answers under its
    # own model_id in Delta, never in current_states.
    store = StateStore(str(served["home"] / "states"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if store.exists() and len(store.read(TF, shadow.model_id)) >= 10 * 4:
            break
        time.sleep(0.5)
    stored = store.read(TF, shadow.model_id)
    assert len(stored) >= 10 * 4
    current = db.read_current_states(served["engine"], TF)
    assert set(current["model_id"]) == {champion.model_id}


def test_promotion_mid_stream_has_no_warm_up(served):
    """`regimes promote` (the CLI, forced past its gates) changes what the service answers
    with at the next bar after a reload, with the shadow's warm engine."""
    from tests.integration.test_cli import run

    champion, shadow = served["models"]
    home = served["home"]
    run(
        *("--config-dir", home / "config", "promote", "--timeframe", TF),
        *("--model-id", shadow.model_id, "--force", "--reason", "the shadow wins"),
        home=home,
    )
    assert served["client"].post("/v1/admin/reload", headers=AUTH).status_code == 200
    replies = _stream(served, 3, [shadow, champion])
    first = replies[0]
    assert first["model_id"] == shadow.model_id
    assert all(a["model_id"] == shadow.model_id for a in first["answers"])
    assert not any(a["reason"] == "warming up" for a in first["answers"])


def test_a_killed_shard_is_restored_with_identical_answers_and_no_lost_rows(served):
    from ray import serve

    shadow = served["models"][1]
    handle = serve.get_deployment_handle("engine-15m-0", app_name="regimes")
    pid = handle.pid.remote().result(timeout_s=30)
    _stream(served, 3, [shadow])
    os.kill(pid, signal.SIGKILL)
    # Requests while it restarts get 503 (retried); afterwards answers go on exactly.
    _stream(served, 6, [shadow], retries=60)
    assert handle.pid.remote().result(timeout_s=60) != pid
    # Every answer the service gave is in the state store, once.
    for index in range(2):
        serve.get_deployment_handle(
            f"engine-15m-{index}", app_name="regimes"
        ).flush.remote().result(timeout_s=60)
    store = StateStore(str(served["home"] / "states"))
    given = pd.DataFrame(served["answers"])
    given = given[given["model_id"] == shadow.model_id]
    stored = store.read(TF, shadow.model_id)
    key = ["symbol", "ts"]
    assert not stored.duplicated(key).any()
    stored_keys = set(
        zip(
            stored["symbol"],
            pd.DatetimeIndex(stored["ts"]).map(pd.Timestamp.isoformat),
            strict=True,
        )
    )
    assert set(zip(given["symbol"], given["ts"], strict=True)) <= stored_keys


def test_latest_states_composite_and_metrics(served):
    client = served["client"]
    symbols = sorted({a["symbol"] for a in served["answers"]})
    latest = client.get("/v1/states", params={"timeframe": TF, "symbols": ",".join(symbols)})
    assert latest.status_code == 200
    assert {a["symbol"] for a in latest.json()["answers"]} == set(symbols)
    last = served["stream"][served["position"] - 1]
    at = (pd.Timestamp(last["ts"].iloc[0]) + pd.Timedelta(TF)).isoformat()
    record = client.get(f"/v1/states/{symbols[0]}", params={"at": at}).json()
    assert record["timeframes"][TF]["age_s"] == 0.0
    later = (pd.Timestamp(at) + pd.Timedelta(days=30)).isoformat()
    stale = client.get(f"/v1/states/{symbols[0]}", params={"at": later}).json()
    assert stale["timeframes"][TF]["state_id"] == -1
    assert stale["timeframes"][TF]["reason"].startswith("stale")
    text = client.get("/metrics").text
    for family in (
        "regimes_http_requests_total",
        "regimes_http_request_duration_seconds_bucket",
        "regimes_bars_total",
        "regimes_refused_rows_total",
        "regimes_answers_total",
        "regimes_state_switches_total",
        "regimes_shadow_agreement_ratio",
        "regimes_landing_files",
        "regimes_written_rows_total",
    ):
        assert family in text, family
    assert "symbol=" not in text


def test_the_serve_command_refuses_what_it_cannot_serve(tmp_path, served):
    from tests.integration.test_cli import run

    empty = run("serve", home=tmp_path / "empty", check=False)
    assert empty.returncode == 2
    assert empty.stderr.strip().splitlines()[-1] == (
        "regimes serve: error: no timeframe has a champion model; train and promote one first"
    )
    # A timeframe asked for without a champion is named; no Ray is started for it.
    home = served["home"]
    asked = run("serve", "--timeframe", "1h", "--for", "1", home=home, check=False)
    assert asked.returncode == 2 and "no champion model for 1h" in asked.stderr
    negative = run("serve", "--for", "-1", home=home, check=False)
    assert negative.returncode == 2 and "--for: expected a positive number" in negative.stderr


def test_the_dashboard_draws_its_charts_from_the_service_in_chromium(served, tmp_path_factory):
    from tests.browser import open_page

    client = served["client"]
    monitor = client.get("/v1/monitor").json()
    cell = monitor["timeframes"][TF]
    assert cell["series"]["answers"] > 0 and len(cell["series"]["times"]) > 1
    assert all(v is None or v >= 0 for v in cell["series"]["entropy_mean"])
    assert cell["occupancy_training"] is None or isinstance(cell["occupancy_training"], dict)
    assert monitor["events"][0]["event_ts"] >= monitor["events"][-1]["event_ts"]
    page = client.get("/dashboard")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http" not in page.text.replace("http://www.w3.org/2000/svg", "")  # no CDN
    shot = tmp_path_factory.getbasetemp() / "browser" / "dashboard.png"
    base = str(client.base_url).rstrip("/")
    check = open_page(f"{base}/dashboard", shot, settle_seconds=3.0)
    print(f"screenshot: {shot}")
    assert check.errors == []
    assert all(url.startswith(base) for url in check.requests), check.requests
    drawn = [c for c in check.charts if c["tag"] == "svg" and c["drawn"] > 5]
    assert len(drawn) >= 3, check.charts
    assert all(c["width"] >= 200 and c["height"] >= 100 for c in drawn)


def test_a_champion_fed_another_market_is_rolled_back_by_itself(served):
    """After its promotion the champion is on probation: bars of a market twenty times
    as volatile make its answers UNKNOWN for model health, and the service rolls it back
    to the last good champion on its own."""
    champion, shadow = served["models"]
    client = served["client"]
    registry = served["registry"]
    assert registry.champion(TF) == shadow.model_id
    last_close: dict[str, float] = {}
    for _ in range(12):
        group = served["stream"][served["position"]].copy()
        served["position"] += 1
        returns = np.log(group["close"] / group["open"]).to_numpy() * 20
        opens = np.array(
            [last_close.get(s, o) for s, o in zip(group["symbol"], group["open"], strict=True)]
        )
        closes = opens * np.exp(returns)
        group["open"], group["close"] = opens, closes
        group["high"] = np.maximum(opens, closes) * 1.02
        group["low"] = np.minimum(opens, closes) * 0.98
        last_close.update(zip(group["symbol"], closes, strict=True))
        reply = _post(served, group)
        assert reply.status_code == 200, reply.text
        if Registry(str(served["home"] / "registry")).champion(TF) == champion.model_id:
            break
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if Registry(str(served["home"] / "registry")).champion(TF) == champion.model_id:
            break
        time.sleep(0.5)
    fresh = Registry(str(served["home"] / "registry"))
    assert fresh.champion(TF) == champion.model_id
    event = fresh.events().iloc[-1]
    assert event["actor"] == "live-service:probation"
    assert "automatic rollback" in event["reason"]
    models = client.get("/v1/models").json()["timeframes"][TF]
    assert {m["model_id"] for m in models if m["role"] == "champion"} == {champion.model_id}
    assert "regimes_automatic_rollbacks_total" in client.get("/metrics").text


def test_promote_and_rollback_through_the_cli_change_the_answering_model(served):
    """`regimes promote` and `regimes rollback` (the CLI) are followed by the service at
    the next bar after a reload. Last in this file: it leaves the roles as it likes."""
    from tests.integration.test_cli import last_json, run

    champion, shadow = served["models"]
    home, registry = served["home"], served["registry"]
    client = served["client"]
    cli = ("--config-dir", home / "config")
    assert registry.champion(TF) == champion.model_id  # after the automatic rollback
    registry.set_role(TF, shadow.model_id, "candidate", actor="t", reason="re-evaluated")

    def next_model() -> str:
        assert served["position"] < len(served["stream"]), "the test stream ran out"
        group = served["stream"][served["position"]]
        served["position"] += 1
        reply = _post(served, group)
        assert reply.status_code == 200, reply.text
        return {a["model_id"] for a in reply.json()["answers"]}

    run(
        *cli,
        *("promote", "--timeframe", TF, "--model-id", shadow.model_id),
        *("--force", "--reason", "try it again"),
        home=home,
    )
    assert client.post("/v1/admin/reload", headers=AUTH).status_code == 200
    assert next_model() == {shadow.model_id}
    back = last_json(run(*cli, "rollback", "--timeframe", TF, "--reason", "no", home=home))
    assert back["champion"] == champion.model_id
    assert client.post("/v1/admin/reload", headers=AUTH).status_code == 200
    assert next_model() == {champion.model_id}
