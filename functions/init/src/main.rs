//! `GET /init`: (re)creates the `orders` table, as the seed does.

use orders_db::{close, connect, Queryable, STATUS_TRUE};

fn main() {
    orders_db::serve(|_req| async {
        let mut conn = connect().await?;
        conn.query_drop("DROP TABLE IF EXISTS orders;").await?;
        conn.query_drop(
            "CREATE TABLE orders (order_id INT, product_id INT, quantity INT, amount FLOAT, \
             shipping FLOAT, tax FLOAT, shipping_address VARCHAR(256));",
        )
        .await?;
        close(conn).await;
        Ok(STATUS_TRUE.to_string())
    });
}
