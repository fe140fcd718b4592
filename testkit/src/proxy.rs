//! A fault proxy between a client and a broker, in the test process: it relays TCP both ways
//! and, on command, black-holes every connection (nothing flows, nothing closes: a partition
//! or a frozen peer), resets them all (RST), delays what it relays, or cuts a connection
//! abruptly after a number of bytes. New connections are accepted throughout and obey the
//! same faults.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct Faults {
    /// Connections accepted so far.
    accepted: AtomicUsize,
    /// Connections open now.
    open: AtomicUsize,
    /// True while nothing may flow.
    blackhole: watch::Sender<bool>,
    /// Bumped to reset every open connection.
    resets: watch::Sender<u64>,
    /// Milliseconds to hold each chunk before relaying it.
    delay_ms: AtomicU64,
    /// Cut a connection once it relayed this many bytes (0: never).
    close_after: AtomicU64,
}

/// A running proxy; stops accepting when dropped (open connections end with the test).
pub struct Proxy {
    /// The port clients connect to, on 127.0.0.1.
    pub port: u16,
    faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.faults.resets.send_modify(|n| *n += 1);
    }
}

impl Proxy {
    /// Relays 127.0.0.1:`port` (0: any free port) to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Faults {
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            blackhole: watch::channel(false).0,
            resets: watch::channel(0).0,
            delay_ms: AtomicU64::new(0),
            close_after: AtomicU64::new(0),
        });
        let upstream = upstream.to_owned();
        let f = faults.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                f.accepted.fetch_add(1, Ordering::SeqCst);
                let (f, upstream) = (f.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    f.open.fetch_add(1, Ordering::SeqCst);
                    relay(client, server, &f).await;
                    f.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { port, faults, task }
    }

    /// `host:port` of the proxy, to put in a transport URL.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.faults.accepted.load(Ordering::SeqCst)
    }

    /// Connections relayed now.
    pub fn open(&self) -> usize {
        self.faults.open.load(Ordering::SeqCst)
    }

    /// Stops (true) or resumes (false) every flow, without closing anything.
    pub fn blackhole(&self, on: bool) {
        self.faults.blackhole.send_replace(on);
    }

    /// Resets every open connection (both sides see a TCP reset).
    pub fn reset(&self) {
        self.faults.resets.send_modify(|n| *n += 1);
    }

    /// Holds every chunk this long before relaying it.
    pub fn delay(&self, d: Duration) {
        self.faults.delay_ms.store(
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Cuts each connection abruptly once it relayed `bytes` (0: never).
    pub fn close_after(&self, bytes: u64) {
        self.faults.close_after.store(bytes, Ordering::SeqCst);
    }
}

async fn relay(mut client: TcpStream, mut server: TcpStream, f: &Faults) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut flow = f.blackhole.subscribe();
    let mut resets = f.resets.subscribe();
    let (mut up, mut down) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut relayed = 0u64;
    // A zero linger makes the close a reset; it never blocks the thread (what the deprecation
    // warns of is a non-zero linger).
    #[allow(deprecated)]
    let abort = |client: &TcpStream, server: &TcpStream| {
        let _ = client.set_linger(Some(Duration::ZERO));
        let _ = server.set_linger(Some(Duration::ZERO));
    };
    loop {
        if *flow.borrow_and_update() {
            tokio::select! {
                _ = flow.changed() => continue,
                _ = resets.changed() => return abort(&client, &server),
            }
        }
        let (n, to_server) = tokio::select! {
            r = client.read(&mut up) => (r.unwrap_or(0), true),
            r = server.read(&mut down) => (r.unwrap_or(0), false),
            _ = resets.changed() => return abort(&client, &server),
            _ = flow.changed() => continue,
        };
        if n == 0 {
            // One side closed: close the other too.
            let _ = if to_server {
                server.shutdown().await
            } else {
                client.shutdown().await
            };
            return;
        }
        let delay = f.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        relayed += n as u64;
        let limit = f.close_after.load(Ordering::SeqCst);
        if limit > 0 && relayed > limit {
            return abort(&client, &server);
        }
        let (chunk, out) = if to_server {
            (&up[..n], &mut server)
        } else {
            (&down[..n], &mut client)
        };
        if out.write_all(chunk).await.is_err() {
            return abort(&client, &server);
        }
    }
}
