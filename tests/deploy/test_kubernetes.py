"""deploy/kubernetes/ (docs/deployment.md, "Kubernetes"): every manifest valid against the
Kubernetes schemas, offline and strict, and consistent with the rest of the project."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from django.urls import URLPattern, URLResolver

from config import urls
from core.sse import KEEPALIVE_SECONDS

ROOT = Path(__file__).resolve().parents[2]
DIRECTORY = ROOT / "deploy" / "kubernetes"
KUBERNETES = "1.33.0"  # what current managed clusters run; the schema of preStop's sleep action is in it


def documents() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(DIRECTORY.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents() if doc["kind"] == kind]


def deployment(name: str) -> dict[str, Any]:
    [found] = [doc for doc in by_kind("Deployment") if doc["metadata"]["name"] == name]
    return found


def test_the_kustomization_lists_every_manifest():
    listed = yaml.safe_load((DIRECTORY / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(path.name for path in DIRECTORY.glob("*.yaml") if path.name != "kustomization.yaml")


@pytest.mark.parametrize("doc", documents(), ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}")
def test_each_manifest_is_valid_kubernetes(doc):
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)  # raises with the offending field


def test_a_web_pod_is_given_the_time_to_drain():
    spec = deployment("realtime-rooms-web")["spec"]["template"]["spec"]
    [container] = spec["containers"]
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(by_kind("ConfigMap")[0]["data"]["DRAIN_SECONDS"])
    assert pause + drain + 5 <= spec["terminationGracePeriodSeconds"], "preStop, the drain and the exit fit the grace period"


def test_probes_readiness_on_healthz_and_liveness_not_on_redis():
    [container] = deployment("realtime-rooms-web")["spec"]["template"]["spec"]["containers"]
    readiness = container["readinessProbe"]["httpGet"]["path"].lstrip("/")
    routes = [route for route in urls.urlpatterns if isinstance(route, URLPattern | URLResolver)]
    assert readiness in {str(route.pattern) for route in routes}, "the readiness path is a route"
    assert "httpGet" not in container["livenessProbe"], "a Redis blip (healthz says 503) must not restart the pods"


def test_commands_and_image_are_docker_composes():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    dockerfile = (ROOT / "Dockerfile").read_text()
    [web] = deployment("realtime-rooms-web")["spec"]["template"]["spec"]["containers"]
    assert f'CMD ["{web["command"][0]}"]' in dockerfile, "the web pods run the image's own command"
    [worker] = deployment("realtime-rooms-taskworker")["spec"]["template"]["spec"]["containers"]
    assert worker["command"] == compose["services"]["taskworker"]["command"]
    [migrate] = by_kind("Job")[0]["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == compose["services"]["migrate"]["command"]
    images = {
        c["image"]
        for doc in documents()
        if "template" in doc.get("spec", {})
        for c in doc["spec"]["template"]["spec"]["containers"]
    }
    assert len(images) == 1, f"one image for every process: {images}"


def test_every_variable_set_is_one_the_project_reads():
    read = set(re.findall(r'env_\w+\("([A-Z0-9_]+)"', (ROOT / "config" / "settings.py").read_text()))
    read |= set(re.findall(r"\$\{([A-Z0-9_]+)", (ROOT / "deploy" / "web-server.sh").read_text()))
    for doc in by_kind("ConfigMap") + by_kind("Secret"):
        names = set(doc.get("data", {})) | set(doc.get("stringData", {}))
        assert names <= read, f"{doc['kind']} sets what nothing reads: {sorted(names - read)}"
    assert {"DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL"} <= set(by_kind("Secret")[0]["stringData"])


def test_the_ingress_keeps_sockets_and_streams_open_and_unbuffered():
    annotations = by_kind("Ingress")[0]["metadata"]["annotations"]
    heartbeat = 20.0  # WS_HEARTBEAT_SECONDS' default
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        assert float(annotations[f"nginx.ingress.kubernetes.io/{name}"]) > 3 * max(heartbeat, KEEPALIVE_SECONDS)
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert not any("affinity" in key for key in annotations), "no sticky sessions: any pod takes any connection"
