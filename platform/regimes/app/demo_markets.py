"""The demo's markets step (docs/data.md "Markets and calendars"): an FX-like symbol
(24x5, hourly) and a crypto-like symbol (24x7, 5-minute) beside the equities, each
through synth -> resample -> features -> train (a model of its own scope) -> backfill ->
states (VWAP and volume windows reset at each market's own trading day, as the feature
spec says), and composite records of all three markets with state ages in market time."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from regimes.app import data, features, rollout, training
from regimes.app.executors import LocalExecutor
from regimes.app.orchestrators import DirectOrchestrator
from regimes.app.progress import Notify
from regimes.app.workspace import Workspace
from regimes.timeframes import TIMEFRAMES


@dataclass(frozen=True)
class DemoMarket:
    market: str
    prefix: str
    timeframe: str
    days: int  # trading days of the market's own calendar


MARKETS = (
    DemoMarket("fx", "FX", "1h", 30),
    DemoMarket("crypto", "BTC", "5m", 10),
)
GRID = {"K": [3, 4], "covariance": ["diag"]}


def run_markets_step(workspace: Workspace, seed: int, end: pd.Timestamp, say: Notify) -> dict:
    """The step; ``end`` is the equities' last bar time (the other markets end there)."""
    executor, orchestrator = LocalExecutor(), DirectOrchestrator("demo")
    rows, symbols, starts = [], [], {}
    for k, demo in enumerate(MARKETS):
        start = _first_day(end, demo)
        starts[demo.market] = start
        request = data.SynthRequest(
            symbols=1,
            days=demo.days,
            seed=seed + 11 + k,
            start=start,
            market=demo.market,
            prefix=demo.prefix,
        )
        synth = data.synth(workspace, request)
        symbol = f"{demo.prefix}000"
        symbols.append(symbol)
        data.resample(workspace, data.ResampleRequest((symbol,), (demo.timeframe,)))
        features.features(
            workspace, features.FeaturesRequest((demo.timeframe,), (symbol,)), executor
        )
        train = training.TrainRequest(
            (demo.timeframe,), (symbol,), GRID, seed, scope="symbol", report=False
        )
        [model] = training.train(workspace, train, executor, orchestrator).models
        rollout.promote(
            workspace,
            rollout.PromoteRequest(
                demo.timeframe,
                model["model_id"],
                actor="demo",
                reason=f"the first {demo.market} model of {symbol}",
                force=True,
            ),
        )
        stored = _backfill(workspace, demo.timeframe, model["model_id"], symbol)
        rows.append(
            {
                "market": demo.market,
                "symbol": symbol,
                "1m bars": synth.bars_written,
                "timeframe": demo.timeframe,
                "model_id": model["model_id"],
                "K": model["K"],
                "states stored": stored,
            }
        )
    table = pd.DataFrame(rows)
    say("other markets, each through synth -> resample -> features -> train -> backfill:")
    say(table.to_string(index=False))
    anchored = day_anchored_windows(workspace, starts)
    say(anchored["line"])
    say("")
    composites = _composites(workspace, ["SYN000", *symbols], end, say)
    return {"markets": rows, "day_anchored": anchored, "composite": composites}


def day_anchored_windows(workspace: Workspace, first_days: dict) -> dict:
    """Which feature windows reset at the market's trading day (the feature spec's
    ``anchor: market_day``) and where that day starts on each market (its calendar's
    open of ``first_days[market]``, in the market's zone)."""
    spec = workspace.config.features
    names = [name for name, item in spec.features.items() if item.anchor == "market_day"]
    book = workspace.markets()
    starts = {}
    for market, day in first_days.items():
        calendar = book.calendar(market)
        [first] = calendar.trading_days(day, 1)
        opened = calendar.schedule(first, first)["open"].iloc[0].tz_convert(calendar.timezone)
        starts[market] = f"{opened:%H:%M} {calendar.timezone}"
    if names:
        where = ", ".join(f"{market} at {start}" for market, start in starts.items())
        line = (
            f"day-anchored windows (features.yaml version {spec.version}): {', '.join(names)} "
            f"reset at each market's trading day: {where}"
        )
    else:
        line = f"features.yaml version {spec.version} anchors no window: every window rolls"
    return {"features": names, "day_starts": starts, "line": line}


def _last_friday(end: pd.Timestamp) -> pd.Timestamp:
    """The last Friday on or before the equities' last day (New York)."""
    day = end.tz_convert("America/New_York").normalize().tz_localize(None)
    return day - pd.Timedelta(days=(day.weekday() - 4) % 7)


def _first_day(end: pd.Timestamp, demo: DemoMarket):
    """The first day of ``demo.days`` trading days: crypto ends with the equities' last
    day, FX with the last Friday before it (so the weekend after it shows how its states
    age in market time)."""
    if demo.market == "crypto":
        last = end.tz_convert("America/New_York").normalize().tz_localize(None)
        return (last - pd.Timedelta(days=demo.days - 1)).date()
    return pd.bdate_range(end=_last_friday(end), periods=demo.days)[0].date()


def _backfill(workspace, timeframe, model_id, symbol) -> int:
    from regimes.app.backfill import BackfillRequest, backfill

    run = backfill(
        workspace,
        BackfillRequest(timeframe, model_id, (symbol,)),
        LocalExecutor(),
        DirectOrchestrator("demo"),
    )
    return sum(r.rows_written + r.rows_already_stored for r in run.results)


def _composites(workspace: Workspace, symbols: list[str], end: pd.Timestamp, say) -> dict:
    """Composite records from the stored champion answers: at the equities' last close
    and on a Sunday (FX closed since Friday 17:00, crypto open), ages counted in each
    symbol's market time."""
    from regimes.app.demo import composite_table
    from regimes.live.sync import TimeframeSynchronizer
    from regimes.model.loaded import LoadedModel

    registry, store = workspace.registry, workspace.state_store
    calendars = workspace.markets().market_calendars(symbols)
    sync = TimeframeSynchronizer.from_config(workspace.config, calendars)
    answers = []
    for timeframe in TIMEFRAMES:
        for symbol in [None, *symbols]:
            champion = registry.champion(timeframe, symbol)
            if champion is None or (symbol is None and registry.champion(timeframe) is None):
                continue
            path = workspace.model_path(timeframe, champion)
            sync.set_champion(timeframe, champion, symbol, LoadedModel.load(path).state_ttl)
            stored = store.read(timeframe, champion, start=end - pd.Timedelta(days=7))
            answers.append(stored[stored["symbol"].isin(symbols)])
    frame = pd.concat(answers, ignore_index=True).sort_values("ts", kind="stable")
    frame["timeframe"] = frame["timeframe"].astype(str)
    sunday = _last_friday(end) + pd.Timedelta(days=2, hours=12)
    moments = [
        ("at the equities' last close", end),
        (
            "on the Sunday after FX's last Friday, 12:00 New York",
            sunday.tz_localize("America/New_York"),
        ),
    ]
    out = {}
    for label, at in sorted(moments, key=lambda item: pd.Timestamp(item[1])):
        at = pd.Timestamp(at).tz_convert("UTC")
        sync.update(frame[frame["ts"] + frame["timeframe"].map(pd.Timedelta) <= at])
        composite = sync.composite(symbols, at)
        shown = composite_table(composite)
        say(f"composite records {label} ({at:%Y-%m-%d %H:%M} UTC), ages in market time:")
        say(shown.to_string(index=False))
        out[label] = shown.to_dict("records")
    return out
