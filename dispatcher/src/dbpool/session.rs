//! One guest session: the host answers the login itself, lends a backend, relays the bytes
//! both ways while following the exchange, and hands the backend back when the guest quits
//! or goes away.

use std::sync::Arc;

use mysql_common::constants::CapabilityFlags;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::backend::{BackendError, Flavor, SESSION_CAPABILITIES};
use super::login::{self, LoginError};
use super::pool::{AcquireError, Lease, Pool};
use super::tracker::{GuestFrame, Tracker};
use super::wire::{err_packet, ok_packet, write_packet, Frames};

/// How a relayed session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// `COM_QUIT`, or the guest closed its socket (its instance ended, trapped or timed out).
    Guest,
    /// The backend closed or failed: the guest's session is cut too.
    Backend,
}

/// Serves one guest connection to completion.
pub async fn serve(pool: Arc<Pool>, mut guest: TcpStream) {
    if let Err(e) = guest.set_nodelay(true) {
        tracing::debug!(target: "dbpool", "set_nodelay on a guest session: {e}");
    }
    let server = match pool.server().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(target: "dbpool", pool = %pool.name, "a guest session got no database: {e}");
            // A server may answer a connection with an error instead of its greeting.
            let _sent = write_packet(&mut guest, 0, &cant_connect(&pool, &e)).await;
            return;
        }
    };
    let mut frames = Frames::default();
    let id = pool.next_connection_id();
    let login = login::accept(
        &mut guest,
        &mut frames,
        &server,
        id,
        &pool.target.user,
        &pool.target.password,
    )
    .await;
    // Registered by the runtime before the guest's connect returned, so before any login.
    let tag = guest
        .peer_addr()
        .ok()
        .and_then(|peer| pool.telemetry.sessions.take(peer));
    let login = match login {
        Ok(l) => l,
        Err(LoginError::Refused(why)) => {
            tracing::warn!(target: "dbpool", pool = %pool.name, "{why}");
            return;
        }
        Err(LoginError::Io(e)) => {
            tracing::debug!(target: "dbpool", pool = %pool.name, "a guest left during its login: {e}");
            return;
        }
    };
    let flavor = Flavor {
        capabilities: login.capabilities & SESSION_CAPABILITIES,
        collation: login.collation,
    };
    let seq = login.next_seq;
    let checkout = std::time::SystemTime::now();
    let acquired = pool.acquire(&flavor).await;
    if let (Some(tracing), Some(cx)) = (
        &pool.telemetry.tracing,
        tag.as_ref().and_then(|t| t.trace.as_ref()),
    ) {
        let attributes = vec![
            opentelemetry::KeyValue::new("db.system", "mariadb"),
            opentelemetry::KeyValue::new("dispatcher.pool", pool.name.clone()),
            opentelemetry::KeyValue::new("dispatcher.checkout_ok", acquired.is_ok()),
        ];
        tracing.child(
            cx,
            "db session checkout",
            checkout,
            std::time::SystemTime::now(),
            attributes,
        );
    }
    let request_id = tag.as_ref().map_or("-", |t| &*t.request_id);
    let mut lease = match acquired {
        Ok(l) => l,
        Err(e) => {
            let answer = match &e {
                AcquireError::Busy(..) => {
                    err_packet(1040, "08004", &format!("Too many connections: {e}"))
                }
                AcquireError::Backend(BackendError::Refused(m)) => err_packet(
                    1045,
                    "28000",
                    &format!("the database refused the pool's login: {m}"),
                ),
                AcquireError::Backend(other) => {
                    pool.forget_server();
                    cant_connect(&pool, other)
                }
            };
            tracing::warn!(target: "dbpool", pool = %pool.name, request_id, "a guest session got no database: {e}");
            let _sent = write_packet(&mut guest, seq, &answer).await;
            return;
        }
    };
    // A guest that asked for another schema than the pool's gets it selected.
    if let Some(schema) = login
        .schema
        .filter(|s| Some(s) != pool.target.schema.as_ref())
    {
        let mut init = vec![0x02];
        init.extend_from_slice(schema.as_bytes());
        if let Err(e) = lease.backend.command(&init).await {
            let refused = matches!(e, BackendError::Refused(_));
            let _sent =
                write_packet(&mut guest, seq, &err_packet(1049, "42000", &e.to_string())).await;
            pool.release(lease, refused);
            return;
        }
    }
    let status = 0x0002; // SERVER_STATUS_AUTOCOMMIT
    if write_packet(&mut guest, seq, &ok_packet(status))
        .await
        .is_err()
    {
        pool.release(lease, true);
        return;
    }
    let deprecate_eof = flavor
        .capabilities
        .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
    let (end, tracker) = relay(&mut guest, frames, &mut lease, Tracker::new(deprecate_eof)).await;
    let clean = end == End::Guest && tracker.idle();
    pool.release(lease, clean);
}

/// The ERR packet of a database the pool cannot reach, as a client library words it.
fn cant_connect(pool: &Pool, e: &BackendError) -> Vec<u8> {
    let msg = format!(
        "Can't connect to MySQL server on '{}' ({e})",
        pool.target.address
    );
    err_packet(2003, "HY000", &msg)
}

/// Moves bytes between the guest and the backend until one side ends.
async fn relay(
    guest: &mut TcpStream,
    mut from_guest: Frames,
    lease: &mut Lease,
    mut tracker: Tracker,
) -> (End, Tracker) {
    let backend = &mut lease.backend;
    let (mut guest_rd, mut guest_wr) = guest.split();
    let (mut backend_rd, mut backend_wr) = backend.stream.split();
    let from_backend = &mut backend.frames;
    let mut out = Vec::with_capacity(16 << 10);
    let end = loop {
        tokio::select! {
            read = from_guest.fill(&mut guest_rd) => {
                if !matches!(read, Ok(n) if n > 0) {
                    break End::Guest;
                }
                let mut quit = false;
                let mut refuse = None;
                while let Some(f) = from_guest.next() {
                    match tracker.guest(&f) {
                        GuestFrame::Forward => out.extend_from_slice(&f.bytes),
                        GuestFrame::Quit => {
                            quit = true;
                            break;
                        }
                        GuestFrame::Refuse => {
                            refuse = Some(f.seq().wrapping_add(1));
                            break;
                        }
                    }
                }
                if !out.is_empty() {
                    let sent = backend_wr.write_all(&out).await;
                    out.clear();
                    if sent.is_err() {
                        break End::Backend;
                    }
                }
                if let Some(seq) = refuse {
                    let msg = "this command is not available through the platform's database pool";
                    if write_packet(&mut guest_wr, seq, &err_packet(1235, "42000", msg)).await.is_err() {
                        break End::Guest;
                    }
                }
                if quit {
                    break End::Guest;
                }
            }
            read = from_backend.fill(&mut backend_rd) => {
                if !matches!(read, Ok(n) if n > 0) {
                    break End::Backend;
                }
                while let Some(f) = from_backend.next() {
                    tracker.backend(&f);
                    out.extend_from_slice(&f.bytes);
                }
                if !out.is_empty() {
                    let sent = guest_wr.write_all(&out).await;
                    out.clear();
                    if sent.is_err() {
                        break End::Guest;
                    }
                }
            }
        }
    };
    (end, tracker)
}
