"""The Helm chart helm/walproxy: lint, render, validate offline, and check what is rendered.

helm is built from the Go module proxy by ``make helm`` (``make test`` does it and passes its
path as WALPROXY_HELM). Rendered manifests are validated against the Kubernetes OpenAPI
schemas bundled in kubernetes-validate, for the oldest Kubernetes the chart supports and the
newest the package knows. The chart's shell scripts are run here, with stand-ins for the
kafka and walproxy binaries, to check what a pod would really compute (node ids, advertised
listeners, the rebuild condition).
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from proxy import config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "walproxy"
VALUES = sorted((ROOT / "tests" / "helm").glob("values-*.yaml"))
#: Custom resources the Kubernetes schemas do not know; checked by hand below.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
NAMESPACE = "streaming"


def helm_binary() -> str:
    path = os.environ.get("WALPROXY_HELM") or next(
        iter(sorted((ROOT / ".cache").glob("helm-*/helm"), reverse=True)), None
    )
    if not path or not Path(path).exists():
        pytest.fail("no helm binary: run `make helm` (make test builds it)")
    return str(path)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False
    )


@cache
def render(values: Path | None, *sets: str) -> list[dict[str, Any]]:
    args = ["template", "kafka", str(CHART), "-n", NAMESPACE]
    if values is not None:
        args += ["-f", str(values)]
    for s in sets:
        args += ["--set", s]
    out = helm(*args)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def values_of(path: Path) -> dict[str, Any]:
    """The chart's defaults merged with a values file (what the templates saw)."""

    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v) if isinstance(v, dict) and k in base else v
        return out

    return merge(
        yaml.safe_load((CHART / "values.yaml").read_text()), yaml.safe_load(path.read_text())
    )


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    return doc


def container(pod: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    [c] = [c for c in pod.get("initContainers" if init else "containers", []) if c["name"] == name]
    return c


def mounts(c: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}


def literal_env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def properties(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )


values_files = pytest.mark.parametrize("values", VALUES, ids=lambda p: p.stem)


# -- lint and schemas ---------------------------------------------------------------------
@values_files
def test_lint_strict(values: Path) -> None:
    out = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


@values_files
@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_manifests_are_valid_kubernetes_objects(values: Path, kube: str) -> None:
    docs = render(values)
    checked = set()
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, kube, strict=True)  # raises on any schema error
        checked.add(doc["kind"])
    assert {"ConfigMap", "Service", "StatefulSet"} <= checked


def test_the_offline_validation_rejects_a_broken_manifest() -> None:
    """The check above is not vacuous: a misspelt field or a wrong type is an error."""
    sts = one(render(VALUES[0]), "StatefulSet", "-broker")
    broken = yaml.safe_load(yaml.safe_dump(sts))
    broken["spec"]["template"]["spec"]["containers"][0]["volumeMountz"] = []
    with pytest.raises(kubernetes_validate.ValidationError, match="volumeMountz"):
        kubernetes_validate.validate(broken, KUBE_VERSIONS[0], strict=True)
    broken = yaml.safe_load(yaml.safe_dump(sts))
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError, match="'three' is not of type"):
        kubernetes_validate.validate(broken, KUBE_VERSIONS[0], strict=True)


def test_servicemonitor_scrapes_the_sidecars_metrics_port() -> None:
    docs = render(ROOT / "tests" / "helm" / "values-irsa.yaml")
    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    selected = [
        s
        for s in docs
        if s["kind"] == "Service"
        and sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        and any(p["name"] == endpoint["port"] for p in s["spec"]["ports"])
    ]
    assert [s["metadata"]["name"] for s in selected] == ["kafka-walproxy-broker-headless"]
    assert not any(d["kind"] == "ServiceMonitor" for d in render(VALUES[-1]))


def test_prometheusrule_holds_the_unit_tested_alert_rules() -> None:
    """The chart's PrometheusRule is deploy/prometheus/walproxy-rules.yml (promtool-tested in
    tests/unit/test_alert_rules.py), labelled like the ServiceMonitor so one Prometheus
    selects both; off with the ServiceMonitor or with serviceMonitor.alertRules=false."""
    values = ROOT / "tests" / "helm" / "values-irsa.yaml"
    docs = render(values)
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    rules_file = ROOT / "deploy" / "prometheus" / "walproxy-rules.yml"
    assert rule["spec"]["groups"] == yaml.safe_load(rules_file.read_text())["groups"]
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert {"WalproxyWalFenced", "WalproxyBrokerUnreachable"} <= set(alerts)
    # The alert templates reach Prometheus as written (helm does not expand them).
    summary = rule["spec"]["groups"][0]["rules"][0]["annotations"]["summary"]
    assert "{{ $labels.instance }}" in summary
    assert not any(d["kind"] == "PrometheusRule" for d in render(VALUES[-1]))
    off = render(values, "serviceMonitor.alertRules=false")
    assert any(d["kind"] == "ServiceMonitor" for d in off)
    assert not any(d["kind"] == "PrometheusRule" for d in off)


BAD_VALUES = [
    (("walproxy.port=abc",), "at '/walproxy/port': got string, want integer"),
    (("walproxy.port=70000",), "at '/walproxy/port': maximum"),
    (("kafka.broker.replicas=0",), "at '/kafka/broker/replicas': minimum"),
    (("kafka.controller.replicas=2",), "at '/kafka/controller/replicas'"),
    (("clusterId=short",), "at '/clusterId': 'short' does not match pattern"),
    (("walproxy.wal.size=10GB",), "at '/walproxy/wal/size'"),
    (("walproxy.wal.directIo=yes",), "at '/walproxy/wal/directIo'"),
    (("walproxy.wal.segmentBytes=1000000",), "at '/walproxy/wal/segmentBytes'"),
    (("walproxy.offload.target=bucket",), "at '/walproxy/offload/target'"),
    (("walproxy.log.format=xml",), "at '/walproxy/log/format'"),
    (("walprxy.port=1",), "additional properties 'walprxy' not allowed"),
    (("walproxy.wal.sise=1Gi",), "additional properties 'sise' not allowed"),
    (("serviceMonitor.interval=often",), "at '/serviceMonitor/interval'"),
    (
        ("kafka.broker.terminationGracePeriodSeconds=40",),
        "kafka.broker.terminationGracePeriodSeconds: must be at least",
    ),
    (
        ("walproxy.offload.enabled=false",),
        "walproxy.rebuild.enabled: needs walproxy.offload.enabled",
    ),
]


@pytest.mark.parametrize(("sets", "message"), BAD_VALUES, ids=[s[0][0] for s in BAD_VALUES])
def test_a_wrong_value_fails_at_install_time(sets: tuple[str, ...], message: str) -> None:
    args = ["template", "kafka", str(CHART), "-f", str(VALUES[0])]
    for s in sets:
        args += ["--set", s]
    out = helm(*args)
    assert out.returncode != 0, f"{sets} rendered"
    assert message in out.stderr, out.stderr


def test_cluster_id_is_required() -> None:
    out = helm("template", "kafka", str(CHART), "--set", "walproxy.offload.target=s3://b/p")
    assert out.returncode != 0
    assert "at '/clusterId': '' does not match pattern" in out.stderr


# -- what is rendered -------------------------------------------------------------------
def broker_pod(values: Path) -> dict[str, Any]:
    return one(render(values), "StatefulSet", "-broker")["spec"]["template"]["spec"]


def configmap(values: Path) -> dict[str, str]:
    return one(render(values), "ConfigMap")["data"]


def run_script(
    tmp_path: Path, values: Path, script: str, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """Run one of the chart's scripts as the pod would (same env), from a scratch dir."""
    scripts = tmp_path / "scripts"
    scripts.mkdir(exist_ok=True)
    for name, text in configmap(values).items():
        if name.endswith(".sh"):
            (scripts / name).write_text(text)
    return subprocess.run(
        ["/bin/sh", str(scripts / script), *args],
        env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def pod_env(c: dict[str, Any], pod_name: str) -> dict[str, str]:
    """A container's environment in pod ``pod_name`` (downward API fields filled in)."""
    env = literal_env(c)
    env.update(POD_NAME=pod_name, POD_NAMESPACE=NAMESPACE)
    return env


def stand_in(tmp_path: Path, name: str, body: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text("#!/bin/sh\n" + body)
    (bin_dir / name).chmod(0o755)


def walproxy_config(tmp_path: Path, values: Path, ordinal: int) -> tuple[config.Config, dict]:
    """walproxy's configuration in broker pod ``ordinal``: the ConfigMap's file plus the
    environment its container has (identity from walproxy-env.sh, offload settings)."""
    pod = broker_pod(values)
    c = container(pod, "walproxy")
    env = pod_env(c, f"kafka-walproxy-broker-{ordinal}")
    stand_in(tmp_path, "walproxy", 'env | grep "^WALPROXY_" > "$OUT"\n')
    out = tmp_path / f"walproxy-env-{ordinal}"
    done = run_script(tmp_path, values, "walproxy-run.sh", {**env, "OUT": str(out)})
    assert done.returncode == 0, done.stderr
    run_env = dict(line.split("=", 1) for line in out.read_text().splitlines())
    path = tmp_path / f"walproxy-{ordinal}.toml"
    path.write_text(configmap(values)["walproxy.toml"])
    return config.load(path, env=run_env), run_env


def run_kafka_start(
    tmp_path: Path,
    values: Path,
    role: str,
    ordinal: int,
    storage_tool: str = 'echo "$@" > "$KAFKA_HOME/format"',
    properties_text: str | None = None,
) -> tuple[dict[str, str], Path]:
    """Run kafka-start.sh as pod ``ordinal`` of ``role`` would, with a stand-in
    kafka-storage.sh (``storage_tool``) and a kafka-server-start.sh that records the
    server.properties it is started with. Returns the container's env and the Kafka home."""
    sts = one(render(values), "StatefulSet", f"-{role}")
    c = container(sts["spec"]["template"]["spec"], "kafka")
    env = pod_env(c, f"{sts['metadata']['name']}-{ordinal}")
    home = tmp_path / "kafka"
    (home / "bin").mkdir(parents=True, exist_ok=True)
    (home / "bin" / "kafka-storage.sh").write_text(f"#!/bin/sh\n{storage_tool}\n")
    (home / "bin" / "kafka-server-start.sh").write_text(
        '#!/bin/sh\ncp "$1" "$KAFKA_HOME/started"\n'
    )
    for f in (home / "bin").iterdir():
        f.chmod(0o755)
    chart_cfg = tmp_path / "kafka-chart"
    chart_cfg.mkdir(exist_ok=True)
    text = properties_text or configmap(values)[f"{role}.properties"]
    (chart_cfg / f"{role}.properties").write_text(text)
    done = run_script(
        tmp_path,
        values,
        "kafka-start.sh",
        {
            **env,
            "KAFKA_HOME": str(home),
            "KAFKA_CONF_DIR": str(tmp_path / "conf"),
            "CHART_CONFIG_DIR": str(chart_cfg),
        },
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return env, home


def kafka_properties(tmp_path: Path, values: Path, ordinal: int) -> dict[str, str]:
    """The server.properties kafka-start.sh writes in broker pod ``ordinal``."""
    env, home = run_kafka_start(tmp_path, values, "broker", ordinal)
    assert f"--cluster-id {env['CLUSTER_ID']} --ignore-formatted" in (home / "format").read_text()
    return properties((home / "started").read_text())


@values_files
def test_broker_advertises_the_sidecar_and_the_sidecar_fronts_the_broker(
    tmp_path: Path, values: Path
) -> None:
    v = values_of(values)
    pod = broker_pod(values)
    walproxy_c, kafka_c = container(pod, "walproxy"), container(pod, "kafka")
    for ordinal in range(v["kafka"]["broker"]["replicas"]):
        cfg, _ = walproxy_config(tmp_path, values, ordinal)
        props = kafka_properties(tmp_path, values, ordinal)
        node_id = v["kafka"]["broker"]["nodeIdOffset"] + ordinal
        assert int(props["node.id"]) == cfg.proxy.node_id == node_id
        advertised = dict(
            (lst.split("://")[0], lst.split("://")[1])
            for lst in props["advertised.listeners"].split(",")
        )
        listeners = dict(
            (lst.split("://")[0], lst.split("://")[1]) for lst in props["listeners"].split(",")
        )
        # Clients are handed the sidecar: same host and port as walproxy advertises.
        assert advertised["CLIENT"] == cfg.proxy.advertised
        host = f"kafka-walproxy-broker-{ordinal}.kafka-walproxy-broker-headless.{NAMESPACE}.svc"
        assert cfg.proxy.advertised == f"{host}.cluster.local:{v['walproxy']['port']}"
        # The sidecar fronts the broker's client listener, which only loopback reaches.
        assert listeners["CLIENT"] == cfg.proxy.upstream
        assert cfg.proxy.upstream.startswith("127.0.0.1:")
        listen_port = config.parse_address(cfg.proxy.listen, "proxy.listen")[1]
        ports = {p["name"]: p["containerPort"] for p in walproxy_c["ports"]}
        assert ports["kafka"] == listen_port == int(advertised["CLIENT"].rsplit(":", 1)[1])
        assert ports["metrics"] == config.parse_address(cfg.admin.listen, "admin.listen")[1]
        if v["walproxy"]["strictPeers"]:
            assert cfg.proxy.peers[str(cfg.proxy.node_id)] == cfg.proxy.advertised
            assert len(cfg.proxy.peers) == v["kafka"]["broker"]["replicas"]
    # Replication does not go through walproxy and the broker has no client port of its own.
    assert [p["name"] for p in kafka_c["ports"]] == ["internal"]
    bootstrap = one(render(values), "Service", "kafka-walproxy")
    [port] = bootstrap["spec"]["ports"]
    assert port["port"] == v["walproxy"]["port"] and port["targetPort"] == "kafka"


@values_files
def test_volumes_are_mounted_where_walproxy_and_kafka_expect_them(
    tmp_path: Path, values: Path
) -> None:
    v = values_of(values)
    sts = one(render(values), "StatefulSet", "-broker")
    pod = sts["spec"]["template"]["spec"]
    claims = {t["metadata"]["name"]: t["spec"] for t in sts["spec"]["volumeClaimTemplates"]}
    assert set(claims) == {"data", "wal"}  # the WAL has its own PersistentVolumeClaim
    assert claims["wal"]["resources"]["requests"]["storage"] == v["walproxy"]["wal"]["size"]
    if v["walproxy"]["wal"]["storageClass"]:
        assert claims["wal"]["storageClassName"] == v["walproxy"]["wal"]["storageClass"]
    cfg, _ = walproxy_config(tmp_path, values, 0)
    walproxy_c, kafka_c = container(pod, "walproxy"), container(pod, "kafka")
    assert mounts(walproxy_c)["wal"] == cfg.wal.dir
    assert "data" not in mounts(walproxy_c) and "wal" not in mounts(kafka_c)
    assert cfg.wal.max_bytes <= _bytes(claims["wal"]["resources"]["requests"]["storage"])
    # The config file is where walproxy-run.sh and rebuild-if-empty.sh read it.
    assert mounts(walproxy_c)["walproxy-config"] == "/etc/walproxy"
    scripts = configmap(values)
    assert "--config /etc/walproxy/walproxy.toml" in scripts["walproxy-run.sh"]
    [vol] = [x for x in pod["volumes"] if x["name"] == "walproxy-config"]
    assert vol["configMap"]["items"] == [{"key": "walproxy.toml", "path": "walproxy.toml"}]
    props = properties(scripts["broker.properties"])
    assert mounts(kafka_c)["data"] == props["log.dirs"] == v["kafka"]["broker"]["dataDir"]
    # A read-only root file system: everything written goes to a volume or /tmp.
    for c in pod["containers"] + pod.get("initContainers", []):
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert mounts(c)["tmp"] == "/tmp"
    if v["walproxy"]["rebuild"]["enabled"]:
        init = container(pod, "walproxy-rebuild", init=True)
        assert mounts(init)["data"] == literal_env(init)["KAFKA_DATA_DIR"] == props["log.dirs"]
        assert mounts(init)["wal"] == cfg.wal.dir  # the rebuild also reads the WAL's tail


def _bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    return int(quantity[:-2]) * units[quantity[-2:]]


@values_files
def test_the_init_container_rebuilds_only_into_an_empty_data_directory(
    tmp_path: Path, values: Path
) -> None:
    v = values_of(values)
    pod = broker_pod(values)
    if not v["walproxy"]["rebuild"]["enabled"]:
        assert "initContainers" not in pod
        return
    init = container(pod, "walproxy-rebuild", init=True)
    assert init["command"] == ["/bin/sh", "/opt/walproxy-chart/rebuild-if-empty.sh"]
    assert mounts(init)["scripts"] == "/opt/walproxy-chart"
    calls = tmp_path / "calls"
    stand_in(tmp_path, "walproxy", 'echo "$WALPROXY_PROXY_NODE_ID $*" >> "$CALLS"\n')

    def run_in(data: Path) -> subprocess.CompletedProcess[str]:
        env = {**pod_env(init, "kafka-walproxy-broker-2"), "KAFKA_DATA_DIR": str(data)}
        return run_script(tmp_path, values, "rebuild-if-empty.sh", {**env, "CALLS": str(calls)})

    node = v["kafka"]["broker"]["nodeIdOffset"] + 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_in(empty).returncode == 0
    fresh_ext4 = tmp_path / "fresh"
    (fresh_ext4 / "lost+found").mkdir(parents=True)
    assert run_in(fresh_ext4).returncode == 0
    used = tmp_path / "used"
    used.mkdir()
    (used / "meta.properties").write_text("node.id=1\n")
    kept = run_in(used)
    assert kept.returncode == 0 and "is not empty" in kept.stdout
    partial = tmp_path / "partial"  # an interrupted rebuild: walproxy resumes it
    (partial / "walproxy-rebuild.staging").mkdir(parents=True)
    (partial / "walproxy-rebuild.json").write_text("{}")
    assert run_in(partial).returncode == 0
    assert calls.read_text().splitlines() == [
        f"{node} rebuild --config /etc/walproxy/walproxy.toml --log-dir {empty}",
        f"{node} rebuild --config /etc/walproxy/walproxy.toml --log-dir {fresh_ext4}",
        f"{node} rebuild --config /etc/walproxy/walproxy.toml --log-dir {partial}",
    ]
    # A rebuild that fails stops the pod from starting the broker on an empty disk.
    stand_in(tmp_path, "walproxy", "exit 3\n")
    assert run_in(empty).returncode == 3


@values_files
def test_walproxy_drains_before_the_broker_stops(values: Path) -> None:
    v = values_of(values)
    pod = broker_pod(values)
    drain = v["walproxy"]["drainTimeoutSeconds"]
    cfg_drain = tomllib.loads(configmap(values)["walproxy.toml"])["proxy"]["drain_timeout_s"]
    assert cfg_drain == drain
    walproxy_c, kafka_c = container(pod, "walproxy"), container(pod, "kafka")
    assert "lifecycle" not in walproxy_c  # SIGTERM at once: walproxy starts draining
    sleep = kafka_c["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[:2] == ["/bin/sh", "-c"] and sleep[2] == f"sleep {drain + 5}"
    assert pod["terminationGracePeriodSeconds"] >= drain + 35
    assert "exec walproxy run" in configmap(values)["walproxy-run.sh"]  # signals reach it


@values_files
def test_s3_credentials_come_from_a_secret_or_the_service_account(values: Path) -> None:
    v = values_of(values)
    docs = render(values)
    pod = broker_pod(values)
    secret = v["s3"]["credentials"]["existingSecret"]
    containers = [container(pod, "walproxy"), *pod.get("initContainers", [])]
    for c in containers:
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"]
            for e in c["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        if secret:
            assert refs == {
                "AWS_ACCESS_KEY_ID": {"name": secret, "key": "AWS_ACCESS_KEY_ID"},
                "AWS_SECRET_ACCESS_KEY": {"name": secret, "key": "AWS_SECRET_ACCESS_KEY"},
            }
        else:
            assert refs == {}
        env = literal_env(c)
        if v["walproxy"]["offload"]["enabled"]:
            assert env["WALPROXY_OFFLOAD_TARGET"] == v["walproxy"]["offload"]["target"]
        else:
            assert env["WALPROXY_OFFLOAD_ENABLED"] == "false"
    assert "AWS_SECRET_ACCESS_KEY" not in str(configmap(values))  # never in the ConfigMap
    sa_name = pod["serviceAccountName"]
    accounts = [d for d in docs if d["kind"] == "ServiceAccount"]
    if v["serviceAccount"]["create"]:
        [sa] = accounts
        assert sa["metadata"]["name"] == sa_name
        assert sa["metadata"].get("annotations", {}) == v["serviceAccount"]["annotations"]
    else:
        assert accounts == [] and sa_name == v["serviceAccount"]["name"]


@values_files
def test_security_contexts_resources_and_disruption_budget(values: Path) -> None:
    v = values_of(values)
    docs = render(values)
    for sts in (d for d in docs if d["kind"] == "StatefulSet"):
        pod = sts["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    pdbs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodDisruptionBudget"}
    if v["podDisruptionBudget"]["enabled"]:
        assert set(pdbs) == {"kafka-walproxy-broker", "kafka-walproxy-controller"}
        for pdb in pdbs.values():
            assert pdb["spec"]["maxUnavailable"] == v["podDisruptionBudget"]["maxUnavailable"]
            component = pdb["metadata"]["name"].rsplit("-", 1)[1]
            assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == (
                component
            )
    else:
        assert pdbs == {}


@values_files
def test_controllers_form_the_quorum_the_brokers_name(values: Path) -> None:
    v = values_of(values)
    docs = render(values)
    ctrl = one(docs, "StatefulSet", "-controller")
    n = v["kafka"]["controller"]["replicas"]
    assert ctrl["spec"]["replicas"] == n
    data = configmap(values)
    voters = properties(data["broker.properties"])["controller.quorum.voters"]
    assert voters == properties(data["controller.properties"])["controller.quorum.voters"]
    port = v["kafka"]["controller"]["port"]
    assert voters.split(",") == [
        f"{i}@kafka-walproxy-controller-{i}.kafka-walproxy-controller-headless."
        f"{NAMESPACE}.svc.cluster.local:{port}"
        for i in range(n)
    ]
    # Broker ids never collide with controller ids.
    assert v["kafka"]["broker"]["nodeIdOffset"] >= n


@pytest.mark.parametrize("role", ["controller", "broker"])
def test_kafka_accepts_the_rendered_server_properties(tmp_path: Path, role: str) -> None:
    """kafka-start.sh's server.properties, checked by Kafka 4.1.1's own StorageTool
    (``format`` builds and validates the full KafkaConfig: roles, listeners, advertised
    listeners, quorum voters). Only log.dirs is pointed at a scratch directory."""
    from proxy.dev.cluster import _java, ensure_jars

    values = ROOT / "tests" / "helm" / "values-minio-secret.yaml"
    data = tmp_path / "data"
    props = "\n".join(
        f"log.dirs={data}" if line.startswith("log.dirs=") else line
        for line in configmap(values)[f"{role}.properties"].splitlines()
    )
    tool = f'exec "{_java()}" -cp "{ensure_jars()}/*" kafka.tools.StorageTool "$@"'
    # Starting the server would need the pods' DNS names; it records what it would start with.
    env, home = run_kafka_start(tmp_path, values, role, 0, tool, props + "\n")
    meta = properties((data / "meta.properties").read_text())
    assert meta["cluster.id"] == env["CLUSTER_ID"]
    assert meta["node.id"] == properties((home / "started").read_text())["node.id"]
    assert meta["node.id"] == ("10" if role == "broker" else "0")
