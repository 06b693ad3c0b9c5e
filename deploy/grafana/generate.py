"""Generates the Grafana dashboards in deploy/grafana/dashboards/ (run: python deploy/grafana/generate.py).

One overview (RED per service, bus flow, DLQ depth, outbox) and one dashboard per
service (its routes, its consumers, its store latency, its domain counters).
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# A dashboard per service that exists in services/ (later services add theirs by rerunning).
SERVICES = [
    s
    for s in ("gateway", "auth", "chat", "payments", "notification", "file")
    if (ROOT / "services" / s).is_dir()
]
DOMAIN = {
    "auth": [
        "auth_logins_total",
        "auth_registrations_total",
        "auth_codes_issued_total",
        "auth_lockouts_total",
        "auth_token_refreshes_total",
        "auth_refresh_reuse_detected_total",
    ],
    "notification": [
        "notification_deliveries_total",
        "notification_push_tokens_removed_total",
        "notification_push_auth_failures_total",
        "notification_digest_folds_total",
        "notification_webhook_attempts_total",
        "notification_webhooks_disabled_total",
    ],
    "payments": [
        "payments_transfers_total",
        "payments_money_moved_minor_units_total",
        "payments_webhook_events_total",
        "payments_webhook_signature_failures_total",
        "payments_sweeper_recovered_total",
        "payments_refund_shortfalls_total",
    ],
    "gateway": [
        "gateway_rate_limited_total",
        "gateway_upstream_outcomes_total",
        "gateway_circuit_opened_total",
        "gateway_circuit_open_refusals_total",
        "gateway_panic_routed_total",
        "gateway_retries_total",
    ],
}
# Gauges a service's dashboard shows as they are (not as rates).
GAUGES = {
    "payments": [
        "payments_ledger_imbalance_minor_units",
        "payments_ledger_negative_accounts",
        "payments_pending_transfers",
        "payments_oldest_pending_transfer_age_seconds",
    ],
}
OUT = Path(__file__).parent / "dashboards"


def panel(
    title: str, exprs: list[tuple[str, str]], x: int, y: int, unit: str = "short", w: int = 12
) -> dict:
    return {
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "prometheus"},
        "gridPos": {"x": x, "y": y, "w": w, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"expr": expr, "legendFormat": legend, "refId": chr(65 + i)}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def dashboard(uid: str, title: str, panels: list[dict]) -> dict:
    for n, p in enumerate(panels):
        p["id"] = n + 1
    return {
        "uid": uid,
        "title": title,
        "tags": ["switchyard"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "panels": panels,
    }


def overview() -> dict:
    return dashboard(
        "switchyard-overview",
        "Switchyard — overview",
        [
            panel(
                "Requests/s by service",
                [("sum by (service) (rate(http_requests_total[1m]))", "{{service}}")],
                0,
                0,
                "reqps",
            ),
            panel(
                "Error ratio (5xx) by service",
                [
                    (
                        'sum by (service) (rate(http_requests_total{status=~"5.."}[5m])) / sum by (service) (rate(http_requests_total[5m]))',
                        "{{service}}",
                    )
                ],
                12,
                0,
                "percentunit",
            ),
            panel(
                "p95 latency by service",
                [
                    (
                        "histogram_quantile(0.95, sum by (service, le) (rate(http_request_duration_seconds_bucket[5m])))",
                        "{{service}}",
                    )
                ],
                0,
                8,
                "s",
            ),
            panel(
                "Events published/s by type",
                [("sum by (type) (rate(events_published_total[1m]))", "{{type}}")],
                12,
                8,
                "ops",
            ),
            panel(
                "Events consumed/s by outcome",
                [("sum by (outcome) (rate(events_consumed_total[1m]))", "{{outcome}}")],
                0,
                16,
                "ops",
            ),
            panel(
                "DLQ depth",
                [
                    (
                        'max by (queue) (rabbitmq_detailed_queue_messages{queue=~".*\\\\.dlq"})',
                        "{{queue}}",
                    )
                ],
                12,
                16,
            ),
            panel(
                "Outbox pending / oldest age",
                [
                    ("sum by (service) (outbox_pending)", "pending {{service}}"),
                    ("max by (service) (outbox_oldest_pending_age_seconds)", "age {{service}} (s)"),
                ],
                0,
                24,
            ),
            panel(
                "Store p95 by service",
                [
                    (
                        "histogram_quantile(0.95, sum by (service, le) (rate(db_operation_duration_seconds_bucket[5m])))",
                        "{{service}}",
                    )
                ],
                12,
                24,
                "s",
            ),
        ],
    )


def service_dashboard(service: str) -> dict:
    sel = f'service="{service}"'
    panels = [
        panel(
            "Requests/s by route and status",
            [
                (
                    f"sum by (route, status) (rate(http_requests_total{{{sel}}}[1m]))",
                    "{{route}} {{status}}",
                )
            ],
            0,
            0,
            "reqps",
        ),
        panel(
            "Latency p50 / p95 / p99",
            [
                (
                    f"histogram_quantile({q}, sum by (le) (rate(http_request_duration_seconds_bucket{{{sel}}}[5m])))",
                    f"p{int(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
            12,
            0,
            "s",
        ),
        panel(
            "Consumed/s by queue and outcome",
            [
                (
                    f"sum by (queue, outcome) (rate(events_consumed_total{{{sel}}}[1m]))",
                    "{{queue}} {{outcome}}",
                )
            ],
            0,
            8,
            "ops",
        ),
        panel(
            "Handler p95 by queue",
            [
                (
                    f"histogram_quantile(0.95, sum by (queue, le) (rate(event_handler_duration_seconds_bucket{{{sel}}}[5m])))",
                    "{{queue}}",
                )
            ],
            12,
            8,
            "s",
        ),
        panel(
            "Store p95 by command",
            [
                (
                    f"histogram_quantile(0.95, sum by (command, le) (rate(db_operation_duration_seconds_bucket{{{sel}}}[5m])))",
                    "{{command}}",
                )
            ],
            0,
            16,
            "s",
        ),
        panel(
            "Published/s and outbox",
            [
                (f"sum by (type) (rate(events_published_total{{{sel}}}[1m]))", "{{type}}"),
                (f"sum(outbox_pending{{{sel}}})", "outbox pending"),
            ],
            12,
            16,
        ),
    ]
    for n, metric in enumerate(DOMAIN.get(service, [])):
        panels.append(
            panel(
                metric,
                [(f"sum without (instance, job) (rate({metric}{{{sel}}}[5m]))", "")],
                (n % 2) * 12,
                24 + (n // 2) * 8,
                "ops",
            )
        )
    rows = 24 + ((len(DOMAIN.get(service, [])) + 1) // 2) * 8
    for n, metric in enumerate(GAUGES.get(service, [])):
        panels.append(
            panel(
                metric,
                [(f"max without (instance, job) ({metric}{{{sel}}})", "")],
                (n % 2) * 12,
                rows + (n // 2) * 8,
            )
        )
    if service in EXTRA_PANELS:
        panels += EXTRA_PANELS[service](rows + ((len(GAUGES.get(service, [])) + 1) // 2) * 8)
    return dashboard(f"switchyard-{service}", f"Switchyard — {service}", panels)


def file_panels(y: int) -> list[dict]:
    """The file service's own: bytes through it, uploads by outcome, storage health."""
    sel = 'service="file"'
    return [
        panel(
            "Bytes/s received (uploads) and sent (downloads, thumbnails)",
            [
                (f"sum(rate(file_bytes_received_total{{{sel}}}[1m]))", "received"),
                (f"sum by (kind) (rate(file_bytes_sent_total{{{sel}}}[1m]))", "sent {{kind}}"),
            ],
            0,
            y,
            "Bps",
        ),
        panel(
            "Uploads/s by outcome",
            [(f"sum by (outcome) (rate(file_uploads_total{{{sel}}}[5m]))", "{{outcome}}")],
            12,
            y,
            "ops",
        ),
        panel(
            "Storage p95 by backend and operation",
            [
                (
                    "histogram_quantile(0.95, sum by (backend, operation, le) "
                    f"(rate(file_storage_operation_duration_seconds_bucket{{{sel}}}[5m])))",
                    "{{backend}} {{operation}}",
                )
            ],
            0,
            y + 8,
            "s",
        ),
        panel(
            "Storage errors/s",
            [
                (
                    f"sum by (backend, operation) (rate(file_storage_errors_total{{{sel}}}[5m]))",
                    "{{backend}} {{operation}}",
                )
            ],
            12,
            y + 8,
            "ops",
        ),
        panel(
            "Swept and thumbnails/s",
            [
                (f"sum by (kind) (rate(file_swept_total{{{sel}}}[15m]))", "swept {{kind}}"),
                (
                    f"sum by (cache) (rate(file_thumbnails_total{{{sel}}}[5m]))",
                    "thumbnail {{cache}}",
                ),
            ],
            0,
            y + 16,
            "ops",
        ),
    ]


def chat_panels(y: int) -> list[dict]:
    """The chat service's own: sockets, connects, socket events, messages, delivery latency."""
    sel = 'service="chat"'
    return [
        panel(
            "Sockets connected (per replica and total)",
            [
                (f"sum by (instance) (chat_sockets_connected{{{sel}}})", "{{instance}}"),
                (f"sum(chat_sockets_connected{{{sel}}})", "total"),
            ],
            0,
            y,
        ),
        panel(
            "Connects/s by outcome",
            [
                (
                    f"sum by (outcome) (rate(chat_socket_connects_total{{{sel}}}[5m]))",
                    "{{outcome}}",
                )
            ],
            12,
            y,
            "ops",
        ),
        panel(
            "Socket events/s by event and outcome",
            [
                (
                    f"sum by (event, outcome) (rate(chat_socket_events_total{{{sel}}}[1m]))",
                    "{{event}} {{outcome}}",
                )
            ],
            0,
            y + 8,
            "ops",
        ),
        panel(
            "Messages sent/s and fan-out failures/s",
            [
                (f"sum(rate(chat_messages_sent_total{{{sel}}}[1m]))", "messages"),
                (f"sum(rate(chat_fanout_publish_failures_total{{{sel}}}[5m]))", "fan-out failures"),
            ],
            12,
            y + 8,
            "ops",
        ),
        panel(
            "Send → delivered p50 / p95 / p99",
            [
                (
                    f"histogram_quantile({q}, sum by (le) (rate(chat_message_delivery_seconds_bucket{{{sel}}}[5m])))",
                    f"p{int(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
            0,
            y + 16,
            "s",
        ),
    ]


# Services whose dashboard gets panels beyond the generic rate of their counters.
EXTRA_PANELS = {"file": file_panels, "chat": chat_panels}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    boards = {"overview": overview(), **{s: service_dashboard(s) for s in SERVICES}}
    for name, board in boards.items():
        (OUT / f"{name}.json").write_text(json.dumps(board, indent=2) + "\n")
        print(OUT / f"{name}.json")


if __name__ == "__main__":
    main()
