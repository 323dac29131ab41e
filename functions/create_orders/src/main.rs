//! `POST /create_orders`: inserts every order of a JSON array, in one transaction.

use orders_db::{close, connect, order_params, parse_json, Order, Queryable, INSERT, STATUS_TRUE};

fn main() {
    orders_db::serve(|req| async move {
        let orders: Vec<Order> = parse_json(req.body())?;
        let mut conn = connect().await?;
        let mut tx = conn.start_transaction(Default::default()).await?;
        tx.exec_batch(INSERT, orders.iter().map(order_params))
            .await?;
        tx.commit().await?;
        close(conn).await;
        Ok(STATUS_TRUE.to_string())
    });
}
