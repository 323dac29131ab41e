//! The host's side of a guest's login: the server greeting with a fresh scramble, the
//! guest's handshake response, and the `mysql_native_password` check against the password the
//! host knows, all without touching the database.

use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};
use mysql_common::scramble::scramble_native;
use subtle::ConstantTimeEq;
use tokio::net::TcpStream;

use super::wire::{err_packet, write_packet, Frames};

const NATIVE: &[u8] = b"mysql_native_password";

/// What the backend server offers, learnt from its own greeting.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub capabilities: CapabilityFlags,
    pub collation: u8,
}

/// Capabilities the host never offers a guest: TLS and compression (the host relays bytes
/// it must be able to read), and the MySQL 8 extensions MariaDB does not speak.
pub fn offered(server: CapabilityFlags) -> CapabilityFlags {
    let never = CapabilityFlags::CLIENT_SSL
        | CapabilityFlags::CLIENT_COMPRESS
        | CapabilityFlags::CLIENT_ZSTD_COMPRESSION_ALGORITHM
        | CapabilityFlags::CLIENT_OPTIONAL_RESULTSET_METADATA
        | CapabilityFlags::CLIENT_QUERY_ATTRIBUTES
        | CapabilityFlags::CLIENT_SSL_VERIFY_SERVER_CERT
        | CapabilityFlags::CLIENT_PROGRESS_OBSOLETE;
    let always = CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PROTOCOL_41;
    (server - never) | always
}

/// A guest that logged in.
#[derive(Debug, Clone)]
pub struct Login {
    /// What the guest asked for, within what was offered.
    pub capabilities: CapabilityFlags,
    pub collation: u8,
    /// The schema it asked for, if any.
    pub schema: Option<String>,
    /// The sequence id of the host's next packet to the guest.
    pub next_seq: u8,
}

/// Why a login failed; the guest has been told.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the guest's login was refused: {0}")]
    Refused(String),
    #[error("the guest's login broke off: {0}")]
    Io(#[from] std::io::Error),
}

/// A fresh 20-byte scramble of printable bytes (as servers send, no NUL).
fn scramble() -> [u8; 20] {
    let mut s = [0u8; 20];
    if getrandom::fill(&mut s).is_err() {
        // Without randomness a scramble could repeat, which weakens replay protection only.
        tracing::warn!(target: "dbpool", "no randomness for a login scramble");
    }
    for b in &mut s {
        *b = 0x21 + (*b % 0x5E);
    }
    s
}

/// Greets the guest, reads its login and checks `user` and `password`. Refusals are sent to
/// the guest as MariaDB would send them.
pub async fn accept(
    stream: &mut TcpStream,
    frames: &mut Frames,
    server: &ServerInfo,
    connection_id: u32,
    user: &str,
    password: &str,
) -> Result<Login, LoginError> {
    let nonce = scramble();
    // The scramble's second part goes NUL-terminated, as servers send it.
    let mut part2 = nonce[8..].to_vec();
    part2.push(0);
    let greeting = HandshakePacket::new(
        10,
        server.version.as_bytes(),
        connection_id,
        nonce[..8].try_into().expect("8 bytes"),
        Some(part2),
        offered(server.capabilities),
        server.collation,
        mysql_common::constants::StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(NATIVE),
    );
    let mut payload = Vec::new();
    greeting.serialize(&mut payload);
    write_packet(stream, 0, &payload).await?;

    let frame = frames.read(stream).await?;
    let mut seq = frame.seq().wrapping_add(1);
    let response = HandshakeResponse::deserialize((), &mut ParseBuf(frame.payload()))
        .map_err(|e| LoginError::Refused(format!("a malformed handshake response: {e}")))?;
    let capabilities = response.capabilities() & offered(server.capabilities);
    let guest_user = String::from_utf8_lossy(response.user()).into_owned();
    let schema = response
        .db_name()
        .filter(|d| !d.is_empty())
        .map(|d| String::from_utf8_lossy(d).into_owned());
    let mut auth = response.scramble_buf().to_vec();
    let plugin_is_native = match response.auth_plugin() {
        None | Some(AuthPlugin::MysqlNativePassword) => true,
        Some(_) => false,
    };
    let collation = response.collation();
    drop(response);
    if !plugin_is_native {
        // Ask for mysql_native_password with the same scramble.
        let mut switch = vec![0xFE];
        switch.extend_from_slice(NATIVE);
        switch.push(0);
        switch.extend_from_slice(&nonce);
        switch.push(0);
        write_packet(stream, seq, &switch).await?;
        let again = frames.read(stream).await?;
        seq = again.seq().wrapping_add(1);
        auth = again.payload().to_vec();
    }
    let expected = scramble_native(&nonce, password.as_bytes())
        .map(|s| s.to_vec())
        .unwrap_or_default();
    let right = guest_user == user && bool::from(auth.as_slice().ct_eq(expected.as_slice()));
    if !right {
        let msg = format!(
            "Access denied for user '{guest_user}'@'localhost' (using password: {})",
            if auth.is_empty() { "NO" } else { "YES" }
        );
        write_packet(stream, seq, &err_packet(1045, "28000", &msg)).await?;
        return Err(LoginError::Refused(msg));
    }
    Ok(Login {
        capabilities,
        collation,
        schema,
        next_seq: seq,
    })
}
