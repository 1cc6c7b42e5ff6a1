//! Finding the Podman API socket, in the order the seed README documents:
//!
//! 1. `--socket` (explicit: the only candidate when given),
//! 2. `DOCKER_HOST` (`unix://...`),
//! 3. `CONTAINER_HOST` (`unix://...`),
//! 4. `$XDG_RUNTIME_DIR/podman/podman.sock`,
//! 5. `/run/user/{uid}/podman/podman.sock`,
//! 6. root's `/run/podman/podman.sock`.
//!
//! The first candidate that answers `/_ping` wins; when none does, the error names every path
//! tried and why it was passed over.

use std::path::PathBuf;

use crate::podman::{Podman, PodmanError};
use crate::{Error, Result};

/// A place the socket may be, and where that idea came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub path: PathBuf,
    /// `--socket`, `DOCKER_HOST`, ... (for the error message).
    pub source: &'static str,
}

/// The candidates in order. `env` reads an environment variable; `uid` is the agent's user.
/// Host values that are not `unix://` URLs (e.g. `tcp://`) are skipped: the agent speaks only
/// to unix sockets.
pub fn candidates(
    explicit: Option<PathBuf>,
    env: impl Fn(&str) -> Option<String>,
    uid: u32,
) -> Vec<Candidate> {
    if let Some(path) = explicit {
        return vec![Candidate {
            path,
            source: "--socket",
        }];
    }
    let mut out = Vec::new();
    for var in ["DOCKER_HOST", "CONTAINER_HOST"] {
        if let Some(path) = env(var).as_deref().and_then(unix_path) {
            out.push(Candidate { path, source: var });
        }
    }
    if let Some(dir) = env("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        out.push(Candidate {
            path: PathBuf::from(dir).join("podman/podman.sock"),
            source: "$XDG_RUNTIME_DIR",
        });
    }
    out.push(Candidate {
        path: PathBuf::from(format!("/run/user/{uid}/podman/podman.sock")),
        source: "/run/user/{uid}",
    });
    out.push(Candidate {
        path: PathBuf::from("/run/podman/podman.sock"),
        source: "rootful default",
    });
    out.dedup_by(|a, b| a.path == b.path);
    out
}

/// `unix:///path` or a bare absolute path → the path.
fn unix_path(host: &str) -> Option<PathBuf> {
    let host = host.trim();
    if let Some(p) = host.strip_prefix("unix://") {
        return Some(PathBuf::from(p));
    }
    host.starts_with('/').then(|| PathBuf::from(host))
}

/// The agent's uid (owner of `/proc/self`), without `unsafe`.
pub fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

/// Pings each candidate in order and returns a client for the first that answers.
pub async fn detect(explicit: Option<PathBuf>) -> Result<Podman> {
    let list = candidates(explicit, |k| std::env::var(k).ok(), current_uid());
    let mut tried = Vec::new();
    for c in list {
        if !c.path.exists() {
            tried.push(format!(
                "  {} ({}): no such file",
                c.path.display(),
                c.source
            ));
            continue;
        }
        let podman = Podman::new(&c.path);
        match podman.ping().await {
            Ok(()) => return Ok(podman),
            Err(e) => tried.push(format!("  {} ({}): {e}", c.path.display(), c.source)),
        }
    }
    Err(Error::Podman(PodmanError::NoSocket {
        tried: tried.join("\n"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(c: &[Candidate]) -> Vec<String> {
        c.iter().map(|c| c.path.display().to_string()).collect()
    }

    #[test]
    fn explicit_socket_is_the_only_candidate() {
        let c = candidates(Some("/x.sock".into()), |_| Some("unix:///other".into()), 0);
        assert_eq!(paths(&c), ["/x.sock"]);
    }

    #[test]
    fn follows_the_seed_order() {
        let env = |k: &str| match k {
            "DOCKER_HOST" => Some("unix:///d.sock".to_string()),
            "CONTAINER_HOST" => Some("tcp://1.2.3.4:80".to_string()),
            "XDG_RUNTIME_DIR" => Some("/run/user/1000".to_string()),
            _ => None,
        };
        let c = candidates(None, env, 1000);
        // XDG and /run/user/1000 are the same path: listed once.
        assert_eq!(
            paths(&c),
            [
                "/d.sock",
                "/run/user/1000/podman/podman.sock",
                "/run/podman/podman.sock"
            ]
        );
        let c = candidates(None, |_| None, 0);
        assert_eq!(
            paths(&c),
            ["/run/user/0/podman/podman.sock", "/run/podman/podman.sock"]
        );
    }

    #[tokio::test]
    async fn names_every_path_tried() {
        let err = detect(Some("/nonexistent/pss-test.sock".into()))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/pss-test.sock"), "{err}");
        assert!(err.contains("no such file"), "{err}");
    }
}
