//! `GET /delete_order?id=N`: deletes the order with that `order_id`.

use orders_db::{close, connect, params, query_i32, Queryable, STATUS_TRUE};

fn main() {
    orders_db::serve(|req| async move {
        let id = query_i32(&req, "id")?;
        let mut conn = connect().await?;
        conn.exec_drop(
            "DELETE FROM orders WHERE order_id=:order_id",
            params! { "order_id" => id },
        )
        .await?;
        close(conn).await;
        Ok(STATUS_TRUE.to_string())
    });
}
