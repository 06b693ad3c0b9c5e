"""The one shape of a service's own metrics: a ServiceMetrics subclass on the app's registry,
recorded through verbs, served with the standard instruments, read back by tests."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily

from switchyard.metrics import Metrics, MetricsRegistry, ServiceMetrics


class ShopMetrics(ServiceMetrics):
    def __init__(self, metrics: MetricsRegistry) -> None:
        super().__init__(metrics)
        self.orders = metrics.counter("shop_orders_total", "Orders by outcome", ["outcome"])

    def ordered(self, outcome: str) -> None:
        self.orders.labels(self.service, outcome).inc()


def test_service_metrics_live_on_the_apps_registry_beside_the_standard_ones() -> None:
    registry = Metrics("shop")
    shop = ShopMetrics(registry)
    shop.ordered("paid")
    shop.ordered("paid")
    assert shop.service == "shop"
    assert shop.value("shop_orders_total", outcome="paid") == 2
    assert shop.value("shop_orders_total", outcome="refused") == 0  # never recorded
    body, content_type = registry.render()
    assert content_type.startswith("text/plain")
    assert b'shop_orders_total{outcome="paid",service="shop"} 2.0' in body
    assert b"# TYPE http_requests_total counter" in body  # the standard instruments too


def test_a_custom_collector_is_served_by_the_same_registry() -> None:
    """How the gateway counts on its hot path: plain numbers, rendered by a collector."""
    registry = MetricsRegistry("edge")
    counted = {"hits": 3}

    class Hits:
        def describe(self) -> list[object]:
            return []

        def collect(self):  # type: ignore[no-untyped-def]
            family = CounterMetricFamily("edge_hits_total", "Hits", labels=["service"])
            family.add_metric(["edge"], counted["hits"])
            yield family

    registry.collector(Hits())  # type: ignore[arg-type]
    counted["hits"] = 5
    assert registry.value("edge_hits_total") == 5
    assert b'edge_hits_total{service="edge"} 5.0' in registry.render()[0]
