//! A backend connection: opened and authenticated by the host with the capabilities and
//! collation its guests negotiate, reset between sessions, closed when in doubt.

use std::time::Duration;

use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::HandshakePacket;
use mysql_common::proto::MyDeserialize;
use mysql_common::scramble::scramble_native;
use tokio::net::TcpStream;

use super::login::ServerInfo;
use super::wire::{err_text, lenenc_int, write_packet, Frames};

/// The capabilities that shape the command phase; a backend serves only guests that asked
/// for exactly these (within what the server offers), or the relayed bytes would not parse.
pub const SESSION_CAPABILITIES: CapabilityFlags = CapabilityFlags::from_bits_truncate(
    CapabilityFlags::CLIENT_LONG_PASSWORD.bits()
        | CapabilityFlags::CLIENT_FOUND_ROWS.bits()
        | CapabilityFlags::CLIENT_LONG_FLAG.bits()
        | CapabilityFlags::CLIENT_NO_SCHEMA.bits()
        | CapabilityFlags::CLIENT_ODBC.bits()
        | CapabilityFlags::CLIENT_LOCAL_FILES.bits()
        | CapabilityFlags::CLIENT_IGNORE_SPACE.bits()
        | CapabilityFlags::CLIENT_PROTOCOL_41.bits()
        | CapabilityFlags::CLIENT_INTERACTIVE.bits()
        | CapabilityFlags::CLIENT_IGNORE_SIGPIPE.bits()
        | CapabilityFlags::CLIENT_TRANSACTIONS.bits()
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS.bits()
        | CapabilityFlags::CLIENT_MULTI_RESULTS.bits()
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS.bits()
        | CapabilityFlags::CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS.bits()
        | CapabilityFlags::CLIENT_SESSION_TRACK.bits()
        | CapabilityFlags::CLIENT_DEPRECATE_EOF.bits(),
);

/// What a backend is for: where, as whom, and how its sessions talk.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Flavor {
    pub capabilities: CapabilityFlags,
    pub collation: u8,
}

/// Where the database is and how to log in.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`.
    pub address: String,
    pub user: String,
    pub password: String,
    pub schema: Option<String>,
}

/// An authenticated connection to the database.
#[derive(Debug)]
pub struct Backend {
    pub stream: TcpStream,
    /// Bytes read past the last packet (none while idle).
    pub frames: Frames,
    pub flavor: Flavor,
    /// The server's id for this connection (`CONNECTION_ID()`).
    pub id: u32,
    /// `CLIENT_DEPRECATE_EOF` was negotiated with the server.
    deprecate_eof: bool,
    /// The role active after login (a default role), which a reset restores.
    role: Option<String>,
}

/// Why a backend could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to the database at {0}: {1}")]
    Connect(String, String),
    #[error("the database refused the pool's login: {0}")]
    Refused(String),
    #[error("the database broke off: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the server's greeting alone: what the guests are offered.
pub async fn probe(target: &Target, timeout: Duration) -> Result<ServerInfo, BackendError> {
    let mut stream = dial(target, timeout).await?;
    let (_, hs) = greeting(&mut stream, &mut Frames::default()).await?;
    Ok(ServerInfo {
        version: hs.server_version_str().into_owned(),
        capabilities: hs.capabilities(),
        collation: hs.default_collation(),
    })
}

/// The server's first packet: its sequence id and the parsed greeting.
async fn greeting(
    stream: &mut TcpStream,
    frames: &mut Frames,
) -> Result<(u8, HandshakePacket<'static>), BackendError> {
    let frame = frames.read(stream).await?;
    let hs = HandshakePacket::deserialize((), &mut ParseBuf(frame.payload()))
        .map_err(|e| BackendError::Refused(format!("a greeting the pool cannot read: {e}")))?;
    Ok((frame.seq(), hs.into_owned()))
}

async fn dial(target: &Target, timeout: Duration) -> Result<TcpStream, BackendError> {
    let connect = |e: String| BackendError::Connect(target.address.clone(), e);
    let stream = tokio::time::timeout(timeout, TcpStream::connect(&target.address))
        .await
        .map_err(|_| connect(format!("no answer within {timeout:?}")))?
        .map_err(|e| connect(e.to_string()))?;
    stream
        .set_nodelay(true)
        .map_err(|e| connect(e.to_string()))?;
    Ok(stream)
}

/// The `mysql_native_password` answer to `nonce` (empty for an empty password).
fn native_auth(nonce: &[u8], password: &str) -> Vec<u8> {
    scramble_native(nonce, password.as_bytes())
        .map(|s| s.to_vec())
        .unwrap_or_default()
}

impl Backend {
    /// Opens and authenticates a connection for sessions of `flavor`.
    pub async fn open(
        target: &Target,
        flavor: &Flavor,
        timeout: Duration,
    ) -> Result<Backend, BackendError> {
        let mut stream = dial(target, timeout).await?;
        let login = async {
            let mut frames = Frames::default();
            let (seq, hs) = greeting(&mut stream, &mut frames).await?;
            let mut caps = (flavor.capabilities & SESSION_CAPABILITIES & hs.capabilities())
                | CapabilityFlags::CLIENT_PROTOCOL_41
                | CapabilityFlags::CLIENT_SECURE_CONNECTION
                | CapabilityFlags::CLIENT_PLUGIN_AUTH;
            if target.schema.is_some() {
                caps |= CapabilityFlags::CLIENT_CONNECT_WITH_DB;
            }
            let auth = native_auth(&hs.nonce(), &target.password);
            let mut p = Vec::with_capacity(128);
            p.extend_from_slice(&caps.bits().to_le_bytes());
            p.extend_from_slice(&(1u32 << 24).to_le_bytes()); // max packet
            p.push(flavor.collation);
            p.extend_from_slice(&[0; 23]);
            p.extend_from_slice(target.user.as_bytes());
            p.push(0);
            p.push(auth.len() as u8);
            p.extend_from_slice(&auth);
            if let Some(db) = &target.schema {
                p.extend_from_slice(db.as_bytes());
                p.push(0);
            }
            p.extend_from_slice(b"mysql_native_password\0");
            write_packet(&mut stream, seq.wrapping_add(1), &p).await?;
            let mut reply = frames.read(&mut stream).await?;
            if reply.payload().first() == Some(&0xFE) {
                // An auth switch: only mysql_native_password is spoken here.
                let body = &reply.payload()[1..];
                let name_end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                if &body[..name_end] != b"mysql_native_password" {
                    return Err(BackendError::Refused(format!(
                        "the database asks for the `{}` login, and the pool speaks only mysql_native_password",
                        String::from_utf8_lossy(&body[..name_end])
                    )));
                }
                let mut nonce = body.get(name_end + 1..).unwrap_or_default().to_vec();
                nonce.truncate(20);
                let auth = native_auth(&nonce, &target.password);
                write_packet(&mut stream, reply.seq().wrapping_add(1), &auth).await?;
                reply = frames.read(&mut stream).await?;
            }
            if reply.payload().first() != Some(&0x00) {
                return Err(BackendError::Refused(err_text(reply.payload())));
            }
            let mut backend = Backend {
                stream,
                frames,
                flavor: flavor.clone(),
                id: hs.connection_id(),
                deprecate_eof: caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF),
                role: None,
            };
            // `COM_RESET_CONNECTION` leaves the active role as the session set it, so each
            // reset sets the login's role again: learn it now.
            backend.role = backend.query_value("SELECT CURRENT_ROLE()").await?;
            Ok(backend)
        };
        tokio::time::timeout(timeout, login).await.map_err(|_| {
            BackendError::Connect(
                target.address.clone(),
                "the login did not finish in time".into(),
            )
        })?
    }

    /// Runs a query whose answer is one value (or none), and returns it as text.
    async fn query_value(&mut self, sql: &str) -> Result<Option<String>, BackendError> {
        let mut q = vec![0x03];
        q.extend_from_slice(sql.as_bytes());
        write_packet(&mut self.stream, 0, &q).await?;
        let first = self.frames.read(&mut self.stream).await?;
        let columns = match first.payload().first() {
            Some(0x00) => return Ok(None),
            Some(0xFF) | None => return Err(BackendError::Refused(err_text(first.payload()))),
            Some(_) => lenenc_int(first.payload()).map_or(0, |(n, _)| n),
        };
        for _ in 0..columns {
            self.frames.read(&mut self.stream).await?;
        }
        if !self.deprecate_eof {
            self.frames.read(&mut self.stream).await?;
        }
        let mut value = None;
        let mut first_row = true;
        loop {
            let f = self.frames.read(&mut self.stream).await?;
            let p = f.payload();
            match p.first() {
                Some(0xFF) | None => return Err(BackendError::Refused(err_text(p))),
                Some(0xFE) if p.len() < 9 || self.deprecate_eof => return Ok(value),
                Some(0xFB) => first_row = false,
                Some(_) if first_row => {
                    first_row = false;
                    if let Some((len, at)) = lenenc_int(p) {
                        let bytes = p.get(at..at + len as usize).unwrap_or_default();
                        value = Some(String::from_utf8_lossy(bytes).into_owned());
                    }
                }
                Some(_) => {}
            }
        }
    }

    /// Whether the connection still looks usable: the server has not closed it or said
    /// anything unasked (an idle connection has nothing to read).
    pub fn looks_alive(&self) -> bool {
        if !self.frames.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        match self.stream.try_read(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            // Closed (Ok(0)), data nobody asked for (Ok(1)), or an error.
            _ => false,
        }
    }

    /// Sends one command and reads its one-packet answer; `Ok` only for an OK packet.
    pub async fn command(&mut self, payload: &[u8]) -> Result<(), BackendError> {
        write_packet(&mut self.stream, 0, payload).await?;
        let reply = self.frames.read(&mut self.stream).await?;
        match reply.payload().first() {
            Some(0x00) => Ok(()),
            _ => Err(BackendError::Refused(err_text(reply.payload()))),
        }
    }

    /// Clears everything a session left (`COM_RESET_CONNECTION`: variables, temporary
    /// tables, prepared statements, transactions, locks), sets the login's role again (the
    /// reset keeps a `SET ROLE`), then selects `schema` again (a `USE`, even one built by
    /// dynamic SQL, survives it too). The commands go in one write: one round trip.
    pub async fn reset(&mut self, schema: Option<&str>) -> Result<(), BackendError> {
        use tokio::io::AsyncWriteExt;
        let mut out = Vec::with_capacity(64);
        let mut push = |payload: &[u8]| {
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
            out.push(0);
            out.extend_from_slice(payload);
        };
        push(&[0x1F]);
        let role = match &self.role {
            Some(r) => format!("\x03SET ROLE `{}`", r.replace('`', "``")),
            None => "\x03SET ROLE NONE".to_string(),
        };
        push(role.as_bytes());
        let mut answers = 2;
        if let Some(db) = schema {
            let mut init = vec![0x02];
            init.extend_from_slice(db.as_bytes());
            push(&init);
            answers += 1;
        }
        self.stream.write_all(&out).await?;
        for _ in 0..answers {
            let reply = self.frames.read(&mut self.stream).await?;
            if reply.payload().first() != Some(&0x00) {
                return Err(BackendError::Refused(err_text(reply.payload())));
            }
        }
        Ok(())
    }
}
