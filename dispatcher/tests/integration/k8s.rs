//! The Kubernetes manifests, checked without a cluster: `kubectl kustomize` renders the base
//! (`deploy/k8s`) and the external-database overlay (`deploy/overlays/external-db`) offline,
//! `kubernetes-validate --strict` checks every object against the API schema (unknown fields
//! fail), and the assertions below hold what the schema cannot: probes on the health route,
//! a grace period that outlasts the drain, locked-down containers, wiring by labels and
//! names, and function manifests identical to `manifests/`.

use crate::harness::repo;
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::process::Command;

const BASE: &str = "deploy/k8s";
const EXTERNAL_DB: &str = "deploy/overlays/external-db";
/// The newest Kubernetes that kubernetes-validate 1.37.0 (scripts/setup.sh) has schemas for.
const KUBERNETES_VERSION: &str = "1.37.0";
const HEALTH: &str = "/_dispatcher/health";

struct Render {
    dir: &'static str,
    text: String,
    docs: Vec<Value>,
}

fn render(dir: &'static str) -> Render {
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(repo())
        .output()
        .expect("kubectl runs (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(Value::deserialize)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{dir} renders YAML that does not parse: {e}"));
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    assert!(!docs.is_empty(), "{dir} renders nothing");
    Render { dir, text, docs }
}

fn both() -> [Render; 2] {
    [render(BASE), render(EXTERNAL_DB)]
}

fn id(doc: &Value) -> String {
    format!("{}/{}", s(&doc["kind"]), s(&doc["metadata"]["name"]))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

impl Render {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }
    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
    }
    fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name)
            .unwrap_or_else(|| panic!("{}: no {kind}/{name} in the rendered output", self.dir))
    }
    /// A generated object (ConfigMap, Secret) by its name before kustomize's hash suffix.
    fn generated(&self, kind: &str, name: &str) -> &Value {
        let mut found = self.docs.iter().filter(|d| {
            d["kind"] == kind
                && s(&d["metadata"]["name"])
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
        });
        let doc = found
            .next()
            .unwrap_or_else(|| panic!("{}: no {kind} {name}(-hash) rendered", self.dir));
        assert!(
            found.next().is_none(),
            "{}: two {kind}s named {name}",
            self.dir
        );
        doc
    }
    fn deployment(&self) -> &Value {
        self.get("Deployment", "dispatcher")
    }
    fn workloads(&self) -> Vec<&Value> {
        let mut w = self.all("Deployment");
        w.extend(self.all("StatefulSet"));
        w
    }
}

fn containers(workload: &Value) -> impl Iterator<Item = &Value> {
    let spec = &workload["spec"]["template"]["spec"];
    seq(&spec["initContainers"])
        .iter()
        .chain(seq(&spec["containers"]))
}

fn dispatcher_container(r: &Render) -> &Value {
    let d = r.deployment();
    containers(d)
        .find(|c| c["name"] == "dispatcher")
        .unwrap_or_else(|| panic!("{}: {} has no container `dispatcher`", r.dir, id(d)))
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    seq(&container["env"]).iter().find(|e| e["name"] == name)
}

fn env_value<'a>(container: &'a Value, name: &str) -> &'a str {
    let e = env(container, name)
        .unwrap_or_else(|| panic!("container {}: env {name} is not set", s(&container["name"])));
    e["value"].as_str().unwrap_or_else(|| {
        panic!(
            "container {}: env {name} has no literal value",
            s(&container["name"])
        )
    })
}

fn pod_labels(workload: &Value) -> &Value {
    &workload["spec"]["template"]["metadata"]["labels"]
}

/// A `matchLabels` map is non-empty and each of its pairs is among `labels`.
fn selects(match_labels: &Value, labels: &Value) -> bool {
    match match_labels.as_mapping() {
        Some(m) if !m.is_empty() => m.iter().all(|(k, v)| labels.get(k) == Some(v)),
        _ => false,
    }
}

/// `kubernetes-validate --strict` on a multi-document YAML text: its exit status and report.
fn validate(text: &str) -> (bool, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .arg(file.path())
        .output()
        .expect("kubernetes-validate runs (scripts/setup.sh installs it)");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), report)
}

#[test]
fn the_base_and_the_overlay_render_and_pass_the_strict_schema_check() {
    for r in both() {
        let (ok, report) = validate(&r.text);
        assert!(
            ok,
            "{}: kubernetes-validate --strict -k {KUBERNETES_VERSION} failed:\n{report}",
            r.dir
        );
        // A kind it has no schema for is only a WARN with exit 0: every object must pass.
        let passed = report
            .lines()
            .filter(|l| l.starts_with("INFO ") && l.contains(" passed "))
            .count();
        assert_eq!(
            passed,
            r.docs.len(),
            "{}: {} objects rendered, {passed} validated:\n{report}",
            r.dir,
            r.docs.len()
        );
        for doc in &r.docs {
            // A scrape annotation names the port the metrics listener is on.
            let annotations = doc["metadata"]["annotations"].as_mapping();
            let pod = doc["spec"]["template"]["metadata"]["annotations"].as_mapping();
            for (k, v) in annotations.into_iter().chain(pod).flatten() {
                if s(k) == "prometheus.io/port" {
                    assert_eq!(s(v), "9090", "{}: {}", r.dir, id(doc));
                }
            }
        }
    }
}

#[test]
fn the_schema_check_rejects_an_unknown_field() {
    let r = render(BASE);
    let mut d = r.deployment().clone();
    d["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = Value::Bool(true);
    let (ok, report) = validate(&serde_yaml::to_string(&d).unwrap());
    assert!(
        !ok && report.contains("securityContxt"),
        "a misspelt field passed the strict check:\n{report}"
    );
}

/// `port` (a number or a container port's name) as the container port it names.
fn container_port(container: &Value, port: &Value, what: &str) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    seq(&container["ports"])
        .iter()
        .find(|p| p["name"] == *port)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("{what}: port {port:?} is not a port of the container"))
}

/// failureThreshold x periodSeconds, with Kubernetes' defaults (3, 10 s).
fn patience(probe: &Value) -> u64 {
    probe["failureThreshold"].as_u64().unwrap_or(3) * probe["periodSeconds"].as_u64().unwrap_or(10)
}

#[test]
fn the_probes_ask_the_health_route_on_the_serving_port() {
    for r in both() {
        let c = dispatcher_container(&r);
        let listen = env_value(c, "DISPATCHER_LISTEN");
        assert_eq!(
            listen, "0.0.0.0:8080",
            "{}: Deployment/dispatcher DISPATCHER_LISTEN",
            r.dir
        );
        for kind in ["readinessProbe", "livenessProbe", "startupProbe"] {
            let probe = &c[kind];
            if kind == "startupProbe" && probe.is_null() {
                continue;
            }
            let what = format!("{}: Deployment/dispatcher {kind}", r.dir);
            let get = &probe["httpGet"];
            assert_eq!(
                s(&get["path"]),
                HEALTH,
                "{what}: expected httpGet on {HEALTH}"
            );
            assert_eq!(
                container_port(c, &get["port"], &what),
                8080,
                "{what}: expected port 8080"
            );
        }
        let (ready, live) = (&c["readinessProbe"], &c["livenessProbe"]);
        assert!(
            patience(live) > patience(ready),
            "{}: Deployment/dispatcher: the liveness probe must be looser than readiness",
            r.dir
        );
        // A draining replica answers 503 until it exits: liveness must not kill it first.
        let grace = r.deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30);
        assert!(
            patience(live) > grace,
            "{}: Deployment/dispatcher: liveness gives up after {} s, within the {grace} s \
             grace period, so it would restart a draining pod",
            r.dir,
            patience(live)
        );
        let service = r.get("Service", "dispatcher");
        let port = &seq(&service["spec"]["ports"])[0];
        assert_eq!(
            port["port"], 80,
            "{}: Service/dispatcher: expected port 80",
            r.dir
        );
        let target = container_port(c, &port["targetPort"], "Service/dispatcher targetPort");
        assert_eq!(
            target, 8080,
            "{}: Service/dispatcher: expected targetPort 8080",
            r.dir
        );
    }
}

#[test]
fn a_pod_outlives_its_prestop_sleep_and_drain_and_rollouts_keep_capacity() {
    for r in both() {
        let d = r.deployment();
        let c = dispatcher_container(&r);
        let pre_stop = seq(&c["lifecycle"]["preStop"]["exec"]["command"]);
        let sleep: u64 = match pre_stop {
            [cmd, secs] if s(cmd) == "sleep" || s(cmd) == "/bin/sleep" => {
                s(secs).parse().unwrap_or(0)
            }
            _ => panic!(
                "{}: Deployment/dispatcher: expected preStop exec [sleep, N], found {pre_stop:?}",
                r.dir
            ),
        };
        assert!(
            sleep > 0,
            "{}: Deployment/dispatcher: preStop must sleep",
            r.dir
        );
        let drain: u64 = env_value(c, "DISPATCHER_DRAIN_TIMEOUT")
            .parse()
            .expect("DISPATCHER_DRAIN_TIMEOUT is whole seconds");
        let grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or_else(|| {
                panic!(
                    "{}: Deployment/dispatcher: set terminationGracePeriodSeconds",
                    r.dir
                )
            });
        assert!(
            grace > sleep + drain,
            "{}: Deployment/dispatcher: terminationGracePeriodSeconds {grace} must exceed \
             preStop sleep {sleep} + DISPATCHER_DRAIN_TIMEOUT {drain}",
            r.dir
        );
        assert_eq!(
            d["spec"]["replicas"], 3,
            "{}: Deployment/dispatcher: expected 3 replicas",
            r.dir
        );
        let strategy = &d["spec"]["strategy"];
        assert_eq!(
            s(&strategy["type"]),
            "RollingUpdate",
            "{}: Deployment/dispatcher strategy",
            r.dir
        );
        let unavailable = &strategy["rollingUpdate"]["maxUnavailable"];
        assert!(
            *unavailable == 0 || *unavailable == "0%",
            "{}: Deployment/dispatcher: expected rollingUpdate.maxUnavailable 0, found {unavailable:?}",
            r.dir
        );
    }
}

/// A securityContext field, the container's own or else the pod's.
fn effective<'a>(pod: &'a Value, container: &'a Value, field: &str) -> &'a Value {
    let own = &container["securityContext"][field];
    if own.is_null() {
        &pod["securityContext"][field]
    } else {
        own
    }
}

#[test]
fn every_container_runs_unprivileged_and_the_dispatcher_read_only() {
    for r in both() {
        let ns = r.get("Namespace", "dispatcher");
        assert_eq!(
            s(&ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]),
            "restricted",
            "{}: Namespace/dispatcher: expected the restricted Pod Security Standard enforced",
            r.dir
        );
        for w in r.workloads() {
            let pod = &w["spec"]["template"]["spec"];
            assert_eq!(
                pod["automountServiceAccountToken"],
                false,
                "{}: {}: expected automountServiceAccountToken false",
                r.dir,
                id(w)
            );
            for c in containers(w) {
                let what = format!("{}: {} container {}", r.dir, id(w), s(&c["name"]));
                let sc = &c["securityContext"];
                assert_eq!(
                    effective(pod, c, "runAsNonRoot"),
                    &Value::Bool(true),
                    "{what}: expected runAsNonRoot true"
                );
                assert_eq!(
                    sc["allowPrivilegeEscalation"], false,
                    "{what}: expected allowPrivilegeEscalation false"
                );
                assert!(
                    seq(&sc["capabilities"]["drop"]).iter().any(|d| d == "ALL"),
                    "{what}: expected capabilities.drop [ALL]"
                );
                assert!(
                    seq(&sc["capabilities"]["add"]).is_empty(),
                    "{what}: expected no added capabilities"
                );
                assert_ne!(sc["privileged"], true, "{what}: must not be privileged");
                assert_eq!(
                    s(&effective(pod, c, "seccompProfile")["type"]),
                    "RuntimeDefault",
                    "{what}: expected seccompProfile RuntimeDefault"
                );
                for k in ["cpu", "memory"] {
                    assert!(
                        !c["resources"]["requests"][k].is_null(),
                        "{what}: expected a {k} request"
                    );
                }
                assert!(
                    !c["resources"]["limits"]["memory"].is_null(),
                    "{what}: expected a memory limit"
                );
            }
        }
        let pod = &r.deployment()["spec"]["template"]["spec"];
        for c in containers(r.deployment()) {
            let what = format!(
                "{}: Deployment/dispatcher container {}",
                r.dir,
                s(&c["name"])
            );
            assert_eq!(
                effective(pod, c, "runAsUser"),
                10001,
                "{what}: expected runAsUser 10001 (the image's user)"
            );
            assert_eq!(
                c["securityContext"]["readOnlyRootFilesystem"], true,
                "{what}: expected readOnlyRootFilesystem true"
            );
            assert_eq!(
                pod["securityContext"]["runAsNonRoot"], true,
                "{what}: expected the pod's runAsNonRoot true"
            );
        }
    }
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("useradd --system --uid 10001"),
        "the image's user is no longer 10001"
    );
}

/// Standard base64, as Secrets' `data` holds it.
fn base64_decode(text: &str) -> Vec<u8> {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for b in text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
    {
        let v = ABC.iter().position(|&c| c == b).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Every key of the Secret, decoded.
fn secret_values(secret: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in secret["data"].as_mapping().into_iter().flatten() {
        out.insert(
            s(k).to_string(),
            String::from_utf8(base64_decode(s(v))).unwrap(),
        );
    }
    for (k, v) in secret["stringData"].as_mapping().into_iter().flatten() {
        out.insert(s(k).to_string(), s(v).to_string());
    }
    out
}

/// Every `secretKeyRef` of every container resolves to a rendered Secret holding the key;
/// returns the values each container gets that way.
fn secret_env(r: &Render, workload: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for c in containers(workload) {
        for e in seq(&c["env"]) {
            let reference = &e["valueFrom"]["secretKeyRef"];
            if reference.is_null() {
                continue;
            }
            let (name, key) = (s(&reference["name"]), s(&reference["key"]));
            let secret = r.get("Secret", name);
            let value = secret_values(secret).remove(key).unwrap_or_else(|| {
                panic!(
                    "{}: {} env {}: Secret {name} has no key {key}",
                    r.dir,
                    id(workload),
                    s(&e["name"])
                )
            });
            out.insert(s(&e["name"]).to_string(), value);
        }
    }
    out
}

#[test]
fn credentials_come_from_the_secret_and_match_the_database() {
    for r in both() {
        let c = dispatcher_container(&r);
        for var in ["DATABASE_URL", "DISPATCHER_ADMIN_TOKEN"] {
            let e = env(c, var).unwrap_or_else(|| {
                panic!("{}: Deployment/dispatcher: env {var} is not set", r.dir)
            });
            assert!(
                e["value"].is_null() && !e["valueFrom"]["secretKeyRef"].is_null(),
                "{}: Deployment/dispatcher: expected env {var} from a secretKeyRef, found {e:?}",
                r.dir
            );
        }
        let secret = r.generated("Secret", "dispatcher-secrets");
        for (k, v) in secret_values(secret) {
            assert!(
                v.contains("CHANGE-ME"),
                "{}: {} key {k}: expected an obvious placeholder",
                r.dir,
                id(secret)
            );
        }
        // Every ${VAR} the shipped manifests use is set for the dispatcher.
        for entry in std::fs::read_dir(repo().join("manifests")).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for var in text.split("${").skip(1).filter_map(|t| t.split('}').next()) {
                assert!(
                    env(c, var).is_some(),
                    "{}: Deployment/dispatcher: env {var} (a manifest uses it) is not set",
                    r.dir
                );
            }
        }
        let url = secret_env(&r, r.deployment())["DATABASE_URL"].clone();
        match r.find("StatefulSet", "mariadb") {
            Some(db) => {
                let db_env = secret_env(&r, db);
                let mariadb = containers(db).next().unwrap();
                assert!(
                    s(&mariadb["image"]).starts_with("mariadb:10.11"),
                    "{}: StatefulSet/mariadb image",
                    r.dir
                );
                let password = &db_env["MARIADB_ROOT_PASSWORD"];
                let database = env_value(mariadb, "MARIADB_DATABASE");
                assert_eq!(
                    url,
                    format!("mysql://root:{password}@mariadb:3306/{database}"),
                    "{}: DATABASE_URL does not name the StatefulSet's root password, Service and database",
                    r.dir
                );
                assert_eq!(
                    database, "orders",
                    "{}: StatefulSet/mariadb MARIADB_DATABASE",
                    r.dir
                );
                let service = r.get("Service", "mariadb");
                assert!(
                    selects(&service["spec"]["selector"], pod_labels(db)),
                    "{}: Service/mariadb does not select StatefulSet/mariadb's pods",
                    r.dir
                );
                assert_eq!(
                    seq(&service["spec"]["ports"])[0]["port"],
                    3306,
                    "{}: Service/mariadb port",
                    r.dir
                );
                let probe = seq(&mariadb["readinessProbe"]["exec"]["command"]);
                assert!(
                    probe.iter().any(|a| a == "healthcheck.sh"),
                    "{}: StatefulSet/mariadb: expected a healthcheck.sh readiness probe",
                    r.dir
                );
                let claim = s(&seq(&db["spec"]["volumeClaimTemplates"])
                    .first()
                    .expect("a volumeClaimTemplate")["metadata"]["name"]);
                assert!(
                    seq(&mariadb["volumeMounts"])
                        .iter()
                        .any(|m| m["name"] == claim && m["mountPath"] == "/var/lib/mysql"),
                    "{}: StatefulSet/mariadb: expected the claim {claim} at /var/lib/mysql",
                    r.dir
                );
            }
            None => {
                assert!(
                    r.find("Service", "mariadb").is_none(),
                    "{}: Service/mariadb without its StatefulSet",
                    r.dir
                );
                assert!(
                    !url.contains("@mariadb:"),
                    "{}: DATABASE_URL names the removed mariadb: {url}",
                    r.dir
                );
            }
        }
    }
}

#[test]
fn the_cache_is_an_emptydir_and_the_functions_a_configmap_copy_of_manifests() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    for r in both() {
        let c = dispatcher_container(&r);
        let volumes = seq(&r.deployment()["spec"]["template"]["spec"]["volumes"]);
        let mounted = |path: &str| {
            let m = seq(&c["volumeMounts"])
                .iter()
                .find(|m| m["mountPath"] == path)?;
            volumes.iter().find(|v| v["name"] == m["name"])
        };
        let cache = env_value(c, "DISPATCHER_CACHE_DIR");
        assert_eq!(
            cache, "/app/cache",
            "{}: Deployment/dispatcher DISPATCHER_CACHE_DIR",
            r.dir
        );
        let volume = mounted(cache).unwrap_or_else(|| {
            panic!(
                "{}: Deployment/dispatcher: nothing mounted at {cache}",
                r.dir
            )
        });
        assert!(
            !volume["emptyDir"].is_null(),
            "{}: Deployment/dispatcher: expected an emptyDir at {cache}",
            r.dir
        );
        let precompiled = env_value(c, "DISPATCHER_PRECOMPILED");
        assert!(
            dockerfile.contains(&format!("DISPATCHER_PRECOMPILED={precompiled}")),
            "{}: Deployment/dispatcher DISPATCHER_PRECOMPILED={precompiled} is not the image's",
            r.dir
        );
        assert!(
            mounted(precompiled).is_none(),
            "{}: Deployment/dispatcher: a volume hides the image's {precompiled}",
            r.dir
        );

        let dir = env_value(c, "DISPATCHER_MANIFESTS");
        assert_eq!(
            dir, "/app/manifests",
            "{}: Deployment/dispatcher DISPATCHER_MANIFESTS",
            r.dir
        );
        let volume = mounted(dir).unwrap_or_else(|| {
            panic!("{}: Deployment/dispatcher: nothing mounted at {dir}", r.dir)
        });
        let name = s(&volume["configMap"]["name"]);
        let map = r.get("ConfigMap", name);
        assert_eq!(
            map,
            r.generated("ConfigMap", "dispatcher-functions"),
            "{}: {dir} is not dispatcher-functions",
            r.dir
        );
        let data: BTreeMap<&str, &str> = map["data"]
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| (s(k), s(v)))
            .collect();
        let manifests = toml_files("manifests");
        let names: Vec<&str> = manifests.keys().map(String::as_str).collect();
        assert_eq!(
            data.keys().copied().collect::<Vec<_>>(),
            names,
            "{}: ConfigMap/{name}: expected one key per manifests/*.toml",
            r.dir
        );
        for (file, text) in &manifests {
            assert_eq!(
                data[file.as_str()],
                text,
                "{}: ConfigMap/{name} key {file} differs from manifests/{file}",
                r.dir
            );
        }
    }
    let copies = toml_files("deploy/k8s/functions");
    let manifests = toml_files("manifests");
    assert_eq!(
        copies.keys().collect::<Vec<_>>(),
        manifests.keys().collect::<Vec<_>>(),
        "deploy/k8s/functions/ must hold exactly manifests/*.toml (cp manifests/*.toml deploy/k8s/functions/)"
    );
    for (file, text) in &manifests {
        assert!(
            copies[file] == *text,
            "deploy/k8s/functions/{file} differs from manifests/{file}: copy it again"
        );
    }
}

/// The `*.toml` files of a repo folder, name to content.
fn toml_files(dir: &str) -> BTreeMap<String, String> {
    std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

fn ports(rule: &Value) -> Vec<(u64, &str)> {
    seq(&rule["ports"])
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap_or(0),
                p["protocol"].as_str().unwrap_or("TCP"),
            )
        })
        .collect()
}

#[test]
fn the_network_policy_admits_8080_and_9090_and_sends_only_to_the_database_and_dns() {
    for r in both() {
        let labels = pod_labels(r.deployment());
        let policy = r
            .all("NetworkPolicy")
            .into_iter()
            .find(|p| selects(&p["spec"]["podSelector"]["matchLabels"], labels))
            .unwrap_or_else(|| panic!("{}: no NetworkPolicy selects the dispatcher pods", r.dir));
        let what = format!("{}: {}", r.dir, id(policy));
        let types = seq(&policy["spec"]["policyTypes"]);
        assert!(
            types.iter().any(|t| t == "Ingress") && types.iter().any(|t| t == "Egress"),
            "{what}: expected policyTypes Ingress and Egress"
        );
        let ingress = seq(&policy["spec"]["ingress"]);
        let admitted: Vec<_> = ingress.iter().map(ports).collect();
        assert!(
            admitted
                .iter()
                .all(|p| p == &[(8080, "TCP")] || p == &[(9090, "TCP")]),
            "{what}: expected ingress on TCP 8080 (HTTP) and 9090 (metrics) only, found {ingress:?}"
        );
        for port in [8080, 9090] {
            assert!(
                admitted.iter().any(|p| p == &[(port, "TCP")]),
                "{what}: expected an ingress rule for {port}"
            );
        }
        // The pods serve their metrics where the policy and the annotations say.
        let pod = &r.deployment()["spec"]["template"];
        let container = &seq(&pod["spec"]["containers"])[0];
        let env = seq(&container["env"]);
        let metrics = env
            .iter()
            .find(|e| e["name"] == "DISPATCHER_METRICS_LISTEN")
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("{what}: the dispatcher has no DISPATCHER_METRICS_LISTEN"));
        assert_eq!(metrics, "0.0.0.0:9090", "{what}");
        assert_eq!(
            container_port(container, &Value::from("metrics"), &what),
            9090
        );
        assert_eq!(
            pod["metadata"]["annotations"]["prometheus.io/port"], "9090",
            "{what}"
        );

        let db = r.find("StatefulSet", "mariadb");
        let (mut to_db, mut dns) = (false, Vec::new());
        for rule in seq(&policy["spec"]["egress"]) {
            let p = ports(rule);
            let peers = seq(&rule["to"]);
            if !p.is_empty() && p.iter().all(|(n, _)| *n == 53) {
                dns.extend(p.iter().map(|(_, proto)| *proto));
                continue;
            }
            assert_eq!(
                p,
                [(3306, "TCP")],
                "{what}: expected egress only to 3306 and 53, found {rule:?}"
            );
            assert!(
                !peers.is_empty(),
                "{what}: the 3306 rule must name its peer, not every address"
            );
            for peer in peers {
                match db {
                    Some(db) => assert!(
                        peer.as_mapping().unwrap().len() == 1
                            && selects(&peer["podSelector"]["matchLabels"], pod_labels(db)),
                        "{what}: the 3306 rule must allow only the MariaDB pods, found {peer:?}"
                    ),
                    None => assert!(
                        !peer["ipBlock"]["cidr"].is_null(),
                        "{what}: expected the external database's ipBlock, found {peer:?}"
                    ),
                }
            }
            to_db = true;
        }
        assert!(
            to_db,
            "{what}: expected an egress rule to the database on 3306"
        );
        assert!(
            dns.contains(&"UDP") && dns.contains(&"TCP"),
            "{what}: expected DNS egress on UDP and TCP 53, found {dns:?}"
        );
        if let Some(db) = db {
            let mariadb = r.get("NetworkPolicy", "mariadb");
            let from = seq(&seq(&mariadb["spec"]["ingress"])[0]["from"]);
            assert!(
                selects(
                    &mariadb["spec"]["podSelector"]["matchLabels"],
                    pod_labels(db)
                ),
                "{}: NetworkPolicy/mariadb does not select the MariaDB pods",
                r.dir
            );
            assert!(
                from.iter()
                    .all(|f| selects(&f["podSelector"]["matchLabels"], labels)),
                "{}: NetworkPolicy/mariadb admits more than the dispatcher pods",
                r.dir
            );
        } else {
            assert!(
                r.find("NetworkPolicy", "mariadb").is_none(),
                "{}: NetworkPolicy/mariadb without MariaDB",
                r.dir
            );
        }
    }
}

#[test]
fn the_service_pdb_and_hpa_take_the_dispatcher_pods() {
    for r in both() {
        let d = r.deployment();
        let labels = pod_labels(d);
        assert!(
            selects(&d["spec"]["selector"]["matchLabels"], labels),
            "{}: Deployment/dispatcher selector",
            r.dir
        );
        let others: Vec<&Value> = r.all("StatefulSet").into_iter().map(pod_labels).collect();
        let service = r.get("Service", "dispatcher");
        let pdb = r.get("PodDisruptionBudget", "dispatcher");
        for (what, selector) in [
            ("Service/dispatcher", &service["spec"]["selector"]),
            (
                "PodDisruptionBudget/dispatcher",
                &pdb["spec"]["selector"]["matchLabels"],
            ),
        ] {
            assert!(selects(selector, labels), "{}: {what}: selector {selector:?} does not match the Deployment's pod labels {labels:?}", r.dir);
            assert!(
                !others.iter().any(|o| selects(selector, o)),
                "{}: {what} also selects the MariaDB pods",
                r.dir
            );
        }
        let replicas = d["spec"]["replicas"].as_u64().unwrap();
        let (max_unavailable, min_available) =
            (&pdb["spec"]["maxUnavailable"], &pdb["spec"]["minAvailable"]);
        assert!(
            *max_unavailable == 1
                || min_available
                    .as_u64()
                    .is_some_and(|m| m >= 2 && m < replicas),
            "{}: PodDisruptionBudget/dispatcher: expected maxUnavailable 1 or minAvailable 2",
            r.dir
        );
        let hpa = r.get("HorizontalPodAutoscaler", "dispatcher");
        assert_eq!(
            s(&hpa["apiVersion"]),
            "autoscaling/v2",
            "{}: {}",
            r.dir,
            id(hpa)
        );
        let target = &hpa["spec"]["scaleTargetRef"];
        assert!(
            target["kind"] == "Deployment" && target["name"] == "dispatcher" && target["apiVersion"] == "apps/v1",
            "{}: HorizontalPodAutoscaler/dispatcher: expected to scale apps/v1 Deployment/dispatcher, found {target:?}",
            r.dir
        );
        let min = hpa["spec"]["minReplicas"].as_u64().unwrap_or(1);
        assert!(
            min >= 2 && min <= replicas,
            "{}: HorizontalPodAutoscaler/dispatcher minReplicas {min}",
            r.dir
        );
        let cpu = seq(&hpa["spec"]["metrics"]).iter().any(|m| {
            m["type"] == "Resource"
                && m["resource"]["name"] == "cpu"
                && m["resource"]["target"]["type"] == "Utilization"
        });
        assert!(
            cpu,
            "{}: HorizontalPodAutoscaler/dispatcher: expected a CPU utilization metric",
            r.dir
        );
    }
}
