//! A load generator: clients posting back to back while a test changes the platform.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;

use super::client;

/// Continuous load: `concurrency` clients POST `body` to `url` back to back, on keep-alive
/// connections, until [`Load::stop`].
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<LoadResult>,
}

/// What a [`Load`] saw.
#[derive(Debug, Default)]
pub struct LoadResult {
    pub ok: u64,
    /// Each failure: the status (or transport error) and the body.
    pub failures: Vec<String>,
    /// When each failure in `failures` was seen.
    pub failed_at: Vec<Instant>,
    /// Distinct bodies of successful answers, in the order first seen.
    pub bodies: Vec<String>,
}

impl Load {
    pub fn start(url: String, body: &'static str, concurrency: usize) -> Load {
        Self::start_method(Method::POST, url, body, concurrency)
    }

    /// Like [`Load::start`], each client sending one request every `every` instead of back to
    /// back: on a small machine the platform's timers (and a test's proxy) still get the CPU.
    pub fn paced(url: String, body: &'static str, concurrency: usize, every: Duration) -> Load {
        Self::run(Method::POST, url, body, concurrency, Some(every))
    }

    /// Like [`Load::start`], with `method` instead of POST (`body` is sent with any method).
    pub fn start_method(
        method: Method,
        url: String,
        body: &'static str,
        concurrency: usize,
    ) -> Load {
        Self::run(method, url, body, concurrency, None)
    }

    fn run(
        method: Method,
        url: String,
        body: &'static str,
        concurrency: usize,
        every: Option<Duration>,
    ) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let result = Arc::new(Mutex::new(LoadResult::default()));
                let mut tasks = Vec::new();
                for _ in 0..concurrency {
                    let (url, flag, result) = (url.clone(), flag.clone(), result.clone());
                    let method = method.clone();
                    tasks.push(tokio::spawn(async move {
                        let http = client();
                        let mut tick = every.map(tokio::time::interval);
                        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                            if let Some(tick) = &mut tick {
                                tick.tick().await;
                            }
                            let outcome =
                                match http.request(method.clone(), &url).body(body).send().await {
                                    Ok(r) => {
                                        let status = r.status();
                                        let text = r.text().await.unwrap_or_default();
                                        if status.is_success() {
                                            Ok(text)
                                        } else {
                                            Err(format!("{status}: {text}"))
                                        }
                                    }
                                    Err(e) => Err(format!("transport: {e}")),
                                };
                            let mut r = result.lock().unwrap();
                            match outcome {
                                Ok(text) => {
                                    r.ok += 1;
                                    if !r.bodies.contains(&text) {
                                        r.bodies.push(text);
                                    }
                                }
                                Err(e) => {
                                    r.failures.push(e);
                                    r.failed_at.push(Instant::now());
                                }
                            }
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                let seen = std::mem::take(&mut *result.lock().unwrap());
                seen
            })
        });
        Load { stop, thread }
    }

    pub fn stop(self) -> LoadResult {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}
