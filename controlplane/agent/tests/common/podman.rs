//! Real Podman for tests: the API socket prepared by `scripts/podman-setup.sh` (run only when
//! the socket does not answer), and a guard that removes every Podman pod carrying a label when
//! dropped — also when the test panicked.
//!
//! Include it with `#[path = "common/podman.rs"] mod podman_support;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use pss_agent::podman::Podman;

/// The default socket of the setup script.
const DEFAULT_SOCKET: &str = "/run/pss/podman.sock";

/// True when the Podman API on `socket` answers `GET /_ping` with `OK`.
pub fn pings(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.ends_with("OK")
}

/// The Podman API socket, ready: `PSS_PODMAN_SOCK` or the setup script's default when it
/// answers, otherwise whatever `scripts/podman-setup.sh` prints on its last line.
pub fn podman_socket() -> PathBuf {
    static SOCKET: OnceLock<PathBuf> = OnceLock::new();
    SOCKET
        .get_or_init(|| {
            let wanted = std::env::var("PSS_PODMAN_SOCK").unwrap_or_else(|_| DEFAULT_SOCKET.into());
            if pings(Path::new(&wanted)) {
                return PathBuf::from(wanted);
            }
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/podman-setup.sh");
            let out = Command::new("bash")
                .arg(&script)
                .stderr(Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
            assert!(out.status.success(), "{} failed", script.display());
            let stdout = String::from_utf8_lossy(&out.stdout);
            let last = stdout.lines().last().unwrap_or_default();
            let socket = last.strip_prefix("PSS_PODMAN_SOCK=").unwrap_or_else(|| {
                panic!("setup script's last line is not PSS_PODMAN_SOCK=...: {stdout}")
            });
            PathBuf::from(socket)
        })
        .clone()
}

/// A client for the test socket.
pub fn podman() -> Podman {
    Podman::new(podman_socket())
}

/// Removes every Podman pod labelled `label` (`key=value`) when dropped.
pub struct PodCleanup {
    pub label: String,
}

impl PodCleanup {
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
        }
    }
}

/// Removes the pods carrying `label` now.
pub async fn remove_pods_labelled(podman: &Podman, label: &str) {
    if let Ok(pods) = podman.list_pods(label).await {
        for p in pods {
            // Stop without grace first: a forced remove would wait out each container's stop
            // timeout (PID 1 in these images ignores SIGTERM).
            let _ = podman.stop_pod(&p.id, std::time::Duration::ZERO).await;
            let _ = podman.remove_pod(&p.id).await;
        }
    }
}

impl Drop for PodCleanup {
    fn drop(&mut self) {
        let label = self.label.clone();
        // Drop may run inside a runtime (or while panicking): use a thread with its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(remove_pods_labelled(&podman(), &label));
        })
        .join();
        if done.is_err() {
            eprintln!("cleanup of pods labelled {} failed", self.label);
        }
    }
}
