//! Native baseline for the `orders` section: the seed's architecture, a long-running hyper 1.x
//! server with one `mysql_async` connection pool, answering `GET /orders` with every order as
//! the same JSON array `functions/list_orders` writes (same field order, `i32`s and `f32`s,
//! serialized by serde_json) and the same `Content-Type` and CORS headers.
//!
//! `native_orders ADDR DATABASE_URL [POOL_SIZE]` listens on ADDR (port 0 picks a free one) and
//! prints `native_orders listening on http://ADDR` on stdout once it is ready. The pool talks
//! TCP, as the function does (`prefer_socket(false)`: no switch to MariaDB's unix socket). With
//! POOL_SIZE it keeps exactly that many connections (min = max), as the dispatcher's pool is
//! bounded by `--db-pool-size`; without, mysql_async's default (10 kept idle, up to 100), which
//! under more concurrent requests than 10 closes and reopens connections all the time.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};
use serde::Serialize;
use tokio::net::TcpListener;

/// One order, as `orders_db::Order` serializes it.
#[derive(Serialize)]
struct Order {
    order_id: i32,
    product_id: i32,
    quantity: i32,
    amount: f32,
    shipping: f32,
    tax: f32,
    shipping_address: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: native_orders ADDR DATABASE_URL [POOL_SIZE]";
    let addr: SocketAddr = args.next().context(usage)?.parse().context(usage)?;
    let url = args.next().context(usage)?;
    let pool_size: Option<usize> = args.next().map(|n| n.parse().context(usage)).transpose()?;
    let opts = Opts::from_url(&url).with_context(|| format!("bad DATABASE_URL {url}"))?;
    let mut builder = OptsBuilder::from_opts(opts).prefer_socket(false);
    if let Some(n) = pool_size {
        let constraints = PoolConstraints::new(n, n).context("POOL_SIZE must be at least 1")?;
        builder = builder.pool_opts(PoolOpts::default().with_constraints(constraints));
    }
    let pool = Pool::new(builder);
    // Fail at start-up, not on the first request, if the database is not there.
    pool.get_conn()
        .await
        .context("cannot connect to the database")?;

    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    println!(
        "native_orders listening on http://{}",
        listener.local_addr()?
    );
    std::io::stdout().flush().context("stdout")?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("native_orders: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // As the dispatcher does: small responses must not wait for Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            eprintln!("native_orders: set_nodelay: {e}");
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(pool.clone(), req));
            // A client closing mid-request is normal under load; nothing to report.
            let _closed = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    pool: Pool,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if req.uri().path() != "/orders" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            r#"{"error":"not_found"}"#.into(),
        ));
    }
    if req.method() != Method::GET {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"method_not_allowed"}"#.into(),
        ));
    }
    Ok(match list_orders(&pool).await {
        Ok(body) => reply(StatusCode::OK, body),
        Err(e) => {
            eprintln!("native_orders: {e:#}");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"status":false,"error":"internal error"}"#.into(),
            )
        }
    })
}

/// `SELECT * FROM orders` on a pooled connection, as JSON.
async fn list_orders(pool: &Pool) -> anyhow::Result<String> {
    let mut conn = pool.get_conn().await.context("getting a connection")?;
    let orders = conn
        .query_map(
            "SELECT * FROM orders",
            |(order_id, product_id, quantity, amount, shipping, tax, shipping_address)| Order {
                order_id,
                product_id,
                quantity,
                amount,
                shipping,
                tax,
                shipping_address,
            },
        )
        .await
        .context("SELECT * FROM orders")?;
    Ok(serde_json::to_string(&orders)?)
}

/// A JSON answer with the seed's CORS headers, like `orders_db` sends.
fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("api,Keep-Alive,User-Agent,Content-Type"),
    );
    resp
}
