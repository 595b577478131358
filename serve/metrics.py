"""``GET /metrics`` of the live service: Prometheus text, prefix ``regimes_``, base units,
no per-symbol labels.

The ingress counts what it sees (requests by endpoint and status, latency, bars,
refused rows); what the engines count (answers by UNKNOWN reason, switches, shadow
errors) is read from every shard at scrape time; shadow agreement is the last
``/v1/shadow`` comparison of each shadow. Kept in this service's own registry, not
prometheus_client's global one.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from regimes.live.answer_frame import ANSWER_REASONS

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _EngineCollector:
    """Engine counters summed over shards, set just before each scrape."""

    def __init__(self):
        self.shards: list[dict] = []
        self.writer: dict | None = None
        self.agreement: dict[tuple[str, str], dict] = {}

    def collect(self):
        answers = CounterMetricFamily(
            "regimes_answers",
            "Answers given, by timeframe, role and outcome",
            labels=["timeframe", "role", "outcome"],
        )
        switches = CounterMetricFamily(
            "regimes_state_switches",
            "Switches of the published and raw state",
            labels=["timeframe", "role", "kind"],
        )
        errors = CounterMetricFamily(
            "regimes_shadow_errors", "Shadow batches that failed", labels=["timeframe"]
        )
        queued = GaugeMetricFamily(
            "regimes_shadow_queue_batches", "Batches waiting for the shadows", labels=["timeframe"]
        )
        pending = GaugeMetricFamily(
            "regimes_pending_rows", "Bars and answers not yet landed", labels=["timeframe"]
        )
        totals: dict[tuple, float] = {}

        def add(key, value):
            totals[key] = totals.get(key, 0) + value

        for shard in self.shards:
            tf = shard["timeframe"]
            add(("queued", tf), shard["queued_shadow_batches"])
            add(("pending", tf), shard["pending_rows"])
            for counts in shard["models"].values():
                role = counts["role"]
                add(("answers", tf, role, "known"), counts["known"])
                for reason in ANSWER_REASONS:
                    add(("answers", tf, role, reason.replace(" ", "_")), counts.get(reason, 0))
                add(("switches", tf, role, "published"), counts["published_switches"])
                add(("switches", tf, role, "raw"), counts["raw_switches"])
                add(("errors", tf), counts["errors"])
        families = {
            "answers": answers,
            "switches": switches,
            "errors": errors,
            "queued": queued,
            "pending": pending,
        }
        for key, value in sorted(totals.items()):
            families[key[0]].add_metric(list(key[1:]), value)
        yield from families.values()
        agreement = GaugeMetricFamily(
            "regimes_shadow_agreement_ratio",
            "Share of bars where a shadow's aligned state equals the champion's",
            labels=["timeframe", "model_id"],
        )
        for (tf, model_id), figures in sorted(self.agreement.items()):
            if figures.get("agreement") is not None:
                agreement.add_metric([tf, model_id], figures["agreement"])
        yield agreement
        yield from self._writer()

    def _writer(self):
        if self.writer is None:
            return
        backlog = GaugeMetricFamily(
            "regimes_landing_files",
            "Files landed by the shards and not yet written (bars, answers, published)",
            labels=["kind"],
        )
        for kind, files in sorted(self.writer["backlog_files"].items()):
            backlog.add_metric([kind], files)
        written = CounterMetricFamily(
            "regimes_written_rows",
            "Rows the writer wrote (bars, published answers, stored answers)",
            labels=["kind"],
        )
        for kind, rows in sorted(self.writer["written_rows"].items()):
            written.add_metric([kind], rows)
        yield backlog
        yield written


class ServiceMetrics:
    """The ingress's metrics registry."""

    def __init__(self):
        disable_created_metrics()  # the *_created series say nothing a dashboard needs
        self.registry = CollectorRegistry(auto_describe=False)
        self._requests = Counter(
            "regimes_http_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "regimes_http_request_duration_seconds",
            "Request latency at the ingress",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._bars = Counter(
            "regimes_bars", "Bars answered by the champion", ["timeframe"], registry=self.registry
        )
        self._refused = Counter(
            "regimes_refused_rows",
            "Rows refused with a reason",
            ["timeframe"],
            registry=self.registry,
        )
        self._rollbacks = Counter(
            "regimes_automatic_rollbacks",
            "Champions rolled back on probation",
            ["timeframe"],
            registry=self.registry,
        )
        self._engines = _EngineCollector()
        self.registry.register(self._engines)

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        self._requests.labels(endpoint, str(status)).inc()
        self._latency.labels(endpoint).observe(seconds)

    def bars(self, timeframe: str, answered: int, refused: int) -> None:
        self._bars.labels(timeframe).inc(answered)
        self._refused.labels(timeframe).inc(refused)

    def rollback(self, timeframe: str) -> None:
        self._rollbacks.labels(timeframe).inc()

    def shadow(self, timeframe: str, model_id: str, figures: dict) -> None:
        self._engines.agreement[(timeframe, model_id)] = figures

    def exposition(self, shards: list[dict], writer: dict | None = None) -> str:
        self._engines.shards = shards
        self._engines.writer = writer
        return generate_latest(self.registry).decode()
