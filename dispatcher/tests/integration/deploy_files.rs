//! `docker-compose.yml` and the `Dockerfile`, checked without a Docker engine: the compose
//! file parses and wires the services, and the Dockerfile's paths exist in the repo and
//! agree with the manifests.

use crate::harness::repo;
use serde_yaml::Value;

fn compose() -> Value {
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    serde_yaml::from_str(&text).expect("docker-compose.yml is valid YAML")
}

#[test]
fn compose_wires_the_dispatcher_to_a_healthy_mariadb() {
    let c = compose();
    let services = &c["services"];
    let d = &services["dispatcher"];
    let db = &services["mariadb"];
    assert!(db["image"].as_str().unwrap().starts_with("mariadb:"));
    let health = db["healthcheck"]["test"]
        .as_sequence()
        .expect("mariadb has a healthcheck");
    assert!(!health.is_empty());
    assert!(db["healthcheck"]["interval"].is_string());

    assert_eq!(d["build"]["context"], ".");
    let dockerfile = d["build"]["dockerfile"].as_str().unwrap();
    assert!(repo().join(dockerfile).exists(), "{dockerfile} is missing");
    let ports: Vec<&str> = d["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(ports.contains(&"8080:8080"), "{ports:?}");
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
    assert!(text.contains(&format!("DISPATCHER_MANIFESTS={manifests_dest}")));
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
