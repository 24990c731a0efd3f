"""Offline checks of the Kubernetes manifests in deploy/k8s (ctest -L deploy).

Renders, with `kubectl kustomize`, the base, both overlays (cpu, gpu) and
every overlay with every combination of the components (hpa, keda,
servicemonitor, inferencepool, model-pvc; hpa and keda exclude each other),
then:

1. validates every rendered object against the Kubernetes 1.32 JSON schemas
   (and the KEDA and Prometheus Operator CRD schemas), offline, with the npm
   packages pinned in deploy/k8s/validate (installed with `npm ci` into the
   work directory); the InferencePool, whose schema no package carries, is
   checked field by field here instead;
2. asserts the deployment rules of issue 10 on each render (probes, drain
   budget, security context, selectors, autoscaler targets, GPU settings,
   the server's flags...): see the RULES table;
3. proves the rules are not vacuous: each is broken on purpose in a copy of
   a render and must then fail (the "mutation" lines), and hpa + keda
   together must be refused;
4. with the server binary at hand, checks that every flag the manifests
   pass is one the server knows (it refuses unknown flags at start-up).

Exits 77 (CTest: skipped) when kubectl, or a kubectl whose kustomize knows
components, is missing. Without node/npm the schema step is skipped with a
message; a failing `npm ci` fails the test under CI (CI=true), else skips.

Usage: k8s_manifests_test.py SOURCE_DIR WORK_DIR [SERVER_BINARY]
"""
import copy
import itertools
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

SKIP = 77

OVERLAYS = ["cpu", "gpu"]
COMPONENTS = ["hpa", "keda", "servicemonitor", "inferencepool", "model-pvc"]
# Pairs that must not be combined: both make an HPA for the Deployment.
EXCLUSIVE = [{"hpa", "keda"}]

APP = "moondream-serve"

# The server's defaults for the flags the rules read (service/main.cc).
FLAG_DEFAULTS = {"grpc_port": "50051", "http_port": "8080",
                 "metrics_port": "9090", "grace_seconds": "30",
                 "threads": "0", "device": "cpu"}
# Seconds the server needs after its drain to exit: gRPC shutdown (1 s),
# the HTTP gateway's stop, process exit. terminationGracePeriodSeconds must
# cover the preStop sleep, the drain and this.
EXIT_MARGIN_S = 5
# Least time the startup probe allows for loading the model.
MIN_STARTUP_S = {"cpu": 120, "gpu": 600}

# Metric the hpa and keda components scale on (service/metrics.cc).
QUEUE_METRIC = "moondream_num_requests_waiting"


# ---------------------------------------------------------------- rendering

def find_kubectl():
    """Returns (path, None) or (None, why not)."""
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not kubectl:
        return None, "kubectl not found (set KUBECTL or put it on PATH)"
    try:
        out = subprocess.run([kubectl, "version", "--client", "-o", "json"],
                             capture_output=True, text=True, timeout=60)
        info = json.loads(out.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        return None, f"{kubectl} version failed: {e}"
    kustomize = info.get("kustomizeVersion", "")
    match = re.match(r"v(\d+)", kustomize)
    client = info.get("clientVersion", {})
    # Components (kind: Component) arrived in kustomize v3.7, the `labels`
    # field in v4.1; kubectl 1.21+ bundles v4+ (1.24+ reports which).
    # Debian 12's kubernetes-client (1.20) bundles v2.0.3: neither.
    minor = int(re.sub(r"\D", "", client.get("minor", "0")) or 0)
    new_enough = int(match.group(1)) >= 4 if match else \
        client.get("major") == "1" and minor >= 21
    if not new_enough:
        client = client.get("gitVersion", "?")
        return None, (f"{kubectl} {client} bundles kustomize "
                      f"{kustomize or 'of unknown version'}; need v4+ "
                      "(kubectl 1.21+) for components")
    return kubectl, None


def render_sets():
    """Yields (name, overlay or None, components) for every render."""
    yield "base", None, ()
    for overlay in OVERLAYS:
        for n in range(len(COMPONENTS) + 1):
            for combo in itertools.combinations(COMPONENTS, n):
                if any(pair <= set(combo) for pair in EXCLUSIVE):
                    continue
                yield "+".join((overlay,) + combo), overlay, combo


def render(kubectl, k8s_dir, work, name, overlay, components):
    """kubectl kustomize of a generated kustomization; returns the objects."""
    root = os.path.join(work, "renders", name)
    os.makedirs(root, exist_ok=True)
    target = os.path.join(k8s_dir, "overlays", overlay) if overlay else \
        os.path.join(k8s_dir, "base")
    # kustomize takes relative paths only.
    doc = {"apiVersion": "kustomize.config.k8s.io/v1beta1",
           "kind": "Kustomization",
           "resources": [os.path.relpath(target, root)]}
    if components:
        doc["components"] = [
            os.path.relpath(os.path.join(k8s_dir, "components", c), root)
            for c in components]
    with open(os.path.join(root, "kustomization.yaml"), "w") as f:
        yaml.safe_dump(doc, f)
    out = subprocess.run([kubectl, "kustomize", root], capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {name}: {out.stderr.strip()}")
    with open(root + ".yaml", "w") as f:
        f.write(out.stdout)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


# ------------------------------------------------------------------ helpers

def of_kind(objs, kind):
    return [o for o in objs if o.get("kind") == kind]


def one(objs, kind, name=None):
    found = [o for o in of_kind(objs, kind)
             if name is None or o["metadata"]["name"] == name]
    return found[0] if len(found) == 1 else None


def selects(match_labels, labels):
    """A non-empty equality selector that the labels satisfy."""
    return bool(match_labels) and all(labels.get(k) == v
                                      for k, v in match_labels.items())


def pod_spec(dep):
    return dep["spec"]["template"]["spec"]


def server_container(dep):
    containers = pod_spec(dep).get("containers", [])
    named = [c for c in containers if c.get("name") == "server"]
    return named[0] if named else None


def container_port(container, ref):
    """The containerPort a probe/Service/policy port reference names."""
    for p in container.get("ports", []):
        if ref == p.get("name") or ref == p.get("containerPort"):
            return p["containerPort"]
    return None


def quantity(value):
    """CPU or memory quantity as a float (cores, bytes)."""
    s = str(value)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", s)
    if not m or (m.group(2) and m.group(2) not in units):
        raise ValueError(f"quantity {s!r}")
    return float(m.group(1)) * units.get(m.group(2), 1)


def prestop_seconds(container):
    pre = container.get("lifecycle", {}).get("preStop")
    if not pre:
        return None
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    cmd = pre.get("exec", {}).get("command", [])
    if len(cmd) == 2 and os.path.basename(cmd[0]) == "sleep":
        return int(cmd[1])
    return None


def mount_for(dep, container, path):
    """(volumeMount, volume) of the mount holding `path`, or (None, None)."""
    best = None
    for m in container.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best["mountPath"].rstrip("/")):
                best = m
    if best is None:
        return None, None
    vols = [v for v in pod_spec(dep).get("volumes", [])
            if v["name"] == best["name"]]
    return best, (vols[0] if vols else None)


def volume_key(volume, mount, path):
    """The key of a ConfigMap/Secret volume that `path` reads."""
    rel = os.path.relpath(path, mount["mountPath"])
    source = volume.get("configMap") or volume.get("secret") or {}
    items = source.get("items")
    if items:
        keys = [i["key"] for i in items if i["path"] == rel]
        return keys[0] if keys else None
    return rel


class Flags:
    """The server's flags as absl would parse the container's args."""

    def __init__(self, objs, dep):
        self.values = {}      # name -> value (the last one wins)
        self.sources = {}     # name -> [where set]
        self.problems = []
        container = server_container(dep)
        for arg in container.get("args", []):
            if arg.startswith("--flagfile="):
                for path in arg[len("--flagfile="):].split(","):
                    self._read_file(objs, dep, container, path)
            else:
                self._add(arg, "args")

    def _read_file(self, objs, dep, container, path):
        mount, volume = mount_for(dep, container, path)
        if volume is None or "configMap" not in volume:
            self.problems.append(f"flagfile {path} is on no ConfigMap volume")
            return
        cm = one(objs, "ConfigMap", volume["configMap"]["name"])
        if cm is None:
            self.problems.append(f"flagfile {path}: ConfigMap "
                                 f"{volume['configMap']['name']} not rendered")
            return
        key = volume_key(volume, mount, path)
        text = cm.get("data", {}).get(key)
        if text is None:
            self.problems.append(f"flagfile {path}: no key {key!r} in "
                                 f"{cm['metadata']['name']}")
            return
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                self._add(line, f"{key}:{n}")

    def _add(self, arg, where):
        m = re.fullmatch(r"--([a-z0-9_]+)(?:=(.*))?", arg)
        if not m:
            self.problems.append(f"{where}: {arg!r} is not --flag[=value] "
                                 "(absl: underscores, one flag a line)")
            return
        name, value = m.group(1), m.group(2)
        self.sources.setdefault(name, []).append(where)
        self.values[name] = "true" if value is None else value

    def get(self, name):
        return self.values.get(name, FLAG_DEFAULTS.get(name))


# -------------------------------------------------------------------- rules
# Each rule takes a render (its name, overlay, components, objects) and
# returns a list of problems (empty: the rule holds).

def rule_objects(r):
    p = []
    if one(r["objs"], "Deployment", APP) is None:
        p.append(f"exactly one Deployment {APP} expected")
    for o in r["objs"]:
        labels = o["metadata"].get("labels", {})
        if labels.get("app.kubernetes.io/part-of") != APP:
            p.append(f"{o['kind']}/{o['metadata']['name']}: no "
                     "app.kubernetes.io/part-of label")
    return p


def rule_flags(r):
    dep = one(r["objs"], "Deployment", APP)
    flags = Flags(r["objs"], dep)
    p = list(flags.problems)
    for name, where in flags.sources.items():
        if len(where) > 1:
            p.append(f"--{name} set more than once ({', '.join(where)}): "
                     "the last would silently win")
    if "grace_seconds" not in flags.values:
        p.append("--grace_seconds is not set explicitly")
    keys = flags.get("api_keys")
    if not keys:
        p.append("--api_keys is not set: the server would be open to all")
    else:
        container = server_container(dep)
        mount, volume = mount_for(dep, container, keys)
        if volume is None or "secret" not in volume:
            p.append(f"--api_keys={keys} is not on a Secret volume")
        elif volume_key(volume, mount, keys) is None:
            p.append(f"--api_keys={keys}: the Secret volume maps no key there")
        elif volume["secret"].get("optional"):
            p.append("the API-key Secret is optional: a missing Secret would "
                     "start an open server")
    model = flags.get("model")
    if model:
        mount, volume = mount_for(dep, server_container(dep), model)
        if volume is None:
            p.append(f"--model={model} is on no volume")
    return p


def rule_ports(r):
    dep = one(r["objs"], "Deployment", APP)
    c = server_container(dep)
    flags = Flags(r["objs"], dep)
    p = []
    for name, flag in (("grpc", "grpc_port"), ("http", "http_port"),
                       ("metrics", "metrics_port")):
        port = container_port(c, name)
        if port is None:
            p.append(f"no container port named {name}")
        elif str(port) != flags.get(flag):
            p.append(f"container port {name}={port} but --{flag}="
                     f"{flags.get(flag)}")
    return p


def probe_port_problems(c, kind, probe):
    p = []
    for action in ("grpc", "httpGet", "tcpSocket"):
        if action in probe:
            ref = probe[action].get("port")
            if container_port(c, ref) is None:
                p.append(f"{kind} probe {action} port {ref!r} is not a "
                         "container port")
    return p


def rule_probes(r):
    dep = one(r["objs"], "Deployment", APP)
    c = server_container(dep)
    p = []
    grpc_port = container_port(c, "grpc")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(kind)
        if not probe:
            p.append(f"no {kind}")
            continue
        p += probe_port_problems(c, kind, probe)
    start, ready, live = (c.get(k) or {} for k in
                          ("startupProbe", "readinessProbe", "livenessProbe"))
    # Startup and readiness: grpc.health.v1 on the gRPC port, service "".
    for kind, probe in (("startupProbe", start), ("readinessProbe", ready)):
        g = probe.get("grpc")
        if not g:
            p.append(f"{kind} is not a native grpc probe")
        elif g.get("port") != grpc_port:
            p.append(f"{kind} grpc port {g.get('port')} is not the gRPC "
                     f"port {grpc_port}")
        elif g.get("service", "") not in ("", "moondream.v1.Moondream"):
            p.append(f"{kind} asks health of unknown service "
                     f"{g.get('service')!r}")
    # Liveness must not depend on the queue or on draining: the gRPC health
    # and /ready turn false while draining, /health does not.
    if "grpc" in live or live.get("httpGet", {}).get("path") != "/health":
        p.append("livenessProbe must be httpGet /health (gRPC health and "
                 "/ready fail while draining; a drain must not restart the "
                 "pod)")
    if live.get("periodSeconds", 10) * live.get("failureThreshold", 3) < 30:
        p.append("livenessProbe restarts a replica after < 30 s without "
                 "an answer")
    budget = start.get("periodSeconds", 10) * start.get("failureThreshold", 3)
    need = MIN_STARTUP_S.get(r["overlay"] or "cpu")
    if budget < need:
        p.append(f"startupProbe allows {budget} s for loading the model; "
                 f"need >= {need} s on {r['overlay'] or 'base'}")
    return p


def rule_drain(r):
    dep = one(r["objs"], "Deployment", APP)
    c = server_container(dep)
    flags = Flags(r["objs"], dep)
    pre = prestop_seconds(c)
    p = []
    if pre is None:
        return ["no preStop sleep: endpoints are removed while the server "
                "already refuses requests"]
    grace = int(flags.get("grace_seconds"))
    tgps = pod_spec(dep).get("terminationGracePeriodSeconds", 30)
    if tgps < pre + grace + EXIT_MARGIN_S:
        p.append(f"terminationGracePeriodSeconds {tgps} < preStop {pre} + "
                 f"--grace_seconds {grace} + {EXIT_MARGIN_S} s to exit: "
                 "in-flight requests would be SIGKILLed")
    return p


def rule_security(r):
    dep = one(r["objs"], "Deployment", APP)
    spec = pod_spec(dep)
    psc = spec.get("securityContext", {})
    p = []
    if psc.get("runAsNonRoot") is not True:
        p.append("pod securityContext.runAsNonRoot is not true")
    if psc.get("runAsUser") == 0:
        p.append("pod runs as uid 0")
    if spec.get("automountServiceAccountToken") is not False:
        p.append("automountServiceAccountToken is not false")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            p.append(f"{key} is set")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        name = c.get("name")
        seccomp = (sc.get("seccompProfile") or
                   psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            p.append(f"{name}: no RuntimeDefault seccomp profile")
        if sc.get("allowPrivilegeEscalation") is not False:
            p.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            p.append(f"{name}: readOnlyRootFilesystem is not true")
        if sc.get("privileged"):
            p.append(f"{name}: privileged")
        if sc.get("runAsUser") == 0:
            p.append(f"{name}: runs as uid 0")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            p.append(f"{name}: capabilities do not drop ALL")
        if caps.get("add"):
            p.append(f"{name}: adds capabilities {caps['add']}")
        # With a read-only root, writable paths are emptyDirs; /tmp is one.
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        tmp = mounts.get("/tmp")
        if not tmp or "emptyDir" not in vols.get(tmp["name"], {}):
            p.append(f"{name}: /tmp is not a writable emptyDir")
        for m in c.get("volumeMounts", []):
            v = vols.get(m["name"], {})
            if not m.get("readOnly") and "emptyDir" not in v:
                p.append(f"{name}: {m['mountPath']} is writable and not an "
                         "emptyDir")
    return p


def rule_resources(r):
    dep = one(r["objs"], "Deployment", APP)
    c = server_container(dep)
    res = c.get("resources", {})
    req, lim = res.get("requests", {}), res.get("limits", {})
    p = []
    for k in ("cpu", "memory"):
        if k not in req or k not in lim:
            p.append(f"{k}: request and limit must both be set")
        elif quantity(lim[k]) < quantity(req[k]):
            p.append(f"{k}: limit {lim[k]} below request {req[k]}")
    flags = Flags(r["objs"], dep)
    threads = int(flags.get("threads"))
    if "cpu" in lim and threads != quantity(lim["cpu"]):
        p.append(f"--threads={threads} but the CPU limit is {lim['cpu']} "
                 "(0 would count the node's cores, not the quota)")
    return p


def rule_device(r):
    dep = one(r["objs"], "Deployment", APP)
    spec = pod_spec(dep)
    c = server_container(dep)
    flags = Flags(r["objs"], dep)
    res = c.get("resources", {})
    gpus = res.get("limits", {}).get("nvidia.com/gpu")
    tolerated = any(t.get("key") == "nvidia.com/gpu"
                    for t in spec.get("tolerations", []))
    device = flags.get("device")
    p = []
    if r["overlay"] == "gpu":
        if not gpus or int(gpus) < 1:
            p.append("gpu overlay without an nvidia.com/gpu limit")
        if not tolerated:
            p.append("gpu overlay without a toleration for nvidia.com/gpu")
        if not device.startswith("cuda"):
            p.append(f"gpu overlay runs --device={device}")
    else:
        if gpus:
            p.append("nvidia.com/gpu limit outside the gpu overlay")
        if device != "cpu":
            p.append(f"--device={device} outside the gpu overlay")
    return p


def rule_spread(r):
    dep = one(r["objs"], "Deployment", APP)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    tsc = pod_spec(dep).get("topologySpreadConstraints", [])
    nodes = [t for t in tsc
             if t.get("topologyKey") == "kubernetes.io/hostname"]
    if not nodes:
        return ["no topologySpreadConstraint over kubernetes.io/hostname"]
    if not all(selects(t.get("labelSelector", {}).get("matchLabels"), labels)
               for t in nodes):
        return ["a topologySpreadConstraint selects no pod of this Deployment"]
    return []


def rule_services(r):
    objs = r["objs"]
    dep = one(objs, "Deployment", APP)
    c = server_container(dep)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    p = []
    if not selects(dep["spec"]["selector"].get("matchLabels"), labels):
        p.append("the Deployment's selector does not match its pod labels")
    grpc_port = container_port(c, "grpc")
    headless, cluster_ip = [], []
    for svc in of_kind(objs, "Service"):
        name = svc["metadata"]["name"]
        if not selects(svc["spec"].get("selector"), labels):
            p.append(f"Service {name}: selector matches no pod label set")
        targets = []
        for port in svc["spec"].get("ports", []):
            target = container_port(c, port.get("targetPort", port["port"]))
            if target is None:
                p.append(f"Service {name}: targetPort "
                         f"{port.get('targetPort')} is not a container port")
            targets.append(target)
        (headless if svc["spec"].get("clusterIP") == "None"
         else cluster_ip).append((name, targets))
    if not any(grpc_port in t for _, t in headless):
        p.append("no headless Service for the gRPC port (client-side "
                 "balancing needs every pod's address)")
    for name, targets in cluster_ip:
        if grpc_port in targets:
            p.append(f"ClusterIP Service {name} carries gRPC: it balances "
                     "connections, not calls")
    for port in ("http", "metrics"):
        if not any(container_port(c, port) in t for _, t in cluster_ip):
            p.append(f"no ClusterIP Service for the {port} port")
    return p


def rule_pdb(r):
    objs = r["objs"]
    dep = one(objs, "Deployment", APP)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    pdbs = of_kind(objs, "PodDisruptionBudget")
    if len(pdbs) != 1:
        return [f"{len(pdbs)} PodDisruptionBudgets, expected 1"]
    spec = pdbs[0]["spec"]
    p = []
    if not selects(spec.get("selector", {}).get("matchLabels"), labels):
        p.append("PodDisruptionBudget selector matches no pod of the "
                 "Deployment")
    if "minAvailable" in spec:
        floor = min_replicas(objs, dep)
        if not isinstance(spec["minAvailable"], int) or \
                spec["minAvailable"] >= floor:
            p.append(f"minAvailable {spec['minAvailable']} leaves no "
                     f"disruption at {floor} replicas: node drains block")
    elif spec.get("maxUnavailable") in (0, "0", "0%", None):
        p.append("PodDisruptionBudget allows no disruption: node drains block")
    return p


def min_replicas(objs, dep):
    hpa = of_kind(objs, "HorizontalPodAutoscaler")
    so = of_kind(objs, "ScaledObject")
    if hpa:
        return hpa[0]["spec"].get("minReplicas", 1)
    if so:
        return so[0]["spec"].get("minReplicaCount", 0)
    return dep["spec"].get("replicas", 1)


def rule_networkpolicy(r):
    objs = r["objs"]
    dep = one(objs, "Deployment", APP)
    c = server_container(dep)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    pols = of_kind(objs, "NetworkPolicy")
    if not pols:
        return ["no NetworkPolicy"]
    p = []
    metrics = container_port(c, "metrics")
    for pol in pols:
        spec = pol["spec"]
        name = pol["metadata"]["name"]
        if not selects(spec.get("podSelector", {}).get("matchLabels"), labels):
            p.append(f"NetworkPolicy {name} selects no pod of the Deployment")
        if "Ingress" not in spec.get("policyTypes", []):
            p.append(f"NetworkPolicy {name} does not restrict ingress")
        for rule in spec.get("ingress", []):
            ports = [container_port(c, x.get("port"))
                     for x in rule.get("ports", [])]
            if None in ports:
                p.append(f"NetworkPolicy {name}: a port is not a container "
                         "port")
            open_to_all = not rule.get("from") or any(
                f.get("namespaceSelector") == {} and "podSelector" not in f
                for f in rule["from"])
            if metrics in ports and open_to_all:
                p.append(f"NetworkPolicy {name} opens the metrics port to "
                         "every namespace (the scrape names tenants)")
            if not ports and open_to_all:
                p.append(f"NetworkPolicy {name} admits everything")
    return p


def rule_images(r):
    dep = one(r["objs"], "Deployment", APP)
    p = []
    for c in pod_spec(dep).get("containers", []):
        image = c.get("image", "")
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if "@" not in image and (not tag or tag == "latest"):
            p.append(f"{c['name']}: image {image!r} has no pinned tag")
        if not c.get("imagePullPolicy"):
            p.append(f"{c['name']}: no imagePullPolicy")
    return p


def rule_autoscaling(r):
    objs = r["objs"]
    dep = one(objs, "Deployment", APP)
    hpas = of_kind(objs, "HorizontalPodAutoscaler")
    sos = of_kind(objs, "ScaledObject")
    p = []
    if len(hpas) + len(sos) > 1:
        p.append("more than one autoscaler targets the Deployment (KEDA "
                 "makes its own HPA)")
    for a in hpas + sos:
        spec = a["spec"]
        ref = spec.get("scaleTargetRef", {})
        if (ref.get("apiVersion", "apps/v1"), ref.get("kind", "Deployment"),
                ref.get("name")) != ("apps/v1", "Deployment", APP):
            p.append(f"{a['kind']} targets {ref}, not Deployment {APP}")
        lo = spec.get("minReplicas", spec.get("minReplicaCount", 1))
        hi = spec.get("maxReplicas", spec.get("maxReplicaCount"))
        if lo < 2 or hi is None or hi < lo:
            p.append(f"{a['kind']} range {lo}..{hi}: keep at least 2 "
                     "replicas (a cold replica needs minutes)")
    if (hpas or sos) and "replicas" in dep["spec"]:
        p.append("the Deployment sets replicas under an autoscaler: every "
                 "apply would reset the count")
    for h in hpas:
        names = [m.get("pods", {}).get("metric", {}).get("name")
                 for m in h["spec"].get("metrics", [])]
        if QUEUE_METRIC not in names:
            p.append(f"HPA does not scale on {QUEUE_METRIC} (Pods metric)")
        if r.get("adapter_metric") and r["adapter_metric"] not in names:
            p.append(f"HPA metric {names} is not the prometheus-adapter "
                     f"rule's {r['adapter_metric']}")
    for s in sos:
        trig = [t for t in s["spec"].get("triggers", [])
                if t.get("type") == "prometheus"]
        query = trig[0]["metadata"].get("query", "") if trig else ""
        if QUEUE_METRIC not in query:
            p.append(f"ScaledObject has no prometheus trigger on "
                     f"{QUEUE_METRIC}")
    return p


def rule_servicemonitor(r):
    objs = r["objs"]
    dep = one(objs, "Deployment", APP)
    c = server_container(dep)
    p = []
    for sm in of_kind(objs, "ServiceMonitor"):
        sel = sm["spec"].get("selector", {}).get("matchLabels")
        svcs = [s for s in of_kind(objs, "Service")
                if selects(sel, s["metadata"].get("labels", {}))]
        if len(svcs) != 1:
            p.append(f"ServiceMonitor selects {len(svcs)} Services; 1 "
                     "expected (else each pod is scraped twice or never)")
            continue
        ports = {x.get("name"): x for x in svcs[0]["spec"]["ports"]}
        for ep in sm["spec"].get("endpoints", []):
            port = ports.get(ep.get("port"))
            if port is None:
                p.append(f"ServiceMonitor port {ep.get('port')!r} is not a "
                         f"port of Service {svcs[0]['metadata']['name']}")
            elif container_port(c, port.get("targetPort")) != \
                    container_port(c, "metrics"):
                p.append("ServiceMonitor scrapes a port that is not metrics")
    return p


# InferencePool (inference.networking.k8s.io/v1), field by field, since no
# schema package carries it. Fields and limits from the upstream API types.
IP_FIELDS = {
    "": {"apiVersion", "kind", "metadata", "spec"},
    "spec": {"selector", "targetPorts", "appProtocol", "endpointPickerRef"},
    "spec.selector": {"matchLabels"},
    "spec.endpointPickerRef": {"group", "kind", "name", "port",
                               "failureMode"},
}


def rule_inferencepool(r):
    objs = r["objs"]
    dep = one(objs, "Deployment", APP)
    c = server_container(dep)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    p = []
    for pool in of_kind(objs, "InferencePool"):
        if pool.get("apiVersion") != "inference.networking.k8s.io/v1":
            p.append(f"InferencePool apiVersion {pool.get('apiVersion')}")
        spec = pool.get("spec", {})
        nodes = {"": pool, "spec": spec,
                 "spec.selector": spec.get("selector", {}),
                 "spec.endpointPickerRef": spec.get("endpointPickerRef", {})}
        for where, allowed in IP_FIELDS.items():
            extra = set(nodes[where]) - allowed
            if extra:
                p.append(f"InferencePool {where or '/'}: unknown fields "
                         f"{sorted(extra)}")
        for req in ("selector", "targetPorts"):
            if req not in spec:
                p.append(f"InferencePool spec.{req} is required")
        ml = spec.get("selector", {}).get("matchLabels")
        if not selects(ml, labels) or not all(
                isinstance(v, str) for v in (ml or {}).values()):
            p.append("InferencePool selector matches no pod of the Deployment")
        tps = spec.get("targetPorts", [])
        numbers = [t.get("number") for t in tps]
        if not 1 <= len(tps) <= 8 or len(set(numbers)) != len(numbers) or \
                any(set(t) != {"number"} for t in tps):
            p.append(f"InferencePool targetPorts {tps}: 1-8 unique "
                     "{number: N}")
        for n in numbers:
            if not isinstance(n, int) or not 1 <= n <= 65535 or \
                    container_port(c, n) is None:
                p.append(f"InferencePool targetPort {n} is not a container "
                         "port")
        if spec.get("appProtocol", "http") not in ("http",
                                                   "kubernetes.io/h2c"):
            p.append(f"InferencePool appProtocol {spec.get('appProtocol')}")
        epp = spec.get("endpointPickerRef")
        if epp is not None:
            if not epp.get("name"):
                p.append("InferencePool endpointPickerRef.name is required")
            if epp.get("kind", "Service") == "Service":
                port = epp.get("port", {})
                if set(port) != {"number"} or not isinstance(
                        port["number"], int) or \
                        not 1 <= port["number"] <= 65535:
                    p.append("InferencePool endpointPickerRef.port.number is "
                             "required for a Service")
            if epp.get("failureMode", "FailClose") not in ("FailOpen",
                                                           "FailClose"):
                p.append(f"InferencePool failureMode {epp.get('failureMode')}")
    return p


RULES = [
    ("objects", rule_objects),
    ("flags", rule_flags),
    ("ports", rule_ports),
    ("probes", rule_probes),
    ("drain", rule_drain),
    ("security", rule_security),
    ("resources", rule_resources),
    ("device", rule_device),
    ("spread", rule_spread),
    ("services", rule_services),
    ("pdb", rule_pdb),
    ("networkpolicy", rule_networkpolicy),
    ("images", rule_images),
    ("autoscaling", rule_autoscaling),
    ("servicemonitor", rule_servicemonitor),
    ("inferencepool", rule_inferencepool),
]


def run_rules(r):
    """{rule: [problems]} for one render."""
    out = {}
    for name, fn in RULES:
        try:
            out[name] = fn(r)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            out[name] = [f"could not check: {type(e).__name__}: {e}"]
    return out


# ---------------------------------------------------------------- mutations
# Each breaks one rule in a copy of a render; that rule must then fail.

def _dep(objs):
    return one(objs, "Deployment", APP)


def _container(objs):
    return server_container(_dep(objs))


def _set_flag(objs, key, flag, value):
    cm = [o for o in of_kind(objs, "ConfigMap")
          if key in o.get("data", {})][0]
    lines = [ln for ln in cm["data"][key].splitlines()
             if not ln.startswith(f"--{flag}=")]
    cm["data"][key] = "\n".join(lines + [f"--{flag}={value}"]) + "\n"


MUTATIONS = [
    ("drain", "cpu", "grace below preStop + drain",
     lambda o: pod_spec(_dep(o)).__setitem__(
         "terminationGracePeriodSeconds", 30)),
    ("drain", "cpu", "server grace raised past the budget",
     lambda o: _set_flag(o, "server.flags", "grace_seconds", "60")),
    ("probes", "cpu", "liveness on gRPC health",
     lambda o: _container(o).__setitem__(
         "livenessProbe", {"grpc": {"port": 50051}})),
    ("probes", "cpu", "readiness probe on a port the container lacks",
     lambda o: _container(o)["readinessProbe"]["grpc"].__setitem__(
         "port", 50052)),
    ("probes", "gpu", "gpu startup budget cut to the cpu one",
     lambda o: _container(o)["startupProbe"].__setitem__(
         "failureThreshold", 30)),
    ("security", "cpu", "writable root filesystem",
     lambda o: _container(o)["securityContext"].__setitem__(
         "readOnlyRootFilesystem", False)),
    ("security", "cpu", "a capability added",
     lambda o: _container(o)["securityContext"]["capabilities"].__setitem__(
         "add", ["NET_ADMIN"])),
    ("services", "cpu", "Service selector off the pod labels",
     lambda o: one(o, "Service", APP)["spec"]["selector"].__setitem__(
         "app.kubernetes.io/component", "srv")),
    ("services", "cpu", "gRPC on the ClusterIP Service",
     lambda o: one(o, "Service", APP)["spec"]["ports"].append(
         {"name": "grpc", "port": 50051, "targetPort": "grpc"})),
    ("pdb", "cpu", "PDB selector off the pod labels",
     lambda o: of_kind(o, "PodDisruptionBudget")[0]["spec"]["selector"][
         "matchLabels"].__setitem__("app.kubernetes.io/name", "other")),
    ("networkpolicy", "cpu", "metrics open to every namespace",
     lambda o: of_kind(o, "NetworkPolicy")[0]["spec"]["ingress"][
         1].__setitem__("from", [{"namespaceSelector": {}}])),
    ("resources", "cpu", "no memory limit",
     lambda o: _container(o)["resources"]["limits"].pop("memory")),
    ("resources", "cpu", "--threads off the CPU limit",
     lambda o: _container(o)["resources"]["limits"].__setitem__("cpu", "4")),
    ("device", "gpu", "gpu without its toleration",
     lambda o: pod_spec(_dep(o)).pop("tolerations")),
    ("device", "gpu", "gpu without its GPU",
     lambda o: _container(o)["resources"]["limits"].pop("nvidia.com/gpu")),
    ("flags", "cpu", "a flag set twice",
     lambda o: _container(o)["args"].append("--grace_seconds=30")),
    ("flags", "cpu", "API keys flag dropped",
     lambda o: _set_flag(o, "server.flags", "api_keys", "")),
    ("ports", "cpu", "--grpc_port off the container port",
     lambda o: _set_flag(o, "server.flags", "grpc_port", "50052")),
    ("spread", "cpu", "no topology spread",
     lambda o: pod_spec(_dep(o)).pop("topologySpreadConstraints")),
    ("autoscaling", "cpu+hpa", "HPA aimed at another Deployment",
     lambda o: of_kind(o, "HorizontalPodAutoscaler")[0]["spec"][
         "scaleTargetRef"].__setitem__("name", "other")),
    ("autoscaling", "cpu+keda", "replicas kept under KEDA",
     lambda o: _dep(o)["spec"].__setitem__("replicas", 2)),
    ("servicemonitor", "cpu+servicemonitor", "ServiceMonitor on both Services",
     lambda o: of_kind(o, "ServiceMonitor")[0]["spec"]["selector"][
         "matchLabels"].pop("moondream-serve/metrics")),
    ("inferencepool", "cpu+inferencepool", "InferencePool port not served",
     lambda o: of_kind(o, "InferencePool")[0]["spec"].__setitem__(
         "targetPorts", [{"number": 8000}])),
    ("inferencepool", "cpu+inferencepool", "InferencePool misspelt field",
     lambda o: of_kind(o, "InferencePool")[0]["spec"].__setitem__(
         "targetPortNumber", 8080)),
    ("images", "cpu", "image without a tag",
     lambda o: _container(o).__setitem__("image", "moondream-serve")),
]


# -------------------------------------------------------- schema validation

def schema_validate(validate_src, work, renders):
    """Returns (failed lines, message). failed None: skipped."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return None, "SKIP schema: node or npm not found (install nodejs/npm)"
    vdir = os.path.join(work, "validate")
    os.makedirs(vdir, exist_ok=True)
    lock = os.path.join(validate_src, "package-lock.json")
    installed = os.path.join(vdir, "package-lock.json")
    stale = not os.path.isdir(os.path.join(vdir, "node_modules")) or \
        not os.path.exists(installed) or \
        open(lock).read() != open(installed).read()
    for f in ("package.json", "package-lock.json", "validate.js"):
        shutil.copy(os.path.join(validate_src, f), vdir)
    if stale:
        out = subprocess.run([npm, "ci", "--no-audit", "--no-fund",
                              "--loglevel=error"], cwd=vdir,
                             capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            why = f"npm ci failed: {out.stderr.strip()[-2000:]}"
            if os.environ.get("CI"):
                return [f"FAIL schema: {why}"], why
            return None, f"SKIP schema: {why} (a failure under CI=true)"
    bundle = os.path.join(work, "renders.json")
    with open(bundle, "w") as f:
        json.dump({r["name"]: r["objs"] for r in renders}, f)
    out = subprocess.run([node, os.path.join(vdir, "validate.js"), bundle],
                         capture_output=True, text=True, timeout=600)
    lines = out.stdout.splitlines()
    failed = [ln for ln in lines if ln.startswith("FAIL")]
    if out.returncode != 0 and not failed:
        failed = [f"FAIL schema: validate.js exited {out.returncode}: "
                  f"{out.stderr.strip()}"]
    return failed, "\n".join(ln for ln in lines if not ln.startswith("FAIL"))


# ------------------------------------------------------------- server flags

def server_flags(server):
    """Flag names the server binary defines, or None without one."""
    if not server or not os.access(server, os.X_OK):
        return None
    out = subprocess.run([server, "--helpfull"], capture_output=True,
                         text=True, timeout=60)
    return set(re.findall(r"^\s+--([a-z0-9_]+) \(", out.stdout + out.stderr,
                          re.M))


# --------------------------------------------------------------------- main

def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__)
        return 2
    source, work = sys.argv[1], os.path.abspath(sys.argv[2])
    server = sys.argv[3] if len(sys.argv) == 4 else None
    k8s_dir = os.path.join(source, "deploy", "k8s")

    kubectl, why = find_kubectl()
    if not kubectl:
        print(f"SKIP: {why}. The manifests are not rendered or checked.")
        return SKIP
    shutil.rmtree(os.path.join(work, "renders"), ignore_errors=True)

    with open(os.path.join(k8s_dir, "components", "hpa",
                           "prometheus-adapter-values.yaml")) as f:
        adapter = yaml.safe_load(f)
    adapter_metric = adapter["rules"]["custom"][0]["name"]["as"]

    passed, failed = 0, []

    renders = []
    for name, overlay, combo in render_sets():
        try:
            objs = render(kubectl, k8s_dir, work, name, overlay, combo)
        except RuntimeError as e:
            failed.append(f"FAIL render {name}: {e}")
            continue
        renders.append({"name": name, "overlay": overlay,
                        "components": combo, "objs": objs,
                        "adapter_metric": adapter_metric})
    print(f"rendered {len(renders)} kustomizations with {kubectl}: base, "
          f"{', '.join(OVERLAYS)} x every combination of "
          f"{', '.join(COMPONENTS)} (never "
          f"{' with '.join(sorted(EXCLUSIVE[0]))})")

    # 1. Schemas.
    schema_failed, message = schema_validate(
        os.path.join(k8s_dir, "validate"), work, renders)
    print(message)
    if schema_failed is not None:
        failed += schema_failed
        passed += 0 if schema_failed else 1

    # 2. Rules on every render.
    for r in renders:
        for rule, problems in run_rules(r).items():
            if problems:
                failed += [f"FAIL {rule} {r['name']}: {x}" for x in problems]
            else:
                passed += 1
    print(f"rules: {len(RULES)} rules x {len(renders)} renders")

    # 3. The rules catch what they are for.
    by_name = {r["name"]: r for r in renders}
    for rule, target, what, mutate in MUTATIONS:
        if target not in by_name:
            failed.append(f"FAIL mutation {rule}: no render {target}")
            continue
        r = copy.deepcopy(by_name[target])
        mutate(r["objs"])
        if run_rules(r)[rule]:
            passed += 1
        else:
            failed.append(f"FAIL mutation {rule}: '{what}' on {target} "
                          "was not caught")
    # hpa + keda: kustomize itself refuses it today (both remove
    # /spec/replicas); were it to render, the autoscaling rule must.
    try:
        objs = render(kubectl, k8s_dir, work, "cpu+hpa+keda", "cpu",
                      ("hpa", "keda"))
        if rule_autoscaling({"objs": objs, "overlay": "cpu"}):
            passed += 1
        else:
            failed.append("FAIL mutation autoscaling: hpa + keda together "
                          "was not refused")
    except RuntimeError:
        passed += 1
    print(f"mutations: {len(MUTATIONS) + 1} broken copies, each must fail "
          "its rule")

    # 4. Flags the server knows.
    known = server_flags(server)
    if known is None:
        print("SKIP server flags: no server binary given or built")
    else:
        used = set()
        for r in renders:
            used |= set(Flags(r["objs"], one(r["objs"], "Deployment",
                                             APP)).values)
        unknown = sorted(used - known)
        if unknown:
            failed.append(f"FAIL server flags: {server} does not know "
                          f"{', '.join('--' + u for u in unknown)}")
        else:
            passed += 1
            print(f"server flags: the {len(used)} the manifests pass are "
                  f"known to {server}")

    for line in failed:
        print(line)
    print(f"{passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
