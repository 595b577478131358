"""Faults in the stack's services, injected on 127.0.0.1 and bounded in time: the
database connection cut in the middle of a write. What must hold: a clear one-line
error (never a traceback), nothing half-written, and a rerun once the service is back
that stores everything exactly once."""

from __future__ import annotations

import time

import pandas as pd
import pytest
import sqlalchemy as sa

from regimes.config.loading import load_config
from regimes.data import sql as db
from regimes.data.synth import SynthConfig, generate
from tests.conftest import REPO_ROOT, _empty_pg_engine
from tests.faults import TcpProxy
from tests.integration.test_cli import run

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
