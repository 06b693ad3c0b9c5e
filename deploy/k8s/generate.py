"""Generates deploy/k8s/*.yaml (run: python deploy/k8s/generate.py).

The path past one machine: each service as a Deployment (probes, resource limits,
non-root, read-only root filesystem) with a Service and an HPA; RabbitMQ as a
3-node cluster (RabbitMQ Cluster Operator; consumer queues are quorum queues, so
they replicate); MongoDB as a 3-member replica set; Redis for the gateway's shared
rate limits; Prometheus scrape configuration. Apply with `kubectl apply -k deploy/k8s`.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from switchyard.ports import SERVICE_PORTS, port_variable

OUT = Path(__file__).parent
ROOT = OUT.parents[1]
NAMESPACE = "switchyard"
SERVICES = [name for name in SERVICE_PORTS if (ROOT / "services" / name).is_dir()]
RESOURCES = {
    "gateway": ({"cpu": "500m", "memory": "128Mi"}, {"cpu": "2", "memory": "256Mi"}),
    "auth": (
        {"cpu": "250m", "memory": "256Mi"},
        {"cpu": "1", "memory": "512Mi"},
    ),  # argon2id: 19 MiB per hash
    # Image work decodes up to IMAGE_MAX_PIXELS (40 MP, 160 MB) per IMAGE_WORKERS thread.
    "file": ({"cpu": "250m", "memory": "256Mi"}, {"cpu": "2", "memory": "768Mi"}),
}
# Chat runs as a StatefulSet so each replica has a stable address (chat-0.chat-pods, …):
# Socket.IO's long-polling needs every request of a session on the same replica, and the
# gateway's sticky choice (a hash of the client address over its upstream list) is the
# same on every gateway pod only when that list names the replicas themselves. WebSocket
# sessions, fan-out (the socketio exchange) and presence work with any replica count; to
# scale, raise CHAT_REPLICAS and regenerate (the upstream list follows).
CHAT_REPLICAS = 3
GATEWAY_ADMIN_PORT = 9080  # the gateway's admin listener: /metrics, /gateway/routes
DEFAULT_RESOURCES = ({"cpu": "100m", "memory": "128Mi"}, {"cpu": "500m", "memory": "256Mi"})


def service_objects(name: str) -> list[dict]:
    port = SERVICE_PORTS[name]
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "switchyard"}
    requests, limits = RESOURCES.get(name, DEFAULT_RESOURCES)
    env = [
        {"name": "HOST", "value": "0.0.0.0"},
        {"name": port_variable(name), "value": str(port)},
    ]
    if name == "payments":
        # The test provider is refused in production; STRIPE_SECRET_KEY and
        # STRIPE_WEBHOOK_SECRET come from the `switchyard` secret.
        env.append({"name": "PAYMENTS_PROVIDER", "value": "stripe"})
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10}
    container = {
        "name": name,
        "image": f"ghcr.io/switchyard/{name}:latest",
        "ports": [{"name": "http", "containerPort": port}],
        "envFrom": [
            {"configMapRef": {"name": "switchyard"}},
            {"secretRef": {"name": "switchyard"}},
        ],
        "env": env,
        "resources": {"requests": requests, "limits": limits},
        "startupProbe": {**probe, "failureThreshold": 30, "periodSeconds": 2},
        "livenessProbe": probe,
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    # The root filesystem is read-only; /tmp is the one writable place.
    container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    if name == "auth":
        container["volumeMounts"].append(
            {"name": "auth-keys", "mountPath": "/var/lib/switchyard/auth-keys", "readOnly": True}
        )
        volumes.append(
            {
                "name": "auth-keys",
                "secret": {"secretName": "switchyard-auth-keys", "defaultMode": 0o400},
            }
        )
    if name == "file":
        # Blobs in S3, so any replica serves any file (set S3_ENDPOINT_URL for MinIO/Ceph;
        # AWS_* in the secret, or a workload identity). A single replica could instead mount
        # a ReadWriteOnce PVC and set FILE_STORAGE to its path. Image scratch files get
        # their own volume: an upload's image is spooled there while Pillow reads it.
        env += [
            {"name": "FILE_STORAGE", "value": "s3://switchyard-files/files"},
            {"name": "FILE_SPOOL_DIR", "value": "/var/lib/switchyard/spool"},
        ]
        container["volumeMounts"].append(
            {"name": "spool", "mountPath": "/var/lib/switchyard/spool"}
        )
        volumes.append({"name": "spool", "emptyDir": {"sizeLimit": "2Gi"}})
    metrics_port = port
    if name == "gateway":
        # /metrics and /gateway/routes only on the admin listener: reachable inside the
        # cluster network (Prometheus), never through the Service (which names only http).
        metrics_port = GATEWAY_ADMIN_PORT
        env += [
            {"name": "GATEWAY_ADMIN_HOST", "value": "0.0.0.0"},
            {"name": "GATEWAY_ADMIN_PORT", "value": str(GATEWAY_ADMIN_PORT)},
        ]
        container["ports"].append({"name": "admin", "containerPort": GATEWAY_ADMIN_PORT})
    if name == "chat":
        # Long-polling requests wait up to the ping interval; the gateway's route allows 60 s.
        env.append({"name": "SOCKETIO_PING_INTERVAL", "value": "25"})
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(metrics_port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": volumes,
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": labels},
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 2,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}},
    }
    if name == "chat":
        return [*chat_statefulset(deployment, labels, port), service, pdb]
    return [deployment, service, hpa, pdb]


def chat_statefulset(deployment: dict, labels: dict, port: int) -> list[dict]:
    """The chat Deployment as a StatefulSet with a headless Service for per-pod addresses."""
    spec = dict(deployment["spec"])
    spec.pop("strategy")
    spec.update(
        {
            "replicas": CHAT_REPLICAS,
            "serviceName": "chat-pods",
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
        }
    )
    statefulset = {**deployment, "kind": "StatefulSet", "spec": spec}
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "chat-pods", "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": False,
            "selector": labels,
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
    }
    return [statefulset, headless]


def chat_upstreams() -> str:
    port = SERVICE_PORTS["chat"]
    return ",".join(f"http://chat-{n}.chat-pods:{port}" for n in range(CHAT_REPLICAS))


def config() -> list[dict]:
    upstreams = {
        f"GATEWAY_{s.upper()}_UPSTREAMS": f"http://{s}:{SERVICE_PORTS[s]}"
        for s in SERVICE_PORTS
        if s != "gateway"
    }
    if "chat" in SERVICES:
        upstreams["GATEWAY_CHAT_UPSTREAMS"] = chat_upstreams()
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "switchyard", "namespace": NAMESPACE},
            "data": {
                "SWITCHYARD_ENV": "production",
                "LOG_FORMAT": "json",
                "MONGO_URL": "mongodb://mongo-0.mongo,mongo-1.mongo,mongo-2.mongo:27017/?replicaSet=rs0",
                "AUTH_ISSUER": "https://api.example.com",
                "JWT_AUDIENCE": "switchyard",
                "JWKS_URL": f"http://auth:{SERVICE_PORTS['auth']}/.well-known/jwks.json",
                "RATE_LIMIT_REDIS_URL": "redis://redis:6379/0",
                "AUTH_KEYS_DIR": "/var/lib/switchyard/auth-keys",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
                **upstreams,
            },
        },
    ]


def infrastructure() -> list[dict]:
    mongo_labels = {"app.kubernetes.io/name": "mongo"}
    return [
        {
            # RabbitMQ Cluster Operator (https://www.rabbitmq.com/kubernetes/operator): three nodes;
            # Switchyard's consumer queues and DLQs are quorum queues, replicated across them.
            "apiVersion": "rabbitmq.com/v1beta1",
            "kind": "RabbitmqCluster",
            "metadata": {"name": "rabbitmq", "namespace": NAMESPACE},
            "spec": {
                "replicas": 3,
                "resources": {
                    "requests": {"cpu": "500m", "memory": "1Gi"},
                    "limits": {"cpu": "2", "memory": "2Gi"},
                },
                "rabbitmq": {
                    "additionalPlugins": ["rabbitmq_prometheus"],
                    "additionalConfig": "default_queue_type = quorum\n",
                },
                "persistence": {"storage": "10Gi"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "mongo", "namespace": NAMESPACE},
            "spec": {
                "clusterIP": "None",
                "selector": mongo_labels,
                "ports": [{"name": "mongo", "port": 27017}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "mongo", "namespace": NAMESPACE},
            "spec": {
                "serviceName": "mongo",
                "replicas": 3,
                "selector": {"matchLabels": mongo_labels},
                "template": {
                    "metadata": {"labels": mongo_labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "mongo",
                                "image": "mongo:7.0",
                                "args": ["--replSet", "rs0", "--bind_ip_all"],
                                "ports": [{"containerPort": 27017, "name": "mongo"}],
                                "resources": {
                                    "requests": {"cpu": "500m", "memory": "1Gi"},
                                    "limits": {"cpu": "2", "memory": "4Gi"},
                                },
                                "readinessProbe": {
                                    "exec": {
                                        "command": [
                                            "mongosh",
                                            "--quiet",
                                            "--eval",
                                            "db.adminCommand('ping').ok",
                                        ]
                                    },
                                    "periodSeconds": 10,
                                },
                                "volumeMounts": [{"name": "data", "mountPath": "/data/db"}],
                            }
                        ]
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "20Gi"}},
                        },
                    }
                ],
            },
        },
        {
            # Initiates the replica set once all three members answer (idempotent).
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "mongo-init-replica-set", "namespace": NAMESPACE},
            "spec": {
                "backoffLimit": 20,
                "template": {
                    "spec": {
                        "restartPolicy": "OnFailure",
                        "containers": [
                            {
                                "name": "init",
                                "image": "mongo:7.0",
                                "command": [
                                    "mongosh",
                                    "--host",
                                    "mongo-0.mongo",
                                    "--quiet",
                                    "--eval",
                                    "try { rs.status().ok } catch (e) { rs.initiate({_id: 'rs0', members: ["
                                    "{_id: 0, host: 'mongo-0.mongo:27017'}, {_id: 1, host: 'mongo-1.mongo:27017'},"
                                    " {_id: 2, host: 'mongo-2.mongo:27017'}]}).ok }",
                                ],
                            }
                        ],
                    }
                },
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "redis", "namespace": NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app.kubernetes.io/name": "redis"}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": "redis"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "redis",
                                "image": "redis:7-alpine",
                                "args": ["--save", "", "--appendonly", "no"],
                                "ports": [{"containerPort": 6379}],
                                "resources": {
                                    "requests": {"cpu": "100m", "memory": "64Mi"},
                                    "limits": {"cpu": "500m", "memory": "256Mi"},
                                },
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "redis", "namespace": NAMESPACE},
            "spec": {"selector": {"app.kubernetes.io/name": "redis"}, "ports": [{"port": 6379}]},
        },
    ]


def prometheus() -> list[dict]:
    scrape = {
        "scrape_configs": [
            {
                "job_name": "switchyard",
                "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [NAMESPACE]}}],
                "relabel_configs": [
                    {
                        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                        "action": "keep",
                        "regex": "true",
                    },
                    {
                        "source_labels": [
                            "__address__",
                            "__meta_kubernetes_pod_annotation_prometheus_io_port",
                        ],
                        "action": "replace",
                        "regex": "([^:]+)(?::\\d+)?;(\\d+)",
                        "replacement": "$1:$2",
                        "target_label": "__address__",
                    },
                    {
                        "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
                        "target_label": "app",
                    },
                ],
            }
        ],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "switchyard-prometheus-scrape", "namespace": NAMESPACE},
            "data": {"switchyard-scrape.yml": yaml.safe_dump(scrape, sort_keys=False)},
        }
    ]


def write(name: str, objects: list[dict]) -> str:
    path = OUT / name
    header = "# Generated by deploy/k8s/generate.py — edit the generator, not this file.\n"
    path.write_text(header + yaml.safe_dump_all(objects, sort_keys=False))
    return name


def main() -> None:
    files = [
        write("00-config.yaml", config()),
        write("10-infrastructure.yaml", infrastructure()),
        write("20-prometheus.yaml", prometheus()),
    ]
    files += [write(f"30-{name}.yaml", service_objects(name)) for name in SERVICES]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NAMESPACE,
        "resources": files,
    }
    (OUT / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    print("\n".join(files))


if __name__ == "__main__":
    main()
