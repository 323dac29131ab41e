//! A TCP proxy a test can cut and restore, to stand between the platform and MariaDB and
//! play an outage.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;

/// A TCP proxy the test can cut and restore. Its tasks run on the test's tokio runtime.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    /// Connections accepted since the start.
    accepted: Arc<AtomicUsize>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Proxy {
    pub async fn start(target: &'static str) -> Arc<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = Arc::new(Proxy {
            addr: listener.local_addr().unwrap(),
            up: Arc::new(AtomicBool::new(true)),
            accepted: Arc::default(),
            conns: Arc::default(),
            accept: Mutex::new(None),
        });
        p.serve(listener, target);
        p
    }

    fn serve(self: &Arc<Self>, listener: TcpListener, target: &'static str) {
        let conns = self.conns.clone();
        let accepted = self.accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().unwrap().push(h);
            }
        });
        *self.accept.lock().unwrap() = Some(task);
    }

    /// How many connections it has accepted so far: exactly the connections its clients
    /// opened to the target through it.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes the listening port and every connection through it.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(t) = self.accept.lock().unwrap().take() {
            t.abort();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Listens on the same port again. An aborted accept task lets go of the old listener
    /// only once the runtime drops it, so binding is retried for a moment.
    pub async fn restore(self: &Arc<Self>, target: &'static str) {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 200 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(e) => panic!("the proxy cannot listen on {} again: {e}", self.addr),
            }
        };
        self.up.store(true, Ordering::SeqCst);
        self.serve(listener, target);
    }
}
