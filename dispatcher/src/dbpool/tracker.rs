//! Follows a relayed session closely enough to know whether its backend is idle: every
//! command the guest sent has had its whole response, and no packet is half-way. Only then
//! may the backend be reset and lent to another session; otherwise it is closed.
//!
//! It reads the first bytes of packets only (command bytes, OK/ERR/EOF headers, column and
//! parameter counts, status flags); the bytes themselves pass through untouched.

use std::collections::VecDeque;

use super::wire::{lenenc_int, Frame, MAX_PAYLOAD};

/// The response a command is owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    /// One packet, whatever it is (`COM_PING`, `COM_INIT_DB`, ...).
    One,
    /// Results: OK, ERR, LOCAL INFILE, or result sets (`COM_QUERY`, `COM_STMT_EXECUTE`).
    Results,
    /// `COM_STMT_PREPARE`: OK with counts, then parameter and column definitions.
    Prepare,
    /// Rows until a terminator (`COM_STMT_FETCH`, `COM_FIELD_LIST`'s definitions).
    Rows,
}

/// Where the response being read stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    One,
    /// The first packet of a result (again after one with `SERVER_MORE_RESULTS_EXISTS`).
    Results,
    Columns(u64),
    ColumnsEof,
    Rows,
    Prepare,
    Params {
        left: u64,
        columns: u64,
    },
    ParamsEof {
        columns: u64,
    },
    PrepColumns(u64),
    PrepColumnsEof,
}

/// What the session does with a guest's frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestFrame {
    /// Pass it to the backend.
    Forward,
    /// `COM_QUIT`: the session ends here; the backend never sees it.
    Quit,
    /// A command the pool does not relay (`COM_CHANGE_USER`, replication): answer ERR.
    Refuse,
}

const COM_QUIT: u8 = 0x01;
const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;
const COM_FIELD_LIST: u8 = 0x04;
const COM_CREATE_DB: u8 = 0x05;
const COM_DROP_DB: u8 = 0x06;
const COM_REFRESH: u8 = 0x07;
const COM_STATISTICS: u8 = 0x09;
const COM_PROCESS_INFO: u8 = 0x0A;
const COM_PROCESS_KILL: u8 = 0x0C;
const COM_DEBUG: u8 = 0x0D;
const COM_PING: u8 = 0x0E;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;
const COM_STMT_RESET: u8 = 0x1A;
const COM_SET_OPTION: u8 = 0x1B;
const COM_STMT_FETCH: u8 = 0x1C;
const COM_RESET_CONNECTION: u8 = 0x1F;
const COM_STMT_BULK_EXECUTE: u8 = 0xFA;

const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;

/// One session's bookkeeping.
#[derive(Debug)]
pub struct Tracker {
    /// `CLIENT_DEPRECATE_EOF` was negotiated: OK packets stand where EOF packets would.
    deprecate_eof: bool,
    /// Commands sent whose responses have not started, oldest first.
    owed: VecDeque<Owed>,
    /// The response being read.
    current: Option<State>,
    /// The guest's last frame continues in the next one (a packet of 16 MiB or more).
    guest_continues: bool,
    /// The backend's last frame continues in the next one.
    backend_continues: bool,
    /// The guest is sending LOCAL INFILE data: its packets are not commands.
    infile: bool,
    /// Something went by that this does not follow: never reuse the backend.
    lost: bool,
}

impl Tracker {
    pub fn new(deprecate_eof: bool) -> Self {
        Tracker {
            deprecate_eof,
            owed: VecDeque::new(),
            current: None,
            guest_continues: false,
            backend_continues: false,
            infile: false,
            lost: false,
        }
    }

    /// Whether the backend owes nothing and no packet is half-way.
    pub fn idle(&self) -> bool {
        self.owed.is_empty()
            && self.current.is_none()
            && !self.guest_continues
            && !self.backend_continues
            && !self.infile
            && !self.lost
    }

    /// A frame from the guest.
    pub fn guest(&mut self, f: &Frame) -> GuestFrame {
        if self.guest_continues {
            self.guest_continues = f.continues();
            return GuestFrame::Forward;
        }
        self.guest_continues = f.continues();
        if self.infile {
            // File data, ended by an empty packet; then the server answers.
            if f.payload().is_empty() {
                self.infile = false;
            }
            return GuestFrame::Forward;
        }
        let Some(&command) = f.payload().first() else {
            self.lost = true;
            return GuestFrame::Forward;
        };
        let owed = match command {
            COM_QUIT => return GuestFrame::Quit,
            COM_QUERY | COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE | COM_PROCESS_INFO => {
                Some(Owed::Results)
            }
            COM_STMT_PREPARE => Some(Owed::Prepare),
            COM_STMT_FETCH | COM_FIELD_LIST => Some(Owed::Rows),
            COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA => None,
            COM_INIT_DB | COM_PING | COM_STMT_RESET | COM_SET_OPTION | COM_RESET_CONNECTION
            | COM_STATISTICS | COM_DEBUG | COM_PROCESS_KILL | COM_REFRESH | COM_CREATE_DB
            | COM_DROP_DB => Some(Owed::One),
            _ => return GuestFrame::Refuse,
        };
        if let Some(o) = owed {
            self.owed.push_back(o);
        }
        GuestFrame::Forward
    }

    /// A frame from the backend.
    pub fn backend(&mut self, f: &Frame) {
        if self.backend_continues {
            self.backend_continues = f.continues();
            return;
        }
        self.backend_continues = f.continues();
        let p = f.payload();
        let Some(&first) = p.first() else {
            self.lost = true;
            return;
        };
        let state = match self.current.take() {
            Some(s) => s,
            None => match self.owed.pop_front() {
                Some(Owed::One) => State::One,
                Some(Owed::Results) => State::Results,
                Some(Owed::Prepare) => State::Prepare,
                Some(Owed::Rows) => State::Rows,
                None => {
                    // Nothing was asked: a server that talks on its own (a kill notice).
                    self.lost = true;
                    return;
                }
            },
        };
        self.current = self.step(state, first, p);
    }

    /// The state after packet `p` (first byte `first`) in state `s`; `None` when the response
    /// is complete.
    fn step(&mut self, s: State, first: u8, p: &[u8]) -> Option<State> {
        let columns_done = |deprecate_eof: bool| {
            if deprecate_eof {
                State::Rows
            } else {
                State::ColumnsEof
            }
        };
        match s {
            State::One => None,
            State::Results => match first {
                0x00 => self.more(p, true),
                0xFF => None,
                0xFB => {
                    self.infile = true;
                    Some(State::Results)
                }
                _ => match lenenc_int(p) {
                    Some((n, _)) if n > 0 => Some(State::Columns(n)),
                    _ => {
                        self.lost = true;
                        None
                    }
                },
            },
            State::Columns(left) if left > 1 => Some(State::Columns(left - 1)),
            State::Columns(_) => Some(columns_done(self.deprecate_eof)),
            State::ColumnsEof => Some(State::Rows),
            State::Rows => {
                if first == 0xFF {
                    None
                } else if self.is_terminator(first, p) {
                    self.more(p, self.deprecate_eof)
                } else {
                    Some(State::Rows)
                }
            }
            State::Prepare => {
                if first != 0x00 || p.len() < 9 {
                    return None; // ERR
                }
                let columns = u64::from(u16::from_le_bytes([p[5], p[6]]));
                let params = u64::from(u16::from_le_bytes([p[7], p[8]]));
                self.prepared_definitions(params, columns)
            }
            State::Params { left, columns } if left > 1 => Some(State::Params {
                left: left - 1,
                columns,
            }),
            State::Params { columns, .. } if !self.deprecate_eof => {
                Some(State::ParamsEof { columns })
            }
            State::Params { columns, .. } | State::ParamsEof { columns } => {
                self.prepared_definitions(0, columns)
            }
            State::PrepColumns(left) if left > 1 => Some(State::PrepColumns(left - 1)),
            State::PrepColumns(_) if !self.deprecate_eof => Some(State::PrepColumnsEof),
            State::PrepColumns(_) | State::PrepColumnsEof => None,
        }
    }

    /// What follows a prepare's OK: `params` parameter definitions, then `columns` columns.
    fn prepared_definitions(&self, params: u64, columns: u64) -> Option<State> {
        if params > 0 {
            Some(State::Params {
                left: params,
                columns,
            })
        } else if columns > 0 {
            Some(State::PrepColumns(columns))
        } else {
            None
        }
    }

    /// The end of a result set: an EOF packet, or with `CLIENT_DEPRECATE_EOF` an OK packet
    /// with the EOF header.
    fn is_terminator(&self, first: u8, p: &[u8]) -> bool {
        first == 0xFE
            && if self.deprecate_eof {
                p.len() < MAX_PAYLOAD
            } else {
                p.len() < 9
            }
    }

    /// After an OK (`ok`) or EOF packet: another result follows if its status says so.
    fn more(&mut self, p: &[u8], ok: bool) -> Option<State> {
        let status = if ok {
            // header, affected rows, last insert id, status.
            let Some((_, a)) = lenenc_int(&p[1..]) else {
                self.lost = true;
                return None;
            };
            let Some((_, b)) = lenenc_int(&p[1 + a..]) else {
                self.lost = true;
                return None;
            };
            let at = 1 + a + b;
            match p.get(at..at + 2) {
                Some(s) => u16::from_le_bytes([s[0], s[1]]),
                None => 0,
            }
        } else {
            match p.get(3..5) {
                Some(s) => u16::from_le_bytes([s[0], s[1]]),
                None => 0,
            }
        };
        (status & SERVER_MORE_RESULTS_EXISTS != 0).then_some(State::Results)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(payload: &[u8]) -> Frame {
        let mut b = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        b.push(0);
        b.extend_from_slice(payload);
        Frame {
            bytes: Bytes::from(b),
        }
    }

    const OK: &[u8] = &[0x00, 0, 0, 0x02, 0, 0, 0];
    const OK_MORE: &[u8] = &[0x00, 0, 0, 0x0A, 0, 0, 0];
    const EOF: &[u8] = &[0xFE, 0, 0, 0x02, 0];
    const ERR: &[u8] = &[0xFF, 0x28, 0x04, b'#', b'4', b'2', b'0', b'0', b'0', b'x'];

    fn run(t: &mut Tracker, packets: &[&[u8]]) {
        for p in packets {
            assert!(!t.idle(), "idle before {p:?}");
            t.backend(&frame(p));
        }
    }

    #[test]
    fn a_query_with_rows_then_idle() {
        for deprecate_eof in [false, true] {
            let mut t = Tracker::new(deprecate_eof);
            assert_eq!(t.guest(&frame(b"\x03SELECT 1, 2")), GuestFrame::Forward);
            let mut packets: Vec<&[u8]> = vec![&[2], b"col1", b"col2"];
            if !deprecate_eof {
                packets.push(EOF);
            }
            packets.extend([b"\x011\x012".as_slice(), b"\x013\x014"]);
            let end: &[u8] = if deprecate_eof {
                &[0xFE, 0, 0, 0x02, 0, 0, 0]
            } else {
                EOF
            };
            packets.push(end);
            run(&mut t, &packets);
            assert!(t.idle(), "deprecate_eof={deprecate_eof}");
        }
    }

    #[test]
    fn multi_statements_wait_for_the_last_result() {
        let mut t = Tracker::new(false);
        t.guest(&frame(b"\x03SET @a=1; SELECT @a"));
        run(&mut t, &[OK_MORE, &[1], b"col", EOF, b"\x011"]);
        t.backend(&frame(EOF));
        assert!(t.idle());
    }

    #[test]
    fn prepared_statements_and_close() {
        let mut t = Tracker::new(false);
        t.guest(&frame(b"\x16SELECT ?, ?"));
        // stmt 1, 2 columns, 2 params
        let prep_ok: &[u8] = &[0x00, 1, 0, 0, 0, 2, 0, 2, 0, 0, 0, 0];
        run(&mut t, &[prep_ok, b"p1", b"p2", EOF, b"c1", b"c2"]);
        t.backend(&frame(EOF));
        assert!(t.idle());
        // CLOSE has no answer.
        t.guest(&frame(&[0x19, 1, 0, 0, 0]));
        assert!(t.idle());
        t.guest(&frame(&[0x17, 1, 0, 0, 0]));
        run(&mut t, &[ERR]);
        assert!(t.idle());
    }

    #[test]
    fn mid_result_set_is_not_idle() {
        let mut t = Tracker::new(true);
        t.guest(&frame(b"\x03SELECT * FROM big"));
        run(&mut t, &[&[1], b"col", b"\x011"]);
        assert!(!t.idle());
    }

    #[test]
    fn quit_is_kept_and_change_user_refused() {
        let mut t = Tracker::new(true);
        assert_eq!(t.guest(&frame(&[0x01])), GuestFrame::Quit);
        assert_eq!(t.guest(&frame(&[0x11, b'u'])), GuestFrame::Refuse);
        assert!(t.idle());
    }

    #[test]
    fn unasked_packets_make_the_backend_unusable() {
        let mut t = Tracker::new(true);
        t.backend(&frame(ERR));
        assert!(!t.idle());
    }

    #[test]
    fn local_infile_round_trip() {
        let mut t = Tracker::new(true);
        t.guest(&frame(b"\x03LOAD DATA LOCAL INFILE 'x' INTO TABLE t"));
        t.backend(&frame(b"\xFBx"));
        assert!(!t.idle());
        t.guest(&frame(b"1,2\n"));
        t.guest(&frame(b""));
        t.backend(&frame(OK));
        assert!(t.idle());
    }
}
