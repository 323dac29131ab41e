//! `sqlprobe`: runs the SQL statements of the request body on one session to `DATABASE_URL`
//! and answers, as JSON, what each returned, plus the session's `CONNECTION_ID()`. The
//! dispatcher's database-pool tests use it to leave state behind in one session and look for
//! it from the next.
//!
//! The body (every field optional):
//!
//! ```json
//! {
//!   "statements": ["SET @x = 1", "SELECT @x",
//!                  {"sql": "SELECT ? + 1", "params": [41], "prepared": true, "close": false},
//!                  {"sql": "SELECT seq FROM seq_1_to_1000000", "max_rows": 1}],
//!   "prepared": false,
//!   "end": "quit",
//!   "connections": 0,
//!   "hold_ms": 0,
//!   "connect_timeout_ms": 10000
//! }
//! ```
//!
//! * A statement given as a string runs over the text protocol (`COM_QUERY`), or as a
//!   prepared statement when `"prepared": true`. An object can say so per statement:
//!   `prepared` runs it with `COM_STMT_PREPARE`/`COM_STMT_EXECUTE` and `params`; the statement
//!   stays prepared on the server (in the driver's statement cache) unless `close` is true.
//!   `max_rows` stops reading its result after that many rows, leaving the rest unread, and
//!   runs no further statement: the session then ends in the middle of a result set.
//!   `{"command": "reset" | "ping" | "change_user", "user": .., "password": .., "db": ..}`
//!   sends `COM_RESET_CONNECTION`, `COM_PING` or `COM_CHANGE_USER` instead of a query.
//! * `end`, how the session ends: `quit` sends `COM_QUIT` (`Conn::disconnect`); `drop` closes
//!   nothing and sends nothing (the socket goes away with the instance); `trap` aborts the
//!   instance after the statements; `hang` sleeps until the function's timeout. Before `trap`
//!   and `hang` the answer is written to stderr (the dispatcher's log) as one line
//!   `sqlprobe answer: {...}`, since no response comes back.
//! * `connections`: instead of the statements, open this many connections at once, keep the
//!   ones that open for `hold_ms`, then end them all as `end` says (`quit` or `drop`).
//!
//! The answer (always 200 unless the instance traps or hangs):
//!
//! ```json
//! {"connection_id": 17, "error": null,
//!  "results": [{"rows": [["1", null]], "affected_rows": 0}, {"error": {"code": 1146, "message": "..."}}]}
//! ```
//!
//! `error` is set when the session could not be opened (`{"code": 1045, "message": "Access
//! denied ..."}`; `code` is the server's error number, or null for an I/O or driver error). In
//! `connections` mode the answer is `{"opened": 16, "errors": [{"code": 1040, "message": "...",
//! "count": 48}], "took_ms": 5012}`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use function_sdk::http::{header, HeaderValue};
use function_sdk::{Request, Response};
use mysql_async::prelude::*;
use mysql_async::{ChangeUserOpts, Conn, Opts, OptsBuilder, Params, Row, Value};
use serde::Deserialize;
use serde_json::{json, Value as Json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Probe {
    #[serde(default)]
    statements: Vec<Statement>,
    #[serde(default)]
    prepared: bool,
    #[serde(default)]
    end: End,
    #[serde(default)]
    connections: usize,
    #[serde(default)]
    hold_ms: u64,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_ms: u64,
}

fn default_connect_timeout() -> u64 {
    10_000
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Statement {
    Text(String),
    Full(FullStatement),
    Command(DriverCommand),
}

/// A protocol command other than a query: `{"command": "reset"}` (`COM_RESET_CONNECTION`),
/// `{"command": "ping"}`, `{"command": "change_user", "user": "root", "password": null}`
/// (`COM_CHANGE_USER`; absent fields keep the session's).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DriverCommand {
    command: String,
    user: Option<String>,
    password: Option<String>,
    db: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FullStatement {
    sql: String,
    #[serde(default)]
    params: Vec<Json>,
    prepared: Option<bool>,
    #[serde(default)]
    close: bool,
    max_rows: Option<usize>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum End {
    #[default]
    Quit,
    Drop,
    Trap,
    Hang,
}

fn main() {
    function_sdk::run_async(|req: Request| async move {
        let answer = match serde_json::from_slice::<Probe>(req.body()) {
            Ok(probe) => probe_db(probe).await,
            Err(e) => {
                json!({ "error": { "code": null, "message": format!("bad request body: {e}") } })
            }
        };
        let mut resp = Response::new(answer.to_string().into_bytes());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    });
}

/// `DATABASE_URL` as driver options; no unix socket (a fresh instance has none to switch to)
/// and a statement cache big enough that nothing prepared is evicted (closed) behind our back.
fn opts() -> Result<Opts, Json> {
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| message_error("DATABASE_URL is not set in the manifest's [env]"))?;
    let opts = Opts::from_url(&url).map_err(|e| message_error(&format!("DATABASE_URL: {e}")))?;
    Ok(OptsBuilder::from_opts(opts)
        .prefer_socket(false)
        .stmt_cache_size(4096)
        .into())
}

async fn probe_db(probe: Probe) -> Json {
    let opts = match opts() {
        Ok(opts) => opts,
        Err(e) => return json!({ "error": e }),
    };
    let connect_timeout = Duration::from_millis(probe.connect_timeout_ms);
    if probe.connections > 0 {
        return many_connections(&probe, opts, connect_timeout).await;
    }

    let mut conn = match connect(opts, connect_timeout).await {
        Ok(conn) => conn,
        Err(e) => return json!({ "connection_id": null, "error": e, "results": [] }),
    };
    let connection_id = match "SELECT CONNECTION_ID()".first::<u64, _>(&mut conn).await {
        Ok(id) => json!(id),
        Err(e) => return json!({ "connection_id": null, "error": db_error(&e), "results": [] }),
    };
    let mut results = Vec::new();
    for statement in &probe.statements {
        let (result, cut) = run(&mut conn, statement, probe.prepared).await;
        results.push(result);
        if cut {
            break;
        }
    }
    let mut answer = json!({ "connection_id": connection_id, "error": null, "results": results });
    match probe.end {
        End::Quit => {
            if let Err(e) = conn.disconnect().await {
                answer["quit_error"] = db_error(&e);
            }
        }
        // No COM_QUIT, not even the one `Drop for Conn` would send from a spawned task.
        End::Drop => std::mem::forget(conn),
        End::Trap => {
            eprintln!("sqlprobe answer: {answer}");
            std::process::abort();
        }
        End::Hang => {
            eprintln!("sqlprobe answer: {answer}");
            tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
            drop(conn);
        }
    }
    answer
}

async fn connect(opts: Opts, limit: Duration) -> Result<Conn, Json> {
    match tokio::time::timeout(limit, Conn::new(opts)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(db_error(&e)),
        Err(_) => Err(message_error(&format!(
            "connecting timed out after {} ms",
            limit.as_millis()
        ))),
    }
}

/// Runs one statement; `true` when its result was cut off by `max_rows`.
async fn run(conn: &mut Conn, statement: &Statement, prepared_by_default: bool) -> (Json, bool) {
    let (sql, params, prepared, close, max_rows) = match statement {
        Statement::Command(c) => return (command(conn, c).await, false),
        Statement::Text(sql) => (sql.as_str(), &[][..], prepared_by_default, false, None),
        Statement::Full(s) => (
            s.sql.as_str(),
            &s.params[..],
            s.prepared.unwrap_or(prepared_by_default),
            s.close,
            s.max_rows,
        ),
    };
    let outcome = if prepared {
        let params = if params.is_empty() {
            Params::Empty
        } else {
            Params::Positional(params.iter().map(to_value).collect())
        };
        if close {
            run_prepared_and_close(conn, sql, params, max_rows).await
        } else {
            // A &str goes through the driver's statement cache: prepared once and left open.
            match conn.exec_iter(sql, params).await {
                Ok(result) => read(result, max_rows).await,
                Err(e) => Err(e),
            }
        }
    } else {
        match conn.query_iter(sql).await {
            Ok(result) => read(result, max_rows).await,
            Err(e) => Err(e),
        }
    };
    match outcome {
        Ok((rows, affected_rows, cut)) => {
            let mut result = json!({ "rows": rows, "affected_rows": affected_rows });
            if cut {
                result["cut"] = json!(true);
            }
            (result, cut)
        }
        Err(e) => (json!({ "error": db_error(&e) }), false),
    }
}

async fn command(conn: &mut Conn, c: &DriverCommand) -> Json {
    let outcome = match c.command.as_str() {
        "reset" => conn
            .reset()
            .await
            .map(|done| json!({ "rows": [], "reset": done })),
        "ping" => conn.ping().await.map(|()| json!({ "rows": [] })),
        "change_user" => {
            let mut opts = ChangeUserOpts::default();
            if let Some(user) = &c.user {
                opts = opts.with_user(Some(user.clone()));
            }
            if let Some(password) = &c.password {
                opts = opts.with_pass(Some(password.clone()));
            }
            if let Some(db) = &c.db {
                opts = opts.with_db_name(Some(db.clone()));
            }
            conn.change_user(opts).await.map(|()| json!({ "rows": [] }))
        }
        other => return json!({ "error": message_error(&format!("unknown command `{other}`")) }),
    };
    outcome.unwrap_or_else(|e| json!({ "error": db_error(&e) }))
}

async fn run_prepared_and_close(
    conn: &mut Conn,
    sql: &str,
    params: Params,
    max_rows: Option<usize>,
) -> mysql_async::Result<(Vec<Json>, u64, bool)> {
    let stmt = conn.prep(sql).await?;
    let outcome = read(conn.exec_iter(&stmt, params).await?, max_rows).await?;
    if !outcome.2 {
        conn.close(stmt).await?;
    }
    Ok(outcome)
}

/// The rows of the first result set (all of them, or `max_rows`), and the affected-row count;
/// further result sets are read and dropped unless the read was cut short.
async fn read<P: mysql_async::prelude::Protocol>(
    mut result: mysql_async::QueryResult<'_, '_, P>,
    max_rows: Option<usize>,
) -> mysql_async::Result<(Vec<Json>, u64, bool)> {
    let mut rows = Vec::new();
    while let Some(row) = result.next().await? {
        rows.push(row_json(&row));
        if max_rows == Some(rows.len()) {
            // Leave the rest unread: the conn still has the result set pending.
            return Ok((rows, 0, true));
        }
    }
    let affected = result.affected_rows();
    result.drop_result().await?;
    Ok((rows, affected, false))
}

/// Opens `probe.connections` connections at once, keeps them for `hold_ms`, then ends them.
async fn many_connections(probe: &Probe, opts: Opts, limit: Duration) -> Json {
    let started = Instant::now();
    let tasks: Vec<_> = (0..probe.connections)
        .map(|_| tokio::spawn(connect(opts.clone(), limit)))
        .collect();
    let mut conns = Vec::new();
    let mut errors: BTreeMap<(Option<u64>, String), u64> = BTreeMap::new();
    for task in tasks {
        let outcome = task
            .await
            .unwrap_or_else(|e| Err(message_error(&format!("task: {e}"))));
        match outcome {
            Ok(conn) => conns.push(conn),
            Err(e) => {
                let key = (
                    e["code"].as_u64(),
                    e["message"].as_str().unwrap_or("").to_string(),
                );
                *errors.entry(key).or_default() += 1;
            }
        }
    }
    let opened = conns.len();
    let took_ms = started.elapsed().as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(probe.hold_ms)).await;
    for conn in conns {
        match probe.end {
            End::Drop => std::mem::forget(conn),
            _ => {
                let _ = conn.disconnect().await;
            }
        }
    }
    let errors: Vec<Json> = errors
        .into_iter()
        .map(|((code, message), count)| json!({ "code": code, "message": message, "count": count }))
        .collect();
    json!({ "opened": opened, "errors": errors, "took_ms": took_ms })
}

fn row_json(row: &Row) -> Json {
    Json::Array((0..row.len()).map(|i| cell(row.as_ref(i))).collect())
}

/// A value as a string (or null), whichever protocol brought it.
fn cell(value: Option<&Value>) -> Json {
    let text = match value {
        None | Some(Value::NULL) => return Json::Null,
        Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::Int(n)) => n.to_string(),
        Some(Value::UInt(n)) => n.to_string(),
        Some(Value::Float(x)) => x.to_string(),
        Some(Value::Double(x)) => x.to_string(),
        Some(Value::Date(y, mo, d, h, mi, s, us)) => {
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
        }
        Some(Value::Time(neg, d, h, mi, s, us)) => {
            let sign = if *neg { "-" } else { "" };
            format!("{sign}{}:{mi:02}:{s:02}.{us:06}", u32::from(*h) + d * 24)
        }
    };
    Json::String(text)
}

fn to_value(param: &Json) -> Value {
    match param {
        Json::Null => Value::NULL,
        Json::Bool(b) => Value::Int(i64::from(*b)),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Double(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Value::Bytes(s.clone().into_bytes()),
        other => Value::Bytes(other.to_string().into_bytes()),
    }
}

/// `{"code": <server error number or null>, "message": "..."}`
fn db_error(e: &mysql_async::Error) -> Json {
    match e {
        mysql_async::Error::Server(s) => json!({ "code": s.code, "message": s.message }),
        other => message_error(&other.to_string()),
    }
}

fn message_error(message: &str) -> Json {
    json!({ "code": null, "message": message })
}
