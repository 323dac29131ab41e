//! The CLI's side of the admin API: one typed call per endpoint, each turning a refusal into
//! one line: "401: the admin token was rejected by http://...".

use std::path::{Path, PathBuf};

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::api::{Details, ErrorBody, LogLine, Report, Summary};

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

    /// Sends and expects a 2xx JSON answer of type `T`; anything else becomes one clear
    /// error line.
    async fn call<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let (status, body) = self.send(req).await?;
        if !status.is_success() {
            return Err(self.refusal(status, &body));
        }
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "{} answered with something this CLI does not understand (a different version?)",
                self.server
            )
        })
    }

    fn refusal(&self, status: StatusCode, body: &[u8]) -> anyhow::Error {
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let message = parsed
            .as_ref()
            .map(|e| e.message.clone())
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
            _ if parsed.as_ref().is_some_and(|e| e.errors.len() > 1) => {
                let lines: Vec<String> = parsed
                    .iter()
                    .flat_map(|e| &e.errors)
                    .map(|l| format!("  {l}"))
                    .collect();
                anyhow::anyhow!("{code}: the deploy was refused:\n{}", lines.join("\n"))
            }
            _ => anyhow::anyhow!("{code}: {message}"),
        }
    }

    /// Deploys each manifest (with the module it names) and returns one report per manifest.
    pub async fn deploy(&self, manifest: &Path) -> anyhow::Result<Report> {
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

    pub async fn list(&self) -> anyhow::Result<Vec<Summary>> {
        self.call(self.request(Method::GET, "/functions")).await
    }

    pub async fn show(&self, name: &str) -> anyhow::Result<Details> {
        self.call(self.request(Method::GET, &format!("/functions/{name}")))
            .await
    }

    pub async fn remove(&self, name: &str) -> anyhow::Result<Report> {
        self.call(self.request(Method::DELETE, &format!("/functions/{name}")))
            .await
    }

    pub async fn rollback(&self, name: &str, to: Option<u32>) -> anyhow::Result<Report> {
        let query = to.map(|v| format!("?to={v}")).unwrap_or_default();
        self.call(self.request(Method::POST, &format!("/functions/{name}/rollback{query}")))
            .await
    }

    /// Streams a function's recent log lines (NDJSON) to `each`, one parsed line at a time;
    /// with `follow`, until the server ends the stream (or the process is stopped).
    pub async fn logs(
        &self,
        name: &str,
        request: Option<&str>,
        follow: bool,
        mut each: impl FnMut(LogLine),
    ) -> anyhow::Result<()> {
        let mut query = Vec::new();
        if let Some(r) = request {
            query.push(format!("request={r}"));
        }
        if follow {
            query.push("follow=1".into());
        }
        let path = format!("/functions/{name}/logs?{}", query.join("&"));
        let mut resp = self
            .request(Method::GET, &path)
            .send()
            .await
            .with_context(|| format!("cannot reach the platform at {}", self.server))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            return Err(self.refusal(status, &body));
        }
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .with_context(|| format!("reading the log stream of {}", self.server))?
        {
            pending.extend_from_slice(&chunk);
            while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                let line = &line[..line.len() - 1];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue; // a heartbeat
                }
                let parsed: LogLine = serde_json::from_slice(line).with_context(|| {
                    format!(
                        "{} sent a log line this CLI does not understand",
                        self.server
                    )
                })?;
                each(parsed);
            }
        }
        Ok(())
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
