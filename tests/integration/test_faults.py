"""Faults in the stack's services, injected on 127.0.0.1 and bounded in time: the
database connection cut in the middle of a write, and the object store under the Delta
tables answering errors (503 SlowDown) or nothing (timeouts) for a while. What must
hold: a clear one-line error (never a traceback), nothing half-written, and a rerun once
the service is back that stores everything exactly once."""

from __future__ import annotations

import time

import pandas as pd
import pyarrow.fs as pa_fs
import pytest
import sqlalchemy as sa

from regimes.config.loading import load_config
from regimes.config.settings import resolve_settings
from regimes.data import sql as db
from regimes.data.synth import SynthConfig, generate
from regimes.errors import StoreError
from regimes.storage.delta_log import check_delta_log
from regimes.storage.registry import Registry
from regimes.storage.state_store import StateStore
from tests.conftest import REPO_ROOT, _empty_pg_engine
from tests.faults import FlakyHttpProxy, TcpProxy
from tests.integration.test_cli import run
from tests.integration.test_state_store import DAYS, D, K, as_stored, state_rows

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]  # bounded: a hang fails
CONFIG = load_config(REPO_ROOT / "config")


def _through(url: str, port: int) -> str:
    parsed = sa.engine.make_url(url)
    return parsed.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def _counts(engine, table: str) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(f"SELECT symbol, count(*) FROM {table} GROUP BY symbol")
        ).all()
    return dict(rows)


def _server_dropped(engine, proxy: TcpProxy, within_s: float = 20.0) -> None:
    """The server has let go of every connection the proxy opened (a backend still waiting
    for the rest of a cut statement would hold its transaction's locks forever)."""
    deadline = time.monotonic() + within_s
    while True:
        with engine.connect() as connection:
            alive = (
                connection.execute(
                    sa.text(
                        "SELECT client_port FROM pg_stat_activity WHERE client_port = ANY(:ports)"
                    ),
                    {"ports": list(proxy.upstream_ports)},
                )
                .scalars()
                .all()
            )
        if not alive:
            return
        assert time.monotonic() < deadline, f"the server still holds dropped connections {alive}"
        time.sleep(0.2)


@pytest.fixture
def direct(pg_schema_url):
    """An empty PostgreSQL schema, reached without the proxy; disposed even on failure
    (an open connection would hold the session's DROP SCHEMA)."""
    engine = _empty_pg_engine(pg_schema_url[0])
    yield engine
    engine.dispose()


def test_a_database_connection_cut_mid_write_leaves_nothing_half_written(
    pg_schema_url, direct, home
):
    url, _ = pg_schema_url
    upstream = sa.engine.make_url(url).port or 5432
    market = generate(
        SynthConfig(symbols=2, days=12, seed=4, missing_rate=0.0), CONFIG.timeframes.session
    )
    files = {}
    for symbol, bars in market.bars.groupby("symbol"):
        files[symbol] = home / f"{symbol}.csv"
        bars.drop(columns=["symbol", "timeframe", "is_gap"], errors="ignore").to_csv(
            files[symbol], index=False
        )
    first, second = sorted(files)
    expected_rows = int((market.bars["symbol"] == first).sum())
    assert expected_rows > 4000

    with TcpProxy(upstream) as proxy:
        through = _through(url, proxy.port)
        # Bars: the proxy resets the connection after ~64 KB of the insert's ~1 MB.
        proxy.cut_after(64_000)
        cut = run(
            "--db-url",
            through,
            "ingest",
            files[first],
            "--symbol",
            first,
            "--timeframe",
            "1m",
            home=home,
            check=False,
        )
        assert proxy.cuts == 1
        assert cut.returncode != 0 and "Traceback" not in cut.stderr, cut.stderr
        last = cut.stderr.strip().splitlines()[-1]
        assert (
            last.startswith("regimes ingest: error:")
            and "lost the connection to the database" in last
        ), last
        assert "nothing of it was written" in last, last
        _server_dropped(direct, proxy)
        assert _counts(direct, "bars").get(first, 0) == 0  # all or nothing

        proxy.heal()
        for symbol in (first, second):
            run(
                "--db-url",
                through,
                "ingest",
                files[symbol],
                "--symbol",
                symbol,
                "--timeframe",
                "1m",
                home=home,
            )
        assert _counts(direct, "bars")[first] == expected_rows

        # Features: cut while the units write; each unit is stored whole or not at all.
        proxy.cut_after(proxy_budget := 200_000)
        cut = run(
            "--db-url",
            through,
            "features",
            "--timeframe",
            "1m",
            "--executor",
            "local",
            home=home,
            check=False,
        )
        assert proxy.cuts == 2, f"no cut within {proxy_budget} bytes"
        assert "Traceback" not in cut.stderr, cut.stderr
        assert "lost the connection to the database" in cut.stderr, cut.stderr
        _server_dropped(direct, proxy)
        proxy.heal()
        after_cut = _counts(direct, "computed_features")
        assert set(after_cut.values()) <= {
            expected_rows,
            int((market.bars["symbol"] == second).sum()),
        }
        assert len(after_cut) < 2  # the cut cost at least one unit, and it left no rows
        done = run(
            "--db-url", through, "features", "--timeframe", "1m", "--executor", "local", home=home
        )
        assert done.returncode == 0
    stored = _counts(direct, "computed_features")
    assert stored == _counts(direct, "bars")
    with direct.connect() as connection:
        duplicates = connection.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT symbol, timeframe, ts FROM computed_features "
                "GROUP BY symbol, timeframe, ts HAVING count(*) > 1) AS d"
            )
        ).scalar()
    assert duplicates == 0
    frame = db.read_bars(direct, "1m")
    assert len(frame) == len(market.bars) and isinstance(frame, pd.DataFrame)


# --------------------------------------------------------------------------- object store

# A short client budget so each fault test takes seconds: 3 retries within 4 s, 50 ms
# backoff doubling to 400 ms, 1 s per request (the defaults are 10 retries within 180 s).
MAX_RETRIES = 3
RETRY_BUDGET = {
    "REGIMES_STORE_MAX_RETRIES": str(MAX_RETRIES),
    "REGIMES_STORE_RETRY_TIMEOUT": "4s",
    "REGIMES_STORE_TIMEOUT": "1s",
    "REGIMES_STORE_CONNECT_TIMEOUT": "1s",
    "REGIMES_STORE_BACKOFF_INIT": "50ms",
    "REGIMES_STORE_BACKOFF_MAX": "400ms",
}
FAILS_WITHIN_S = 30.0  # a failed write gives up well within this (budget 4 s per request)


@pytest.fixture
def flaky_s3(s3_environ, home):
    """A fault proxy in front of moto, and the settings of a home whose state store and
    registry are on S3 through it (with :data:`RETRY_BUDGET`)."""
    port = int(s3_environ["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    with FlakyHttpProxy(port) as proxy:
        bucket = s3_environ["REGIMES_TEST_BUCKET"]
        environ = {
            **s3_environ,
            **RETRY_BUDGET,
            "AWS_ENDPOINT_URL": proxy.url,
            "REGIMES_STATES_URI": f"{bucket}/states",
            "REGIMES_REGISTRY_URI": f"{bucket}/registry",
        }
        yield proxy, resolve_settings(home, environ=environ)


def _store(settings) -> StateStore:
    return StateStore(settings.states_uri, settings.storage_options)


def _log_intact(store: StateStore) -> None:
    check_delta_log(store.root, store._filesystem(), "state table")


def _expect_written(store: StateStore, frames, version: int) -> None:
    """The table is at ``version`` and holds the rows of ``frames`` exactly once."""
    assert store.version() == version
    _log_intact(store)
    expected = as_stored(pd.concat(frames, ignore_index=True))
    stored = store.read("1m", "m1")
    assert not stored.duplicated(["symbol", "ts"]).any()
    pd.testing.assert_frame_equal(stored, expected)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "burst",
    [
        pytest.param({}, id="every-request"),
        pytest.param({"method": "PUT"}, id="data-file-puts"),
        pytest.param({"method": "PUT", "path_contains": "/_delta_log/"}, id="commit-put"),
    ],
)
def test_a_503_burst_within_the_retry_budget_is_retried_and_the_merge_lands_once(flaky_s3, burst):
    proxy, settings = flaky_s3
    store = _store(settings)
    first = state_rows(["SPY", "QQQ"], DAYS[:2])
    assert store.write(first, D, K) == len(first)  # creates the table (v0) and merges (v1)
    second = state_rows(["AAA", "SPY"], DAYS[1:])

    # Every refused request is retried by the client: a burst as long as its retry
    # count cannot exhaust any one request's budget, wherever it lands.
    proxy.refuse(count=MAX_RETRIES, **burst)
    assert store.write(second, D, K) == len(second)
    assert proxy.counts()["refused"] == MAX_RETRIES, proxy.log()[-20:]
    refused = [entry for entry in proxy.log() if entry[2] == 503]
    if burst.get("path_contains"):  # the conditional commit itself was refused and retried
        assert all(m == "PUT" and "/_delta_log/" in p for m, p, _ in refused), refused
    # SPY's second day is in both batches (the same rows): stored once.
    union = [
        state_rows(["QQQ"], DAYS[:2]),
        state_rows(["SPY"], DAYS),
        state_rows(["AAA"], DAYS[1:]),
    ]
    _expect_written(store, union, 2)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "fault",
    [
        pytest.param("data-file-puts", id="data-file-puts"),
        pytest.param("commit-put", id="commit-put"),
        pytest.param("everything-for-a-while", id="everything-for-a-while"),
        pytest.param("stalled", id="stalled"),
    ],
)
def test_an_outage_longer_than_the_retry_budget_fails_the_write_cleanly(flaky_s3, fault):
    proxy, settings = flaky_s3
    store = _store(settings)
    first = state_rows(["SPY"], DAYS[:2])
    store.write(first, D, K)
    before, files_before = store.read("1m", "m1"), store.files("1m", "m1")
    second = state_rows(["AAA", "BBB"], DAYS)

    outage_s = 8.0  # twice the client's retry timeout
    if fault == "data-file-puts":
        proxy.refuse(method="PUT")
    elif fault == "commit-put":  # the data files land, the commit that adds them does not
        proxy.refuse(method="PUT", path_contains="/_delta_log/")
    elif fault == "everything-for-a-while":  # heals by itself
        proxy.refuse(seconds=outage_s)
    else:
        proxy.stall(60)
    started = time.monotonic()
    with pytest.raises(StoreError) as failure:
        store.write(second, D, K)
    took = time.monotonic() - started
    assert took < FAILS_WITHIN_S
    message = str(failure.value)
    assert "\n" not in message and "\x1b" not in message, repr(message)
    assert store.root in message and f"check that the object store at {proxy.url}" in message
    if fault == "stalled":
        assert "timed out" in message, message
        assert proxy.counts()["stalled"] > MAX_RETRIES
    else:
        assert "503 Service Unavailable: SlowDown" in message, message
        assert proxy.counts()["refused"] > MAX_RETRIES  # retried before giving up
    if fault in ("data-file-puts", "commit-put"):
        assert message.startswith(f"merging states at {store.root} failed: "), message

    if fault == "everything-for-a-while":
        time.sleep(max(0.0, outage_s - (time.monotonic() - started)) + 0.2)
    else:
        proxy.heal()
    # Nothing of the failed write is visible: the table is at its last commit.
    assert store.version() == 1
    _log_intact(store)
    pd.testing.assert_frame_equal(store.read("1m", "m1"), before)
    assert store.files("1m", "m1") == files_before
    if fault == "commit-put":  # the MERGE's data files are in the bucket, unreferenced
        written = store._filesystem().get_file_info(
            pa_fs.FileSelector("timeframe=1m/model_id=m1/symbol=AAA", recursive=True)
        )
        assert any(info.base_name.endswith(".parquet") for info in written)

    # The same write again, once the store answers: every row, once.
    assert store.write(second, D, K) == len(second)
    _expect_written(store, [first, second], 2)


@pytest.mark.timeout(120)
def test_a_registry_write_refused_by_the_object_store_is_not_recorded(flaky_s3):
    proxy, settings = flaky_s3
    registry = Registry(settings.registry_root, settings.registry_options)
    registry.register("1h", "m1", artifact_path="x", actor="t", reason="first")
    version = registry.version()

    proxy.refuse(method="PUT", path_contains="/_delta_log/")
    with pytest.raises(StoreError) as failure:
        registry.promote("1h", "m1", actor="ops", reason="outage")
    message = str(failure.value)
    assert "\n" not in message and "the promote was not recorded" in message, message
    assert f"check that the object store at {proxy.url}" in message, message
    proxy.heal()

    reopened = Registry(settings.registry_root, settings.registry_options)
    assert reopened.version() == version
    assert reopened.champion("1h") is None
    registry.promote("1h", "m1", actor="ops", reason="after the outage")
    assert Registry(settings.registry_root, settings.registry_options).champion("1h") == "m1"


@pytest.mark.timeout(120)
def test_a_commit_whose_answer_is_lost_is_not_applied_twice(flaky_s3):
    """The store writes the commit but the client gets a 503: the client's retry of the
    conditional PUT finds the version taken (412), which is handled as a lost race: the
    MERGE runs again on the new version and only updates the rows it already wrote."""
    proxy, settings = flaky_s3
    store = _store(settings)
    first = state_rows(["SPY"], DAYS[:2])
    store.write(first, D, K)  # v0 create, v1 merge
    second = state_rows(["AAA", "SPY"], DAYS[1:])
    proxy.refuse(count=1, method="PUT", path_contains="/_delta_log/", after_forwarding=True)
    assert store.write(second, D, K) == len(second)
    assert proxy.counts()["refused"] == 1
    commits = [
        (m, p[-25:], status) for m, p, status in proxy.log() if m == "PUT" and "/_delta_log/" in p
    ]
    assert ("PUT", "00000000000000000002.json", 503) in commits, commits  # landed, answer lost
    assert ("PUT", "00000000000000000002.json", 412) in commits, commits  # its retry: taken
    # v2 is the lost-answer commit, v3 the re-run: the same rows again, as updates.
    newest = store.history()[0]
    assert newest["version"] == 3 and newest["readVersion"] == 2, newest
    assert newest["operationMetrics"]["num_target_rows_inserted"] == 0, newest
    union = [state_rows(["SPY"], DAYS), state_rows(["AAA"], DAYS[1:])]
    _expect_written(store, union, 3)


@pytest.mark.timeout(120)
def test_a_registry_commit_whose_answer_is_lost_counts_as_written(flaky_s3):
    """The registry's promote lands but its answer is lost: the retried put-if-absent
    finds the version taken by that very promote, which must not read as a conflict
    ("nothing was written") nor be recorded twice."""
    proxy, settings = flaky_s3
    registry = Registry(settings.registry_root, settings.registry_options)
    registry.register("1h", "m1", artifact_path="x", actor="t", reason="first")
    proxy.refuse(count=1, method="PUT", path_contains="/_delta_log/", after_forwarding=True)
    transition = registry.promote("1h", "m1", actor="ops", reason="answer lost")
    assert proxy.counts()["refused"] == 1
    assert transition.to_role == "champion" and transition.version == 2
    reopened = Registry(settings.registry_root, settings.registry_options)
    assert reopened.version() == 2 and reopened.champion("1h") == "m1"
    assert reopened.events()["to_role"].tolist() == ["candidate", "champion"]
