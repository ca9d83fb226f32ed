"""Consistency checks of the deployment files, run by scripts/check-deploy.sh.

    python3 scripts/check_deploy.py --compose-schema FILE --helm HELM [--coffer BIN]

Checks, each printed as it passes:
- docker/Dockerfile: the runtime stage's user, ports, health check, entry point;
- docker/docker-compose.yml: parses, validates against the Compose JSON schema
  after interpolation with docker/.env.example, and agrees with itself
  (profiles, dependencies, ports, health checks, config mount, prometheus.yml;
  secure mode on by default, the master key required from docker/.env);
- the Helm chart rendered by `helm template` (default values and
  ci/all-features-values.yaml) against Kubernetes' JSON schemas
  (kubernetes-validate) and the chart's own promises (non-root, read-only root,
  probes on /health (the workers' on /health/live), secrets only by reference, hook Job, secure mode on by
  default with the master key from a Secret, rate-limit settings on the API);
  the values schema refusing secrets (a literal master key among them) and
  the templates refusing secure mode without the master key's Secret;
- every `coffer` command line in all of them, against the binary's own parser,
  and every config file and environment they give Coffer, loaded by Coffer;
- every BLNK_*/COFFER_* variable they set, against the names src/ reads.
Exits non-zero on the first failed group, after printing every failure in it.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker/Dockerfile"
COMPOSE = ROOT / "docker/docker-compose.yml"
ENV_EXAMPLE = ROOT / "docker/.env.example"
PROMETHEUS = ROOT / "docker/prometheus.yml"
CHART = ROOT / "helm/coffer"
ALL_FEATURES = CHART / "ci/all-features-values.yaml"
# Oldest and newest Kubernetes the rendered chart is validated against
# (Chart.yaml says >=1.23; 1.25 is the oldest schema kubernetes-validate ships).
KUBE_VERSIONS = ["1.25.0", "1.35.0"]
# Blnk's names for settings whose Coffer side is later work (search, metrics
# auth). Setting them is harmless; they are reported, not failed, until src/
# reads them, and then drop out of the report by themselves.
BLNK_NAMES_NOT_YET_READ = {"BLNK_METRICS_BEARER_TOKEN"}

failures = []
notes = {}  # variable -> where it is set
checked = 0


def check(ok, what):
    global checked
    checked += 1
    if not ok:
        failures.append(what)
    return ok


def group_done(title):
    if failures:
        print(f"FAIL {title}:")
        for f in failures:
            print(f"  - {f}")
        sys.exit(1)
    print(f"ok   {title}")


# ---------------------------------------------------------------- coffer CLI

def coffer_argvs_valid(coffer, argvs, where):
    """Each argv (without the program name) must parse with the real binary:
    `coffer ARGV --help` exits 0 only if every subcommand and flag before it
    exists, and the last subcommand must not require another one."""
    if coffer is None:
        return
    for argv in argvs:
        proc = subprocess.run([coffer, *argv, "--help"], capture_output=True, text=True, timeout=30)
        usage = next((l for l in proc.stdout.splitlines() if l.startswith("Usage:")), "")
        detail = (proc.stderr.strip() or usage or "no output").splitlines()[0]
        check(proc.returncode == 0 and "<COMMAND>" not in usage,
              f"{where}: `coffer {' '.join(argv)}` is not a complete command of {coffer} ({detail})")


def coffer_accepts_settings(coffer, config_text, suffix, env, where):
    """Coffer must load this config file and environment without a bad setting
    or an unknown key. It is run as `coffer migrate status` against a SQLite
    URL that cannot open, so it stops at once, right after loading them."""
    if coffer is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / f"blnk{suffix}"
        config.write_text(config_text)
        run_env = {k: v for k, v in os.environ.items() if not k.startswith(("BLNK_", "COFFER_", "OTEL_"))}
        run_env.update({k: v for k, v in env.items() if v is not None})
        run_env.update(COFFER_CONFIG=str(config), RUST_BACKTRACE="0", NO_COLOR="1",
                       BLNK_DATA_SOURCE_DNS=f"sqlite://{tmp}/missing/coffer.db?mode=ro")
        proc = subprocess.run([coffer, "migrate", "status"], cwd=tmp, env=run_env,
                              capture_output=True, text=True, timeout=30)
    out = proc.stdout + proc.stderr
    bad = [l.strip() for l in out.splitlines() if "unknown configuration key" in l or "bad setting" in l]
    check(not bad and "opening the database" in out,
          f"{where}: coffer does not accept its settings: {(bad or out.strip().splitlines() or ['no output'])[:3]}")


def env_names_read_by_source():
    names = set()
    for d in ("src", "actors"):
        for p in (ROOT / d).rglob("*.rs"):
            names.update(re.findall(r'"((?:BLNK|COFFER)_[A-Z0-9_]+)"', p.read_text()))
    return names


def env_names_known(names, where, known):
    for name in sorted(names):
        if not re.match(r"^(BLNK|COFFER)_", name) or name in known:
            continue
        if name in BLNK_NAMES_NOT_YET_READ:
            notes.setdefault(name, set()).add(where.split(" ")[0])
        else:
            check(False, f"{where}: sets {name}, which Coffer does not read (see src/configuration.rs)")


# ---------------------------------------------------------------- Dockerfile

def dockerfile_instructions():
    """(INSTRUCTION, arguments) of the last stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages, current = [], []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            current = []
            stages.append(current)
        current.append((word.upper(), rest.strip()))
    return stages[-1]


def check_dockerfile(coffer):
    inst = dockerfile_instructions()
    get = lambda name: [a for n, a in inst if n == name]
    check(get("FROM") and get("FROM")[0].startswith("debian:${DEBIAN_SUITE}-slim"),
          "runtime stage is not debian:<suite>-slim")
    entry = json.loads(get("ENTRYPOINT")[-1]) if get("ENTRYPOINT") else None
    cmd = json.loads(get("CMD")[-1]) if get("CMD") else None
    check(entry == ["coffer"], f"ENTRYPOINT is {entry}, expected [\"coffer\"]")
    check(cmd == ["start"], f"CMD is {cmd}, expected [\"start\"]")
    user = get("USER")[-1] if get("USER") else "root"
    check(re.match(r"^[1-9][0-9]*(:[0-9]+)?$", user), f"USER {user} is not a numeric non-root uid")
    exposed = set(" ".join(get("EXPOSE")).split())
    check({"5001", "5004"} <= exposed, f"EXPOSE {exposed} lacks 5001 or 5004")
    health = " ".join(get("HEALTHCHECK"))
    check("http://127.0.0.1:5001/health" in health, "HEALTHCHECK does not probe :5001/health")
    run = " ".join(get("RUN"))
    for package in ("curl", "postgresql-client"):
        check(package in run, f"runtime stage does not install {package}")
    check("/usr/local/bin/coffer" in " ".join(get("COPY")), "coffer is not copied to /usr/local/bin")
    coffer_argvs_valid(coffer, [cmd or []], "Dockerfile CMD")
    group_done(f"docker/Dockerfile (runtime stage: {len(inst)} instructions)")


# ---------------------------------------------------------------- compose

def read_env_file(path):
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


INTERPOLATION = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value, env, missing):
    """Compose's variable substitution: $VAR, ${VAR}, ${VAR:-x}, ${VAR-x},
    ${VAR:?err}, ${VAR?err}, and $$ for a literal $."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, missing) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m):
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        op, arg = m.group(3), m.group(4)
        val = env.get(name)
        unset_or_empty = val is None or (op and op.startswith(":") and val == "")
        if op in ("-", ":-"):
            return arg if unset_or_empty else val
        if op in ("?", ":?"):
            if unset_or_empty:
                missing.append(f"{name} ({arg})")
            return val or ""
        if val is None:
            missing.append(name)
        return val or ""

    return INTERPOLATION.sub(sub, value)


def coffer_services(doc):
    return {name: s for name, s in doc["services"].items()
            if isinstance(s.get("build"), dict) and s["build"].get("dockerfile") == "docker/Dockerfile"}


def check_compose(schema_path, coffer, known_env):
    raw = yaml.safe_load(COMPOSE.read_text())
    env = read_env_file(ENV_EXAMPLE)
    missing = []
    doc = interpolate(raw, env, missing)
    check(not missing, f"docker/.env.example leaves required variables unset: {sorted(set(missing))}")
    # Without the master key in docker/.env the stack must not start.
    without_key = []
    interpolate(raw, {k: v for k, v in env.items() if k != "COFFER_SECRET_KEY"}, without_key)
    check(any(m.startswith("COFFER_SECRET_KEY ") for m in without_key),
          "docker-compose.yml interpolates without COFFER_SECRET_KEY (the master key must be required)")
    schema = json.loads(Path(schema_path).read_text())
    # This schema predates the top-level `name` (the project name, Compose
    # 2.3+): allow it as the current specification does.
    schema["properties"].setdefault("name", {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"})
    validator = jsonschema.Draft201909Validator(schema)
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        check(False, f"compose schema: {'/'.join(map(str, error.path))}: {error.message[:200]}")
    services = doc.get("services", {})
    for needed in ("migrate", "server", "worker", "postgres", "redis"):
        check(needed in services and "profiles" not in services[needed],
              f"service {needed} missing or behind a profile")
    for name, profile in (("typesense", "search"), ("jaeger", "tracing"), ("prometheus", "monitoring")):
        check(services.get(name, {}).get("profiles") == [profile], f"service {name} is not in profile {profile}")
    check(services["postgres"]["image"] == "postgres:16", "postgres is not postgres:16")
    check(services["redis"]["image"] == "redis:7", "redis is not redis:7")
    check(services.get("typesense", {}).get("image") == "typesense/typesense:29.0", "typesense is not 29.0")
    for name in ("postgres", "redis"):
        check("test" in services[name].get("healthcheck", {}), f"{name} has no health check")
    declared = set(doc.get("volumes", {}))
    for name, s in services.items():
        for dep in s.get("depends_on") or {}:
            check(dep in services, f"{name} depends on unknown service {dep}")
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith((".", "/")):
                check((COMPOSE.parent / src).exists(), f"{name} mounts {src}, which does not exist")
            else:
                check(src in declared, f"{name} uses undeclared volume {src}")
    coffers = coffer_services(doc)
    check(set(coffers) == {"migrate", "server", "worker"}, f"coffer services are {sorted(coffers)}")
    roles = {"migrate": ["migrate", "up"], "server": ["start"], "worker": ["workers"]}
    for name, s in coffers.items():
        check(s.get("command") == roles.get(name), f"{name} runs {s.get('command')}, expected {roles.get(name)}")
        check(s.get("environment", {}).get("COFFER_CONFIG") == "/etc/coffer/blnk.json",
              f"{name}: COFFER_CONFIG is not the mounted /etc/coffer/blnk.json")
        check("../config/compose.json:/etc/coffer/blnk.json:ro" in s.get("volumes", []),
              f"{name} does not mount config/compose.json")
        env_names_known(s.get("environment", {}), f"compose {name}", known_env)
        raw_env = raw["services"][name].get("environment", {})  # before interpolation
        check(raw_env.get("BLNK_SERVER_SECURE") == "${COFFER_SECURE:-true}",
              f"{name}: secure mode is not on by default (BLNK_SERVER_SECURE: ${{COFFER_SECURE:-true}})")
        check(re.fullmatch(r"\$\{COFFER_SECRET_KEY:\?[^}]+\}", str(raw_env.get("BLNK_SERVER_SECRET_KEY", ""))),
              f"{name}: BLNK_SERVER_SECRET_KEY is not required from docker/.env (${{COFFER_SECRET_KEY:?...}})")
        for rate in ("BLNK_RATE_LIMIT_RPS", "BLNK_RATE_LIMIT_BURST", "COFFER_TRUSTED_PROXIES"):
            check(re.fullmatch(r"\$\{[A-Z_]+:-\}", str(raw_env.get(rate, ""))),
                  f"{name}: {rate} is not optional (${{VAR:-}}, empty = off)")
    check(services["migrate"].get("restart") == "no", "migrate restarts")
    for name in ("server", "worker"):
        check(services[name]["depends_on"].get("migrate", {}).get("condition") == "service_completed_successfully",
              f"{name} does not wait for migrate to complete")
    config = json.loads((ROOT / "config/compose.json").read_text())
    api_port = str(config["server"]["port"])
    worker_port = str(config["queue"]["monitoring_port"])
    check(config["redis"]["dns"] == "redis://redis:6379", "config/compose.json does not point at the redis service")
    check("data_source" not in config, "config/compose.json holds data_source (the URL with the password belongs in .env)")
    for name, port in (("server", api_port), ("worker", worker_port)):
        s = services[name]
        check(any(str(p).split(":")[-1] == port for p in s.get("ports", []) + s.get("expose", [])),
              f"{name} neither publishes nor exposes container port {port}")
        check(f"http://127.0.0.1:{port}/health" in " ".join(s["healthcheck"]["test"]),
              f"{name}'s health check does not probe :{port}/health")
    prom = yaml.safe_load(PROMETHEUS.read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    check(targets == {f"server:{api_port}", f"worker:{worker_port}"}, f"prometheus.yml scrapes {sorted(targets)}")
    for job in prom["scrape_configs"]:
        check(job.get("metrics_path") == "/metrics", f"prometheus job {job['job_name']} path")
        check(job.get("authorization", {}).get("credentials_file") == "/tmp/metrics_token",
              f"prometheus job {job['job_name']} sends no bearer token")
    check("/tmp/metrics_token" in " ".join(services["prometheus"]["command"]),
          "the prometheus entrypoint does not write /tmp/metrics_token")
    coffer_argvs_valid(coffer, [s["command"] for s in coffers.values()], "compose")
    for name, s in coffers.items():
        coffer_accepts_settings(coffer, (ROOT / "config/compose.json").read_text(), ".json",
                                s.get("environment", {}), f"compose {name} (config/compose.json)")
    for example in sorted((ROOT / "config").iterdir()):
        coffer_accepts_settings(coffer, example.read_text(), example.suffix, {}, f"config/{example.name}")
    group_done(f"docker/docker-compose.yml ({len(services)} services, Compose schema, .env.example, "
               "prometheus.yml, secure mode and the required master key, optional rate limit, "
               "coffer commands and settings, config/*)")


# ---------------------------------------------------------------- Helm

def helm_template(helm, *args):
    proc = subprocess.run([helm, "template", "coffer-check", str(CHART), *args],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        check(False, f"helm template {' '.join(args)} failed")
        return []
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def validate_manifests(docs, label):
    """Every object against Kubernetes' own JSON schemas, unknown fields refused."""
    for doc in docs:
        name = f"{label} {doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"] == "monitoring.coreos.com/v1":
            # A CRD: no schema ships with Kubernetes; check what Prometheus needs.
            spec = doc["spec"]
            check(spec["selector"]["matchLabels"] and all(e.get("port") and e.get("path") == "/metrics"
                                                         for e in spec["endpoints"]), f"{name}: malformed endpoints")
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                check(False, f"{name} (Kubernetes {version}): {'/'.join(map(str, e.path))}: {e.message[:200]}")
            except Exception as e:  # noqa: BLE001 - schema missing and the like
                check(False, f"{name} (Kubernetes {version}): {type(e).__name__}: {e}")
    return sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)


def check_chart_rules(docs, label, coffer, known_env, secure=None, api_env=None):
    """What the chart promises beyond valid Kubernetes objects. `secure`: the
    BLNK_SERVER_SECURE expected (with the master key's Secret iff true);
    `api_env`: literal variables the API container must have."""
    api_env = api_env or {}
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    blnk = json.loads(config["data"]["blnk.json"])
    check("dns" not in blnk.get("data_source", {}) and "dns" not in blnk.get("redis", {}),
          f"{label}: the ConfigMap holds a connection URL")
    ports = {"api": int(blnk["server"]["port"]), "worker": int(blnk["queue"]["monitoring_port"])}
    argvs = []
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        name = f"{label} {doc['kind']}/{doc['metadata']['name']}"
        pod = doc["spec"]["template"]["spec"]
        component = doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        check(pod["securityContext"].get("runAsNonRoot") is True, f"{name}: runAsNonRoot is not set")
        tmp_volumes = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            check(sc.get("readOnlyRootFilesystem") is True, f"{name}: root filesystem is writable")
            check(sc.get("allowPrivilegeEscalation") is False, f"{name}: privilege escalation allowed")
            check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: capabilities not dropped")
            check(any(m["mountPath"] == "/tmp" and m["name"] in tmp_volumes for m in c.get("volumeMounts", [])),
                  f"{name}: no emptyDir on /tmp")
            check(c.get("resources", {}).get("requests") and c["resources"].get("limits"),
                  f"{name}: no resource requests and limits")
            argvs.append(c.get("command", [])[1:] + c.get("args", []) if c.get("command") else c.get("args", []))
            env = {e["name"]: e for e in c.get("env", [])}
            env_names_known(env, name, known_env)
            for e in env.values():
                check(not re.search(r"://[^/@\s]*:[^/@\s]*@", str(e.get("value", ""))),
                      f"{name}: {e['name']} has credentials in a literal value")
            for secret_env in ("BLNK_DATA_SOURCE_DNS", "BLNK_REDIS_DNS", "BLNK_TYPESENSE_KEY", "BLNK_METRICS_BEARER_TOKEN",
                               "BLNK_TOKENIZATION_SECRET", "BLNK_ACCOUNT_NUMBER_GENERATION_HTTP_SERVICE_AUTHORIZATION",
                               "BLNK_SERVER_SECRET_KEY", "BLNK_WEBHOOK_HEADERS"):
                if secret_env in env:
                    check("secretKeyRef" in env[secret_env].get("valueFrom", {}),
                          f"{name}: {secret_env} is not from a Secret")
            check("BLNK_DATA_SOURCE_DNS" in env, f"{name}: no database URL")
            if doc["kind"] == "Deployment":
                check(env.get("COFFER_AUTO_MIGRATE", {}).get("value") == "false", f"{name}: COFFER_AUTO_MIGRATE is not false")
                check("BLNK_REDIS_DNS" in env, f"{name}: no Redis URL")
                if secure is not None:
                    check(env.get("BLNK_SERVER_SECURE", {}).get("value") == str(secure).lower(),
                          f"{name}: BLNK_SERVER_SECURE is not {str(secure).lower()}")
                    check(("BLNK_SERVER_SECRET_KEY" in env) == secure,
                          f"{name}: the master key (BLNK_SERVER_SECRET_KEY) is {'missing' if secure else 'set'}")
                for var, value in (api_env if component == "api" else {}).items():
                    check(env.get(var, {}).get("value") == value,
                          f"{name}: {var} is {env.get(var, {}).get('value')!r}, expected {value!r}")
                if component != "api":
                    limits = sorted(set(env) & {"BLNK_RATE_LIMIT_RPS", "BLNK_RATE_LIMIT_BURST", "COFFER_TRUSTED_PROXIES"})
                    check(not limits, f"{name}: the API's rate-limit settings on a worker: {limits}")
                port = {p["name"]: p["containerPort"] for p in c["ports"]}.get("http")
                check(port == ports[component], f"{name}: container port {port}, config says {ports[component]}")
                # The workers' /health also judges the outbox (503 while a receiver is
                # down): their probes use /health/live.
                path = "/health" if component == "api" else "/health/live"
                for probe in ("readinessProbe", "livenessProbe"):
                    get = c.get(probe, {}).get("httpGet", {})
                    check(get.get("path") == path and get.get("port") == "http", f"{name}: {probe} is not {path} on http")
        if doc["kind"] == "Job":
            hooks = doc["metadata"].get("annotations", {}).get("helm.sh/hook", "")
            check(set(hooks.split(",")) == {"pre-install", "pre-upgrade"}, f"{name}: hook is {hooks!r}")
    expected = {("start",), ("workers",), ("migrate", "up")}
    check({tuple(a) for a in argvs} == expected, f"{label}: coffer commands are {sorted(map(tuple, argvs))}")
    coffer_argvs_valid(coffer, argvs, f"helm {label}")
    for doc in docs:
        if doc["kind"] == "Deployment":
            env = {e["name"]: e.get("value") for e in doc["spec"]["template"]["spec"]["containers"][0].get("env", [])}
            coffer_accepts_settings(coffer, config["data"]["blnk.json"], ".json", env,
                                    f"helm {label} {doc['metadata']['name']} (ConfigMap blnk.json)")


def check_helm(helm, coffer, known_env):
    default = helm_template(helm)
    full = helm_template(helm, "-f", str(ALL_FEATURES))
    group_done("helm template (default values, all features)")
    kinds = validate_manifests(default, "default")
    full_kinds = validate_manifests(full, "all-features")
    for kind in ("HorizontalPodAutoscaler", "ServiceMonitor", "PodDisruptionBudget", "Job", "Ingress"):
        check(any(k.startswith(kind + "/") for k in full_kinds), f"all-features renders no {kind}")
    group_done(f"rendered manifests: {len(kinds)} (default) and {len(full_kinds)} (all features) objects "
               f"valid for Kubernetes {' and '.join(KUBE_VERSIONS)} (strict schemas)")
    check_chart_rules(default, "default", coffer, known_env, secure=True)
    check_chart_rules(full, "all-features", coffer, known_env, secure=True, api_env={
        "BLNK_RATE_LIMIT_RPS": "1000000", "BLNK_RATE_LIMIT_BURST": "2000",
        "BLNK_RATE_LIMIT_CLEANUP_INTERVAL_SEC": "3600",
        "COFFER_TRUSTED_PROXIES": "10.244.0.0/16,192.168.1.10,fd00:10:244::/56"})
    ingress = next((d for d in full if d["kind"] == "Ingress"), None)
    if ingress:
        check(ingress["spec"].get("tls") and all(t.get("secretName") for t in ingress["spec"]["tls"]),
              "all-features Ingress: no tls secretName")
        backends = {p["backend"]["service"]["name"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
        api_service = next(d["metadata"]["name"] for d in full if d["kind"] == "Service"
                           and d["spec"]["selector"].get("app.kubernetes.io/component") == "api")
        check(backends == {api_service}, f"all-features Ingress routes to {sorted(backends)}, not {api_service}")
    # Secure mode goes off only when asked to, and then needs no master key.
    open_mode = helm_template(helm, "--set", "auth.secure=false", "--set", "auth.secretKey.existingSecret=")
    check_chart_rules(open_mode, "auth.secure=false", coffer, known_env, secure=False)
    group_done("chart rules: non-root, read-only root, /tmp emptyDir, resources, probes on /health "
               "(/health/live for the workers), "
               "Secrets by reference, hook Job, secure mode and the master key's Secret in the API and the "
               "workers (open mode only with auth.secure=false), rate limit and trusted proxies on the API, "
               "Ingress with TLS, coffer commands and settings")
    # The schema must refuse secrets in values.
    for bad in ("database.url=postgres://u:p@db/coffer", "config.data_source.dns=postgres://u:p@db/coffer",
                "redis.password=x", "config.tokenization_secret=x", "database.existingSecret=",
                "config.account_number_generation.http_service.headers.Authorization=x",
                # The master key is never a value, under any name.
                "auth.secretKey=literal-master-key", "auth.secretKey.value=literal-master-key",
                "auth.secret_key=literal-master-key", "secretKey=literal-master-key",
                "config.server.secret_key=literal-master-key", "config.server.secure=false",
                "api.extraEnv[0].name=BLNK_SERVER_SECRET_KEY,api.extraEnv[0].value=literal-master-key",
                "worker.extraEnv[0].name=BLNK_SERVER_SECRET_KEY,worker.extraEnv[0].value=literal-master-key",
                "auth.secure=yes", "rateLimit.requestsPerSecond=0", "trustedProxies[0]=not-a-cidr",
                # Webhook headers may hold credentials: only from a Secret.
                "webhook.headers=Authorization", "webhook.headers.value=Bearer-x",
                "webhook.url=https://user:password@hooks.example.com/x",
                # The Typesense API key is a Secret's too.
                "typesense.apiKey=literal-key", "typesense.apiKey.value=literal-key",
                "config.type_sense_key=literal-key"):
        proc = subprocess.run([helm, "template", "x", str(CHART), "--set", bad], capture_output=True, text=True)
        check(proc.returncode != 0 and "schema" in proc.stderr, f"values.schema.json accepts --set {bad}")
    # What the schema cannot say, the templates refuse with a message.
    for args, message in ((["--set", "auth.secretKey.existingSecret="], "auth.secretKey.existingSecret is empty"),
                          (["--set", "metrics.serviceMonitor.enabled=true"], "metrics.bearerToken.existingSecret")):
        proc = subprocess.run([helm, "template", "x", str(CHART), *args], capture_output=True, text=True)
        check(proc.returncode != 0 and message in proc.stderr,
              f"helm template {' '.join(args)} does not fail with {message!r}: {proc.stderr.strip()[:200]!r}")
    proc = subprocess.run([helm, "template", "x", str(CHART), "--kube-version", "1.22.0"], capture_output=True, text=True)
    check(proc.returncode != 0, "the chart renders for Kubernetes 1.22 (it needs autoscaling/v2 and policy/v1)")
    group_done("values.schema.json refuses secrets (a literal master key among them) and missing Secret names; "
               "secure mode without the master key's Secret fails to render; kubeVersion refuses 1.22")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compose-schema", required=True)
    ap.add_argument("--helm", required=True)
    ap.add_argument("--coffer", help="the coffer binary; omitted: command lines are not checked")
    args = ap.parse_args()
    coffer = str(Path(args.coffer).resolve()) if args.coffer else None
    if coffer:
        help_text = subprocess.run([coffer, "--help"], capture_output=True, text=True).stdout
        print(f"ok   coffer binary {coffer}: {' '.join(re.findall(r'^  ([a-z]+) ', help_text, re.M))}")
    known_env = env_names_read_by_source()
    check_dockerfile(coffer)
    check_compose(args.compose_schema, coffer, known_env)
    check_helm(args.helm, coffer, known_env)
    for name, places in sorted(notes.items()):
        print(f"note {name} ({', '.join(sorted(places))}) is Blnk's name for a setting Coffer does not read yet")
    print(f"{checked} checks passed")


if __name__ == "__main__":
    main()
