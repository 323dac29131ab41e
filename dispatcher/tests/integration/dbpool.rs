//! Database sessions from the dispatcher's pool. A function whose `[network] allow` lists a
//! `mysql://` URL has its guest's connections to that host:port served by the dispatcher: it
//! checks the guest's login against the URL's user and password, then relays the session
//! over a pooled backend connection, which is reset (`COM_RESET_CONNECTION`, `COM_INIT_DB`)
//! when the session ends and reused by the next one.
//!
//! Every test drives the `sqlprobe` function (functions/sqlprobe: it runs the request's SQL on
//! one session and answers what each statement returned, plus `CONNECTION_ID()`) and owns a
//! database and a MariaDB user, dropped afterwards. The user is the test's own so that
//! `information_schema.processlist` tells exactly which connections are this test's.
//!
//! The isolation tests run with `--db-pool-size 1`: the second session must get the first
//! one's backend, and each asserts that it did (equal `CONNECTION_ID()`s), since state that
//! does not cross to another connection proves nothing.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::{json, Value};

use crate::harness::{
    client, manifest, sql, try_sql, unique_name, wait_until, wasm, Dispatcher, Options, Proxy,
};

const MARIADB: &str = "127.0.0.1:3306";

/// The tests that count MariaDB's connections (`SHOW GLOBAL STATUS LIKE 'Connections'`) run
/// alone among this module's tests (a write lock); every other test here takes a read lock.
/// An async lock: each test holds it across its awaits.
static QUIET: RwLock<()> = RwLock::const_new(());

async fn shared() -> RwLockReadGuard<'static, ()> {
    QUIET.read().await
}

async fn alone() -> RwLockWriteGuard<'static, ()> {
    QUIET.write().await
}

/// A database and a MariaDB user (with a password, allowed everything on it) of the test's
/// own; both dropped at the end, with any extra databases made by [`PoolDb::other_db`].
struct PoolDb {
    name: String,
    user: String,
    password: String,
    others: Mutex<Vec<String>>,
}

impl PoolDb {
    fn create(tag: &str) -> PoolDb {
        let name = unique_name("dbp", tag);
        let user = unique_name("u", tag);
        let password = format!("pw{}x{}", std::process::id(), name.len());
        sql(&format!(
            "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}; \
             DROP USER IF EXISTS '{user}'@'%'; CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'; \
             GRANT ALL ON {name}.* TO '{user}'@'%'"
        ));
        PoolDb {
            name,
            user,
            password,
            others: Mutex::default(),
        }
    }

    /// `mysql://user:password@127.0.0.1:3306/db`
    fn url(&self) -> String {
        self.url_at(MARIADB)
    }

    fn url_at(&self, addr: &str) -> String {
        format!(
            "mysql://{}:{}@{addr}/{}",
            self.user, self.password, self.name
        )
    }

    /// Another database the user may use; dropped with this one.
    fn other_db(&self, suffix: &str) -> String {
        let other = format!("{}_{suffix}", self.name);
        sql(&format!(
            "DROP DATABASE IF EXISTS {other}; CREATE DATABASE {other}; GRANT ALL ON {other}.* TO '{}'@'%'",
            self.user
        ));
        self.others.lock().unwrap().push(other.clone());
        other
    }

    /// The ids of the connections MariaDB has open for this user, right now.
    fn connections(&self) -> Vec<u64> {
        sql(&format!(
            "SELECT id FROM information_schema.processlist WHERE user = '{}' ORDER BY id",
            self.user
        ))
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
    }

    /// A table `t (id INT PRIMARY KEY)` in InnoDB.
    fn with_table(self) -> Self {
        sql(&format!(
            "CREATE TABLE {}.t (id INT PRIMARY KEY) ENGINE=InnoDB",
            self.name
        ));
        self
    }

    fn rows_in_t(&self) -> u64 {
        sql(&format!("SELECT COUNT(*) FROM {}.t", self.name))
            .trim()
            .parse()
            .unwrap()
    }

    /// From outside: the rows 1 and 2 can be inserted into `t` and deleted again within 2 s,
    /// so no session still holds a lock on them (an open transaction that inserted them
    /// would make this wait, then fail).
    fn assert_t_is_not_locked(&self) {
        let db = &self.name;
        try_sql(&format!(
            "SET SESSION innodb_lock_wait_timeout = 2; SET SESSION lock_wait_timeout = 2; \
             INSERT INTO {db}.t VALUES (1), (2); DELETE FROM {db}.t"
        ))
        .unwrap_or_else(|e| panic!("a lock on {db}.t outlived its session: {e}"));
    }
}

impl Drop for PoolDb {
    fn drop(&mut self) {
        let mut drop = format!(
            "DROP DATABASE IF EXISTS {}; DROP USER IF EXISTS '{}'@'%';",
            self.name, self.user
        );
        for other in self.others.lock().unwrap().iter() {
            drop.push_str(&format!("DROP DATABASE IF EXISTS {other};"));
        }
        if let Err(e) = try_sql(&drop) {
            eprintln!("cleaning up the test database: {e}");
        }
    }
}

/// Connections MariaDB has accepted since it started (every client, every database).
fn connections_accepted() -> u64 {
    let out = sql("SHOW GLOBAL STATUS LIKE 'Connections'");
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Writes the manifest of a `sqlprobe` function `name`, routed at `/name`: its guest
/// connects with `guest_url` (its `DATABASE_URL`), the manifest allows `allow`, and `limits`
/// and `network` are more lines for those sections.
fn probe_fn(dir: &Path, name: &str, guest_url: &str, allow: &str, limits: &str, network: &str) {
    manifest(
        dir,
        name,
        &format!(
            "name = \"{name}\"\nwasm = \"{}\"\n[trigger.http]\npath = \"/{name}\"\n\
             [env]\nDATABASE_URL = \"{guest_url}\"\n[limits]\n{limits}\n\
             [network]\nallow = [\"{allow}\"]\n{network}\n",
            wasm("sqlprobe").display()
        ),
    );
}

/// A dispatcher for `dir`, with `--db-pool-size` if given.
fn serve(dir: &Path, pool_size: Option<&'static str>) -> Dispatcher {
    let mut args = Vec::new();
    if let Some(n) = pool_size {
        args.extend(["--db-pool-size", n]);
    }
    Dispatcher::start_with(
        dir,
        Options {
            args,
            ..Options::default()
        },
    )
}

/// The last lines of the dispatcher's log, for failure messages.
fn tail(d: &Dispatcher) -> String {
    let log = d.log.lock().unwrap();
    let from = log.len().saturating_sub(40);
    log[from..].join("\n")
}

/// POSTs `body` to `/name`: the status, the answer (JSON, or the text as a string) and how
/// long it took.
async fn call(d: &Dispatcher, name: &str, body: &Value) -> (u16, Value, Duration) {
    let started = Instant::now();
    let resp = client()
        .post(d.url(&format!("/{name}")))
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /{name}: {e}\n{}", tail(d)));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let took = started.elapsed();
    let answer = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, answer, took)
}

/// One session of `name` that must open: its answer.
async fn session(d: &Dispatcher, name: &str, body: Value) -> Answer {
    let (status, answer, _) = call(d, name, &body).await;
    assert_eq!(status, 200, "/{name} {body}: {answer}\n{}", tail(d));
    assert!(
        answer["error"].is_null(),
        "/{name} {body}: the session did not open: {answer}\n{}",
        tail(d)
    );
    Answer(answer)
}

/// The answer a trapped or hung `sqlprobe` instance of `function` wrote to its stderr.
fn logged_answer(d: &Dispatcher, function: &str) -> Answer {
    let marker = "sqlprobe answer: ";
    let suffix = format!("function={function}");
    let found = d.wait_for_log(marker, Duration::from_secs(5));
    assert!(found, "no `{marker}` in the log:\n{}", tail(d));
    let log = d.log_text();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(marker) && l.trim_end().ends_with(&suffix))
        .unwrap_or_else(|| panic!("no `{marker}` from {function}:\n{}", tail(d)));
    let json = &line[line.find(marker).unwrap() + marker.len()..];
    let answer = serde_json::Deserializer::from_str(json)
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap();
    Answer(answer)
}

/// What `sqlprobe` answered for one session.
#[derive(Debug)]
struct Answer(Value);

impl Answer {
    fn id(&self) -> u64 {
        self.0["connection_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no connection_id: {}", self.0))
    }

    fn result(&self, i: usize) -> &Value {
        let r = &self.0["results"][i];
        assert!(!r.is_null(), "no result {i} in {}", self.0);
        r
    }

    /// The rows of statement `i`, which must have succeeded.
    fn rows(&self, i: usize) -> Vec<Vec<Option<String>>> {
        let r = self.result(i);
        assert!(r["error"].is_null(), "statement {i} failed: {}", self.0);
        r["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .collect()
    }

    /// The one value statement `i` returned (first row, first column).
    fn value(&self, i: usize) -> Option<String> {
        let rows = self.rows(i);
        assert_eq!(rows.len(), 1, "statement {i}: one row expected: {}", self.0);
        rows[0][0].clone()
    }

    fn row(&self, i: usize) -> Vec<Option<String>> {
        let rows = self.rows(i);
        assert_eq!(rows.len(), 1, "statement {i}: one row expected: {}", self.0);
        rows[0].clone()
    }

    /// The server error code statement `i` failed with (it must have failed).
    fn error_code(&self, i: usize) -> u64 {
        let r = self.result(i);
        r["error"]["code"].as_u64().unwrap_or_else(|| {
            panic!(
                "statement {i} should have failed with a server error: {}",
                self.0
            )
        })
    }

    /// Every statement ran without an error.
    fn assert_all_ok(&self) {
        for (i, r) in self.0["results"].as_array().unwrap().iter().enumerate() {
            assert!(r["error"].is_null(), "statement {i} failed: {}", self.0);
        }
    }
}

fn some(s: &str) -> Option<String> {
    Some(s.to_string())
}

/// One function `probe` on a dispatcher with a pool of one backend, for the isolation tests.
fn one_backend(db: &PoolDb) -> (tempfile::TempDir, Dispatcher) {
    let dir = tempfile::tempdir().unwrap();
    probe_fn(
        dir.path(),
        "probe",
        &db.url(),
        &db.url(),
        "timeout_ms = 3000",
        "",
    );
    let d = serve(dir.path(), Some("1"));
    (dir, d)
}

/// Session A runs `leave` (each statement must succeed) and ends as `end`; session B then
/// runs `look`. B must have run on A's backend (the same `CONNECTION_ID()`).
async fn leave_then_look(d: &Dispatcher, leave: Value, end: &str, look: Value) -> (Answer, Answer) {
    let a = session(d, "probe", json!({ "statements": leave, "end": end })).await;
    a.assert_all_ok();
    let b = session(d, "probe", json!({ "statements": look })).await;
    assert_eq!(
        a.id(),
        b.id(),
        "with a pool of one, the next session must reuse the backend (end = {end}); \
         otherwise nothing here proves isolation\n{}",
        tail(d)
    );
    (a, b)
}

const ENDS: [&str; 2] = ["quit", "drop"];

/// The pool resets a returned backend off the request's path and, while there is room,
/// opens another rather than wait for that reset: so back to back, a session may find the
/// previous backend still resetting. With a pause between sessions it must be reused.
const AFTER_RESET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn sequential_sessions_reuse_one_backend_connection() {
    let _g = shared().await;
    let db = PoolDb::create("reuse");
    let dir = tempfile::tempdir().unwrap();
    probe_fn(dir.path(), "probe", &db.url(), &db.url(), "", "");
    let d = serve(dir.path(), None); // the default pool size
    let first = session(
        &d,
        "probe",
        json!({ "statements": ["SELECT DATABASE(), CURRENT_USER()"] }),
    )
    .await;
    assert_eq!(
        first.row(0),
        vec![some(&db.name), Some(format!("{}@%", db.user))],
        "the session runs as the URL's user in the URL's schema"
    );
    tokio::time::sleep(AFTER_RESET).await;
    let second = session(&d, "probe", json!({ "statements": [], "end": "drop" })).await;
    tokio::time::sleep(AFTER_RESET).await;
    let third = session(&d, "probe", json!({ "statements": [] })).await;
    assert_eq!(first.id(), second.id(), "the idle backend was not reused");
    assert_eq!(
        second.id(),
        third.id(),
        "the idle backend was not reused after a session that ended without QUIT"
    );
    // From outside: the backend stays open, idle, between sessions; nothing else is.
    assert!(
        wait_until(Duration::from_secs(3), || db.connections()
            == vec![first.id()]),
        "MariaDB should show exactly the pooled backend {} for {}: {:?}",
        first.id(),
        db.user,
        db.connections()
    );

    // Back to back, sessions that end with COM_QUIT (the reset starts before the answer
    // goes out) still run on one or two backends, not one each.
    let mut ids = BTreeSet::new();
    for _ in 0..10 {
        ids.insert(session(&d, "probe", json!({ "statements": [] })).await.id());
    }
    assert!(
        ids.len() <= 2,
        "10 back-to-back sessions used backends {ids:?}"
    );
}

#[tokio::test]
async fn user_variables_and_last_insert_id_do_not_cross_sessions() {
    let _g = shared().await;
    let db = PoolDb::create("uservar");
    let (_dir, d) = one_backend(&db);
    for end in ENDS {
        let (a, b) = leave_then_look(
            &d,
            json!([
                "SET @leak = 'from A'",
                "SELECT @leak",
                "SELECT LAST_INSERT_ID(77)"
            ]),
            end,
            json!(["SELECT @leak", "SELECT LAST_INSERT_ID()"]),
        )
        .await;
        assert_eq!(a.value(1), some("from A"));
        assert_eq!(b.value(0), None, "@leak crossed sessions (end = {end})");
        assert_eq!(
            b.value(1),
            some("0"),
            "LAST_INSERT_ID crossed sessions (end = {end})"
        );
    }
}

#[tokio::test]
async fn temporary_tables_do_not_cross_sessions() {
    let _g = shared().await;
    let db = PoolDb::create("temp");
    let (_dir, d) = one_backend(&db);
    for end in ENDS {
        let (a, b) = leave_then_look(
            &d,
            json!([
                "CREATE TEMPORARY TABLE leak_tmp (x INT)",
                "INSERT INTO leak_tmp VALUES (1)",
                "SELECT COUNT(*) FROM leak_tmp"
            ]),
            end,
            json!([
                "SELECT COUNT(*) FROM leak_tmp",
                "CREATE TEMPORARY TABLE leak_tmp (x INT)"
            ]),
        )
        .await;
        assert_eq!(a.value(2), some("1"));
        assert_eq!(
            b.error_code(0),
            1146,
            "the temporary table crossed sessions (end = {end})"
        );
        b.rows(1); // and the name is free again
    }
}

#[tokio::test]
async fn an_open_transaction_is_rolled_back_when_its_session_ends() {
    let _g = shared().await;
    let db = PoolDb::create("trx").with_table();
    let (_dir, d) = one_backend(&db);
    for end in ENDS {
        // An explicit transaction.
        let (a, b) = leave_then_look(
            &d,
            json!([
                "START TRANSACTION",
                "INSERT INTO t VALUES (1)",
                "SELECT COUNT(*) FROM t",
                "SELECT @@in_transaction"
            ]),
            end,
            json!(["SELECT @@in_transaction", "SELECT COUNT(*) FROM t"]),
        )
        .await;
        assert_eq!((a.value(2), a.value(3)), (some("1"), some("1")));
        assert_eq!(
            b.value(0),
            some("0"),
            "the transaction is still open (end = {end})"
        );
        assert_eq!(
            b.value(1),
            some("0"),
            "the uncommitted row survived (end = {end})"
        );
        assert_eq!(
            db.rows_in_t(),
            0,
            "the uncommitted row was committed (end = {end})"
        );
        db.assert_t_is_not_locked();

        // autocommit = 0: the INSERT opens a transaction of its own.
        let (a, b) = leave_then_look(
            &d,
            json!([
                "SET autocommit = 0",
                "INSERT INTO t VALUES (2)",
                "SELECT @@autocommit"
            ]),
            end,
            json!([
                "SELECT @@autocommit, @@in_transaction",
                "SELECT COUNT(*) FROM t"
            ]),
        )
        .await;
        assert_eq!(a.value(2), some("0"));
        assert_eq!(
            b.row(0),
            vec![some("1"), some("0")],
            "autocommit = 0 crossed sessions (end = {end})"
        );
        assert_eq!(
            b.value(1),
            some("0"),
            "the uncommitted row survived (end = {end})"
        );
        assert_eq!(
            db.rows_in_t(),
            0,
            "the uncommitted row was committed (end = {end})"
        );
        db.assert_t_is_not_locked();
    }
}

#[tokio::test]
async fn session_variables_are_back_to_the_defaults() {
    let _g = shared().await;
    let db = PoolDb::create("sessvar");
    let (_dir, d) = one_backend(&db);
    let look = json!([
        "SELECT @@SESSION.sql_mode = @@GLOBAL.sql_mode, @@SESSION.time_zone = @@GLOBAL.time_zone, \
         @@autocommit, @@SESSION.group_concat_max_len = @@GLOBAL.group_concat_max_len, \
         @@SESSION.max_statement_time = @@GLOBAL.max_statement_time, \
         @@SESSION.tx_isolation = @@GLOBAL.tx_isolation",
        "SELECT @@sql_mode, @@time_zone"
    ]);
    for end in ENDS {
        let (a, b) = leave_then_look(
            &d,
            json!([
                "SET SESSION sql_mode = 'ANSI_QUOTES,NO_BACKSLASH_ESCAPES'",
                "SET time_zone = '+05:00'",
                "SET autocommit = 0",
                "SET SESSION group_concat_max_len = 7",
                "SET SESSION max_statement_time = 123",
                "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                "SELECT @@sql_mode, @@time_zone, @@autocommit, @@group_concat_max_len"
            ]),
            end,
            look.clone(),
        )
        .await;
        assert_eq!(
            a.row(6),
            vec![
                some("ANSI_QUOTES,NO_BACKSLASH_ESCAPES"),
                some("+05:00"),
                some("0"),
                some("7")
            ]
        );
        assert_eq!(
            b.row(0),
            vec![some("1"); 6],
            "sql_mode, time_zone, autocommit, group_concat_max_len, max_statement_time, \
             tx_isolation: \
             a session value crossed sessions (end = {end}); now {:?}",
            b.row(1)
        );
    }
}

#[tokio::test]
async fn the_guests_utf8mb4_holds_and_set_names_does_not_cross_sessions() {
    let _g = shared().await;
    let db = PoolDb::create("names");
    let (_dir, d) = one_backend(&db);
    let look = json!([
        "SELECT CHAR_LENGTH('\u{1F600}'), HEX('\u{1F600}'), '\u{1F600}'",
        "SELECT @@character_set_client, @@character_set_connection, @@character_set_results"
    ]);
    // The guest's driver asks for utf8mb4 in its handshake: a 4-byte character is one.
    let fresh = session(&d, "probe", json!({ "statements": look.clone() })).await;
    assert_eq!(
        fresh.row(0),
        vec![some("1"), some("F09F9880"), some("\u{1F600}")],
        "a fresh session does not speak utf8mb4: {:?}",
        fresh.row(1)
    );
    for end in ENDS {
        let (_, b) = leave_then_look(&d, json!(["SET NAMES latin1"]), end, look.clone()).await;
        assert_eq!(
            (b.row(0), b.row(1)),
            (fresh.row(0), fresh.row(1)),
            "SET NAMES crossed sessions (end = {end})"
        );
    }
}

#[tokio::test]
async fn prepared_statements_do_not_cross_sessions() {
    let _g = shared().await;
    let db = PoolDb::create("prep");
    let (_dir, d) = one_backend(&db);
    const N: usize = 200;
    let count = "SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'";
    for end in ENDS {
        // SQL-level PREPARE, and N statements over the binary protocol (COM_STMT_PREPARE and
        // COM_STMT_EXECUTE), none closed.
        let mut leave = vec![
            json!("PREPARE leak_stmt FROM 'SELECT 42'"),
            json!("EXECUTE leak_stmt"),
            json!(count),
        ];
        for i in 0..N {
            leave
                .push(json!({ "sql": format!("SELECT ? + {i}"), "params": [1], "prepared": true }));
        }
        leave.push(json!(count));
        let (a, b) = leave_then_look(
            &d,
            Value::Array(leave),
            end,
            json!(["EXECUTE leak_stmt", count]),
        )
        .await;
        assert_eq!(a.value(1), some("42"));
        assert_eq!(
            a.value(3 + N - 1),
            Some(format!("{N}")),
            "SELECT ? + {} with 1",
            N - 1
        );
        assert_eq!(
            b.error_code(0),
            1243,
            "the PREPAREd statement crossed sessions (end = {end})"
        );
        // Prepared_stmt_count is server-wide, so other clients move it a little too.
        let server_count = |answer: &Answer, i: usize| -> i64 {
            answer.row(i)[1].as_deref().unwrap().parse().unwrap()
        };
        let (before, during, after) = (
            server_count(&a, 2),
            server_count(&a, 3 + N),
            server_count(&b, 1),
        );
        assert!(
            during - before >= (N as i64) * 3 / 4,
            "the binary-protocol statements were not left prepared: {before} -> {during}"
        );
        assert!(
            during - after >= (N as i64) * 3 / 4,
            "the {N} statements prepared in session A are still prepared on the backend \
             (end = {end}): Prepared_stmt_count {before} before, {during} during A, {after} in B"
        );
    }
}

#[tokio::test]
async fn locks_are_released_get_lock_and_lock_tables() {
    let _g = shared().await;
    let db = PoolDb::create("locks").with_table();
    let (_dir, d) = one_backend(&db);
    let lock = format!("{}_lock", db.name);
    for end in ENDS {
        let (a, b) = leave_then_look(
            &d,
            json!([
                format!("SELECT GET_LOCK('{lock}', 0)"),
                format!("SELECT IS_USED_LOCK('{lock}') = CONNECTION_ID()")
            ]),
            end,
            json!([format!("SELECT IS_FREE_LOCK('{lock}')")]),
        )
        .await;
        assert_eq!((a.value(0), a.value(1)), (some("1"), some("1")));
        assert_eq!(
            b.value(0),
            some("1"),
            "the GET_LOCK lock crossed sessions (end = {end})"
        );
        let outside = sql(&format!("SELECT IS_FREE_LOCK('{lock}')"));
        assert_eq!(
            outside.trim(),
            "1",
            "the GET_LOCK lock is still held (end = {end})"
        );

        let (_, b) = leave_then_look(
            &d,
            json!(["LOCK TABLES t WRITE", "INSERT INTO t VALUES (5)"]),
            end,
            json!(["SELECT COUNT(*) FROM t"]),
        )
        .await;
        assert_eq!(b.value(0), some("1"));
        // A WRITE lock still held by the backend would make this wait, then fail.
        try_sql(&format!(
            "SET SESSION lock_wait_timeout = 2; SELECT COUNT(*) FROM {0}.t; DELETE FROM {0}.t",
            db.name
        ))
        .unwrap_or_else(|e| panic!("LOCK TABLES crossed sessions (end = {end}): {e}"));
    }
}

#[tokio::test]
async fn the_schema_goes_back_to_the_urls_after_use() {
    let _g = shared().await;
    let db = PoolDb::create("schema");
    let other = db.other_db("other");
    let hex: String = format!("USE {other}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Every way a session can select another schema; the last two never spell `use`.
    let ways = [
        ("USE", vec![format!("USE {other}")]),
        ("use, lower case", vec![format!("use {other}")]),
        (
            "EXECUTE IMMEDIATE of a built string",
            vec![format!("EXECUTE IMMEDIATE CONCAT('US', 'E {other}')")],
        ),
        (
            "PREPARE from a hex literal, EXECUTE",
            vec![format!("PREPARE s FROM 0x{hex}"), "EXECUTE s".to_string()],
        ),
    ];
    let (_dir, d) = one_backend(&db);
    // Every way is tried; the test then names each that failed.
    let mut crossed = Vec::new();
    for (way, statements) in ways {
        for end in ENDS {
            let mut leave: Vec<Value> = statements.iter().map(|s| json!(s)).collect();
            leave.push(json!("SELECT DATABASE()"));
            leave.push(json!("CREATE TABLE only_in_other (x INT)"));
            let n = leave.len();
            let (a, b) = leave_then_look(
                &d,
                Value::Array(leave),
                end,
                json!(["SELECT DATABASE()", "SELECT COUNT(*) FROM only_in_other"]),
            )
            .await;
            assert_eq!(a.value(n - 2), Some(other.clone()), "{way}");
            if b.value(0) != Some(db.name.clone()) {
                crossed.push(format!(
                    "{way} (end = {end}): next session in {:?}",
                    b.value(0)
                ));
            } else {
                assert_eq!(
                    b.error_code(1),
                    1146,
                    "{way}: an unqualified name resolved in {other}"
                );
            }
            sql(&format!("DROP TABLE {other}.only_in_other"));
        }
    }
    assert!(
        crossed.is_empty(),
        "the schema crossed sessions: {crossed:#?}"
    );
}

#[tokio::test]
async fn a_guest_asking_for_another_schema_at_login_gets_it_and_the_next_does_not() {
    let _g = shared().await;
    let db = PoolDb::create("loginschema");
    let other = db.other_db("other");
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = format!("mysql://{}:{}@{MARIADB}/{other}", db.user, db.password);
    probe_fn(dir.path(), "elsewhere", &elsewhere, &db.url(), "", "");
    probe_fn(dir.path(), "probe", &db.url(), &db.url(), "", "");
    let d = serve(dir.path(), Some("1"));
    let a = session(
        &d,
        "elsewhere",
        json!({ "statements": ["SELECT DATABASE()"] }),
    )
    .await;
    assert_eq!(
        a.value(0),
        Some(other.clone()),
        "the guest's URL names {other}"
    );
    let b = session(&d, "probe", json!({ "statements": ["SELECT DATABASE()"] })).await;
    assert_eq!(a.id(), b.id(), "one pool, one backend");
    assert_eq!(
        b.value(0),
        Some(db.name.clone()),
        "the schema crossed sessions"
    );
}

#[tokio::test]
async fn an_active_role_does_not_cross_sessions() {
    let _g = shared().await;
    let db = PoolDb::create("role");
    let other = db.other_db("secret");
    let role = format!("r_{}", db.name);
    // The role may read `secret`; the user itself may not (other_db granted it, so revoke).
    sql(&format!(
        "REVOKE ALL ON {other}.* FROM '{user}'@'%'; CREATE TABLE {other}.s (x INT);          DROP ROLE IF EXISTS {role}; CREATE ROLE {role}; GRANT SELECT ON {other}.* TO {role};          GRANT {role} TO '{user}'@'%'",
        user = db.user
    ));
    /// Drops the role, however the test ends.
    struct DropRole(String);
    impl Drop for DropRole {
        fn drop(&mut self) {
            if let Err(e) = try_sql(&format!("DROP ROLE IF EXISTS {}", self.0)) {
                eprintln!("cleaning up the test role: {e}");
            }
        }
    }
    let _role = DropRole(role.clone());
    let (_dir, d) = one_backend(&db);
    let look = json!([
        "SELECT CURRENT_ROLE()",
        format!("SELECT COUNT(*) FROM {other}.s")
    ]);
    for end in ENDS {
        let (a, b) = leave_then_look(
            &d,
            json!([
                format!("SET ROLE {role}"),
                "SELECT CURRENT_ROLE()",
                format!("SELECT COUNT(*) FROM {other}.s")
            ]),
            end,
            look.clone(),
        )
        .await;
        assert_eq!(a.value(1), Some(role.clone()));
        assert_eq!(a.value(2), some("0"));
        assert_eq!(b.value(0), None, "SET ROLE crossed sessions (end = {end})");
        assert_eq!(
            b.error_code(1),
            1142,
            "the role's privilege crossed sessions (end = {end})"
        );
    }
}

#[tokio::test]
async fn sequence_values_handlers_and_next_transaction_settings_do_not_cross_sessions() {
    let _g = shared().await;
    let db = PoolDb::create("seqh").with_table();
    sql(&format!("CREATE SEQUENCE {}.s", db.name));
    let (_dir, d) = one_backend(&db);
    for end in ENDS {
        // The session's last value of a sequence.
        let (a, b) = leave_then_look(
            &d,
            json!(["SELECT NEXTVAL(s)", "SELECT LASTVAL(s)"]),
            end,
            json!(["SELECT LASTVAL(s)"]),
        )
        .await;
        assert!(a.value(1).is_some());
        assert_eq!(
            b.value(0),
            None,
            "LASTVAL(s) crossed sessions (end = {end})"
        );

        // An open HANDLER.
        let (_, b) = leave_then_look(
            &d,
            json!(["HANDLER t OPEN AS leak_handler"]),
            end,
            json!(["HANDLER leak_handler READ FIRST"]),
        )
        .await;
        assert_eq!(
            b.error_code(0),
            1109,
            "the HANDLER crossed sessions (end = {end})"
        );

        // SET TRANSACTION (no scope) applies to the next transaction: not the next session's.
        let (_, b) = leave_then_look(
            &d,
            json!(["SET TRANSACTION READ ONLY"]),
            end,
            json!(["START TRANSACTION", "INSERT INTO t VALUES (9)", "ROLLBACK"]),
        )
        .await;
        b.assert_all_ok();
    }
}

#[tokio::test]
async fn an_idle_backend_the_server_closed_is_replaced() {
    let _g = shared().await;
    let db = PoolDb::create("killed");
    let (_dir, d) = one_backend(&db);
    let first = session(&d, "probe", json!({ "statements": [] })).await;
    assert!(wait_until(Duration::from_secs(3), || db.connections()
        == vec![first.id()]));
    // As when the server's wait_timeout ends an idle connection, or the server restarts.
    sql(&format!("KILL {}", first.id()));
    assert!(wait_until(Duration::from_secs(3), || db
        .connections()
        .is_empty()));
    let next = session(&d, "probe", json!({ "statements": ["SELECT 'works'"] })).await;
    assert_eq!(next.value(0), some("works"));
    assert_ne!(next.id(), first.id());
}

#[tokio::test]
async fn packets_of_16_mib_and_more_are_relayed_and_tracked() {
    let _g = shared().await;
    let db = PoolDb::create("big");
    let dir = tempfile::tempdir().unwrap();
    probe_fn(
        dir.path(),
        "probe",
        &db.url(),
        &db.url(),
        "memory_mb = 1024\ntimeout_ms = 30000",
        "",
    );
    let d = serve(dir.path(), Some("1"));
    // A text-protocol row of one string of n bytes is a payload of n + 4 (a binary one,
    // n + 6): these fill exactly one 0xFFFFFF packet, which an empty packet must follow, or
    // spill one byte into a second (16 MiB, MariaDB's max_allowed_packet here, and the
    // driver's limit).
    let mut ids = BTreeSet::new();
    for prepared in [false, true] {
        let exact = if prepared {
            16_777_209usize
        } else {
            16_777_211
        };
        for n in [exact, exact + 1] {
            let a = session(
                &d,
                "probe",
                json!({ "statements": [
                    { "sql": format!("SELECT REPEAT('x', {n})"), "prepared": prepared },
                    "SELECT 'after'"
                ] }),
            )
            .await;
            let big = a.value(0).unwrap_or_default();
            assert_eq!(big.len(), n, "prepared = {prepared}");
            assert!(big.bytes().all(|b| b == b'x'));
            assert_eq!(a.value(1), some("after"), "n = {n}, prepared = {prepared}");
            ids.insert(a.id());
        }
    }
    // Each session ended idle, so the pool's one backend served them all.
    assert_eq!(
        ids.len(),
        1,
        "the backend was closed after a large result: {ids:?}"
    );
}

/// What a crashed session leaves behind: a transaction with an uncommitted row (by a text
/// and a prepared INSERT), a statement prepared each way, a GET_LOCK lock.
fn crash_statements(lock: &str) -> Value {
    json!([
        "START TRANSACTION",
        "INSERT INTO t VALUES (1)",
        { "sql": "INSERT INTO t VALUES (?)", "params": [2], "prepared": true },
        "PREPARE leak_stmt FROM 'SELECT 1'",
        format!("SELECT GET_LOCK('{lock}', 0)"),
        "SELECT COUNT(*) FROM t"
    ])
}

/// After a crashed session: the next one works, on the same (reset) backend, and nothing of
/// the crashed one is left, inside or outside.
async fn assert_clean_after_crash(d: &Dispatcher, db: &PoolDb, crashed: &Answer, lock: &str) {
    crashed.assert_all_ok();
    assert_eq!(
        crashed.value(5),
        some("2"),
        "the crashed session saw its own rows"
    );
    let next = session(
        d,
        "probe",
        json!({ "statements": [
            "SELECT @@in_transaction",
            "SELECT COUNT(*) FROM t",
            "EXECUTE leak_stmt",
            format!("SELECT IS_FREE_LOCK('{lock}')")
        ] }),
    )
    .await;
    assert_eq!(
        next.id(),
        crashed.id(),
        "the crashed session's backend was idle: it should have been reset and reused"
    );
    assert_eq!(next.value(0), some("0"), "the transaction is still open");
    assert_eq!(next.value(1), some("0"), "the uncommitted rows survived");
    assert_eq!(next.error_code(2), 1243, "the prepared statement survived");
    assert_eq!(next.value(3), some("1"), "the lock survived");
    assert_eq!(db.rows_in_t(), 0, "the uncommitted rows were committed");
    db.assert_t_is_not_locked();
}

#[tokio::test]
async fn a_trapped_session_is_rolled_back_and_its_backend_reset() {
    let _g = shared().await;
    let db = PoolDb::create("trap").with_table();
    let (_dir, d) = one_backend(&db);
    let lock = format!("{}_lock", db.name);
    let (status, answer, _) = call(
        &d,
        "probe",
        &json!({ "statements": crash_statements(&lock), "end": "trap" }),
    )
    .await;
    assert_eq!(status, 502, "{answer}");
    let crashed = logged_answer(&d, "probe");
    assert_clean_after_crash(&d, &db, &crashed, &lock).await;
}

#[tokio::test]
async fn a_timed_out_session_is_rolled_back_and_its_backend_reset() {
    let _g = shared().await;
    let db = PoolDb::create("hang").with_table();
    let dir = tempfile::tempdir().unwrap();
    probe_fn(
        dir.path(),
        "probe",
        &db.url(),
        &db.url(),
        "timeout_ms = 1500",
        "",
    );
    let d = serve(dir.path(), Some("1"));
    let lock = format!("{}_lock", db.name);
    let (status, answer, took) = call(
        &d,
        "probe",
        &json!({ "statements": crash_statements(&lock), "end": "hang" }),
    )
    .await;
    assert_eq!(status, 504, "{answer}");
    assert!(took < Duration::from_secs(5), "the timeout took {took:?}");
    let crashed = logged_answer(&d, "probe");
    assert_clean_after_crash(&d, &db, &crashed, &lock).await;
}

#[tokio::test]
async fn a_session_cut_mid_result_set_closes_its_backend() {
    let _g = shared().await;
    let db = PoolDb::create("midrs");
    let (_dir, d) = one_backend(&db);
    // About 100 MB of rows: the backend is still sending when the guest goes away.
    let big = "SELECT seq, REPEAT('x', 100) FROM seq_1_to_1000000";
    let cases = [
        (
            "text protocol, no QUIT",
            json!({ "sql": big, "max_rows": 1 }),
            "drop",
        ),
        (
            "text protocol, trap",
            json!({ "sql": big, "max_rows": 1 }),
            "trap",
        ),
        (
            "binary protocol, no QUIT",
            json!({ "sql": big, "max_rows": 1, "prepared": true }),
            "drop",
        ),
        (
            "binary protocol, trap",
            json!({ "sql": big, "max_rows": 1, "prepared": true }),
            "trap",
        ),
        // The first result set is complete (SERVER_MORE_RESULTS_EXISTS) while the second
        // statement still runs on the server.
        (
            "multi-statement, second statement running",
            json!({ "sql": "SELECT 'first'; SELECT SLEEP(2), 'second'", "max_rows": 1 }),
            "drop",
        ),
    ];
    for (case, statement, end) in cases {
        let (status, answer, _) = call(
            &d,
            "probe",
            &json!({ "statements": [statement], "end": end }),
        )
        .await;
        let cut = if end == "trap" {
            assert_eq!(status, 502, "{case}: {answer}");
            logged_answer(&d, "probe")
        } else {
            assert_eq!(status, 200, "{case}: {answer}");
            Answer(answer)
        };
        assert_eq!(cut.result(0)["cut"], true, "{case}: {:?}", cut);
        // The next session gets a clean backend: its own results, nothing of the rest.
        let next = session(
            &d,
            "probe",
            json!({ "statements": ["SELECT 'fresh'", "SELECT COUNT(*) FROM seq_1_to_10"] }),
        )
        .await;
        assert_eq!(next.rows(0), vec![vec![some("fresh")]], "{case}");
        assert_eq!(next.value(1), some("10"), "{case}");
        assert_ne!(
            next.id(),
            cut.id(),
            "{case}: a backend left in the middle of a result set was reused"
        );
        assert!(
            wait_until(Duration::from_secs(10), || !db
                .connections()
                .contains(&cut.id())),
            "{case}: the abandoned backend {} is still open: {:?}",
            cut.id(),
            db.connections()
        );
    }
}

#[tokio::test]
async fn multi_results_and_the_guests_own_reset_leave_the_backend_reusable() {
    let _g = shared().await;
    let db = PoolDb::create("multi");
    let (_dir, d) = one_backend(&db);
    // From the guest: the mariadb client would split the body at its `;`s.
    session(
        &d,
        "probe",
        json!({ "statements": ["CREATE PROCEDURE two_sets() BEGIN SELECT 'one'; SELECT 'two'; END"] }),
    )
    .await
    .assert_all_ok();
    let (a, b) = leave_then_look(
        &d,
        json!([
            "SELECT 1; SELECT 2; SET @a = 5",
            "SELECT @a",
            "CALL two_sets()",
            { "command": "reset" },
            "SELECT @a",
            { "command": "ping" },
            "SET @b = 'from A'",
            { "sql": "SELECT ?", "params": ["prepared after the reset"], "prepared": true }
        ]),
        "quit",
        json!(["SELECT @b", "SELECT 'B'; SELECT 'B2'"]),
    )
    .await;
    assert_eq!(a.value(0), some("1"));
    assert_eq!(a.value(1), some("5"), "the multi-statement's SET ran");
    assert_eq!(a.value(2), some("one"));
    assert_eq!(
        a.result(3)["reset"],
        true,
        "the guest's COM_RESET_CONNECTION: {:?}",
        a
    );
    assert_eq!(a.value(4), None, "the guest's own reset cleared @a");
    assert_eq!(a.value(7), some("prepared after the reset"));
    assert_eq!(b.value(0), None);
    assert_eq!(b.value(1), some("B"));
}

#[tokio::test]
async fn change_user_cannot_turn_a_pooled_session_into_another_user() {
    let _g = shared().await;
    let db = PoolDb::create("chuser");
    let (_dir, d) = one_backend(&db);
    let me = format!("{}@%", db.user);
    // root@127.0.0.1 has no password: a relayed COM_CHANGE_USER would become root.
    let a = session(
        &d,
        "probe",
        json!({ "statements": [
            { "command": "change_user", "user": "root", "password": "" },
            "SELECT CURRENT_USER()"
        ] }),
    )
    .await;
    assert!(
        !a.result(0)["error"].is_null(),
        "COM_CHANGE_USER was accepted: {:?}",
        a
    );
    let after = &a.result(1)["rows"][0][0];
    assert!(
        after.is_null() || *after == me.as_str(),
        "after COM_CHANGE_USER the session runs as {after}: {:?}",
        a
    );
    let b = session(
        &d,
        "probe",
        json!({ "statements": ["SELECT CURRENT_USER()"] }),
    )
    .await;
    assert_eq!(b.value(0), Some(me));
    let root_sessions = sql(&format!(
        "SELECT COUNT(*) FROM information_schema.processlist WHERE user = 'root' AND db = '{}'",
        db.name
    ));
    assert_eq!(root_sessions.trim(), "0", "a root session in {}", db.name);
}

#[tokio::test]
async fn pools_are_kept_per_user_and_schema() {
    let _g = shared().await;
    let db = PoolDb::create("keys");
    let other = db.other_db("other");
    let dir = tempfile::tempdir().unwrap();
    let other_url = format!("mysql://{}:{}@{MARIADB}/{other}", db.user, db.password);
    let root_url = format!("mysql://root@{MARIADB}/{}", db.name);
    let functions = [
        ("mine", db.url(), format!("{}@%", db.user), db.name.clone()),
        (
            "root",
            root_url,
            "root@127.0.0.1".to_string(),
            db.name.clone(),
        ),
        ("other", other_url, format!("{}@%", db.user), other.clone()),
    ];
    for (name, url, _, _) in &functions {
        probe_fn(dir.path(), name, url, url, "", "");
    }
    let d = serve(dir.path(), Some("1"));
    let mut ids: HashMap<&str, u64> = HashMap::new();
    for round in 0..2 {
        for (name, _, user, schema) in &functions {
            let s = session(
                &d,
                name,
                json!({ "statements": ["SELECT CURRENT_USER(), DATABASE()"] }),
            )
            .await;
            assert_eq!(
                s.row(0),
                vec![Some(user.clone()), Some(schema.clone())],
                "{name}, round {round}"
            );
            if let Some(id) = ids.insert(name, s.id()) {
                assert_eq!(id, s.id(), "{name}: its pool of one was not reused");
            }
        }
    }
    let distinct: BTreeSet<_> = ids.values().collect();
    assert_eq!(distinct.len(), 3, "pools shared a backend: {ids:?}");
}

#[tokio::test]
async fn the_login_is_checked_against_the_urls_user_and_password() {
    let _g = shared().await;
    let db = PoolDb::create("auth");
    let dir = tempfile::tempdir().unwrap();
    let url = db.url();
    let at = format!("127.0.0.1:3306/{}", db.name);
    let nobody = format!("nobody_{}", std::process::id());
    let root = format!("mysql://root@{at}");
    let cases: Vec<(&str, String, String)> = vec![
        ("right", url.clone(), url.clone()),
        (
            "wrong_password",
            format!("mysql://{}:not{}@{at}", db.user, db.password),
            url.clone(),
        ),
        (
            "no_password",
            format!("mysql://{}@{at}", db.user),
            url.clone(),
        ),
        (
            "wrong_user",
            format!("mysql://{nobody}:{}@{at}", db.password),
            url.clone(),
        ),
        // root has no password: an empty one is right, any other wrong.
        ("root", root.clone(), root.clone()),
        (
            "root_with_password",
            format!("mysql://root:secret@{at}"),
            root.clone(),
        ),
    ];
    for (name, guest, allow) in &cases {
        probe_fn(dir.path(), name, guest, allow, "", "");
    }
    let d = serve(dir.path(), None);
    for (name, guest, _) in &cases {
        let (status, answer, _) = call(
            &d,
            name,
            &json!({ "statements": ["SELECT CURRENT_USER()"] }),
        )
        .await;
        assert_eq!(status, 200, "{name}: {answer}\n{}", tail(&d));
        if name.starts_with("right") || *name == "root" {
            assert!(
                answer["error"].is_null(),
                "{name} ({guest}) was refused: {answer}"
            );
        } else {
            let user = if *name == "wrong_user" {
                nobody.as_str()
            } else if name.starts_with("root") {
                "root"
            } else {
                db.user.as_str()
            };
            assert_eq!(
                answer["error"]["code"], 1045,
                "{name} ({guest}) was not refused: {answer}"
            );
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("Access denied for user") && message.contains(user),
                "{name}: {message}"
            );
        }
    }
    // The refusals left the pool working.
    let after = session(
        &d,
        "right",
        json!({ "statements": ["SELECT CURRENT_USER()"] }),
    )
    .await;
    assert_eq!(after.value(0), Some(format!("{}@%", db.user)));
}

/// Samples, every 20 ms from outside, how many connections MariaDB has open for each user.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(HashMap<String, usize>, u64)>,
}

impl Sampler {
    fn start(users: &[&str]) -> Sampler {
        let list = users
            .iter()
            .map(|u| format!("'{u}'"))
            .collect::<Vec<_>>()
            .join(",");
        let query = format!(
            "SELECT user, COUNT(*) FROM information_schema.processlist WHERE user IN ({list}) GROUP BY user"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut max: HashMap<String, usize> = HashMap::new();
            let mut calls = 0;
            while !flag.load(Ordering::Relaxed) {
                let out = sql(&query);
                calls += 1;
                for line in out.lines() {
                    let (user, n) = line.split_once('\t').unwrap();
                    let m = max.entry(user.to_string()).or_default();
                    *m = (*m).max(n.trim().parse().unwrap());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (max, calls)
        });
        Sampler { stop, thread }
    }

    /// The most connections seen per user, and how many `sql()` connections sampling made.
    fn stop(self) -> (HashMap<String, usize>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_requests_share_eight_backends() {
    let _g = alone().await;
    let db = PoolDb::create("c500");
    // Through a proxy that counts every connection the dispatcher opens to MariaDB.
    let proxy = Proxy::start(MARIADB).await;
    let url = db.url_at(&proxy.addr.to_string());
    let dir = tempfile::tempdir().unwrap();
    probe_fn(
        dir.path(),
        "probe",
        &url,
        &url,
        "max_concurrency = 500\ntimeout_ms = 30000",
        "",
    );
    let d = serve(dir.path(), Some("8"));
    // One request first, so that compiling the module is not part of the load.
    session(&d, "probe", json!({ "statements": [] })).await;

    let accepted_before = connections_accepted();
    let sampler = Sampler::start(&[&db.user]);
    let body =
        json!({ "statements": ["SELECT SLEEP(0.005)", "SELECT COUNT(*) FROM seq_1_to_1000"] });
    let started = Instant::now();
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let (url, body) = (d.url("/probe"), body.to_string());
            tokio::spawn(async move {
                let resp = client()
                    .post(url)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let text = resp.text().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((status, text))
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    let mut failures = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok((200, text)) => {
                let answer = Answer(serde_json::from_str(&text).unwrap());
                if !answer.0["error"].is_null() || answer.0["results"][1]["rows"][0][0] != "1000" {
                    failures.push(text);
                } else {
                    ids.insert(answer.id());
                }
            }
            Ok((status, text)) => failures.push(format!("{status}: {text}")),
            Err(e) => failures.push(format!("transport: {e}")),
        }
    }
    let took = started.elapsed();
    let (max, samples) = sampler.stop();
    let accepted = connections_accepted() - accepted_before;

    assert!(
        failures.is_empty(),
        "{} of 500 requests failed in {took:?}, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        ids.len() <= 8,
        "500 sessions ran on {} backends: {ids:?}",
        ids.len()
    );
    let most = max.get(&db.user).copied().unwrap_or(0);
    assert!(
        (1..=8).contains(&most),
        "MariaDB had up to {most} connections for {} ({samples} samples)",
        db.user
    );
    // Every TCP connection the dispatcher opened to MariaDB went through the proxy: at most
    // the 8 backends, plus the one on which the pool read the server's greeting once.
    assert!(
        proxy.accepted() <= 8 + 1,
        "the dispatcher opened {} connections to MariaDB with --db-pool-size 8",
        proxy.accepted()
    );
    // MariaDB's own count of new connections, from anyone: the backends, one per sample
    // taken from outside, one for the final `SHOW GLOBAL STATUS`, and other clients of the
    // shared server (this module's other tests are held off, but other suites run beside
    // this one, a few connections a second). Loose, but 500 sessions without a pool would
    // be 500 more.
    let allowed = 8 + 1 + samples + 1 + 100;
    assert!(
        accepted <= allowed,
        "MariaDB accepted {accepted} connections during the load, more than {allowed} \
         (8 backends + 1 + {samples} samples + 1 + 100 for others)"
    );
    eprintln!(
        "500 requests in {took:?}: {} backends, at most {most} open, {} opened through the proxy, \
         {accepted} connections accepted by MariaDB ({samples} samples)",
        ids.len(),
        proxy.accepted()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_opening_2000_connections_is_bounded_and_others_keep_answering() {
    let _g = alone().await;
    let hog_db = PoolDb::create("hog");
    let steady_db = PoolDb::create("steady");
    // The hog's pool goes through a proxy that counts its connections to MariaDB.
    let proxy = Proxy::start(MARIADB).await;
    let hog_url = hog_db.url_at(&proxy.addr.to_string());
    let dir = tempfile::tempdir().unwrap();
    probe_fn(
        dir.path(),
        "hog",
        &hog_url,
        &hog_url,
        // As many pooled sessions as an instance may have (64, as many as its sockets).
        "timeout_ms = 60000\nmemory_mb = 512\nmax_db_sessions = 64",
        "",
    );
    // The same with the default limits (max_db_sessions = 4).
    probe_fn(
        dir.path(),
        "hog_default",
        &hog_url,
        &hog_url,
        "timeout_ms = 60000\nmemory_mb = 512",
        "",
    );
    probe_fn(
        dir.path(),
        "steady",
        &steady_db.url(),
        &steady_db.url(),
        "",
        "",
    );
    let d = Dispatcher::start_with(
        dir.path(),
        Options {
            env: vec![("DISPATCHER_DB_POOL_SIZE", "4".to_string())],
            ..Options::default()
        },
    );
    session(&d, "steady", json!({ "statements": ["SELECT 1"] })).await;
    session(&d, "hog", json!({ "statements": [] })).await;

    // The other function, back to back on two clients: each outcome with its start time.
    let stop = Arc::new(AtomicBool::new(false));
    let steady: Vec<_> = (0..2)
        .map(|_| {
            let (url, stop) = (d.url("/steady"), stop.clone());
            tokio::spawn(async move {
                let http = client();
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let outcome = match http
                        .post(&url)
                        .body(r#"{"statements":["SELECT 1"]}"#)
                        .send()
                        .await
                    {
                        Ok(r) => {
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            let v: Value = serde_json::from_str(&text).unwrap_or_default();
                            if status == 200
                                && v["error"].is_null()
                                && v["results"][0]["rows"][0][0] == "1"
                            {
                                Ok(())
                            } else {
                                Err(format!("{status}: {text}"))
                            }
                        }
                        Err(e) => Err(format!("transport: {e}")),
                    };
                    seen.push((at, outcome));
                }
                seen
            })
        })
        .collect();

    let sampler = Sampler::start(&[&hog_db.user, &steady_db.user]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hog_started = Instant::now();
    let (status, hog, took) = call(
        &d,
        "hog",
        &json!({ "connections": 2000, "hold_ms": 1000, "connect_timeout_ms": 20000 }),
    )
    .await;
    let (default_status, default_hog, default_took) = call(
        &d,
        "hog_default",
        &json!({ "connections": 2000, "hold_ms": 500, "connect_timeout_ms": 20000 }),
    )
    .await;
    let hog_ended = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for t in steady {
        outcomes.extend(t.await.unwrap());
    }
    let (max, _) = sampler.stop();

    assert_eq!(status, 200, "{hog}\n{}", tail(&d));
    let opened = hog["opened"].as_u64().unwrap();
    let failed: u64 = hog["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert_eq!(opened + failed, 2000, "{hog}");
    assert!(
        (1..=4).contains(&opened),
        "the hog got {opened} sessions with a pool of 4: {hog}"
    );
    assert!(
        hog["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["code"] == 1040),
        "no guest connection waiting for the full pool got error 1040: {hog}"
    );
    // With max_db_sessions = 4 by default, the rest are refused at connect, at once.
    assert_eq!(default_status, 200, "{default_hog}");
    assert!(
        (1..=4).contains(&default_hog["opened"].as_u64().unwrap()),
        "{default_hog}"
    );
    assert!(
        default_took < Duration::from_secs(5),
        "the default hog took {default_took:?}: {default_hog}"
    );
    assert!(
        took < Duration::from_secs(30),
        "the hog's request took {took:?}: {hog}"
    );

    let failures: Vec<_> = outcomes
        .iter()
        .filter_map(|(_, o)| o.as_ref().err())
        .collect();
    assert!(
        failures.is_empty(),
        "the other function failed: {:?}",
        &failures[..failures.len().min(5)]
    );
    let during = outcomes
        .iter()
        .filter(|(at, _)| *at >= hog_started && *at < hog_ended)
        .count();
    assert!(
        during >= 5,
        "the other function answered only {during} requests while the hog ran ({took:?})"
    );

    let hog_most = max.get(&hog_db.user).copied().unwrap_or(0);
    let steady_most = max.get(&steady_db.user).copied().unwrap_or(0);
    assert!(
        hog_most <= 4,
        "MariaDB had up to {hog_most} connections for the hog"
    );
    assert!(
        steady_most <= 4,
        "MariaDB had up to {steady_most} connections for the other function"
    );
    assert!(hog_db.connections().len() <= 4);
    // 4 backends at most, and the one connection the pool read the greeting on.
    assert!(
        proxy.accepted() <= 4 + 1,
        "the hog's pool opened {} connections to MariaDB with a pool size of 4",
        proxy.accepted()
    );
    eprintln!("hog: {hog} in {took:?}; other function: {} requests, {during} during; most connections {hog_most}/{steady_most}", outcomes.len());
}

#[tokio::test]
async fn max_sockets_and_max_db_sessions_cap_one_instance() {
    let _g = shared().await;
    let db = PoolDb::create("socks");
    let dir = tempfile::tempdir().unwrap();
    probe_fn(
        dir.path(),
        "pooled",
        &db.url(),
        &db.url(),
        "max_sockets = 3",
        "",
    );
    probe_fn(
        dir.path(),
        "raw",
        &db.url(),
        &db.url(),
        "max_sockets = 3",
        "pool = false",
    );
    // max_db_sessions: pooled sessions past it are refused at connect (ECONNREFUSED).
    probe_fn(
        dir.path(),
        "sessions",
        &db.url(),
        &db.url(),
        "max_db_sessions = 2",
        "",
    );
    let d = serve(dir.path(), None);
    let (status, answer, _) = call(
        &d,
        "sessions",
        &json!({ "connections": 10, "hold_ms": 200 }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["opened"], 2, "max_db_sessions = 2: {answer}");
    assert!(answer["took_ms"].as_u64().unwrap() < 3000, "{answer}");
    for name in ["pooled", "raw", "pooled"] {
        let (status, answer, _) =
            call(&d, name, &json!({ "connections": 10, "hold_ms": 200 })).await;
        assert_eq!(status, 200, "{name}: {answer}\n{}", tail(&d));
        assert_eq!(answer["opened"], 3, "{name}: max_sockets = 3: {answer}");
        assert!(
            answer["took_ms"].as_u64().unwrap() < 3000,
            "{name}: connections past max_sockets should fail at once: {answer}"
        );
    }
}

// Multi-threaded: the holder's request runs while this thread polls MariaDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_waiting_for_a_busy_pool_gets_1040_not_a_hang() {
    let _g = shared().await;
    let db = PoolDb::create("busy");
    let dir = tempfile::tempdir().unwrap();
    probe_fn(
        dir.path(),
        "probe",
        &db.url(),
        &db.url(),
        "timeout_ms = 30000",
        "",
    );
    // The same database for a function that times out (1 s) while it waits for the pool.
    probe_fn(
        dir.path(),
        "impatient",
        &db.url(),
        &db.url(),
        "timeout_ms = 1000",
        "",
    );
    let d = Arc::new(serve(dir.path(), Some("1")));
    let holder = {
        let d = d.clone();
        tokio::spawn(async move {
            call(&d, "probe", &json!({ "statements": ["SELECT SLEEP(9)"] })).await
        })
    };
    // Wait until the one backend is busy with the holder's SLEEP.
    let user = db.user.clone();
    let busy = wait_until(Duration::from_secs(10), || {
        sql(&format!(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE user = '{user}' AND info LIKE 'SELECT SLEEP%'"
        ))
        .trim()
            == "1"
    });
    assert!(busy, "the holder's session never started:\n{}", tail(&d));
    let (status, waiter, took) = call(&d, "probe", &json!({ "statements": ["SELECT 1"] })).await;
    assert_eq!(status, 200, "{waiter}");
    assert_eq!(
        waiter["error"]["code"], 1040,
        "the waiting guest should get 1040: {waiter} after {took:?}"
    );
    assert!(
        took < Duration::from_secs(8),
        "the waiting guest got its error after {took:?}"
    );
    // An instance that dies while its session waits for the pool does not keep a place in it.
    let (status, answer, _) = call(&d, "impatient", &json!({ "statements": ["SELECT 1"] })).await;
    assert_eq!(status, 504, "{answer}");
    let (status, held, _) = holder.await.unwrap();
    assert_eq!(status, 200);
    assert!(held["error"].is_null(), "{held}");
    let after = session(&d, "probe", json!({ "statements": ["SELECT 1"] })).await;
    assert_eq!(
        after.id(),
        Answer(held).id(),
        "the pool's one backend is back in use"
    );
    eprintln!("the waiting guest got 1040 after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_going_away_gives_2003_fast_and_coming_back_needs_no_restart() {
    let _g = shared().await;
    let db = PoolDb::create("outage");
    let proxy = Proxy::start(MARIADB).await;
    let via = db.url_at(&proxy.addr.to_string());
    let dir = tempfile::tempdir().unwrap();
    probe_fn(dir.path(), "probe", &via, &via, "", "");
    let d = serve(dir.path(), None);
    let select = json!({ "statements": ["SELECT 1"] });
    let first = session(&d, "probe", select.clone()).await;

    proxy.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for attempt in 0..2 {
        let (status, answer, took) = call(&d, "probe", &select).await;
        assert_eq!(status, 200, "attempt {attempt}: {answer}\n{}", tail(&d));
        assert_eq!(answer["error"]["code"], 2003, "attempt {attempt}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("Can't connect to MySQL server"),
            "attempt {attempt}: {message}"
        );
        assert!(
            took < Duration::from_secs(3),
            "attempt {attempt}: the error took {took:?}"
        );
    }

    proxy.restore(MARIADB).await;
    let back = session(&d, "probe", select.clone()).await;
    assert_eq!(back.value(0), some("1"));
    assert_ne!(
        back.id(),
        first.id(),
        "the backend from before the outage cannot be alive"
    );

    // A pooled backend that died while idle (MariaDB is reachable again at once) is
    // replaced without the guest noticing.
    proxy.cut();
    proxy.restore(MARIADB).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let replaced = session(&d, "probe", select.clone()).await;
    assert_eq!(replaced.value(0), some("1"));
    assert_ne!(replaced.id(), back.id());
}

#[tokio::test]
async fn pool_false_connects_straight_to_mariadb() {
    let _g = shared().await;
    let db = PoolDb::create("nopool");
    let dir = tempfile::tempdir().unwrap();
    probe_fn(dir.path(), "raw", &db.url(), &db.url(), "", "pool = false");
    probe_fn(dir.path(), "pooled", &db.url(), &db.url(), "", "");
    let d = serve(dir.path(), None);
    let a = session(
        &d,
        "raw",
        json!({ "statements": ["SET @x = 1", "SELECT DATABASE()"] }),
    )
    .await;
    let b = session(&d, "raw", json!({ "statements": ["SELECT @x"] })).await;
    assert_eq!(a.value(1), Some(db.name.clone()));
    assert_eq!(b.value(0), None);
    assert_ne!(
        a.id(),
        b.id(),
        "pool = false: every session is a connection of its own"
    );
    assert!(
        wait_until(Duration::from_secs(5), || db.connections().is_empty()),
        "pool = false: nothing stays open after the sessions: {:?}",
        db.connections()
    );
    // The same URL pooled, in the same dispatcher, does reuse.
    let p1 = session(&d, "pooled", json!({ "statements": [] })).await;
    tokio::time::sleep(AFTER_RESET).await;
    let p2 = session(&d, "pooled", json!({ "statements": [] })).await;
    assert_eq!(p1.id(), p2.id());
    // A wrong password is refused by MariaDB itself, as before.
    let dir = tempfile::tempdir().unwrap();
    let wrong = format!("mysql://{}:nope@127.0.0.1:3306/{}", db.user, db.name);
    probe_fn(dir.path(), "raw", &wrong, &db.url(), "", "pool = false");
    let d = serve(dir.path(), None);
    let (_, answer, _) = call(&d, "raw", &json!({ "statements": [] })).await;
    assert_eq!(answer["error"]["code"], 1045, "{answer}");
}
