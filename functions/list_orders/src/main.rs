//! `GET /orders`: every order, as a JSON array.

use orders_db::{close, connect, Order, Queryable};

fn main() {
    orders_db::serve(|_req| async {
        let mut conn = connect().await?;
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
        close(conn).await;
        orders_db::to_json(&orders)
    });
}
