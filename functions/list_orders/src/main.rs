//! `GET /orders`: every order, as a JSON array.
//!
//! With `ORDERS_TIMINGS=1` in the manifest's `[env]`, it logs how long connecting, querying
//! and closing took (the bench uses this to break an invocation down).

use std::time::Instant;

use orders_db::{close, connect, Order, Queryable};

fn main() {
    let started = Instant::now();
    let timings = std::env::var_os("ORDERS_TIMINGS").is_some();
    orders_db::serve(|_req| async move {
        let t0 = Instant::now();
        let mut conn = connect().await?;
        let t1 = Instant::now();
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
            .await?;
        let t2 = Instant::now();
        close(conn).await;
        let t3 = Instant::now();
        if timings {
            eprintln!(
                "timings start_us={} connect_us={} query_us={} close_us={}",
                (t0 - started).as_micros(),
                (t1 - t0).as_micros(),
                (t2 - t1).as_micros(),
                (t3 - t2).as_micros()
            );
        }
        orders_db::to_json(&orders)
    });
}
