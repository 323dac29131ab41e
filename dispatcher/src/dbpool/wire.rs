//! The MySQL wire format, as far as the pool needs it: frames (a 3-byte length, a sequence
//! id, the payload), read cancel-safely from a buffer; and the few packets the host writes
//! itself (OK, ERR).

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest payload of one frame; a payload this long continues in the next frame.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// Most bytes of one logical packet the host reads for itself (logins, resets): far above
/// any real login, far below memory trouble.
const MAX_LOGIN_PACKET: usize = 1 << 20;

/// One frame as it came, header included.
#[derive(Debug, Clone)]
pub struct Frame {
    pub bytes: Bytes,
}

impl Frame {
    pub fn seq(&self) -> u8 {
        self.bytes[3]
    }

    pub fn payload(&self) -> &[u8] {
        &self.bytes[4..]
    }

    /// Whether the next frame continues this one's packet.
    pub fn continues(&self) -> bool {
        self.payload().len() == MAX_PAYLOAD
    }
}

/// Bytes read from one side, cut into frames as they complete.
#[derive(Debug, Default)]
pub struct Frames {
    buf: BytesMut,
}

impl Frames {
    /// The next complete frame, if the buffer holds one.
    pub fn next(&mut self) -> Option<Frame> {
        if self.buf.len() < 4 {
            return None;
        }
        let len = usize::from(self.buf[0])
            | usize::from(self.buf[1]) << 8
            | usize::from(self.buf[2]) << 16;
        if self.buf.len() < 4 + len {
            return None;
        }
        Some(Frame {
            bytes: self.buf.split_to(4 + len).freeze(),
        })
    }

    /// Whether bytes of an incomplete frame are waiting.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Reads more bytes; `Ok(0)` at end of stream. Cancel-safe: what was read stays here.
    pub async fn fill(&mut self, r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 << 10);
        }
        r.read_buf(&mut self.buf).await
    }

    /// Reads one whole frame (for the host's own exchanges); `None` at end of stream.
    pub async fn read(&mut self, r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Frame> {
        loop {
            if let Some(f) = self.next() {
                if f.continues() {
                    return Err(invalid("a login packet larger than the host accepts"));
                }
                return Ok(f);
            }
            if self.buf.len() > MAX_LOGIN_PACKET {
                return Err(invalid("a login packet larger than the host accepts"));
            }
            if self.fill(r).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Writes one packet (at most [`MAX_PAYLOAD`] bytes) as frame `seq`.
pub async fn write_packet(
    w: &mut (impl AsyncWrite + Unpin),
    seq: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    debug_assert!(payload.len() < MAX_PAYLOAD);
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&len.to_le_bytes()[..3]);
    out.push(seq);
    out.extend_from_slice(payload);
    w.write_all(&out).await
}

/// An ERR packet (protocol 4.1): code, SQL state, message.
pub fn err_packet(code: u16, state: &str, message: &str) -> Vec<u8> {
    let mut p = vec![0xFF];
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    p.extend_from_slice(&state.as_bytes()[..5.min(state.len())]);
    p.extend_from_slice(message.as_bytes());
    p
}

/// An OK packet with no rows affected and the given status flags.
pub fn ok_packet(status: u16) -> Vec<u8> {
    let mut p = vec![0x00, 0x00, 0x00];
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&[0, 0]); // warnings
    p
}

/// A length-encoded integer at the start of `b`, and the bytes it took.
pub fn lenenc_int(b: &[u8]) -> Option<(u64, usize)> {
    let mut b = b;
    let first = *b.first()?;
    b.advance(1);
    let need = match first {
        0..=0xFA => return Some((u64::from(first), 1)),
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
        _ => return None,
    };
    if b.len() < need {
        return None;
    }
    let mut v = [0u8; 8];
    v[..need].copy_from_slice(&b[..need]);
    Some((u64::from_le_bytes(v), 1 + need))
}

/// What an ERR packet says, for logs and for passing a backend's refusal on.
pub fn err_text(payload: &[u8]) -> String {
    if payload.first() != Some(&0xFF) || payload.len() < 3 {
        return "an unexpected answer".into();
    }
    let code = u16::from_le_bytes([payload[1], payload[2]]);
    let msg = if payload.get(3) == Some(&b'#') && payload.len() >= 9 {
        &payload[9..]
    } else {
        &payload[3..]
    };
    format!("{code}: {}", String::from_utf8_lossy(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_whole() {
        let mut f = Frames::default();
        f.buf.extend_from_slice(&[3, 0, 0, 7, b'a', b'b']);
        assert!(f.next().is_none());
        f.buf.extend_from_slice(&[b'c', 0, 0, 0, 8]);
        let one = f.next().unwrap();
        assert_eq!((one.seq(), one.payload()), (7, &b"abc"[..]));
        let two = f.next().unwrap();
        assert_eq!((two.seq(), two.payload()), (8, &b""[..]));
        assert!(f.next().is_none() && f.is_empty());
    }

    #[test]
    fn length_encoded_integers() {
        assert_eq!(lenenc_int(&[5]), Some((5, 1)));
        assert_eq!(lenenc_int(&[0xFC, 0x10, 0x27]), Some((10_000, 3)));
        assert_eq!(lenenc_int(&[0xFD, 1, 0, 1]), Some((65_537, 4)));
        assert_eq!(lenenc_int(&[0xFC, 1]), None);
        assert_eq!(lenenc_int(&[0xFF]), None);
    }

    #[test]
    fn err_packets_read_back() {
        let p = err_packet(1045, "28000", "Access denied");
        assert_eq!(err_text(&p), "1045: Access denied");
    }
}
