"""The HTTP ingress of the live service: FastAPI under ``/v1`` in front of the engine
shards (:mod:`regimes.serve.shard`).

Routing and HTTP only: a request is checked (key, size, body), split by the stable
symbol hash (:func:`regimes.live.sharding.shards_of`), sent to the timeframe's shards and
their replies joined; what an answer is, how shadows compare and how a composite record
is made all come from the core. Errors are JSON ``{"error": ..., "status": ...}``, never
a traceback.
"""

import asyncio
import logging
import os
import time

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError
from ray import serve

from regimes.app.workspace import Workspace
from regimes.config.gates import load_gates
from regimes.config.loading import load_metadata
from regimes.config.serving import ServeConfig
from regimes.errors import BadInputError, RegimesError
from regimes.live.api import (
    COLUMNAR_MEDIA_TYPE,
    BarsColumns,
    BarsRequest,
    answer_columns,
    answer_records,
    parse_bars,
    parse_columns,
    validation_message,
)
from regimes.live.api_keys import check_authorization
from regimes.live.gateway import (
    AnswerBacklog,
    ShardRouter,
    bar_time,
    composite,
    drift_cells,
    events_listing,
    feed,
    join_replies,
    learn_calendar,
    models_listing,
    monitor_cell,
    now_iso,
    parse_at,
    pool_comparisons,
    pooled,
)
from regimes.live.probation import ProbationSettings, probation_verdict, since
from regimes.live.shadow import compare_answers
from regimes.live.sync import TimeframeSynchronizer
from regimes.paths import check_symbol
from regimes.serve.dashboard import PAGE
from regimes.serve.metrics import ServiceMetrics

log = logging.getLogger(__name__)

app = FastAPI(
    title="regimes live service",
    version="1",
    openapi_url="/v1/openapi.json",
    docs_url="/v1/docs",
    redoc_url=None,
)


_BODY_SCHEMA = BarsRequest.model_json_schema(ref_template="#/components/schemas/{model}")
_COLUMNS_SCHEMA = BarsColumns.model_json_schema(ref_template="#/components/schemas/{model}")
_BODY_DEFS = {**_BODY_SCHEMA.pop("$defs", {}), **_COLUMNS_SCHEMA.pop("$defs", {})}


def _openapi() -> dict:
    """FastAPI's document plus the request body's models (the route reads its body
    itself, for speed and for its own size limit, so FastAPI does not see them)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        document = get_openapi(title=app.title, version=app.version, routes=app.routes)
        document.setdefault("components", {}).setdefault("schemas", {}).update(_BODY_DEFS)
        app.openapi_schema = document
    return app.openapi_schema


app.openapi = _openapi


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


@app.exception_handler(ApiError)
async def _api_error(_request: Request, exc: ApiError):
    return _error(exc.status, exc.message)


@app.exception_handler(Exception)
async def _unexpected(_request: Request, exc: Exception):
    log.exception("unexpected error")
    return _error(500, f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0:1]}")


def _json(data, status: int = 200, media_type: str = "application/json") -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type=media_type,
    )


def _is_columnar(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media_type == COLUMNAR_MEDIA_TYPE


def _check_symbols(names: list[str]) -> None:
    if not names:
        raise ApiError(422, "symbols: expected at least one symbol (symbols=A,B)")
    for name in names:
        try:
            check_symbol(name)
        except BadInputError as exc:
            raise ApiError(422, f"symbol: {exc}") from None


def _regimes_cause(exc: BaseException) -> RegimesError | None:
    """The domain error inside a Ray task error, if that is what it is."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, RegimesError) else None


@serve.deployment(max_ongoing_requests=64)
@serve.ingress(app)
class Ingress:
    """The ``/v1`` API over the shards of every served timeframe.

    Parameters
    ----------
    shards : dict
        Per timeframe, the handles of its shard deployments in shard order.
    params : dict
        :meth:`regimes.app.workspace.Workspace.params` of the installation.
    config : dict
        The :class:`regimes.config.serving.ServeConfig` as a dict.
    writer : handle
        The writer deployment (:mod:`regimes.serve.writer`), for its counters.
    key_digests : tuple
        SHA-256 digests of the API keys (:func:`regimes.live.api_keys.key_digests`):
        the ingress never holds, nor is given, a key.
    """

    async def __init__(self, shards: dict, params: dict, config: dict, writer=None, key_digests=()):
        self.shards = shards
        self.writer = writer
        self.config = ServeConfig.model_validate(config)
        self.workspace = Workspace.open(**params)
        self.keys = tuple(key_digests)
        self.metrics = ServiceMetrics()
        self.sync = TimeframeSynchronizer({})
        self.roles: dict[str, dict] = {}
        self.labels: dict[str, dict[str, dict[int, str]]] = {}
        self._unsynced = {tf: AnswerBacklog() for tf in shards}
        self.router = ShardRouter()
        self.probation: dict[str, dict] = {}
        await self._reload()
        self._poll = asyncio.create_task(self._poll_registry())
        self._watch = asyncio.create_task(self._watch_probation())

    # -- auth and limits

    def _authorize(self, request: Request, write: bool) -> None:
        if not write and not self.config.read_auth:
            return
        if not self.keys:
            raise ApiError(403, "no API key is configured (set REGIMES_API_KEYS); refused")
        verdict = check_authorization(request.headers.get("authorization"), self.keys)
        if verdict == "missing":
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'")
        if verdict == "wrong":
            raise ApiError(403, "the API key is not valid")

    def _served(self, timeframe: str) -> list:
        if timeframe not in self.shards:
            raise ApiError(
                404, f"timeframe {timeframe!r} is not served here; served: {list(self.shards)}"
            )
        return self.shards[timeframe]

    async def _bars(self, request: Request, columnar: bool):
        """The body (rows, or columns when ``columnar``) as the engine's bar frame (413,
        400 and 422 refusals here)."""
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"body of {declared} bytes is over the limit of {limit}")
        raw = await request.body()
        if len(raw) > limit:
            raise ApiError(413, f"body of {len(raw)} bytes is over the limit of {limit}")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"body is not JSON: {exc}") from None
        rows = data.get("bars") if isinstance(data, dict) else None
        if columnar:
            columns = data.get("columns") if isinstance(data, dict) else None
            rows = columns.get("symbol") if isinstance(columns, dict) else None
        if isinstance(rows, list) and len(rows) > self.config.max_symbols_per_request:
            raise ApiError(
                413,
                f"bars: {len(rows)} rows, at most {self.config.max_symbols_per_request} "
                "per request",
            )
        try:
            return parse_columns(data) if columnar else parse_bars(data)
        except ValidationError as exc:
            raise ApiError(422, validation_message(exc)) from None
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None

    # -- routes

    @app.post(
        "/v1/bars/{timeframe}",
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": _BODY_SCHEMA},
                    COLUMNAR_MEDIA_TYPE: {"schema": _COLUMNS_SCHEMA},
                },
                "required": True,
            }
        },
    )
    async def post_bars(self, timeframe: str, request: Request):
        """Closed bars of many symbols for one bar time -> the champion's answers per
        symbol and the rows refused with their reasons (needs an API key).

        Sent as `application/vnd.regimes.columns+json` (`{"ts", "columns": {"symbol":
        [...], "open": [...], ...}}`), the answers come back in columns too, in that media
        type: `answers` is an object of lists (`symbol`, `ts`, `state_id`, `label`,
        `state_prob`, `posterior` as a list of K-lists, `entropy`, `loglik`,
        `is_unknown`, `reason`, `model_id`), row i of each list answering the same symbol."""
        started = time.perf_counter()
        status = 500
        try:
            self._authorize(request, write=True)
            handles = self._served(timeframe)
            columnar = _is_columnar(request)
            bars = await self._bars(request, columnar)
            answers, refused = await self._step(timeframe, handles, bars)
            if len(answers):
                self._unsynced[timeframe].add(answers)
            self.metrics.bars(timeframe, len(answers), len(refused))
            champion = self.roles.get(timeframe, {}).get("champion")
            labels = self.labels.get(timeframe, {}).get(champion, {})
            status = 200
            reply = answer_columns if columnar else answer_records
            return _json(
                {
                    "timeframe": timeframe,
                    "ts": bar_time(bars),
                    "model_id": champion,
                    "answers": reply(answers, labels),
                    "refused": refused,
                },
                media_type=COLUMNAR_MEDIA_TYPE if columnar else "application/json",
            )
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            self.metrics.request("/v1/bars/{timeframe}", status, time.perf_counter() - started)

    async def _step(self, timeframe: str, handles: list, bars):
        parts = self.router.split(bars, len(handles))
        calls = [handles[index].step.remote(part) for index, part, _ in parts]
        try:
            replies = await asyncio.gather(*calls)
        except RegimesError as exc:
            raise ApiError(409 if "no champion" in str(exc) else 422, str(exc)) from None
        except Exception as exc:
            cause = _regimes_cause(exc)
            if cause is not None:
                raise ApiError(409 if "no champion" in str(cause) else 422, str(cause)) from None
            raise ApiError(
                503, f"{timeframe} engine shard unavailable: {type(exc).__name__}"
            ) from None
        return join_replies(replies, [rows for _, _, rows in parts])

    @app.get("/v1/states")
    async def get_states(self, request: Request, timeframe: str, symbols: str):
        """The newest answers of many symbols of one timeframe (``symbols=A,B``)."""
        return await self._timed("/v1/states", request, self._states(timeframe, symbols))

    async def _states(self, timeframe: str, symbols: str):
        handles = self._served(timeframe)
        names = [s.strip() for s in symbols.split(",") if s.strip()]
        _check_symbols(names)
        groups = self.router.group(names, len(handles))
        calls = [handles[index].latest.remote(group) for index, group in sorted(groups.items())]
        frame = pooled(await asyncio.gather(*calls))
        champion = self.roles.get(timeframe, {}).get("champion")
        records = answer_records(frame, self.labels.get(timeframe, {}).get(champion, {}))
        found = {r["symbol"] for r in records}
        return {
            "timeframe": timeframe,
            "answers": records,
            "unknown_symbols": [n for n in names if n not in found],
        }

    @app.get("/v1/states/{symbol}")
    async def get_composite(self, request: Request, symbol: str, at: str | None = None):
        """The composite multi-timeframe record of ``symbol`` at ``at`` (default now):
        per timeframe the state, its probability and age; stale -> UNKNOWN with its age."""
        return await self._timed("/v1/states/{symbol}", request, self._composite(symbol, at))

    async def _composite(self, symbol: str, at: str | None):
        _check_symbols([symbol])
        self._feed_sync()
        if not self.sync.knows(symbol):
            raise ApiError(404, f"symbol {symbol!r} has no answer in any served timeframe")
        try:
            when = parse_at(at)
        except BadInputError as exc:
            raise ApiError(422, str(exc)) from None
        champions = {tf: roles.get("champion") for tf, roles in self.roles.items()}
        if symbol not in self.sync.calendars:  # a database read, once per symbol
            await asyncio.to_thread(learn_calendar, self.sync, symbol, self.workspace.markets)
        return composite(self.sync, symbol, when, champions, self.labels)

    @app.get("/v1/models")
    async def get_models(self, request: Request):
        """Champion and shadows per served timeframe, with since / actor / reason."""
        return await self._timed("/v1/models", request, self._models())

    async def _models(self):
        served = {tf: self._served_models(tf) for tf in self.shards}
        return models_listing(self.workspace.registry, list(self.shards), served)

    @app.get("/v1/shadow/{timeframe}")
    async def get_shadow(self, request: Request, timeframe: str):
        """Champion vs each shadow over the bars both answered."""
        return await self._timed("/v1/shadow/{timeframe}", request, self._shadow(timeframe))

    async def _shadow(self, timeframe: str):
        comparisons = await self._compare(timeframe)
        champion = self.roles.get(timeframe, {}).get("champion")
        return {"timeframe": timeframe, "champion": champion, "shadows": comparisons}

    async def _compare(self, timeframe: str) -> dict:
        handles = self._served(timeframe)
        replies = await asyncio.gather(*[h.comparison.remote() for h in handles])
        roles = self.roles.get(timeframe, {})
        champion = roles.get("champion")
        frames = pool_comparisons(replies)
        if champion not in frames:
            return {}
        out = {}
        for shadow in roles.get("shadows", []):
            if shadow in frames:
                out[shadow] = compare_answers(frames[champion], frames[shadow])
                self.metrics.shadow(timeframe, shadow, out[shadow])
        return out

    @app.get("/v1/monitor")
    async def get_monitor(self, request: Request):
        """What the dashboard draws, per served timeframe: entropy and UNKNOWN share over
        time, occupancy now vs training, switch rate, shadow agreement, the last drift
        verdicts; and the newest registry transitions."""
        return await self._timed("/v1/monitor", request, self._monitor())

    async def _monitor(self):
        from regimes.storage.drift_reports import DriftReports

        settings = self.workspace.settings
        reports = DriftReports(settings.drift_reports_root, dict(settings.registry_options) or None)
        stored = await asyncio.to_thread(reports.read)
        out = {}
        for timeframe, handles in self.shards.items():
            roles = self.roles.get(timeframe, {})
            champion = roles.get("champion")
            replies = await asyncio.gather(*[h.comparison.remote() for h in handles])
            answers = pooled(r.get(champion) for r in replies)
            counters = await self._champion_counts(timeframe, champion) if champion else {}
            drift = drift_cells(stored, timeframe, [champion, *roles.get("shadows", [])])
            shadows = await self._compare(timeframe) if roles.get("shadows") else {}
            out[timeframe] = monitor_cell(answers, counters, drift, roles, shadows)
        return {
            "generated_at": now_iso(),
            "timeframes": out,
            "events": events_listing(self.workspace.registry),
        }

    @app.get("/dashboard")
    async def dashboard(self, request: Request):
        """The monitoring page (self-contained; it refreshes itself from /v1/monitor)."""
        self._authorize(request, write=False)
        return Response(PAGE, media_type="text/html")

    @app.post("/v1/admin/reload")
    async def post_reload(self, request: Request):
        """Re-read the registry's roles now (needs an API key)."""
        self._authorize(request, write=True)
        return await self._reload()

    @app.get("/healthz")
    async def healthz(self):
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self):
        calls = [h.ready.remote() for handles in self.shards.values() for h in handles]
        try:
            ready = await asyncio.gather(*calls)
        except Exception as exc:
            return _error(503, f"a shard is not reachable: {type(exc).__name__}")
        if not all(ready):
            waiting = [
                tf
                for tf, handles in self.shards.items()
                if tf not in self.roles or not self.roles[tf].get("champion")
            ]
            return _error(503, f"not ready: no champion loaded for {waiting or 'some shard'}")
        return {"status": "ready", "timeframes": {tf: len(h) for tf, h in self.shards.items()}}

    @app.get("/metrics")
    async def metrics(self, request: Request):
        """Prometheus text exposition (prefix ``regimes_``, no per-symbol labels)."""
        self._authorize(request, write=False)
        counters = await asyncio.gather(
            *[h.counters.remote() for handles in self.shards.values() for h in handles]
        )
        writer = await self.writer.counters.remote() if self.writer is not None else None
        return PlainTextResponse(
            self.metrics.exposition(counters, writer), media_type="text/plain; version=0.0.4"
        )

    # -- helpers

    async def _timed(self, endpoint: str, request: Request, work):
        started = time.perf_counter()
        status = 500
        try:
            self._authorize(request, write=False)
            result = _json(await work)
            status = 200
            return result
        except ApiError as exc:
            status = exc.status
            work.close()
            raise
        finally:
            self.metrics.request(endpoint, status, time.perf_counter() - started)

    def _feed_sync(self) -> None:
        for timeframe, backlog in self._unsynced.items():
            if backlog.frames:
                feed(self.sync, backlog.frames, self.roles.get(timeframe, {}).get("champion"))

    def _served_models(self, timeframe: str) -> set[str]:
        roles = self.roles.get(timeframe, {})
        return {m for m in (roles.get("champion"), *roles.get("shadows", [])) if m}

    async def _reload(self, rolled_back: str | None = None) -> dict:
        """Roles from the registry -> every shard; the synchroniser follows the champion;
        a newly promoted champion goes on probation (not one a rollback brought back)."""
        registry = self.workspace.registry
        changed = {}
        for timeframe, handles in self.shards.items():
            champion = registry.champion(timeframe)
            shadows = registry.shadows(timeframe)
            roles = {"champion": champion, "shadows": shadows}
            if roles == self.roles.get(timeframe):
                continue
            self._feed_sync()
            await asyncio.gather(*[h.set_models.remote(champion, shadows) for h in handles])
            before = self.roles.get(timeframe, {}).get("champion")
            if champion and before and champion != before and rolled_back != timeframe:
                await self._start_probation(timeframe, champion)
            labels = self.labels.setdefault(timeframe, {})
            for model_id in (champion, *shadows):
                if model_id and model_id not in labels:
                    labels[model_id], ttl = self._metadata(timeframe, model_id)
            if champion:
                self.sync.set_champion(
                    timeframe, champion, ttl=self._metadata(timeframe, champion)[1]
                )
            self.roles[timeframe] = roles
            changed[timeframe] = roles
            log.info("%s: champion %s, shadows %s", timeframe, champion, shadows)
        return {"changed": changed, "roles": self.roles}

    def _metadata(self, timeframe: str, model_id: str):
        folder = self.workspace.model_path(timeframe, model_id)
        metadata = load_metadata(os.path.join(folder, "metadata.json"))
        labels = {int(k): str(v) for k, v in metadata.state_labels.items()}
        return labels, metadata.state_ttl

    async def _champion_counts(self, timeframe: str, model_id: str) -> dict:
        counts: dict[str, int] = {}
        for shard in await asyncio.gather(*[h.counters.remote() for h in self.shards[timeframe]]):
            for key, value in shard["models"].get(model_id, {}).items():
                if isinstance(value, int):
                    counts[key] = counts.get(key, 0) + value
        return counts

    async def _start_probation(self, timeframe: str, champion: str) -> None:
        gates = load_gates(self.workspace.config_dir).for_timeframe(timeframe)
        self.probation[timeframe] = {
            "model_id": champion,
            "baseline": await self._champion_counts(timeframe, champion),
            "settings": ProbationSettings(
                gates.probation_bars, gates.probation_min_bars, gates.probation_max_ood_rate
            ),
        }
        log.info("%s: champion %s on probation", timeframe, champion)

    async def _watch_probation(self) -> None:
        """Roll a new champion back when its first answers breach probation."""
        while True:
            await asyncio.sleep(1.0)
            for timeframe, watched in list(self.probation.items()):
                try:
                    await self._judge_probation(timeframe, watched)
                except Exception:  # tried again next second; requests go on
                    log.exception("%s: probation check failed", timeframe)

    async def _judge_probation(self, timeframe: str, watched: dict) -> None:
        model_id = watched["model_id"]
        if self.roles.get(timeframe, {}).get("champion") != model_id:
            self.probation.pop(timeframe, None)  # replaced by hand meanwhile
            return
        counts = since(await self._champion_counts(timeframe, model_id), watched["baseline"])
        verdict = probation_verdict(counts, watched["settings"])
        if verdict.state == "passed":
            log.info("%s: %s passed probation: %s", timeframe, model_id, verdict.detail)
            self.probation.pop(timeframe, None)
        elif verdict.state == "breached":
            from regimes.app.rollout import RollbackRequest, rollback

            request = RollbackRequest(
                timeframe,
                actor="live-service:probation",
                reason=f"automatic rollback of {model_id}: {verdict.detail}",
                evidence={"probation": counts, "ood_rate": verdict.ood_rate},
            )
            await asyncio.to_thread(rollback, self.workspace, request)
            self.probation.pop(timeframe, None)
            self.metrics.rollback(timeframe)
            log.warning("%s: %s", timeframe, request.reason)
            await self._reload(rolled_back=timeframe)

    async def _poll_registry(self) -> None:
        while True:
            await asyncio.sleep(self.config.registry_poll_s)
            try:
                await self._reload()
            except Exception:  # the next poll tries again; requests go on
                log.exception("registry poll failed")
