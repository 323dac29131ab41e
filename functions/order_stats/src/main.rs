//! A scheduled job (every minute in `manifests/order_stats.toml`): rewrites `order_stats`
//! with a per-product summary of `orders` (count and total amount), in one transaction.

use orders_db::{close, connect, Queryable, STATUS_TRUE};

fn main() {
    orders_db::serve(|_req| async {
        let scheduled_at = std::env::var("SCHEDULED_AT").unwrap_or_default();
        let mut conn = connect().await?;
        conn.query_drop(
            "CREATE TABLE IF NOT EXISTS order_stats (product_id INT PRIMARY KEY, order_count INT NOT NULL, \
             total_amount DOUBLE NOT NULL, computed_for VARCHAR(40) NOT NULL)",
        )
        .await?;
        let has_orders: Option<i64> = conn
            .query_first(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'orders'",
            )
            .await?;
        let mut tx = conn.start_transaction(Default::default()).await?;
        tx.query_drop("DELETE FROM order_stats").await?;
        if has_orders.is_some() {
            tx.exec_drop(
                "INSERT INTO order_stats (product_id, order_count, total_amount, computed_for) \
                 SELECT product_id, COUNT(*), SUM(amount), ? FROM orders GROUP BY product_id",
                (scheduled_at,),
            )
            .await?;
        }
        tx.commit().await?;
        close(conn).await;
        Ok(STATUS_TRUE.to_string())
    });
}
