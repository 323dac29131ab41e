//! `POST /update_order`: updates the order with the body's `order_id`.

use orders_db::{close, connect, order_params, parse_json, Order, Queryable, STATUS_TRUE};

fn main() {
    orders_db::serve(|req| async move {
        let order: Order = parse_json(req.body())?;
        let mut conn = connect().await?;
        conn.exec_drop(
            "UPDATE orders SET product_id=:product_id, quantity=:quantity, amount=:amount, \
             shipping=:shipping, tax=:tax, shipping_address=:shipping_address WHERE order_id=:order_id",
            order_params(&order),
        )
        .await?;
        close(conn).await;
        Ok(STATUS_TRUE.to_string())
    });
}
