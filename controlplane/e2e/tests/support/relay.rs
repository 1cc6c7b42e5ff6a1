//! A recording TCP relay: forwards every connection to a target and keeps every byte seen in
//! either direction, so a test can check what crossed the wire (issue 11: no token, no
//! manifest, no pod name in clear). With no target it only records what clients send.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running relay.
#[derive(Clone)]
pub struct Relay {
    pub addr: SocketAddr,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    /// Starts a relay to `target` (`None`: accept, record, never answer).
    pub fn start(target: Option<SocketAddr>) -> Relay {
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std.set_nonblocking(true).unwrap();
        let addr = std.local_addr().unwrap();
        let listener = tokio::net::TcpListener::from_std(std).unwrap();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let rec = bytes.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let rec = rec.clone();
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let Some(target) = target else {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            rec.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                        drop(cw);
                        return;
                    };
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut sr, mut sw) = server.into_split();
                    let up = {
                        let rec = rec.clone();
                        async move {
                            let mut buf = vec![0u8; 16 * 1024];
                            while let Ok(n) = cr.read(&mut buf).await {
                                if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                                rec.lock().unwrap().extend_from_slice(&buf[..n]);
                            }
                            let _ = sw.shutdown().await;
                        }
                    };
                    let down = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n) = sr.read(&mut buf).await {
                            if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            rec.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Relay { addr, bytes }
    }

    /// Every byte seen so far, both directions.
    pub fn bytes(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }

    /// Whether `needle` crossed the relay in clear.
    pub fn saw(&self, needle: &str) -> bool {
        let hay = self.bytes();
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }
}
