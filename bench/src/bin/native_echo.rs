//! Native baseline for the HTTP sections: a minimal hyper 1.x server that answers every request
//! with its body (and its `Content-Type`), like `functions/echo` behind the dispatcher.
//!
//! `native_echo [ADDR]` listens on ADDR (default `127.0.0.1:0`, a free port) and prints
//! `native_echo listening on http://ADDR` on stdout once it is ready.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let arg = std::env::args().nth(1);
    let addr: SocketAddr = arg
        .as_deref()
        .unwrap_or("127.0.0.1:0")
        .parse()
        .context("usage: native_echo [ADDR]")?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    println!("native_echo listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush().context("stdout")?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("native_echo: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // As the dispatcher does: small responses must not wait for Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            eprintln!("native_echo: set_nodelay: {e}");
        }
        tokio::spawn(async move {
            // A client closing mid-request is normal under load; nothing to report.
            let _closed = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(echo))
                .await;
        });
    }
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let content_type = req.headers().get(CONTENT_TYPE).cloned();
    let body = req.into_body().collect().await?.to_bytes();
    let mut resp = Response::new(Full::new(body));
    if let Some(ct) = content_type {
        resp.headers_mut().insert(CONTENT_TYPE, ct);
    }
    Ok(resp)
}
