"""Prometheus metrics at ``GET /metrics``, read at scrape time from live objects.

Nothing on the call path updates a metric: the dialer, its SIP endpoint, its
RTP clock and its prompt cache keep plain integer counters, and
:class:`RingcastCollector` reads them when Prometheus scrapes. Database-wide
numbers (queue depth, calls by result and outcome, webhook deliveries) come
from one cheap aggregate query per table per scrape, so every API process of a
cluster reports the same totals; the ``dialer`` counters are this process's own.

Setups per second is ``rate(ringcast_calls_placed_total[1m])``.
Counters a component does not have (yet) are simply left out of the output;
the attribute names read are listed in :data:`DIALER_COUNTERS`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ringcast import heap
from ringcast.domain import Result, utcnow
from ringcast.errors import StoreError
from ringcast.store import registrations as registration_rows
from ringcast.store.db import Store, wrap_errors
from ringcast.store.models import calls_table, recordings_table, webhook_outbox_table

logger = logging.getLogger(__name__)

router = APIRouter()

# (metric name, help, path of attributes from the dialer) for counters read live.
DIALER_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("ringcast_calls_placed", "Calls set up (INVITE sent) by this node", "calls_placed"),
    ("ringcast_sip_retransmissions", "SIP request retransmissions", "sip.retransmissions"),
    ("ringcast_sip_garbage_packets", "Unparseable SIP datagrams received", "sip.garbage_count"),
    (
        "ringcast_sip_flood_dropped",
        "SIP requests dropped unanswered by the flood gate",
        "sip.flood_dropped",
    ),
    (
        "ringcast_sip_tls_handshake_failures",
        "TLS connections to SIP servers that failed (certificate, name, alert)",
        "sip.tls_handshake_failures",
    ),
    (
        "ringcast_sip_stateless_answers",
        "SIP requests from strangers answered statelessly",
        "sip.stateless_answers",
    ),
    ("ringcast_rtp_packets_sent", "RTP packets sent by the shared clock", "clock.packets_sent"),
    ("ringcast_rtp_packets_late", "RTP packets sent late", "clock.late_packets"),
    ("ringcast_rtp_clock_ticks", "20 ms ticks of the shared RTP clock", "clock.ticks"),
    ("ringcast_rtp_late_ticks", "20 ms clock ticks that ran late", "clock.late_ticks"),
    ("ringcast_rtp_skipped_ticks", "Clock ticks dropped when far behind", "clock.skipped_ticks"),
    ("ringcast_srtp_streams", "Calls whose media was SRTP (RFC 3711)", "clock.srtp_streams"),
    (
        "ringcast_srtp_auth_failures",
        "SRTP/SRTCP packets from callees dropped: failed authentication or replay check",
        "clock.srtp_auth_failures",
    ),
    ("ringcast_db_write_batches", "Group-commit transactions of call writes", "writer.batches"),
    ("ringcast_db_writes", "Call writes committed by the group writer", "writer.writes"),
    ("ringcast_prompt_cache_hits", "Prompts served from the prompt cache", "prompts.hits"),
    ("ringcast_prompt_builds", "Prompts built (cache misses)", "prompts.builds"),
    ("ringcast_recordings_made", "Recordings made by this node", "recordings_made"),
    ("ringcast_recording_bytes_made", "WAV bytes recorded by this node", "recording_bytes_made"),
    ("ringcast_recordings_swept", "Recordings deleted by retention", "retention.deleted"),
    (
        "ringcast_media_fetches",
        "Media URL fetches that used the network",
        "prompts.http.network_fetches",
    ),
)


def _attr(obj: Any, path: str) -> float | None:
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        return None
    return float(obj)


@dataclass
class DbSnapshot:
    """Numbers read from the database for one scrape."""

    ok: bool = False
    calls: dict[tuple[str, str], int] = field(default_factory=dict)  # (result, outcome) -> n
    queue_due: int = 0
    webhooks: dict[str, int] = field(default_factory=dict)  # state -> n
    webhook_attempts: int = 0
    answered_by: dict[str, int] = field(default_factory=dict)  # machine detection -> n
    recordings: int = 0  # kept in the database
    recording_bytes: int = 0
    trunks: dict[str, dict[str, Any]] = field(default_factory=dict)  # live dialers' bindings
    seconds: float = 0.0


async def read_db(store: Store, node_timeout: float = 15.0) -> DbSnapshot:
    """Aggregate counts for one scrape (StoreError when the database fails);
    `node_timeout` is the heartbeat age past which a dialer's bindings are not shown."""
    started = time.perf_counter()
    snap = DbSnapshot()
    snap.trunks = await registration_rows.fleet(store, node_timeout)
    c = calls_table.c
    w = webhook_outbox_table.c
    async with wrap_errors(), store.session(readonly=True) as s:
        rows = await s.execute(
            sa.select(c.result, c.outcome, sa.func.count()).group_by(c.result, c.outcome)
        )
        snap.calls = {(r[0], r[1] or ""): int(r[2]) for r in rows}
        rows = await s.execute(
            sa.select(c.answered_by, sa.func.count())
            .where(c.answered_by.is_not(None))
            .group_by(c.answered_by)
        )
        snap.answered_by = {str(r[0]): int(r[1]) for r in rows}
        r = recordings_table.c
        row = (
            await s.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(r.size), 0)).select_from(
                    recordings_table
                )
            )
        ).one()
        snap.recordings, snap.recording_bytes = int(row[0]), int(row[1])
        snap.queue_due = int(
            await s.scalar(
                sa.select(sa.func.count())
                .select_from(calls_table)
                .where(c.result == Result.QUEUED.value, c.not_before <= utcnow())
            )
            or 0
        )
        state = sa.case(
            (w.delivered_at.is_not(None), "delivered"),
            (w.gave_up_at.is_not(None), "failed"),
            else_="pending",
        )
        rows = await s.execute(
            sa.select(
                state, sa.func.count(), sa.func.coalesce(sa.func.sum(w.attempts), 0)
            ).group_by(state)
        )
        for name, count, attempts in rows:
            snap.webhooks[str(name)] = int(count)
            snap.webhook_attempts += int(attempts)
    snap.ok = True
    snap.seconds = time.perf_counter() - started
    return snap


def _gc_metrics() -> Iterator[Metric]:
    """The cyclic collector's pauses in this process (:data:`ringcast.heap.STATS`)."""
    stats = heap.STATS
    if not any(stats.collections):
        return
    pauses = HistogramMetricFamily(
        "ringcast_gc_pause_seconds", "Pauses of the garbage collector (all generations)"
    )
    cumulative, counted = [], 0
    for bound, n in zip((*heap.PAUSE_BUCKETS, float("inf")), stats.buckets, strict=True):
        counted += n
        cumulative.append((str(bound) if bound != float("inf") else "+Inf", float(counted)))
    pauses.add_metric([], cumulative, sum_value=sum(stats.pause_seconds))
    runs = CounterMetricFamily(
        "ringcast_gc_collections", "Garbage collections, by generation", labels=["generation"]
    )
    for generation in range(3):
        runs.add_metric([str(generation)], stats.collections[generation])
    yield pauses
    yield runs
    yield CounterMetricFamily(
        "ringcast_gc_collected_objects",
        "Objects the collector found in reference cycles",
        value=stats.collected,
    )
    yield CounterMetricFamily(
        "ringcast_gc_long_pauses",
        "Collections longer than one 20 ms RTP interval",
        value=stats.long_pauses,
    )
    yield GaugeMetricFamily(
        "ringcast_gc_max_pause_seconds", "The longest collection so far", stats.max_pause
    )
    yield CounterMetricFamily(
        "ringcast_gc_long_cpu_pauses",
        "Collections whose own CPU time was over 20 ms (a long pause with less CPU "
        "is time the process waited for a core)",
        value=stats.long_cpu_pauses,
    )
    yield GaugeMetricFamily(
        "ringcast_gc_max_pause_cpu_seconds",
        "The most CPU time one collection took so far",
        stats.max_pause_cpu,
    )


def _trunk_metrics(trunks: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    """The fleet's REGISTER bindings as the dialers wrote them (issue 15): per trunk
    (up when every live dialer's binding is) and per dialer node."""
    if not trunks:
        return
    up = GaugeMetricFamily(
        "ringcast_trunk_registered",
        "1 while every live dialer's REGISTER binding with the trunk's registrar is up",
        labels=["trunk"],
    )
    failures = GaugeMetricFamily(
        "ringcast_trunk_register_failures",
        "REGISTER attempts in a row that failed for the trunk (0 once one succeeds), "
        "the most of any dialer",
        labels=["trunk"],
    )
    per_node = GaugeMetricFamily(
        "ringcast_trunk_node_registered",
        "1 while this dialer node's REGISTER binding with the trunk's registrar is up",
        labels=["trunk", "node"],
    )
    for trunk, info in sorted(trunks.items()):
        up.add_metric([trunk], 1.0 if info["registered"] else 0.0)
        failures.add_metric([trunk], float(info["failures"]))
        for node, binding in sorted(info["nodes"].items()):
            per_node.add_metric([trunk, node], 1.0 if binding["registered"] else 0.0)
    yield up
    yield failures
    yield per_node


class RingcastCollector(Collector):
    """Reads the app's dialer (``state.dialer``) and the last DB snapshot at scrape time."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.snapshot = DbSnapshot()

    def collect(self) -> Iterator[Metric]:
        yield from self._db()
        yield from _gc_metrics()
        dialer = getattr(self.state, "dialer", None)
        if dialer is None:
            return
        limits = getattr(dialer, "limits", None)
        active = _attr(limits, "active") if limits is not None else None
        if active is not None:
            yield GaugeMetricFamily(
                "ringcast_calls_active", "Calls in progress on this node", active
            )
        live = getattr(dialer, "live", None)
        if isinstance(live, dict):
            yield GaugeMetricFamily(
                "ringcast_calls_live", "Calls owned by this node's dialer", float(len(live))
            )
        streams = _attr(dialer, "clock.stream_count")
        if streams is not None:
            yield GaugeMetricFamily("ringcast_rtp_streams", "RTP streams on the clock", streams)
        for name, doc, path in DIALER_COUNTERS:
            value = _attr(dialer, path)
            if value is not None:
                yield CounterMetricFamily(name, doc, value=value)
        transfers = getattr(dialer, "transfers", None)
        if isinstance(transfers, dict):
            family = CounterMetricFamily(
                "ringcast_transfers",
                "Transfers of answered calls by this node (gather actions), by mode and result",
                labels=["mode", "result"],
            )
            for (mode, result), n in sorted(transfers.items()):
                family.add_metric([mode, result], float(n))
            yield family

    def _db(self) -> Iterator[Metric]:
        snap = self.snapshot
        yield GaugeMetricFamily(
            "ringcast_db_up", "1 when the last metrics query succeeded", 1.0 if snap.ok else 0.0
        )
        if not snap.ok:
            return
        yield from _trunk_metrics(snap.trunks)
        queued = sum(n for (result, _), n in snap.calls.items() if result == Result.QUEUED.value)
        yield GaugeMetricFamily("ringcast_queue_depth", "Calls waiting to be dialed", float(queued))
        yield GaugeMetricFamily(
            "ringcast_queue_due", "Queued calls already due to be dialed", float(snap.queue_due)
        )
        by_result = GaugeMetricFamily("ringcast_calls", "Calls by result", labels=["result"])
        totals: dict[str, int] = {}
        for (result, _), n in snap.calls.items():
            totals[result] = totals.get(result, 0) + n
        for result, n in sorted(totals.items()):
            by_result.add_metric([result], float(n))
        yield by_result
        by_outcome = GaugeMetricFamily(
            "ringcast_calls_by_outcome", "Finished calls by outcome", labels=["outcome"]
        )
        outcomes: dict[str, int] = {}
        for (_, outcome), n in snap.calls.items():
            if outcome:
                outcomes[outcome] = outcomes.get(outcome, 0) + n
        for outcome, n in sorted(outcomes.items()):
            by_outcome.add_metric([outcome], float(n))
        yield by_outcome
        answered_by = GaugeMetricFamily(
            "ringcast_calls_answered_by",
            "Calls with machine detection by its decision (human, machine, fax, unknown)",
            labels=["answered_by"],
        )
        for name in ("human", "machine", "fax", "unknown"):
            answered_by.add_metric([name], float(snap.answered_by.get(name, 0)))
        yield answered_by
        yield GaugeMetricFamily(
            "ringcast_recordings", "Recordings kept in the database", float(snap.recordings)
        )
        yield GaugeMetricFamily(
            "ringcast_recording_bytes",
            "Bytes of WAV recordings kept in the database",
            float(snap.recording_bytes),
        )
        hooks = GaugeMetricFamily(
            "ringcast_webhook_deliveries",
            "Webhook deliveries by state (failed = given up)",
            labels=["state"],
        )
        for name in ("delivered", "failed", "pending"):
            hooks.add_metric([name], float(snap.webhooks.get(name, 0)))
        yield hooks
        failures = snap.webhook_attempts - snap.webhooks.get("delivered", 0)
        yield GaugeMetricFamily(
            "ringcast_webhook_failed_attempts",
            "Webhook delivery attempts that failed (retried or given up)",
            float(max(0, failures)),
        )
        yield GaugeMetricFamily(
            "ringcast_metrics_query_seconds", "Time the metrics queries took", snap.seconds
        )


class Metrics:
    """One app's registry: process metrics and the ringcast collector."""

    def __init__(self, state: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = RingcastCollector(state)
        self.registry.register(self.collector)
        self.registry.register(ProcessCollector(registry=None))

    async def render(self, store: Store | None) -> bytes:
        snap = DbSnapshot()
        if store is not None:
            try:
                settings = getattr(self.collector.state, "settings", None)
                snap = await read_db(store, getattr(settings, "node_timeout", 15.0))
            except StoreError as exc:
                logger.warning("metrics: database query failed: %s", exc.message)
        self.collector.snapshot = snap
        return generate_latest(self.registry)


def metrics_of(state: Any) -> Metrics:
    metrics = getattr(state, "metrics", None)
    if not isinstance(metrics, Metrics):
        metrics = Metrics(state)
        state.metrics = metrics
    return metrics


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics_route(request: Request) -> Response:
    state = request.app.state
    body = await metrics_of(state).render(getattr(state, "store", None))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
