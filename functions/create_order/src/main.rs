//! `POST /create_order`: inserts one order from the JSON body.

use orders_db::{close, connect, order_params, parse_json, Order, Queryable, INSERT, STATUS_TRUE};

fn main() {
    orders_db::serve(|req| async move {
        let order: Order = parse_json(req.body())?;
        let mut conn = connect().await?;
        conn.exec_drop(INSERT, order_params(&order)).await?;
        close(conn).await;
        Ok(STATUS_TRUE.to_string())
    });
}
