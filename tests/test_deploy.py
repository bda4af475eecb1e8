"""Deployment files, checked offline (CI has no Docker engine and no cluster):

- docker-compose.yml against the Compose Specification schema that check-jsonschema vendors;
- every command a compose service or a Kubernetes container runs parses in the real CLI;
- the Kubernetes overlays, built (a small kustomize: resources, namespace, images, patches)
  and validated with kubernetes-validate's offline schemas; KEDA objects against their spec;
- the rules that tie them together: replicas capped at partitions, one beat, secrets as files,
  probes on /healthz and /readyz, only the gateway open to outside traffic;
- the alert rules with promtool check rules and promtool test rules.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import jsonschema
import kubernetes_validate
import pytest
import typer
import yaml

from ragstream.cli import app
from ragstream.config import Settings
from workers import REGISTRY, load

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "infra/k8s"
K8S_VERSION = "1.31.0"
try:  # recent typer vendors its own click
    from typer._click import exceptions as _typer_click

    USAGE_ERRORS: tuple[type[Exception], ...] = (click.UsageError, _typer_click.UsageError)
except ImportError:
    USAGE_ERRORS = (click.UsageError,)
# workers whose code lands with another issue: deployed here, not yet in workers.REGISTRY
PENDING_WORKERS: dict[str, tuple[str, ...]] = {}
# settings whose names match the secret pattern below but are not secrets
NOT_SECRETS = {"RAGSTREAM_TRITON_AUTH_HEADER_NAME"}  # the header's name; its value is a secret
MODEL_REPOSITORY = ROOT / "infra/triton/model_repository"
# the reindex worker of each store beyond the embedded index: a compose profile, and a folder
# infra/k8s/stores/<store> that an overlay adds (overlays/production-stores adds both)
STORE_WORKERS = {"reindex_pgvector": "pgvector", "reindex_qdrant": "qdrant"}
KAFKA_WORKERS = sorted(set(REGISTRY) - {"noop"} - set(STORE_WORKERS) | set(PENDING_WORKERS))
OVERLAY_WORKERS = {"dev": KAFKA_WORKERS, "production": KAFKA_WORKERS,
                   "production-stores": sorted(KAFKA_WORKERS + list(STORE_WORKERS))}


def consumes(worker: str) -> tuple[str, ...]:
    return PENDING_WORKERS.get(worker) or load(worker).consumes


def parse_cli(args: list[str]) -> tuple[object, dict]:
    """Parse ``ragstream ARGS`` as the real CLI would, down to the leaf command, running nothing.
    Unknown commands, unknown options and missing arguments raise click.UsageError."""
    command = typer.main.get_command(app)
    ctx = command.make_context("ragstream", list(args))
    while hasattr(command, "resolve_command"):  # a group: descend to the subcommand
        rest = [*ctx._protected_args, *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    return command, ctx.params


def check_command(args: list[str]) -> None:
    command, params = parse_cli(args)
    if command.name == "worker":
        name = params["name"]
        assert name in REGISTRY or name in PENDING_WORKERS, f"no worker {name!r}"


def test_the_cli_check_rejects_what_the_cli_would():
    check_command(["worker", "echo"])
    check_command(["gateway", "--host", "0.0.0.0", "--port", "8080"])
    for bad in (["wrker", "echo"], ["gateway", "--hots", "x"], ["worker"],
                ["celery-worker", "--concurrency", "many"], ["worker", "nosuch"]):
        with pytest.raises((*USAGE_ERRORS, AssertionError)):
            check_command(bad)


# the image --------------------------------------------------------------------------------------


def _stages() -> dict[str, list[str]]:
    """The Dockerfile's stages by name, each a list of its instructions (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    stages: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            current = line.split()[-1] if " AS " in line.upper() else f"stage{len(stages)}"
            stages[current] = [line]
        elif current is not None:
            stages[current].append(line)
    return stages


def test_image_has_cpu_and_gpu_targets_pinned_and_non_root():
    stages = _stages()
    assert list(stages)[-1] == "cpu", "a plain `docker build .` must give the CPU image"
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", (ROOT / "Dockerfile").read_text(), re.M))
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    assert args["TORCH_VERSION"] in (ROOT / "pyproject.toml").read_text()
    for target, index in (("cpu", "whl/cpu"), ("gpu", "whl/${TORCH_CUDA}")):
        steps = stages[target]
        assert steps[-1] == "USER 10001", f"{target} must run as the non-root user"
        [install] = [s for s in steps if s.startswith("RUN ")]
        wheels = re.search(r"from=([\w-]+)", install).group(1)
        assert index in " ".join(stages[wheels]), f"{target} takes torch from {index}"
        assert stages[target][0].split()[1] == "runtime"
    assert any("useradd" in s and "10001" in s for s in stages["runtime"])
    assert compose()["x-ragstream"]["build"]["target"].endswith(":-cpu}")


# docker compose ---------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_is_valid_against_the_compose_specification():
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_every_worker_once_one_beat_and_commands_the_cli_has():
    services = compose()["services"]
    ours = {name: s for name, s in services.items() if str(s.get("image", "")).startswith("ragstream:")}
    for name, service in ours.items():
        check_command(service["command"])
    workers = {s["command"][1] for s in ours.values() if s["command"][0] == "worker"}
    assert workers == set(KAFKA_WORKERS) | set(STORE_WORKERS)
    for name in workers:  # each worker is its own service, named after it
        assert services[name]["command"] == ["worker", name]
    for name, store in STORE_WORKERS.items():  # a store's worker and server come with its profile
        assert services[name]["profiles"] == [store] == services[store]["profiles"]
        assert services[name]["depends_on"][store]["condition"] == "service_healthy"
        assert name in services["topics"]["command"][-1].split(",")
    beats = [n for n, s in ours.items() if s["command"][0] == "beat"]
    assert beats == ["beat"] and services["beat"].get("deploy", {}).get("replicas", 1) == 1
    for infra in ("kafka", "topics", "redis", "neo4j", "rabbitmq", "triton", "prometheus",
                  "grafana", "gateway", "celery-worker"):
        assert infra in services, infra
    assert services["topics"]["command"][:2] == ["topics", "--create"]
    assert "healthcheck" in services["neo4j"]
    # only the gateway is published beyond loopback
    published = {n for n, s in services.items() for p in s.get("ports", [])
                 if not str(p).startswith("127.0.0.1:")}
    assert published == {"gateway"}


def test_compose_secrets_are_files_never_literals():
    doc = compose()
    defined = doc["secrets"]
    for name, secret in defined.items():
        assert set(secret) == {"file"} and secret["file"].startswith("infra/secrets/"), name
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|_KEYS?$|REDIS_URL|RABBITMQ_URL|AUTH", re.I)
    for name, service in doc["services"].items():
        used = [s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])]
        assert set(used) <= set(defined), name
        for key, value in (service.get("environment") or {}).items():
            if secretish.search(key) and key not in NOT_SECRETS:
                assert key.endswith("_FILE") or key.endswith("__FILE"), f"{name}: {key}"
                assert str(value).startswith("/run/secrets/"), f"{name}: {key}={value}"
                assert Path(value).name in used, f"{name}: {key} names a secret it does not mount"


def test_every_secret_file_setting_names_a_real_setting():
    doc = compose()
    fields = set(Settings.variables())
    for service in doc["services"].values():
        for key in service.get("environment") or {}:
            if key.startswith("RAGSTREAM_") and key.endswith("_FILE"):
                field = key.removeprefix("RAGSTREAM_").removesuffix("_FILE").lower()
                assert field in fields or field == "api_keys", key


def test_triton_serves_the_model_repository_with_its_token_from_the_secret():
    services = compose()["services"]
    triton = services["triton"]
    assert "nvcr.io/nvidia/tritonserver:" in triton["build"]["dockerfile_inline"]
    assert "tokenizers" in triton["build"]["dockerfile_inline"]  # the Python backend models
    [script] = triton["command"]
    args = script.split()
    assert {"--model-repository=/models", "--strict-model-config=true", "--metrics-port=8002",
            "--allow-metrics=true"} <= set(args)
    assert "TOKEN=$$(cat /run/secrets/triton_token)" in script  # the secret, never a literal
    for flag in ("--grpc-restricted-protocol", "--http-restricted-api"):
        [value] = [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]
        protocols, _, token = value.partition(":")
        assert token == "triton-access-token=$$TOKEN"
        assert {"model-repository", "statistics"} <= set(protocols.split(","))
    assert "triton_token" in triton["secrets"]
    [volume] = triton["volumes"]
    source, target = volume.split(":", 1)
    assert target == "/models:ro"
    repository = ROOT / source
    assert repository.resolve() == MODEL_REPOSITORY.resolve()
    models = [d for d in repository.iterdir() if d.is_dir()]
    assert models and all((d / "config.pbtxt").is_file() for d in models)
    assert "8000/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    [gpu] = triton["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["capabilities"] == ["gpu"]


def test_the_batch_inference_worker_reaches_triton_with_the_token():
    from ragstream.triton.server import token_header

    services = compose()["services"]
    env = services["batch_inference"]["environment"]
    assert services["batch_inference"]["depends_on"]["triton"]["condition"] == "service_healthy"
    assert env["RAGSTREAM_TRITON_URL"] == "triton:8001"  # gRPC
    assert env["RAGSTREAM_TRITON_PROTOCOL"] == "grpc"
    assert env["RAGSTREAM_TRITON_AUTH_HEADER_NAME"] == token_header("grpc")
    assert env["RAGSTREAM_TRITON_AUTH_HEADER_FILE"] == "/run/secrets/triton_token"
    assert "triton_token" in services["batch_inference"]["secrets"]
    # the runtime's environment is kept (the service's own map replaces the anchor's)
    assert env["RAGSTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"


def _triton_settings(env: dict) -> list[str]:
    return [k for k in env if k.startswith(("RAGSTREAM_TRITON_", "RAGSTREAM_INFERENCE_"))]


def test_triton_and_inference_settings_are_real_settings():
    """A misspelled RAGSTREAM_ variable is silently ignored: check the names against Settings."""
    fields = set(Settings.variables())
    named = [k for s in compose()["services"].values() for k in _triton_settings(
        s.get("environment") or {})]
    named += _triton_settings(_load_all(K8S / "base/configmap.yaml")[0]["data"])
    assert "RAGSTREAM_INFERENCE_MAX_BATCH_SIZE" in named
    for key in named:
        assert key.removeprefix("RAGSTREAM_").removesuffix("_FILE").lower() in fields, key


# Kubernetes -------------------------------------------------------------------------------------


def _load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _merge(base, patch):
    """A strategic merge patch, as far as the overlays use it: maps merge, the rest replaces."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(patch)


def build(directory: Path) -> list[dict]:
    """``kustomize build`` for the features these overlays use; anything else fails loudly."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
    assert set(k) <= known, f"{directory}: kustomization uses {set(k) - known}"
    objects: list[dict] = []
    for resource in k.get("resources", []):
        path = directory / resource
        objects += build(path) if path.is_dir() else _load_all(path)
    for patch in k.get("patches", []):
        target = patch["target"]
        body = yaml.safe_load(patch["patch"])
        matched = [o for o in objects if o["kind"] == target["kind"]
                   and target.get("name", o["metadata"]["name"]) == o["metadata"]["name"]]
        assert matched, f"{directory}: patch {target} matches nothing"
        for o in matched:
            body = {**body, "metadata": {**body.get("metadata", {}), "name": o["metadata"]["name"]}}
            objects[objects.index(o)] = _merge(o, body)
    for image in k.get("images", []):
        for o in objects:
            for c in _containers(o):
                name, _, tag = c["image"].partition(":")
                if name == image["name"]:
                    c["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"
    if "namespace" in k:
        for o in objects:
            o["metadata"]["namespace"] = k["namespace"]
    return objects


def _pod_spec(o: dict) -> dict | None:
    if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return o["spec"]["template"]["spec"]
    return None


def _containers(o: dict) -> list[dict]:
    spec = _pod_spec(o)
    return spec["containers"] if spec else []


# What KEDA's ScaledObject CRD requires of the fields used here (keda.sh/v1alpha1).
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "spec": {
            "type": "object", "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"],
                                   "properties": {"name": {"type": "string"}}},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer"}, "cooldownPeriod": {"type": "integer"},
                "idleReplicaCount": {"type": "integer"}, "fallback": {"type": "object"},
                "advanced": {"type": "object"},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"],
                    "properties": {"type": {"type": "string"}, "metadata": {
                        "type": "object", "additionalProperties": {"type": "string"}}}}},
            },
        },
    },
}
# ... and of its TriggerAuthentication, which the Kafka triggers log in with.
TRIGGER_AUTHENTICATION = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "spec": {"type": "object", "additionalProperties": False, "properties": {
            "secretTargetRef": {"type": "array", "items": {
                "type": "object", "required": ["parameter", "name", "key"],
                "additionalProperties": False,
                "properties": {k: {"type": "string"} for k in ("parameter", "name", "key")}}}}},
    },
}
KEDA_SCHEMAS = {"ScaledObject": SCALED_OBJECT, "TriggerAuthentication": TRIGGER_AUTHENTICATION}
KAFKA_TRIGGER_KEYS = {"bootstrapServers", "consumerGroup", "topic", "lagThreshold",
                      "activationLagThreshold", "offsetResetPolicy", "allowIdleConsumers",
                      "scaleToZeroOnInvalidOffset", "excludePersistentLag",
                      "limitToPartitionsWithLag", "version", "partitionLimitation", "sasl", "tls"}


@pytest.fixture(scope="module", params=list(OVERLAY_WORKERS))
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, build(K8S / "overlays" / request.param)


def test_every_manifest_is_valid_against_the_kubernetes_schemas(overlay):
    name, objects = overlay
    for o in objects:
        if o["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(o, KEDA_SCHEMAS[o["kind"]])
            continue
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)
    assert all(o["metadata"].get("namespace") == ("ragstream" if name.startswith("production")
                                                  else f"ragstream-{name}") for o in objects)


def _by(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_each_kafka_worker_scales_on_its_groups_lag_up_to_the_partition_count(overlay):
    name, objects = overlay
    config = _by(objects, "ConfigMap")["ragstream-config"]["data"]
    partitions = int(config["RAGSTREAM_TOPIC_PARTITIONS"])
    settings = Settings(group_prefix=config["RAGSTREAM_GROUP_PREFIX"])
    deployments, scaled, pdbs = (_by(objects, k) for k in
                                 ("Deployment", "ScaledObject", "PodDisruptionBudget"))
    for worker in OVERLAY_WORKERS[name]:
        app_name = worker.replace("_", "-")
        deployment = deployments[app_name]
        [container] = _containers(deployment)
        assert container["args"] == ["worker", worker]
        so = scaled[app_name]
        assert so["spec"]["scaleTargetRef"]["name"] == app_name
        assert so["spec"]["maxReplicaCount"] == partitions, f"{worker}: replicas past partitions idle"
        assert 1 <= so["spec"]["minReplicaCount"] <= partitions
        [trigger] = so["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert set(meta) <= KAFKA_TRIGGER_KEYS, set(meta) - KAFKA_TRIGGER_KEYS
        assert meta["consumerGroup"] == settings.group_id(worker)
        assert (meta["topic"],) == consumes(worker)
        assert meta["bootstrapServers"] == config["RAGSTREAM_KAFKA_BOOTSTRAP"]
        # the scaler logs in as the workers do
        assert (meta["sasl"], meta["tls"]) == ("scram_sha512", "enable")
        assert trigger["authenticationRef"]["name"] in _by(objects, "TriggerAuthentication")
        assert meta.get("allowIdleConsumers", "false") == "false"
        selector = pdbs[app_name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_workers_probe_health_and_readiness_and_have_time_to_drain(overlay):
    _, objects = overlay
    config = _by(objects, "ConfigMap")["ragstream-config"]["data"]
    drain = float(config["RAGSTREAM_DRAIN_TIMEOUT_S"])
    for name, d in _by(objects, "Deployment").items():
        spec = _pod_spec(d)
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in spec["containers"]:
            check_command(c["args"])
            assert c["resources"]["requests"] and c["resources"]["limits"], name
            assert c["image"].startswith("ghcr.io/ragstream/ragstream:"), c["image"]
            assert {"name": "ragstream-config"} in [e["configMapRef"] for e in c["envFrom"]]
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker":
            [c] = spec["containers"]
            port = next(p for p in c["ports"] if p["name"] == "metrics")["containerPort"]
            assert port == int(config["RAGSTREAM_METRICS_PORT"])
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert "preStop" in c["lifecycle"]
            assert spec["terminationGracePeriodSeconds"] > drain + 10, name
            assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    gateway = _by(objects, "Deployment")["gateway"]
    [c] = _containers(gateway)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_pods_carry_what_the_kubernetes_scrape_config_relabels(overlay):
    """infra/prometheus/kubernetes.yml keeps pods by component and port name and takes the
    worker label from ragstream.io/worker: the same `worker` values the runtime's metrics use."""
    name, objects = overlay
    scrape = yaml.safe_load((ROOT / "infra/prometheus/kubernetes.yml").read_text())
    jobs = {j["job_name"]: j for j in scrape["scrape_configs"]}
    assert set(jobs) == {"ragstream-workers", "ragstream-gateway", "triton"}
    # Triton runs apart (namespace triton, as RAGSTREAM_TRITON_URL says); its metrics port 8002
    config = _by(objects, "ConfigMap")["ragstream-config"]["data"]
    namespace = config["RAGSTREAM_TRITON_URL"].split(".")[1]
    assert jobs["triton"]["kubernetes_sd_configs"][0]["namespaces"]["names"] == [namespace]
    assert any(r.get("regex") == "8002" and r.get("action") == "keep"
               for r in jobs["triton"]["relabel_configs"])
    wanted = {"ragstream-workers": ("worker", "metrics"), "ragstream-gateway": ("gateway", "http")}
    seen = set()
    for d in _by(objects, "Deployment").values():
        labels = d["spec"]["template"]["metadata"]["labels"]
        for job, (component, port_name) in wanted.items():
            if labels.get("app.kubernetes.io/component") != component:
                continue
            [c] = _containers(d)
            assert port_name in {p["name"] for p in c.get("ports", [])}
            worker = labels["ragstream.io/worker"]
            assert worker == (c["args"][1] if component == "worker" else "gateway")
            relabels = {r.get("target_label") or r["action"]: r for r in jobs[job]["relabel_configs"]}
            assert relabels["worker"]["source_labels"] == [
                "__meta_kubernetes_pod_label_ragstream_io_worker"]
            seen.add(worker)
    assert seen == set(OVERLAY_WORKERS[name]) | {"gateway"}


def test_secrets_are_mounted_files_named_by_the_config(overlay):
    _, objects = overlay
    assert not _by(objects, "Secret"), "secret values never live in the repo"
    config = _by(objects, "ConfigMap")["ragstream-config"]["data"]
    fields = set(Settings.variables())
    for key, value in config.items():
        if key.endswith("_FILE"):
            assert key.removeprefix("RAGSTREAM_").removesuffix("_FILE").lower() in fields, key
            assert value.startswith("/run/secrets/ragstream/")
        else:
            assert not re.search(r"PASSWORD|SECRET|TOKEN", key), f"{key} must be a *_FILE"
    for name, d in _by(objects, "Deployment").items():
        volumes = {v["name"]: v for v in _pod_spec(d)["volumes"]}

        assert volumes["secrets"]["secret"]["secretName"] == "ragstream-secrets", name
        for c in _containers(d):
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            assert mounts["/run/secrets/ragstream"]["readOnly"] is True


def test_kafka_is_authenticated_and_encrypted_wherever_its_password_is_loaded(overlay):
    _, objects = overlay
    config = _by(objects, "ConfigMap")["ragstream-config"]["data"]
    settings = Settings.from_env({k: v for k, v in config.items() if not k.endswith("_FILE")})
    assert {"RAGSTREAM_KAFKA_USERNAME_FILE", "RAGSTREAM_KAFKA_PASSWORD_FILE"} <= set(config)
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    [auth] = _by(objects, "TriggerAuthentication").values()
    assert {(r["parameter"], r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]} == {
        ("username", "ragstream-secrets", "kafka_username"),
        ("password", "ragstream-secrets", "kafka_password")}


def test_gateway_reads_the_snapshots_the_celery_worker_writes(overlay):
    """Compaction trims the index log behind each snapshot: a reader that cannot see the
    snapshots would miss chunks. Both mount the one shared volume at RAGSTREAM_DATA_DIR."""
    _, objects = overlay
    deployments = _by(objects, "Deployment")
    [pvc] = _by(objects, "PersistentVolumeClaim").values()
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    for name in ("gateway", "celery-worker"):
        spec = _pod_spec(deployments[name])
        [data] = [v for v in spec["volumes"] if v["name"] == "data"]
        assert data["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"], name
        [mount] = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "data"]
        assert mount["mountPath"] == "/home/ragstream/data"  # RAGSTREAM_DATA_DIR in the image


def test_one_beat_only_the_gateway_takes_outside_traffic(overlay):
    _, objects = overlay
    deployments = _by(objects, "Deployment")
    beats = [n for n, d in deployments.items() if _containers(d)[0]["args"] == ["beat"]]
    assert beats == ["beat"]
    assert deployments["beat"]["spec"]["replicas"] == 1
    assert deployments["beat"]["spec"]["strategy"]["type"] == "Recreate"
    assert "beat" not in _by(objects, "ScaledObject")
    assert not any(h["spec"]["scaleTargetRef"]["name"] == "beat"
                   for h in _by(objects, "HorizontalPodAutoscaler").values())

    policies = _by(objects, "NetworkPolicy").values()
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]]
    assert deny and "Ingress" in deny[0]["spec"]["policyTypes"], "a default-deny ingress policy"
    for p in policies:
        for rule in p["spec"].get("ingress", []):
            if "from" not in rule:  # open to any source: only the gateway may be selected
                assert p["spec"]["podSelector"] == {
                    "matchLabels": {"app.kubernetes.io/name": "gateway"}}, p["metadata"]["name"]
    services = _by(objects, "Service")
    assert set(services) == {"gateway"}
    assert services["gateway"]["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_the_build_matches_what_each_overlay_promises(overlay):
    name, objects = overlay
    scaled = _by(objects, "ScaledObject")
    expected = 2 if name == "dev" else 12
    assert {so["spec"]["maxReplicaCount"] for so in scaled.values()} == {expected}
    tags = {c["image"].rsplit(":", 1)[1] for o in objects for c in _containers(o)}
    assert tags == {"dev" if name == "dev" else "0.1.0"}


# Prometheus rules ---------------------------------------------------------------------------------


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: .ci/run installs Debian's prometheus package"
    return path


def test_alert_rules_pass_promtool_check_and_unit_tests():
    rules = ROOT / "infra/prometheus"
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "tests/alerts_test.yml"],
                 ["check", "config", "prometheus.yml"]):
        result = subprocess.run([_promtool(), *args], cwd=rules, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


# the Qdrant server ----------------------------------------------------------------------------


QDRANT_K8S = K8S / "qdrant"
QDRANT_IMAGE = re.compile(r"qdrant/qdrant:(v\d+\.\d+\.\d+)(-unprivileged)?")


def _fake_qdrant(tmp_path: Path) -> Path:
    """A stand-in ``./qdrant`` that prints its arguments and the API key it was started with."""
    fake = tmp_path / "qdrant"
    fake.write_text('#!/bin/sh\necho "key=$QDRANT__SERVICE__API_KEY args=$*"\n')
    fake.chmod(0o755)
    (tmp_path / "api_key").write_text("the-key\n")
    return fake


def test_compose_runs_a_pinned_qdrant_keyed_from_its_secret_with_a_volume(tmp_path):
    doc = compose()
    services = doc["services"]
    qdrant = services["qdrant"]
    assert QDRANT_IMAGE.fullmatch(qdrant["image"]) and not qdrant["image"].endswith("latest")
    assert qdrant["secrets"] == ["qdrant_api_key"]
    [volume] = qdrant["volumes"]
    name, target = volume.split(":")
    assert target == "/qdrant/storage" and name in doc["volumes"]
    assert not qdrant.get("ports"), "Qdrant is for the compose network only"
    # the start command, run for real with a stand-in binary: the key comes from the file
    [script] = qdrant["command"]
    _fake_qdrant(tmp_path)
    script = script.replace("$$", "$").replace("/run/secrets/qdrant_api_key",
                                               str(tmp_path / "api_key"))
    out = subprocess.run([*qdrant["entrypoint"], script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.strip() == "key=the-key args=", out.stderr
    # the Qdrant worker is pointed at it, with the key's file mounted
    env = services["reindex_qdrant"]["environment"]
    settings = Settings.from_env({"RAGSTREAM_STORE_QDRANT_URL": env["RAGSTREAM_STORE_QDRANT_URL"]})
    assert settings.store.qdrant_url == "http://qdrant:6333"
    assert env["RAGSTREAM_STORE_QDRANT_API_KEY_FILE"] == "/run/secrets/qdrant_api_key"
    assert services["reindex_qdrant"]["depends_on"]["qdrant"]["condition"] == "service_healthy"
    assert "reindex_qdrant" in services["topics"]["command"][-1].split(",")


def test_the_compose_qdrant_healthcheck_asks_readyz(tmp_path):
    """The image has no curl or wget; the bash check is run here against a small HTTP server."""
    import http.server
    import threading

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            self.send_response(200 if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    test = compose()["services"]["qdrant"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"]
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        check = test[3].replace("6333", str(port))
        assert subprocess.run(["bash", "-c", check], timeout=10).returncode == 0
        wrong = check.replace("/readyz", "/nothing")
        assert subprocess.run(["bash", "-c", wrong], timeout=10).returncode != 0
        server.shutdown()


def test_the_k8s_qdrant_cluster_is_valid_pinned_probed_and_keyed_from_a_file(tmp_path):
    objects = build(QDRANT_K8S)
    for o in objects:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)
        assert o["metadata"]["namespace"] == "qdrant"
    sts = _by(objects, "StatefulSet")["qdrant"]
    spec = _pod_spec(sts)
    [c] = spec["containers"]
    match = QDRANT_IMAGE.fullmatch(c["image"])
    assert match and match.group(1) == QDRANT_IMAGE.fullmatch(
        compose()["services"]["qdrant"]["image"]).group(1), "compose and k8s run one version"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 6333, "grpc": 6334, "p2p": 6335}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert not any("KEY" in e["name"] for e in c.get("env", [])), "the key only as a file"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/run/secrets/qdrant"]["readOnly"] is True
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert mounts["/qdrant/storage"]["name"] == claim["metadata"]["name"]
    # the start script, run for real: qdrant-0 starts the cluster, the others join it
    [script] = c["args"]
    _fake_qdrant(tmp_path)
    script = script.replace("/run/secrets/qdrant/api_key", str(tmp_path / "api_key"))
    headless = _by(objects, "Service")[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    for host, expected in (
            ("qdrant-0", "--uri http://qdrant-0.qdrant-headless:6335"),
            ("qdrant-2", "--bootstrap http://qdrant-0.qdrant-headless:6335 "
                         "--uri http://qdrant-2.qdrant-headless:6335")):
        out = subprocess.run([*c["command"], script], cwd=tmp_path, capture_output=True,
                             text=True, timeout=30,
                             env={"HOSTNAME": host, "PATH": "/usr/bin:/bin"})
        assert out.stdout.strip() == f"key=the-key args={expected}", out.stderr
    # ragstream's ConfigMap names this Service
    service = _by(objects, "Service")["qdrant"]
    config = _by(build(K8S / "overlays/production-stores"), "ConfigMap")["ragstream-config"]["data"]
    http_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
    assert config["RAGSTREAM_STORE_QDRANT_URL"] == f"http://qdrant.qdrant.svc:{http_port}"
    assert config["RAGSTREAM_STORE_QDRANT_API_KEY_FILE"] == "/run/secrets/ragstream/qdrant_api_key"
    [pdb] = _by(objects, "PodDisruptionBudget").values()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= \
        sts["spec"]["template"]["metadata"]["labels"].items()
    [policy] = _by(objects, "NetworkPolicy").values()
    namespaces = {v for rule in policy["spec"]["ingress"] for f in rule["from"]
                  for e in f.get("namespaceSelector", {}).get("matchExpressions", [])
                  for v in e["values"]}
    assert {"ragstream", "ragstream-dev"} <= namespaces
