//! `GET /order_stats`: the summary the `order_stats` job wrote, as JSON.

use orders_db::{close, connect, Queryable};
use serde::Serialize;

#[derive(Serialize)]
struct ProductStats {
    product_id: i32,
    order_count: i64,
    total_amount: f64,
    computed_for: String,
}

fn main() {
    orders_db::serve(|_req| async {
        let mut conn = connect().await?;
        let exists: Option<i64> = conn
            .query_first(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'order_stats'",
            )
            .await?;
        let stats = if exists.is_some() {
            conn.query_map(
                "SELECT product_id, order_count, total_amount, computed_for FROM order_stats ORDER BY product_id",
                |(product_id, order_count, total_amount, computed_for)| ProductStats {
                    product_id,
                    order_count,
                    total_amount,
                    computed_for,
                },
            )
            .await?
        } else {
            Vec::new()
        };
        close(conn).await;
        orders_db::to_json(&stats)
    });
}
