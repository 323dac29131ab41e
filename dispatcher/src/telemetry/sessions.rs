//! Which invocation a database session belongs to. A guest's connection to a pooled
//! database arrives at the pool's loopback listener like any other; the runtime tells this
//! registry the connection's local address when it opens it, and the pool looks the peer
//! address up once the guest has logged in (which the guest can do only after its connect
//! returned), to put the session's checkout in the invocation's trace.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::TraceContext;

/// Most sessions waiting to be looked up; past it the oldest are forgotten (their pool
/// spans then go without a parent, nothing else).
const MAX_PENDING: usize = 4096;

/// Whose session a connection is.
#[derive(Debug, Clone)]
pub struct SessionTag {
    pub request_id: Arc<str>,
    /// The span the session's checkout goes under, when traces are exported.
    pub trace: Option<TraceContext>,
}

/// Sessions opened and not yet looked up, by the guest side's local address.
#[derive(Debug, Default)]
pub struct Sessions(Mutex<HashMap<SocketAddr, SessionTag>>);

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, SessionTag>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the tag of the connection from `peer`, if one was registered.
    pub fn take(&self, peer: SocketAddr) -> Option<SessionTag> {
        self.map().remove(&peer)
    }

    fn insert(&self, local: SocketAddr, tag: SessionTag) {
        let mut map = self.map();
        if map.len() >= MAX_PENDING {
            map.clear();
        }
        map.insert(local, tag);
    }
}

/// One invocation's side: registers each pooled connection it opens.
#[derive(Debug)]
pub struct InvocationSessions {
    pub telemetry: Arc<super::Telemetry>,
    pub tag: SessionTag,
}

impl crate::runtime::HostSessions for InvocationSessions {
    fn opened(&self, local: SocketAddr) {
        self.telemetry.sessions.insert(local, self.tag.clone());
    }
}
