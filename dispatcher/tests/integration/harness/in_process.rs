//! The platform in this process: [`dispatcher::platform::run`] on 127.0.0.1:0, on a tokio
//! runtime and thread of its own, configured explicitly (nothing read from the environment
//! but `${VAR}` in manifests). For the tests that need no separate process: they read no log,
//! run no CLI, send no signal and give the platform no environment of its own.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use dispatcher::platform::{self, Config};
use dispatcher::runtime::RuntimeConfig;
use tokio::sync::oneshot;

use super::{client, shared_cache};

/// A platform running in this process; shut down (drained) on drop.
pub struct InProcess {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the tests start a platform with unless they say otherwise: the manifests of `dir`,
/// the shared compile cache, no platform database (memory), no admin API, default limits.
pub fn config(manifests: &Path) -> Config {
    Config {
        manifests: Some(manifests.to_path_buf()),
        runtime: RuntimeConfig {
            cache_dir: Some(shared_cache()),
            ..RuntimeConfig::default()
        },
        ..Config::default()
    }
}

impl InProcess {
    /// Serves the manifests of `dir` with [`config`].
    pub fn start(manifests: &Path) -> InProcess {
        Self::start_with(config(manifests))
    }

    /// Binds 127.0.0.1:0, runs the platform on its own runtime and returns once
    /// `GET /_dispatcher/health` answers 200.
    pub fn start_with(config: Config) -> InProcess {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("platform".into())
            .spawn(move || {
                // As the binary's: a multi-threaded runtime with a worker per core.
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .thread_name("platform-worker")
                    .enable_all()
                    .build()
                    .expect("the platform's runtime");
                rt.block_on(serve(config, stop_rx, ready_tx));
                rt.shutdown_timeout(Duration::from_secs(5));
            })
            .expect("spawn the platform's thread");
        let url = match ready_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(url)) => url,
            Ok(Err(e)) => panic!("the platform did not start: {e}"),
            Err(_) => panic!("the platform did not answer its health check in 120 s"),
        };
        InProcess {
            url,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

/// Runs the platform until `stop`, telling `ready` its URL once it is healthy (or why it
/// ended before that).
async fn serve(
    config: Config,
    stop: oneshot::Receiver<()>,
    ready: mpsc::Sender<Result<String, String>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut server = tokio::spawn(platform::run(config, listener, async move {
        // A dropped sender (the test panicked) stops it too.
        let _ = stop.await;
    }));
    let health = format!("{url}/_dispatcher/health");
    let http = client();
    loop {
        tokio::select! {
            ended = &mut server => {
                let why = match ended {
                    Ok(Ok(())) => "it stopped".to_string(),
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(e) => format!("it panicked: {e}"),
                };
                let _ = ready.send(Err(why));
                return;
            }
            answer = http.get(&health).send() => {
                if answer.is_ok_and(|r| r.status() == 200) {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = ready.send(Ok(url));
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("the in-process platform failed: {e:#}"),
        Err(e) => eprintln!("the in-process platform panicked: {e}"),
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
