"""deploy/k8s/eventshop.yaml: the platform on Kubernetes, written from the service registry.

    .venv/bin/eventshop k8s --output deploy/k8s/eventshop.yaml

Per service: a Deployment of the one image (its probes on /health/live and /health/ready, its
resources, non-root, settings from a ConfigMap and passwords from a Secret), a Service, and a
PodDisruptionBudget. Beside them: the shared ConfigMap, a Secret of placeholders to fill (or to
replace by the cluster's secret manager), and the provisioning Job. The broker, the database
and Redis are what a cluster runs: a RabbitMQ cluster (quorum queues replicate the platform's
queues over its nodes), a managed or replicated PostgreSQL, a Redis; their addresses are the
ConfigMap's. tests/unit/test_k8s_manifests.py keeps the file current, checks it offline
against the Kubernetes API's schemas (kubernetes-validate) and fails when a service has no
Deployment. No cluster runs here.
"""

from __future__ import annotations

from typing import Any

import yaml

from eventshop.services import BACKENDS, METRICS_PORTS, PORTS
from eventshop.tooling.compose import SERVICES

NAMESPACE = "eventshop"
IMAGE = "eventshop:1"
#: a second replica where losing the only one stops the shop (and a PDB keeps one up)
REPLICAS = {"gateway": 2, "orders": 2, "inventory": 2, "payments": 2}

CONFIG: dict[str, str] = {
    "EVENTSHOP_REDIS_URL": "redis://eventshop-redis:6379/0",
    "EVENTSHOP_HTTP_HOST": "0.0.0.0",
    "EVENTSHOP_GATEWAY_ENVIRONMENT": "production",
    "EVENTSHOP_GATEWAY_UPSTREAMS": "{"
    + ", ".join(f'"{name}": "http://{name}:{PORTS[name]}"' for name in BACKENDS)
    + "}",
    "EVENTSHOP_NOTIFICATIONS_SMTP_HOST": "smtp.example.internal",
    "EVENTSHOP_TRACE_OTLP_ENDPOINT": "http://otel-collector:4318",
}


def _secret_ref(key: str) -> dict[str, Any]:
    return {"valueFrom": {"secretKeyRef": {"name": "eventshop-secrets", "key": key}}}


def _labels(service: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": service, "app.kubernetes.io/part-of": "eventshop"}


def _deployment(service: str) -> dict[str, Any]:
    port = PORTS[service]
    env: list[dict[str, Any]] = [
        {"name": "EVENTSHOP_SERVICE", "value": service},
        {"name": "EVENTSHOP_AMQP_URL", **_secret_ref(f"{service}-amqp-url")},
        {"name": "EVENTSHOP_DATABASE_URL", **_secret_ref(f"{service}-database-url")},
        {"name": "EVENTSHOP_INTERNAL_KEY", **_secret_ref("internal-key")},
    ]
    if service == "gateway":
        env.append({"name": "EVENTSHOP_GATEWAY_JWT_SECRET", **_secret_ref("gateway-jwt-secret")})
    probe = {"httpGet": {"port": port}, "periodSeconds": 5, "timeoutSeconds": 3}
    ports = [{"name": "http", "containerPort": port}]
    if METRICS_PORTS[service] != port:
        ports.append({"name": "metrics", "containerPort": METRICS_PORTS[service]})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": service, "namespace": NAMESPACE, "labels": _labels(service)},
        "spec": {
            "replicas": REPLICAS.get(service, 1),
            "selector": {"matchLabels": _labels(service)},
            "template": {
                "metadata": {
                    "labels": _labels(service),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(METRICS_PORTS[service]),
                    },
                },
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "terminationGracePeriodSeconds": 30,
                    "containers": [
                        {
                            "name": service,
                            "image": IMAGE,
                            "ports": ports,
                            "envFrom": [{"configMapRef": {"name": "eventshop-config"}}],
                            "env": env,
                            "livenessProbe": {
                                **probe,
                                "httpGet": {"path": "/health/live", "port": port},
                            },
                            "readinessProbe": {
                                **probe,
                                "httpGet": {"path": "/health/ready", "port": port},
                            },
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "192Mi"},
                                "limits": {"cpu": "1", "memory": "512Mi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def _service(service: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service, "namespace": NAMESPACE, "labels": _labels(service)},
        "spec": {
            "selector": _labels(service),
            "ports": [{"name": "http", "port": PORTS[service], "targetPort": PORTS[service]}],
        },
    }


def _budget(service: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": service, "namespace": NAMESPACE},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _labels(service)}},
    }


def manifests() -> list[dict[str, Any]]:
    secret_keys = ["internal-key", "gateway-jwt-secret", "rabbitmq-admin-password",
                   "postgres-superuser-url", "operator-amqp-password"]  # fmt: skip
    for service in SERVICES:
        secret_keys += [
            f"{service}-amqp-url",
            f"{service}-database-url",
            f"{service}-amqp-password",
            f"{service}-database-password",
        ]
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "eventshop-config", "namespace": NAMESPACE},
            "data": CONFIG,
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "eventshop-secrets",
                "namespace": NAMESPACE,
                "annotations": {"eventshop/note": "placeholders: fill from your secret manager"},
            },
            "type": "Opaque",
            "stringData": dict.fromkeys(secret_keys, "REPLACE-ME"),
        },
        _provision_job(),
    ]
    for service in SERVICES:
        docs += [_deployment(service), _service(service), _budget(service)]
    return docs


def _provision_job() -> dict[str, Any]:
    env = [
        {"name": "EVENTSHOP_RABBITMQ_API", "value": "http://eventshop-rabbitmq:15672"},
        {"name": "RABBITMQ_ADMIN_PASSWORD", **_secret_ref("rabbitmq-admin-password")},
        {"name": "EVENTSHOP_DATABASE_URL", **_secret_ref("postgres-superuser-url")},
        {"name": "EVENTSHOP_OPERATOR_AMQP_PASSWORD", **_secret_ref("operator-amqp-password")},
    ]
    for service in SERVICES:
        upper = service.upper()
        env += [
            {"name": f"EVENTSHOP_{upper}_AMQP_PASSWORD", **_secret_ref(f"{service}-amqp-password")},
            {
                "name": f"EVENTSHOP_{upper}_DATABASE_PASSWORD",
                **_secret_ref(f"{service}-database-password"),
            },
        ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "eventshop-provision", "namespace": NAMESPACE},
        "spec": {
            "backoffLimit": 10,
            "template": {
                "spec": {
                    "restartPolicy": "OnFailure",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [
                        {
                            "name": "provision",
                            "image": IMAGE,
                            "command": ["eventshop", "provision"],
                            "env": env,
                        }
                    ],
                }
            },
        },
    }


def manifests_yaml() -> str:
    header = (
        "# Generated by `eventshop k8s --output deploy/k8s/eventshop.yaml` from the service\n"
        "# registry (src/eventshop/tooling/k8s.py says what is in it); do not edit by hand.\n"
    )
    body: str = yaml.safe_dump_all(manifests(), sort_keys=False, width=100)
    return header + body
