"""Every service that exists is wired everywhere a user runs it: make run, compose, k8s,
Prometheus, Grafana. A new service that forgets one of these fails here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from switchyard.devtools.run import available_services, plan
from switchyard.ports import SERVICE_PORTS, port_variable

ROOT = Path(__file__).resolve().parents[3]
SERVICES = available_services(ROOT)


def test_there_are_services():
    assert {"auth", "gateway", "notification"} <= set(SERVICES)


def test_make_run_starts_every_service_with_embedded_store_and_mail_sink(tmp_path):
    the_plan = plan(ROOT, {}, state=tmp_path)
    assert set(SERVICES) <= set(the_plan.processes)
    assert "mongo" in the_plan.processes and "mail" in the_plan.processes
    assert the_plan.env["MONGO_URL"] == "mongodb://127.0.0.1:27017/"
    assert (tmp_path / "secrets" / "dev.env").stat().st_mode & 0o077 == 0
    for name in SERVICES:
        assert the_plan.env[f"{name.upper()}_PORT"] == str(SERVICE_PORTS[name])


def test_make_run_honours_the_callers_environment(tmp_path):
    the_plan = plan(
        ROOT, {"MONGO_URL": "mongodb://db.example:27017/", "SMTP_HOST": "mx"}, state=tmp_path
    )
    assert "mongo" not in the_plan.processes and "mail" not in the_plan.processes
    assert the_plan.env["MONGO_URL"] == "mongodb://db.example:27017/"


def test_compose_has_every_service_and_the_infrastructure():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("mongo", "rabbitmq", "redis", "mailpit", "prometheus", "grafana", "jaeger"):
        assert name in services
    for name in SERVICES:
        build = services[name]["build"]
        assert build == {"context": ".", "args": {"SERVICE": name}}  # the one Dockerfile


def test_one_dockerfile_builds_every_service():
    """The root Dockerfile installs ``switchyard-<SERVICE>`` from ``services/<SERVICE>`` and
    runs ``python -m <SERVICE>_svc``: every service must fit those names."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("ARG SERVICE") == 2  # one per build stage
    assert "COPY services/${SERVICE} services/${SERVICE}" in dockerfile
    assert "--package switchyard-${SERVICE}" in dockerfile
    assert 'exec python -m \\"${SERVICE}_svc\\"' in dockerfile
    assert '"switchyard.devtools.healthcheck"' in dockerfile
    assert not list((ROOT / "services").glob("*/Dockerfile"))  # no per-service copies
    for name in SERVICES:
        project = (ROOT / "services" / name / "pyproject.toml").read_text()
        assert f'name = "switchyard-{name}"' in project
        assert (ROOT / "services" / name / "src" / f"{name}_svc" / "__main__.py").is_file()


def test_ports_are_defined_once_and_every_config_file_agrees():
    """switchyard.ports is the definition; the settings read it, and the files that cannot
    import it (compose, the route file) are checked against it."""
    from auth_svc.settings import AuthSettings
    from gateway_svc.settings import GatewaySettings
    from notification_svc.settings import NotificationSettings
    from payments_svc.settings import PaymentsSettings

    assert set(SERVICE_PORTS) == {"gateway", "auth", "chat", "payments", "notification", "file"}
    assert len(set(SERVICE_PORTS.values())) == len(SERVICE_PORTS)
    for settings_class, name in (
        (GatewaySettings, "gateway"),
        (AuthSettings, "auth"),
        (NotificationSettings, "notification"),
        (PaymentsSettings, "payments"),
    ):
        field = settings_class.model_fields["port"]
        assert (field.default, field.validation_alias) == (SERVICE_PORTS[name], port_variable(name))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    gateway_env = compose["gateway"]["environment"]
    for name, port in SERVICE_PORTS.items():
        if name != "gateway":
            assert gateway_env[f"GATEWAY_{name.upper()}_UPSTREAMS"] == f"http://{name}:{port}"
    assert compose["gateway"]["ports"] == [f"{SERVICE_PORTS['gateway']}:{SERVICE_PORTS['gateway']}"]
    shared_env = compose["auth"]["environment"]
    assert shared_env["JWKS_URL"] == f"http://auth:{SERVICE_PORTS['auth']}/.well-known/jwks.json"
    routes = yaml.safe_load((ROOT / "services/gateway/src/gateway_svc/routes.yaml").read_text())[
        "upstreams"
    ]
    for name, port in SERVICE_PORTS.items():
        if name != "gateway":
            assert routes[name]["urls"] == [f"http://127.0.0.1:{port}"]


def test_prometheus_scrapes_every_service():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        t
        for job in config["scrape_configs"]
        for sc in job.get("static_configs", [])
        for t in sc["targets"]
    }
    for name in SERVICES:
        # the gateway's /metrics: its admin listener only (GATEWAY_ADMIN_PORT)
        port = 9080 if name == "gateway" else SERVICE_PORTS[name]
        assert f"{name}:{port}" in targets
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {
        "DeadLetterQueueNotEmpty",
        "HighErrorRate",
        "ApiLatencyOverSLO",
        "OutboxLagging",
        "ConsumerDown",
    } <= alerts


def _generated_unchanged(script: str, directory: str) -> None:
    before = {
        p: p.read_text() for p in (ROOT / directory).glob("*") if p.suffix in (".json", ".yaml")
    }
    subprocess.run([sys.executable, str(ROOT / script)], check=True, capture_output=True, cwd=ROOT)
    after = {
        p: p.read_text() for p in (ROOT / directory).glob("*") if p.suffix in (".json", ".yaml")
    }
    assert before == after, f"{directory} differs from what {script} generates: rerun it and commit"


def test_grafana_dashboards_are_generated_and_cover_every_service():
    _generated_unchanged("deploy/grafana/generate.py", "deploy/grafana/dashboards")
    for name in [*SERVICES, "overview"]:
        board = json.loads((ROOT / "deploy/grafana/dashboards" / f"{name}.json").read_text())
        assert board["panels"]


def test_k8s_manifests_are_generated_and_cover_every_service():
    _generated_unchanged("deploy/k8s/generate.py", "deploy/k8s")
    for name in SERVICES:
        docs = list(yaml.safe_load_all((ROOT / "deploy/k8s" / f"30-{name}.yaml").read_text()))
        kinds = {doc["kind"] for doc in docs}
        if name == "chat":
            # A StatefulSet: stable per-replica addresses for the gateway's sticky polling.
            assert {"StatefulSet", "Service", "PodDisruptionBudget"} <= kinds
            [statefulset] = [d for d in docs if d["kind"] == "StatefulSet"]
            replicas = statefulset["spec"]["replicas"]
            config = [
                d
                for d in yaml.safe_load_all((ROOT / "deploy/k8s/00-config.yaml").read_text())
                if d["kind"] == "ConfigMap"
            ][0]
            upstreams = config["data"]["GATEWAY_CHAT_UPSTREAMS"].split(",")
            assert upstreams == [f"http://chat-{n}.chat-pods:8082" for n in range(replicas)]
            continue
        assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= kinds


def test_compose_secrets_gain_a_secret_added_later_and_keep_the_others(tmp_path):
    from switchyard.devtools.run import DEV_SECRETS, write_compose_secrets

    path = tmp_path / ".var" / "secrets" / "compose.env"
    path.parent.mkdir(parents=True)
    path.write_text("# old file\nFILE_URL_SECRET=kept-as-it-was\n")
    assert write_compose_secrets(tmp_path) == path
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    assert values["FILE_URL_SECRET"] == "kept-as-it-was"
    assert set(DEV_SECRETS) <= set(values) and "IDEMPOTENCY_SECRET" in values
    assert len(values["IDEMPOTENCY_SECRET"]) >= 32
    before = path.read_text()
    write_compose_secrets(tmp_path)
    assert path.read_text() == before  # complete: left alone
