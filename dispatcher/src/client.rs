//! The CLI's side of the admin API: `deploy`, `list`, `show`, `remove`, `rollback`, `invoke`.
//! Each call prints a human table (or `--json`) and turns a refusal into one line:
//! "401: the admin token was rejected by http://...".

use std::path::{Path, PathBuf};

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Where the platform is and how to authenticate.
pub struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Client> {
        let server = server.trim_end_matches('/').to_string();
        anyhow::ensure!(
            server.starts_with("http://") || server.starts_with("https://"),
            "--server `{server}` is not a URL: expected http://HOST:PORT"
        );
        let http = reqwest::Client::builder()
            .build()
            .context("cannot create the HTTP client")?;
        Ok(Client {
            http,
            server,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}/_dispatcher{path}", self.server));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    /// Sends and returns the status and body; a transport failure names the server.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<(StatusCode, bytes::Bytes)> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the platform at {}", self.server))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("reading the answer of {}", self.server))?;
        Ok((status, body))
    }

    /// Sends and expects a 2xx JSON answer; anything else becomes one clear error line.
    async fn call(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let (status, body) = self.send(req).await?;
        if !status.is_success() {
            return Err(self.refusal(status, &body));
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("{} answered with something that is not JSON", self.server))
    }

    fn refusal(&self, status: StatusCode, body: &[u8]) -> anyhow::Error {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let message = parsed
            .as_ref()
            .and_then(|v| v.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
        let code = status.as_u16();
        match status {
            StatusCode::UNAUTHORIZED if self.token.is_none() => anyhow::anyhow!(
                "{code}: {} needs an admin token: set DISPATCHER_ADMIN_TOKEN or pass --token",
                self.server
            ),
            StatusCode::UNAUTHORIZED => {
                anyhow::anyhow!("{code}: the admin token was rejected by {}", self.server)
            }
            _ if parsed
                .as_ref()
                .and_then(|v| v.get("errors"))
                .and_then(Value::as_array)
                .is_some_and(|a| a.len() > 1) =>
            {
                let lines: Vec<String> = parsed.as_ref().unwrap()["errors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|l| l.as_str().map(|l| format!("  {l}")))
                    .collect();
                anyhow::anyhow!("{code}: the deploy was refused:\n{}", lines.join("\n"))
            }
            _ => anyhow::anyhow!("{code}: {message}"),
        }
    }

    /// Deploys each manifest (with the module it names) and returns one report per manifest.
    pub async fn deploy(&self, manifest: &Path) -> anyhow::Result<Value> {
        let text = std::fs::read_to_string(manifest)
            .with_context(|| format!("cannot read {}", manifest.display()))?;
        let wasm_path = wasm_path(manifest, &text)?;
        let wasm = std::fs::read(&wasm_path).with_context(|| {
            format!(
                "cannot read {} (the `wasm` of {})",
                wasm_path.display(),
                manifest.display()
            )
        })?;
        let file_name = |p: &Path| {
            p.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let form = reqwest::multipart::Form::new()
            .part(
                "manifest",
                reqwest::multipart::Part::text(text).file_name(file_name(manifest)),
            )
            .part(
                "wasm",
                reqwest::multipart::Part::bytes(wasm)
                    .file_name(file_name(&wasm_path))
                    .mime_str("application/wasm")?,
            );
        let req = self
            .request(Method::POST, "/functions")
            .header("x-deployed-by", whoami())
            .multipart(form);
        self.call(req).await
    }

    pub async fn list(&self) -> anyhow::Result<Value> {
        self.call(self.request(Method::GET, "/functions")).await
    }

    pub async fn show(&self, name: &str) -> anyhow::Result<Value> {
        self.call(self.request(Method::GET, &format!("/functions/{name}")))
            .await
    }

    pub async fn remove(&self, name: &str) -> anyhow::Result<Value> {
        self.call(self.request(Method::DELETE, &format!("/functions/{name}")))
            .await
    }

    pub async fn rollback(&self, name: &str, to: Option<u32>) -> anyhow::Result<Value> {
        let query = to.map(|v| format!("?to={v}")).unwrap_or_default();
        self.call(self.request(Method::POST, &format!("/functions/{name}/rollback{query}")))
            .await
    }

    /// Runs a function once; returns its body, or an error line for a non-2xx answer.
    pub async fn invoke(
        &self,
        name: &str,
        query: Option<&str>,
        data: Vec<u8>,
    ) -> anyhow::Result<bytes::Bytes> {
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        let req = self
            .request(Method::POST, &format!("/functions/{name}/invoke{query}"))
            .body(data);
        let (status, body) = self.send(req).await?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(self.refusal(status, &body))
        }
    }
}

/// The module a manifest names, relative to the manifest.
fn wasm_path(manifest: &Path, text: &str) -> anyhow::Result<PathBuf> {
    let value: toml::Value = toml::from_str(text).map_err(|e| {
        anyhow::anyhow!("{}: invalid manifest: {}", manifest.display(), e.message())
    })?;
    let wasm = value
        .get("wasm")
        .and_then(toml::Value::as_str)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: `wasm`: missing: expected the path of the function's .wasm",
                manifest.display()
            )
        })?;
    let base = manifest.parent().unwrap_or(Path::new("."));
    Ok(base.join(wasm))
}

/// `user@host`, for the version history.
fn whoami() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

/// Short hash for tables.
fn short(v: &Value) -> String {
    v.as_str()
        .map(|h| h.chars().take(12).collect())
        .unwrap_or_default()
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Human size: 1.9 MiB.
fn size(v: &Value) -> String {
    let n = v.as_u64().unwrap_or(0) as f64;
    if n >= (1 << 20) as f64 {
        format!("{:.1} MiB", n / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", n / 1024.0)
    }
}

/// The table for `deploy`, `rollback` and `remove` reports.
pub fn print_reports(reports: &[Value]) {
    for r in reports {
        let action = r["action"].as_str().unwrap_or("?");
        let compiled = match r["compiled"].as_bool() {
            Some(true) => format!(", compiled in {} ms", r["load_ms"]),
            Some(false) => format!(", already compiled ({} ms)", r["load_ms"]),
            None => String::new(),
        };
        println!(
            "{action:<11} {} version {} ({}, {}{compiled})",
            s(&r["name"]),
            s(&r["version"]),
            short(&r["module_hash"]),
            size(&r["module_size"]),
        );
    }
}

/// The table for `list`.
pub fn print_list(functions: &Value) {
    println!(
        "{:<18} {:>7}  {:<28} {:<10} {:<27} {:<12} {:>9}",
        "NAME", "VERSION", "ROUTE", "SCHEDULES", "DEPLOYED AT", "MODULE", "SIZE"
    );
    for f in functions.as_array().map(Vec::as_slice).unwrap_or_default() {
        println!(
            "{:<18} {:>7}  {:<28} {:<10} {:<27} {:<12} {:>9}",
            s(&f["name"]),
            s(&f["version"]),
            s(&f["route"]),
            f["schedules"].as_array().map_or(0, Vec::len),
            s(&f["deployed_at"]),
            short(&f["module_hash"]),
            size(&f["module_size"]),
        );
    }
}

/// The view for `show`.
pub fn print_details(d: &Value) {
    let current = &d["current"];
    if current.is_null() {
        println!("not deployed (removed); its versions:");
    } else {
        println!("name:       {}", s(&current["name"]));
        println!("version:    {}", s(&current["version"]));
        println!("route:      {}", s(&current["route"]));
        for sch in current["schedules"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            println!("schedule:   {}", s(sch));
        }
        println!(
            "module:     {} ({})",
            s(&current["module_hash"]),
            size(&current["module_size"])
        );
        println!();
    }
    println!(
        "  {:>7}  {:<27} {:<24} {:<12} {:>9}  SOURCE",
        "VERSION", "DEPLOYED AT", "BY", "MODULE", "SIZE"
    );
    let cur = d["current_version"].as_u64();
    for v in d["versions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let mark = if v["version"].as_u64() == cur && cur.is_some() {
            "*"
        } else {
            " "
        };
        println!(
            "{mark} {:>7}  {:<27} {:<24} {:<12} {:>9}  {}",
            s(&v["version"]),
            s(&v["deployed_at"]),
            s(&v["deployed_by"]),
            short(&v["module_hash"]),
            size(&v["module_size"]),
            s(&v["source"]),
        );
    }
}
