//! `GET /order_count`: a program written the way WasmEdge's docs show (`#[tokio::main]` on the
//! current-thread flavor, `Pool::new(url)`), with no SDK: it runs here unchanged. It answers
//! CGI by printing headers and the body.

use mysql_async::prelude::*;
use mysql_async::Pool;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")?;
    let pool = Pool::new(url.as_str());
    let mut conn = pool.get_conn().await?;
    let count: Option<i64> = "SELECT COUNT(*) FROM orders".first(&mut conn).await?;
    drop(conn);
    pool.disconnect().await?;
    println!("Content-Type: application/json");
    println!();
    println!("{{\"count\":{}}}", count.unwrap_or(0));
    Ok(())
}
