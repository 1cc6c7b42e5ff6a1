//! A `pss-controller` process (the real binary) on a free loopback port, for tests that
//! measure it from outside (RSS), kill it, or restart it on the same database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{workspace_bin, TOKEN};

pub struct ControllerProcess {
    pub addr: SocketAddr,
    pub db: PathBuf,
    child: Child,
}

impl ControllerProcess {
    /// Starts the binary on `db` with `extra` flags and waits until it answers.
    pub async fn start(db: &Path, extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        if !extra.contains(&"--insecure") {
            super::register_ca(addr, db.parent().unwrap().join("pki/ca.crt"));
        }
        let child = Command::new(workspace_bin("pss-controller"))
            .args(["--listen", &addr.to_string(), "--db"])
            .arg(db)
            .args(["--operator-config", "none"])
            .args(extra)
            .env("PSS_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pss-controller");
        let c = ControllerProcess {
            addr,
            db: db.to_path_buf(),
            child,
        };
        for _ in 0..100 {
            if c.ctl(&["get", "nodes"]).await.is_ok() {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("pss-controller did not answer on {addr}");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// pssctl against this controller.
    pub async fn ctl(&self, args: &[&str]) -> Result<String, pssctl::CliError> {
        let addr = self.addr.to_string();
        let transport = super::transport_flags(self.addr);
        let mut argv = vec!["pssctl", "--controller", addr.as_str(), "--token", TOKEN];
        argv.extend(transport.iter().map(String::as_str));
        argv.extend_from_slice(args);
        super::ctl_raw(&argv).await
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Whether the process is still running (not exited, not crashed).
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
