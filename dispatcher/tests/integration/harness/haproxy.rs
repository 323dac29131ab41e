//! A real HAProxy (Debian's, at /usr/sbin/haproxy; scripts/setup.sh installs it) in front of
//! dispatcher replicas: a generated config, run in the foreground, killed on drop, and its
//! view of each server read over its runtime API (`show stat` on the stats socket).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::wait_until;

pub const HAPROXY: &str = "/usr/sbin/haproxy";

/// A free TCP port on 127.0.0.1: bound to port 0 and released, so that a process started
/// later (and restarted) can listen on it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// HAProxy balancing one backend over `servers`; killed on drop.
pub struct HaProxy {
    child: Child,
    /// The frontend's port: all client traffic goes here.
    pub port: u16,
    /// The runtime API's socket.
    socket: PathBuf,
    /// What it logged (`log stdout format raw`), line by line: with `option dontlog-normal`,
    /// only the requests that had an error or a retry.
    pub log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

/// The backend's name in the generated config.
pub const BACKEND: &str = "dispatchers";

/// One server as the stats page shows it.
#[derive(Debug, Clone)]
pub struct ServerStat {
    /// `UP`, `DOWN`, `UP 1/2` (going down), `DOWN 1/1` (going up), `MAINT`, ...
    pub status: String,
    /// Requests it has been given in total (`stot`: HTTP counts each request as a session).
    pub sessions: u64,
    /// Requests retried (`wretr`) and redispatched to another server (`wredis`).
    pub retries: u64,
    pub redispatches: u64,
}

impl HaProxy {
    /// Starts HAProxy with one server per `(name, port)` on 127.0.0.1, each health-checked
    /// with `GET /_dispatcher/health` every 200 ms (down after 2 failures, up after 1 success).
    pub fn start(servers: &[(&str, u16)]) -> HaProxy {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let mut backend = String::new();
        for (name, p) in servers {
            backend.push_str(&format!("    server {name} 127.0.0.1:{p} check\n"));
        }
        let cfg = format!(
            "\
global
    log stdout format raw local0
    maxconn 512
    stats socket {socket} level admin

defaults
    mode http
    log global
    timeout connect 1s
    timeout client 30s
    timeout server 5s
    timeout check 500ms
    timeout http-keep-alive 10s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend www
    bind 127.0.0.1:{port}
    option httplog
    option dontlog-normal
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    # As deploy/haproxy/haproxy.cfg: a request that reached a replica is replayed only if
    # it is a read; a POST is retried only when it was never sent.
    http-request disable-l7-retry if !METH_GET
    # Keep-alive to the replicas: a draining replica answers `Connection: close`, so an
    # idle connection to it is not reused (http-server-close works too, at 40% of the rate).
    option http-keep-alive
    option httpchk GET /_dispatcher/health
    http-check expect status 200
    default-server inter 200ms fastinter 200ms downinter 200ms fall 2 rise 1
{backend}",
            socket = socket.display()
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, &cfg).unwrap();
        let check = Command::new(HAPROXY)
            .args(["-c", "-q", "-f"])
            .arg(&path)
            .output()
            .expect("run haproxy (scripts/setup.sh installs it)");
        assert!(
            check.status.success(),
            "haproxy refused its config:\n{cfg}\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let mut child = Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn haproxy");
        let log = Arc::new(Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut h = HaProxy {
            child,
            port,
            socket,
            log,
            _dir: dir,
        };
        let up = wait_until(Duration::from_secs(10), || h.stats().is_ok());
        if !up {
            let _ = h.child.kill();
            panic!("haproxy did not start; its log:\n{}", h.log_text());
        }
        h
    }

    /// `http://127.0.0.1:PORT` (the frontend) followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Lines logged so far; with [`HaProxy::errors_since`], what a step made it log.
    pub fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The request lines logged since line `from` whose termination state is not `----`:
    /// the requests that ended in an error rather than merely being retried.
    pub fn errors_since(&self, from: usize) -> Vec<String> {
        self.log.lock().unwrap()[from..]
            .iter()
            .filter(|l| {
                l.contains(" HTTP/1.") && l.split_whitespace().nth(9).is_some_and(|t| t != "----")
            })
            .cloned()
            .collect()
    }

    /// Sends one command to the runtime API and returns its answer.
    pub fn command(&self, command: &str) -> std::io::Result<String> {
        let mut s = UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(format!("{command}\n").as_bytes())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    }

    /// The backend's servers by name, and the backend as a whole as `BACKEND`, from
    /// `show stat` (CSV).
    pub fn stats(&self) -> std::io::Result<Vec<(String, ServerStat)>> {
        let csv = self.command("show stat")?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (Some(px), Some(sv), Some(st), Some(stot), Some(wretr), Some(wredis)) = (
            col("pxname"),
            col("svname"),
            col("status"),
            col("stot"),
            col("wretr"),
            col("wredis"),
        ) else {
            return Err(std::io::Error::other(format!("not a stats CSV: {csv}")));
        };
        Ok(lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > stot.max(wretr).max(wredis) && f[px] == BACKEND)
            .map(|f| {
                (
                    f[sv].to_string(),
                    ServerStat {
                        status: f[st].to_string(),
                        sessions: f[stot].parse().unwrap_or(0),
                        retries: f[wretr].parse().unwrap_or(0),
                        redispatches: f[wredis].parse().unwrap_or(0),
                    },
                )
            })
            .collect())
    }

    /// One server's stats (or the backend's, as `BACKEND`); panics if there is no such server.
    pub fn server(&self, name: &str) -> ServerStat {
        self.stats()
            .expect("haproxy's runtime API")
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("haproxy has no server {name}"))
            .1
    }

    /// Waits until HAProxy holds server `name` fully up (`want_up`) or down, and returns how
    /// long that took, or `None` after `timeout`.
    pub fn wait_state(&self, name: &str, want_up: bool, timeout: Duration) -> Option<Duration> {
        let started = Instant::now();
        let want = if want_up { "UP" } else { "DOWN" };
        // "UP 1/2" is still up but failing its checks; only the bare word is settled.
        wait_until(timeout, || self.server(name).status == want).then(|| started.elapsed())
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
