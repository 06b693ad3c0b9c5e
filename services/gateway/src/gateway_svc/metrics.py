"""Gateway metrics, counted in plain dictionaries on the hot path and rendered in
the Prometheus text format (names of DESIGN §8) when scraped: a
``switchyard.metrics.ServiceMetrics`` whose instruments are one custom collector on the
gateway's registry (prometheus_client's per-sample locking costs too much per request).

With several worker processes, each worker writes a snapshot of its counters to
a shared directory once a second; whichever worker answers ``/metrics`` adds the
other workers' snapshots to its own live numbers, so a scrape sees the whole
gateway. Counters of a worker that exited stay in the sum (they never go back).
"""

from __future__ import annotations

import json
import logging
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from gateway_svc.proxy.upstream import UpstreamHost
from switchyard.metrics import LATENCY_BUCKETS, MetricsRegistry, ServiceMetrics

log = logging.getLogger("gateway.metrics")

BUCKETS = LATENCY_BUCKETS
_KNOWN_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS"})
_LIVE_SNAPSHOT_SECONDS = 10.0


def _new_histogram() -> list[float]:
    return [0.0] * (len(BUCKETS) + 2)  # one count per bucket, +Inf, then the sum


def _add(table: dict[Any, list[float]], key: Any, seconds: float) -> None:
    hist = table.get(key)
    if hist is None:
        hist = table[key] = _new_histogram()
    hist[bisect_left(BUCKETS, seconds)] += 1
    hist[-1] += seconds


class GatewayMetrics(ServiceMetrics):
    def __init__(
        self,
        metrics: MetricsRegistry,
        *,
        hosts: Callable[[], Iterable[UpstreamHost]] = tuple,
        snapshot_dir: Path | None = None,
    ) -> None:
        super().__init__(metrics)
        self.hosts = hosts
        self.snapshot_dir = snapshot_dir
        self.requests: dict[tuple[str, bytes, int], int] = {}
        self.durations: dict[tuple[str, bytes], list[float]] = {}
        self.upstream_durations: dict[tuple[str, str], list[float]] = {}
        self.limited: dict[tuple[str, str], int] = {}
        self.outcomes: dict[tuple[str, str, str], int] = {}
        self.retries: dict[str, int] = {}
        self.refusals: dict[str, int] = {}
        metrics.collector(_Collector(self))

    # -- the hot path ------------------------------------------------------------------------

    def request(
        self,
        route: str,
        method: bytes,
        status: int,
        seconds: float,
        upstream: UpstreamHost | None,
        upstream_seconds: float | None,
    ) -> None:
        if method not in _KNOWN_METHODS:
            method = b"OTHER"
        key = (route, method, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        _add(self.durations, (route, method), seconds)
        if upstream is not None and upstream_seconds is not None:
            _add(self.upstream_durations, (upstream.group, upstream.url), upstream_seconds)

    def rate_limited(self, route: str, policy: str) -> None:
        key = (route, policy)
        self.limited[key] = self.limited.get(key, 0) + 1

    def upstream_outcome(self, host: UpstreamHost, outcome: str) -> None:
        key = (host.group, host.url, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def retried(self, route: str) -> None:
        self.retries[route] = self.retries.get(route, 0) + 1

    def circuit_refused(self, group: str) -> None:
        self.refusals[group] = self.refusals.get(group, 0) + 1

    # -- snapshots across workers -----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        outcomes = dict(self.outcomes)
        for host in self.hosts():
            if host.ok:
                outcomes[(host.group, host.url, "ok")] = host.ok
        return {
            "pid": os.getpid(),
            "requests": [[r, m.decode(), s, n] for (r, m, s), n in self.requests.items()],
            "durations": [[r, m.decode(), h] for (r, m), h in self.durations.items()],
            "upstream_durations": [[g, u, h] for (g, u), h in self.upstream_durations.items()],
            "limited": [[r, p, n] for (r, p), n in self.limited.items()],
            "outcomes": [[g, u, o, n] for (g, u, o), n in outcomes.items()],
            "retries": [[r, n] for r, n in self.retries.items()],
            "refusals": [[g, n] for g, n in self.refusals.items()],
            "panics": [[h.group, h.url, h.panicked] for h in self.hosts() if h.panicked],
            "circuits": [
                [h.group, h.url, int(h.breaker.state), h.breaker.opened] for h in self.hosts()
            ],
        }

    def write_snapshot(self) -> None:
        if self.snapshot_dir is None:
            return
        target = self.snapshot_dir / f"{os.getpid()}.json"
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.snapshot()))
        os.replace(temporary, target)

    def _peer_snapshots(self) -> Iterator[tuple[dict[str, Any], bool]]:
        if self.snapshot_dir is None:
            return
        own = f"{os.getpid()}.json"
        now = time.time()
        for path in self.snapshot_dir.glob("*.json"):
            if path.name == own:
                continue
            try:
                live = now - path.stat().st_mtime < _LIVE_SNAPSHOT_SECONDS
                yield json.loads(path.read_text()), live
            except (OSError, ValueError) as error:  # a worker replacing its file mid-read
                log.debug(
                    "skipped a metrics snapshot", extra={"path": str(path), "error": repr(error)}
                )

    def merged(self) -> dict[str, Any]:
        """This worker's live numbers plus every other worker's last snapshot."""
        total = self.snapshot()
        sums: dict[str, dict[tuple[Any, ...], Any]] = {}
        for name in ("requests", "limited", "outcomes", "retries", "refusals", "panics"):
            sums[name] = {tuple(row[:-1]): row[-1] for row in total[name]}
        hists = {
            name: {tuple(row[:-1]): list(row[-1]) for row in total[name]}
            for name in ("durations", "upstream_durations")
        }
        circuits = {(g, u): [state, opened] for g, u, state, opened in total["circuits"]}
        for snapshot, live in self._peer_snapshots():
            for name, table in sums.items():
                for row in snapshot.get(name, []):
                    key = tuple(row[:-1])
                    table[key] = table.get(key, 0) + row[-1]
            for name, table in hists.items():
                for row in snapshot.get(name, []):
                    key = tuple(row[:-1])
                    mine = table.get(key)
                    if mine is None:
                        table[key] = list(row[-1])
                    else:
                        table[key] = [a + b for a, b in zip(mine, row[-1], strict=True)]
            for group, url, state, opened in snapshot.get("circuits", []):
                entry = circuits.setdefault((group, url), [0, 0])
                entry[1] += opened
                if live:
                    entry[0] = max(entry[0], state)
        return {"sums": sums, "hists": hists, "circuits": circuits}

    def render(self) -> bytes:
        body, _ = self.metrics.render()
        return body


def _histogram(family: HistogramMetricFamily, labels: list[str], hist: list[float]) -> None:
    cumulative = 0.0
    buckets = []
    for bound, count in zip(BUCKETS, hist, strict=False):
        cumulative += count
        buckets.append((repr(float(bound)), cumulative))
    cumulative += hist[len(BUCKETS)]
    buckets.append(("+Inf", cumulative))
    family.add_metric(labels, buckets, sum_value=hist[-1])


class _Collector(Collector):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        # Without this the registry would collect (read every worker's snapshot) to learn
        # the names at registration; the names are fixed and clash with nothing.
        return []

    def collect(self) -> Iterator[Any]:
        service = self.metrics.service
        data = self.metrics.merged()
        sums, hists = data["sums"], data["hists"]

        requests = CounterMetricFamily(
            "http_requests_total",
            "HTTP requests served",
            labels=["service", "route", "method", "status"],
        )
        for (route, method, status), count in sorted(sums["requests"].items()):
            requests.add_metric([service, route, method, str(status)], count)
        yield requests

        duration = HistogramMetricFamily(
            "http_request_duration_seconds",
            "Time from the request head to the last response byte, at the gateway",
            labels=["service", "route", "method"],
        )
        for (route, method), hist in sorted(hists["durations"].items()):
            _histogram(duration, [service, route, method], hist)
        yield duration

        upstream = HistogramMetricFamily(
            "gateway_upstream_duration_seconds",
            "Time from sending a request upstream to its last response byte",
            labels=["service", "upstream", "host"],
        )
        for (group, url), hist in sorted(hists["upstream_durations"].items()):
            _histogram(upstream, [service, group, url], hist)
        yield upstream

        limited = CounterMetricFamily(
            "gateway_rate_limited_total",
            "Requests refused with 429",
            labels=["service", "route", "policy"],
        )
        for (route, policy), count in sorted(sums["limited"].items()):
            limited.add_metric([service, route, policy], count)
        yield limited

        outcomes = CounterMetricFamily(
            "gateway_upstream_outcomes_total",
            "Upstream attempts by outcome (ok, error_status, connect_error, connect_timeout,"
            " timeout, reset, bad_response)",
            labels=["service", "upstream", "host", "outcome"],
        )
        for (group, url, outcome), count in sorted(sums["outcomes"].items()):
            outcomes.add_metric([service, group, url, outcome], count)
        yield outcomes

        retries = CounterMetricFamily(
            "gateway_retries_total",
            "Idempotent requests retried on another upstream",
            labels=["service", "route"],
        )
        for (route,), count in sorted(sums["retries"].items()):
            retries.add_metric([service, route], count)
        yield retries

        refusals = CounterMetricFamily(
            "gateway_circuit_open_refusals_total",
            "Requests answered 503 because every upstream's circuit was open",
            labels=["service", "upstream"],
        )
        for (group,), count in sorted(sums["refusals"].items()):
            refusals.add_metric([service, group], count)
        yield refusals

        panics = CounterMetricFamily(
            "gateway_panic_routed_total",
            "Requests sent to a host whose circuit was open, because every host of its"
            " upstream was (panic routing)",
            labels=["service", "upstream", "host"],
        )
        for (group, url), count in sorted(sums["panics"].items()):
            panics.add_metric([service, group, url], count)
        yield panics

        state = GaugeMetricFamily(
            "gateway_circuit_state",
            "Circuit per upstream host: 0 closed, 1 half-open, 2 open (worst over workers)",
            labels=["service", "upstream", "host"],
        )
        healthy = GaugeMetricFamily(
            "gateway_upstream_healthy",
            "1 while the host is in the rotation (circuit closed), else 0",
            labels=["service", "upstream", "host"],
        )
        opened = CounterMetricFamily(
            "gateway_circuit_opened_total",
            "Times a circuit opened",
            labels=["service", "upstream", "host"],
        )
        for (group, url), (value, times) in sorted(data["circuits"].items()):
            state.add_metric([service, group, url], value)
            healthy.add_metric([service, group, url], 1 if value == 0 else 0)
            opened.add_metric([service, group, url], times)
        yield state
        yield healthy
        yield opened
