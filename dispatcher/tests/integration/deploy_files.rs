//! `docker-compose.yml`, `deploy/haproxy/haproxy.cfg` and the `Dockerfile`, checked without a
//! Docker engine: the compose file parses and wires three replicas behind HAProxy, HAProxy
//! accepts its configuration (`haproxy -c`) and checks and finds the replicas, and the
//! Dockerfile's paths exist in the repo, agree with the manifests and precompile them.

use crate::harness::repo;
use serde_yaml::Value;
use std::process::Command;

const HAPROXY_CFG: &str = "deploy/haproxy/haproxy.cfg";

fn compose() -> Value {
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    serde_yaml::from_str(&text).expect("docker-compose.yml is valid YAML")
}

#[test]
fn compose_runs_three_replicas_behind_haproxy_and_a_healthy_mariadb() {
    let c = compose();
    let services = &c["services"];
    let d = &services["dispatcher"];
    let db = &services["mariadb"];
    let lb = &services["haproxy"];
    assert!(db["image"].as_str().unwrap().starts_with("mariadb:"));
    let health = db["healthcheck"]["test"]
        .as_sequence()
        .expect("mariadb has a healthcheck");
    assert!(!health.is_empty());
    assert!(db["healthcheck"]["interval"].is_string());

    assert_eq!(d["build"]["context"], ".");
    let dockerfile = d["build"]["dockerfile"].as_str().unwrap();
    assert!(repo().join(dockerfile).exists(), "{dockerfile} is missing");
    assert_eq!(
        d["deploy"]["replicas"], 3,
        "dispatcher: expected deploy.replicas 3"
    );
    // Replicas cannot share a host port or a container name: they are reached through haproxy.
    assert!(
        d["ports"].is_null(),
        "dispatcher: expected no host port, found {:?}",
        d["ports"]
    );
    assert!(
        d["container_name"].is_null(),
        "dispatcher: a container_name allows one replica only"
    );
    let grace = d["stop_grace_period"]
        .as_str()
        .expect("dispatcher: stop_grace_period");
    let grace: u64 = grace
        .trim_end_matches('s')
        .parse()
        .expect("stop_grace_period in seconds");
    let seconds = |var: &str| -> u64 {
        let v = &d["environment"][var];
        v.as_str()
            .unwrap_or_else(|| panic!("dispatcher: {var} is set, as a string"))
            .parse()
            .unwrap_or_else(|_| panic!("dispatcher: {var} in whole seconds"))
    };
    let (delay, drain) = (
        seconds("DISPATCHER_DRAIN_DELAY"),
        seconds("DISPATCHER_DRAIN_TIMEOUT"),
    );
    assert!(
        grace > delay + drain,
        "dispatcher: stop_grace_period {grace}s must outlast the drain delay {delay}s and the drain {drain}s"
    );
    let url = d["environment"]["DATABASE_URL"].as_str().unwrap();
    assert!(
        url.starts_with("mysql://") && url.contains("@mariadb:3306/"),
        "{url}"
    );
    assert_eq!(d["depends_on"]["mariadb"]["condition"], "service_healthy");
    // Every ${VAR} the shipped manifests use is set for the container.
    let env = d["environment"].as_mapping().unwrap();
    for var in ["DATABASE_URL", "NOTIFY_URL"] {
        assert!(env.contains_key(var), "{var} is not set for the dispatcher");
    }
    // The admin token comes from the operator's shell, never from the file itself.
    assert_eq!(
        d["environment"]["DISPATCHER_ADMIN_TOKEN"], "${DISPATCHER_ADMIN_TOKEN:-}",
        "the admin token must be passed through, not written down"
    );
    let volumes = c["volumes"].as_mapping().unwrap();
    let db_volume = db["volumes"][0]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    assert!(volumes.contains_key(db_volume));

    assert_eq!(
        lb["image"], "haproxy:2.6",
        "haproxy: expected image haproxy:2.6"
    );
    let ports: Vec<&str> = seq(&lb["ports"]).iter().filter_map(Value::as_str).collect();
    assert_eq!(ports, ["8080:8080"], "haproxy: expected to publish 8080");
    let mount = format!("./{HAPROXY_CFG}:/usr/local/etc/haproxy/haproxy.cfg:ro");
    assert!(
        seq(&lb["volumes"]).iter().any(|v| *v == mount.as_str()),
        "haproxy: expected the volume {mount}, found {:?}",
        lb["volumes"]
    );
    let depends = &lb["depends_on"];
    assert!(
        seq(depends).iter().any(|s| s == "dispatcher") || !depends["dispatcher"].is_null(),
        "haproxy: expected depends_on dispatcher"
    );

    // HAProxy listens where compose publishes, and its servers are the dispatcher service's
    // replicas on the port the image listens on.
    let cfg = haproxy_cfg();
    let frontend = cfg.section("frontend").expect("haproxy.cfg: a frontend");
    assert!(
        frontend.has("bind :8080"),
        "haproxy.cfg: the frontend must bind :8080"
    );
    let backend = cfg.section("backend").expect("haproxy.cfg: a backend");
    let template = backend
        .args("server-template")
        .expect("haproxy.cfg: the backend needs a server-template");
    // server-template <prefix> <count> <address:port> ...
    let slots: u64 = template[2].parse().expect("server-template slot count");
    assert_eq!(
        template[3], "dispatcher:8080",
        "haproxy.cfg: expected server-template over dispatcher:8080"
    );
    assert!(
        slots >= 3,
        "haproxy.cfg: {slots} server slots for 3 replicas"
    );
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("DISPATCHER_LISTEN=0.0.0.0:8080"),
        "the image must listen on 8080"
    );
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

/// haproxy.cfg as sections (a line at the left margin) of directive lines, comments left out.
struct Haproxy(Vec<Section>);

struct Section {
    header: String,
    lines: Vec<String>,
}

impl Section {
    fn has(&self, directive: &str) -> bool {
        self.lines.iter().any(|l| l == directive)
    }
    /// The words of the first line starting with `keyword`, the keyword included.
    fn args(&self, keyword: &str) -> Option<Vec<&str>> {
        self.lines
            .iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.first() == Some(&keyword))
    }
}

impl Haproxy {
    fn section(&self, kind: &str) -> Option<&Section> {
        self.0
            .iter()
            .find(|s| s.header.split_whitespace().next() == Some(kind))
    }
}

fn haproxy_cfg() -> Haproxy {
    let text = std::fs::read_to_string(repo().join(HAPROXY_CFG)).unwrap();
    let mut sections: Vec<Section> = Vec::new();
    for line in text.lines() {
        let code = line.split('#').next().unwrap();
        if code.trim().is_empty() {
            continue;
        }
        if !code.starts_with(char::is_whitespace) {
            sections.push(Section {
                header: code.trim().to_string(),
                lines: Vec::new(),
            });
        } else {
            let words: Vec<&str> = code.split_whitespace().collect();
            sections
                .last_mut()
                .expect("a directive before any section")
                .lines
                .push(words.join(" "));
        }
    }
    Haproxy(sections)
}

fn haproxy_check(cfg: &std::path::Path) -> (bool, String) {
    // -dW: a warning fails the check too.
    let out = Command::new("haproxy")
        .args(["-c", "-dW", "-f"])
        .arg(cfg)
        .output()
        .expect("haproxy runs (scripts/setup.sh installs it)");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), report)
}

#[test]
fn haproxy_accepts_its_config_and_checks_and_retries_the_replicas() {
    let (ok, report) = haproxy_check(&repo().join(HAPROXY_CFG));
    assert!(ok, "haproxy -c -dW -f {HAPROXY_CFG} failed:\n{report}");
    // The same check refuses a broken file, so a pass above means something.
    let broken = tempfile::NamedTempFile::new().unwrap();
    let text = std::fs::read_to_string(repo().join(HAPROXY_CFG)).unwrap();
    std::fs::write(
        broken.path(),
        text.replace("option redispatch", "option redispatchh"),
    )
    .unwrap();
    assert!(
        !haproxy_check(broken.path()).0,
        "haproxy -c accepted an unknown option"
    );

    let cfg = haproxy_cfg();
    let resolvers = cfg
        .section("resolvers")
        .expect("haproxy.cfg: a resolvers section");
    let resolvers_name = resolvers.header.split_whitespace().nth(1).unwrap();
    let ns = resolvers
        .args("nameserver")
        .expect("haproxy.cfg: resolvers needs a nameserver");
    assert_eq!(
        ns[2], "127.0.0.11:53",
        "haproxy.cfg: expected Docker's DNS as the nameserver"
    );
    let backend = cfg.section("backend").unwrap();
    let defaults = cfg.section("defaults").unwrap();
    // Server options given on the server-template or on default-server.
    let server_opts: Vec<&str> = ["server-template", "default-server"]
        .iter()
        .filter_map(|k| backend.args(k).or_else(|| defaults.args(k)))
        .flatten()
        .collect();
    let opt = |name: &str| {
        server_opts
            .iter()
            .position(|w| *w == name)
            .map(|i| server_opts.get(i + 1).copied())
    };
    assert_eq!(
        opt("resolvers"),
        Some(Some(resolvers_name)),
        "haproxy.cfg: servers must use the resolvers {resolvers_name}"
    );
    assert_eq!(
        opt("init-addr"),
        Some(Some("none")),
        "haproxy.cfg: expected init-addr none (start before the replicas resolve)"
    );
    assert!(opt("check").is_some(), "haproxy.cfg: servers need `check`");
    assert!(
        backend.has("option httpchk GET /_dispatcher/health"),
        "haproxy.cfg: expected option httpchk GET /_dispatcher/health"
    );
    assert!(
        backend.has("http-check expect status 200"),
        "haproxy.cfg: expected http-check expect status 200"
    );
    let either = |d: &str| backend.has(d) || defaults.has(d);
    assert!(either("mode http"), "haproxy.cfg: expected mode http");
    assert!(
        either("option redispatch"),
        "haproxy.cfg: expected option redispatch"
    );
    let retries = backend
        .args("retries")
        .or_else(|| defaults.args("retries"))
        .expect("haproxy.cfg: retries");
    assert!(
        retries[1].parse::<u32>().unwrap() > 0,
        "haproxy.cfg: retries must be above 0"
    );
    let retry_on = backend
        .args("retry-on")
        .or_else(|| defaults.args("retry-on"))
        .expect("haproxy.cfg: retry-on");
    for event in ["conn-failure", "empty-response", "response-timeout"] {
        assert!(
            retry_on.contains(&event),
            "haproxy.cfg: retry-on must include {event}"
        );
    }
    for t in ["connect", "client", "server", "http-request", "check"] {
        let prefix = format!("timeout {t} ");
        let set = [backend, defaults]
            .iter()
            .any(|s| s.lines.iter().any(|l| l.starts_with(&prefix)));
        assert!(set, "haproxy.cfg: expected timeout {t}");
    }
}

#[test]
fn dockerfile_paths_exist_and_match_the_manifests() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(stages, 2, "a build stage and a runtime stage");
    let mut manifests_dest = None;
    let mut wasm_dest = None;
    for line in text.lines().filter(|l| l.starts_with("COPY ")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let dest = *parts.last().unwrap();
        if parts[1].starts_with("--from=") {
            if parts[2].ends_with("*.wasm") {
                assert_eq!(parts[2], "/src/target/wasm32-wasip1/release/*.wasm");
                wasm_dest = Some(dest.trim_end_matches('/').to_string());
            } else {
                assert_eq!(parts[2], "/src/target/release/dispatcher");
            }
            continue;
        }
        for src in &parts[1..parts.len() - 1] {
            assert!(
                *src == "." || repo().join(src).exists(),
                "COPY source {src} is not in the repo"
            );
        }
        if parts[1] == "manifests" {
            manifests_dest = Some(dest.to_string());
        }
    }
    let manifests_dest = manifests_dest.expect("the manifests are copied");
    let wasm_dest = wasm_dest.expect("the modules are copied");
    let env = dockerfile_env(&text);
    assert_eq!(
        env.get("DISPATCHER_MANIFESTS"),
        Some(&manifests_dest),
        "ENV DISPATCHER_MANIFESTS"
    );
    // The modules are compiled at build time, in the runtime stage, from the manifests just
    // copied, into the read-only folder the ENV names, which is not the writable cache.
    let instructions = dockerfile_instructions(&text);
    let runtime = instructions
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .unwrap();
    let check = instructions
        .iter()
        .position(|i| i.starts_with("RUN ") && i.contains("dispatcher check"))
        .expect("a RUN dispatcher check step fills the precompiled folder");
    let last_copy = instructions
        .iter()
        .rposition(|i| i.starts_with("COPY "))
        .unwrap();
    let user = instructions
        .iter()
        .position(|i| i.starts_with("USER "))
        .expect("a USER");
    assert!(
        runtime < check && last_copy < check && check < user,
        "the check step runs in the runtime stage, after the COPYs, as root"
    );
    let words: Vec<&str> = instructions[check].split_whitespace().collect();
    let flag = |name: &str| {
        let i = words
            .iter()
            .position(|w| *w == name)
            .unwrap_or_else(|| panic!("dispatcher check without {name}"));
        words[i + 1].to_string()
    };
    let precompiled = env
        .get("DISPATCHER_PRECOMPILED")
        .expect("ENV DISPATCHER_PRECOMPILED");
    assert_eq!(
        flag("--manifests"),
        manifests_dest,
        "dispatcher check --manifests"
    );
    assert_eq!(
        &flag("--cache-dir"),
        precompiled,
        "dispatcher check --cache-dir vs ENV DISPATCHER_PRECOMPILED"
    );
    assert_ne!(
        env.get("DISPATCHER_CACHE_DIR"),
        Some(precompiled),
        "the writable cache must not be the precompiled folder"
    );
    assert!(
        instructions[check].contains(&format!("chown -R root:root {precompiled}")),
        "{precompiled} must belong to root (read-only for the dispatcher user)"
    );
    assert!(
        instructions[user] == "USER dispatcher" && text.contains("useradd --system --uid 10001"),
        "the image runs as the non-root user dispatcher (10001)"
    );
    // Each manifest's wasm path, resolved from the manifests' folder in the image, is where
    // the modules are copied, and its crate is in the workspace the image builds.
    for entry in std::fs::read_dir(repo().join("manifests")).unwrap() {
        let path = entry.unwrap().path();
        let toml: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let wasm = toml["wasm"].as_str().unwrap();
        let file = wasm.rsplit('/').next().unwrap();
        let resolved = std::path::Path::new(&manifests_dest).join(wasm);
        let normalized = normalize(&resolved);
        assert_eq!(
            normalized,
            format!("{wasm_dest}/{file}"),
            "{}",
            path.display()
        );
        let krate = file.trim_end_matches(".wasm");
        assert!(
            repo()
                .join("functions")
                .join(krate)
                .join("Cargo.toml")
                .exists(),
            "no crate for {file}"
        );
    }
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        "the build context must not carry target/"
    );
}

/// The Dockerfile's instructions, continuation lines joined, comments and blanks left out.
fn dockerfile_instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let (body, continued) = match line.trim_end().strip_suffix('\\') {
            Some(body) => (body, true),
            None => (line.trim_end(), false),
        };
        current.push_str(body.trim());
        current.push(' ');
        if !continued {
            if !current.trim().is_empty() {
                out.push(current.split_whitespace().collect::<Vec<_>>().join(" "));
            }
            current.clear();
        }
    }
    out
}

/// Every KEY=VALUE of the Dockerfile's ENV instructions.
fn dockerfile_env(text: &str) -> std::collections::BTreeMap<String, String> {
    dockerfile_instructions(text)
        .iter()
        .filter_map(|i| i.strip_prefix("ENV "))
        .flat_map(|rest| rest.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Resolves `..` segments of an absolute path.
fn normalize(p: &std::path::Path) -> String {
    let mut out: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    format!("/{}", out.join("/"))
}
