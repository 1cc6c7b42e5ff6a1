//! A real etcd cluster for the tests of `pss-controller --store etcd://...` (issue 15): N
//! members of the `etcd` binary (Debian's `etcd-server`, which `scripts/test.sh` installs) on
//! free loopback ports, data in a temporary directory (on `/dev/shm` when there is one: no
//! disk, cheap fsync), short Raft timings, each member's log in `<dir>/m<i>.log`.
//!
//! ```ignore
//! let mut etcd = EtcdCluster::start(3);           // waits until every member is healthy
//! let store = etcd.store_url();                   // "etcd://127.0.0.1:A,127.0.0.1:B,127.0.0.1:C"
//! etcd.put(0, "k", "v").unwrap();                 // plain HTTP/JSON through the v3 gateway
//! etcd.kill(etcd.leader().unwrap());              // SIGKILL; stop/cont: SIGSTOP/SIGCONT
//! etcd.restart(1);                                // same data dir, rejoins, waits healthy
//! ```
//!
//! The API is blocking (std processes and sockets; `start` and `restart*` poll for up to
//! [`HEALTH_DEADLINE`]). In a `#[tokio::test]` whose in-process controller must keep running
//! meanwhile, use `flavor = "multi_thread"` and `tokio::task::block_in_place`, or
//! [`EtcdCluster::spawn_member`] and poll [`EtcdCluster::healthy`] with `support::eventually`.
//!
//! Members are killed when the cluster is dropped. Should the test process die without
//! dropping it, a small watchdog (`sh`) kills the members it left and removes the directory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long `start`/`restart` wait for members to report healthy.
pub const HEALTH_DEADLINE: Duration = Duration::from_secs(20);
/// Raft heartbeat and election timeout (ms): a dead leader is replaced within about a second.
pub const HEARTBEAT_MS: u32 = 50;
pub const ELECTION_MS: u32 = 500;
/// Backend quota: ample for tests, and a runaway test hits NOSPACE instead of filling a disk.
pub const QUOTA_BYTES: u64 = 256 << 20;

/// The etcd binary: `$PSS_ETCD_BIN`, else `etcd` on the PATH.
pub fn etcd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PSS_ETCD_BIN") {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("etcd"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("etcd"))
}

/// Whether an etcd binary runs here (`etcd --version`).
pub fn etcd_available() -> bool {
    Command::new(etcd_bin())
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Panics with what to do when etcd is missing: these tests never skip silently.
pub fn require_etcd() {
    assert!(
        etcd_available(),
        "etcd is not installed ({} does not run): these tests need a real etcd server. \
         Install it with `apt-get install etcd-server etcd-client` (scripts/test.sh does), \
         or point PSS_ETCD_BIN at an etcd binary",
        etcd_bin().display()
    );
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// N etcd members on loopback; see the module documentation.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    token: String,
    members: Vec<Member>,
    watchdog: Option<Child>,
}

impl EtcdCluster {
    /// Starts `members` etcd members as a new cluster and waits until each reports healthy
    /// (panics after three attempts of [`HEALTH_DEADLINE`] each, with the members' log
    /// tails). A cluster that does not become healthy (a port taken by someone else between
    /// choosing and binding it) is started again on fresh ports.
    pub fn start(members: usize) -> EtcdCluster {
        assert!(members > 0, "an etcd cluster needs at least one member");
        require_etcd();
        let dir = tempfile::Builder::new()
            .prefix("pss-etcd-")
            .tempdir_in(scratch_dir())
            .expect("a temporary directory for etcd");
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(
                "while kill -0 \"$0\" 2>/dev/null; do sleep 1; done; \
                 [ -f \"$1/pids\" ] && kill -9 $(cat \"$1/pids\") 2>/dev/null; rm -rf \"$1\"",
            )
            .arg(std::process::id().to_string())
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        let mut cluster = EtcdCluster {
            dir,
            token: String::new(),
            members: Vec::new(),
            watchdog,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            cluster.token = unique_token();
            let ports = free_ports(2 * members);
            cluster.members = (0..members)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                    child: None,
                })
                .collect();
            for i in 0..members {
                let _ = std::fs::remove_dir_all(cluster.data_dir(i));
                let _ = std::fs::remove_file(cluster.log_path(i));
                cluster.spawn(i, "new");
            }
            match cluster.wait_until_healthy(&(0..members).collect::<Vec<_>>(), HEALTH_DEADLINE) {
                Ok(()) => return cluster,
                Err(report) => {
                    cluster.kill_all();
                    // A port taken between choosing and binding it (seen in CI as a member
                    // that runs but never serves its client port, not only as "address
                    // already in use"): start again on fresh ports, twice at most.
                    if attempt >= 3 {
                        panic!("etcd cluster of {members} did not become healthy:\n{report}");
                    }
                    eprintln!("etcd cluster attempt {attempt} failed; retrying on fresh ports");
                }
            }
        }
    }

    /// Number of members (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The members' client addresses, comma-separated (`127.0.0.1:A,127.0.0.1:B,...`).
    pub fn endpoints(&self) -> String {
        (0..self.len())
            .map(|i| self.client_addr(i).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `etcd://` + [`endpoints`](Self::endpoints): the value of `pss-controller --store`.
    pub fn store_url(&self) -> String {
        format!("etcd://{}", self.endpoints())
    }

    /// Member `i`'s client address.
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[i].client_port))
    }

    /// Member `i`'s peer (Raft) address.
    pub fn peer_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[i].peer_port))
    }

    /// The process id of member `i`, if it runs (or is stopped).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// The directory holding the members' data directories and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Member `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}.data"))
    }

    /// Member `i`'s log (every run of it, appended).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}.log"))
    }

    /// The last `lines` lines of member `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGKILL member `i` and reap it (no-op when it is not running).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.write_pids();
    }

    /// SIGKILL every member.
    pub fn kill_all(&mut self) {
        for i in 0..self.len() {
            self.kill(i);
        }
    }

    /// Freezes member `i` (SIGSTOP): its sockets stay open, it answers nothing.
    pub fn stop(&self, i: usize) {
        self.signal(i, "STOP");
    }

    /// Resumes member `i` after [`stop`](Self::stop) (SIGCONT).
    pub fn cont(&self, i: usize) {
        self.signal(i, "CONT");
    }

    /// Starts member `i` again on its data directory (`--initial-cluster-state existing`;
    /// killed first if it still runs) and waits until it reports healthy, i.e. has rejoined
    /// a cluster with a leader. Needs a quorum of the other members running.
    pub fn restart(&mut self, i: usize) {
        self.spawn_member(i);
        if let Err(report) = self.wait_until_healthy(&[i], HEALTH_DEADLINE) {
            panic!("etcd member {i} did not rejoin:\n{report}");
        }
    }

    /// Restarts every member not running (running ones are left alone), then waits until all
    /// report healthy: e.g. after [`kill_all`](Self::kill_all).
    pub fn restart_all(&mut self) {
        for i in 0..self.len() {
            if !self.running(i) {
                self.spawn_member(i);
            }
        }
        let all: Vec<usize> = (0..self.len()).collect();
        if let Err(report) = self.wait_until_healthy(&all, HEALTH_DEADLINE) {
            panic!("etcd cluster did not come back:\n{report}");
        }
    }

    /// Starts member `i` again on its data directory without waiting (killed first if it
    /// still runs): for async tests that poll [`healthy`](Self::healthy) themselves.
    pub fn spawn_member(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, "existing");
    }

    /// Whether member `i`'s process runs (a stopped one counts; an exited one is reaped).
    pub fn running(&mut self, i: usize) -> bool {
        match self.members[i].child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.members[i].child = None;
                self.write_pids();
                false
            }
            None => false,
        }
    }

    /// Whether member `i` answers `GET /health` with `"health":"true"` (it has a leader and
    /// serves linearizable reads) within a second.
    pub fn healthy(&self, i: usize) -> bool {
        matches!(
            http(self.client_addr(i), "GET", "/health", None, Duration::from_secs(1)),
            Ok((200, body)) if body.contains("\"health\":\"true\"")
        )
    }

    /// Waits until each of `members` reports healthy, or returns a report: each member's
    /// state and log tail. Fails early when a member's process exits.
    pub fn wait_until_healthy(
        &mut self,
        members: &[usize],
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut exited = None;
            let mut all = true;
            for &i in members {
                if !self.running(i) {
                    exited = Some(i);
                    break;
                }
                if !self.healthy(i) {
                    all = false;
                }
            }
            if exited.is_none() && all {
                return Ok(());
            }
            if exited.is_some() || Instant::now() > deadline {
                let why = match exited {
                    Some(i) => format!("member {i} exited"),
                    None => format!("not all of members {members:?} healthy after {timeout:?}"),
                };
                return Err(format!("{why}\n{}", self.report()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every member's address, state and log tail: for a failure message.
    pub fn report(&mut self) -> String {
        let mut out = String::new();
        for i in 0..self.len() {
            let state = if !self.running(i) {
                "not running"
            } else if self.healthy(i) {
                "healthy"
            } else {
                "running, not healthy"
            };
            out += &format!(
                "--- etcd member {i} (client {}, peer {}): {state}; log {}:\n{}\n",
                self.client_addr(i),
                self.peer_addr(i),
                self.log_path(i).display(),
                self.log_tail(i, 25)
            );
        }
        out
    }

    /// The index of the running member that is the Raft leader, as the first answering member
    /// sees it (`/v3/maintenance/status`); None while there is none, or while the members
    /// still name a leader that no longer answers.
    pub fn leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leader = None;
        for i in 0..self.len() {
            let status = self
                .call_timeout(i, "/v3/maintenance/status", "{}", Duration::from_secs(1))
                .ok();
            let field = |v: &serde_json::Value, p: &str| {
                v.pointer(p).and_then(|x| x.as_str()).map(str::to_string)
            };
            ids.push(status.as_ref().and_then(|s| field(s, "/header/member_id")));
            if leader.is_none() {
                leader = status.as_ref().and_then(|s| field(s, "/leader"));
            }
        }
        let leader = leader?;
        ids.iter()
            .position(|id| id.as_deref() == Some(leader.as_str()))
    }

    /// Puts `key` = `value` through member `i` (v3 gateway, `/v3/kv/put`).
    pub fn put(&self, i: usize, key: &str, value: &str) -> Result<(), String> {
        let body =
            serde_json::json!({ "key": b64(key.as_bytes()), "value": b64(value.as_bytes()) });
        self.call(i, "/v3/kv/put", &body.to_string()).map(|_| ())
    }

    /// Reads `key` through member `i` (linearizable `/v3/kv/range`).
    pub fn get(&self, i: usize, key: &str) -> Result<Option<String>, String> {
        let body = serde_json::json!({ "key": b64(key.as_bytes()) });
        let v = self.call(i, "/v3/kv/range", &body.to_string())?;
        let Some(kv) = v.pointer("/kvs/0") else {
            return Ok(None);
        };
        // An empty value is left out of the JSON.
        let value = kv.get("value").and_then(|x| x.as_str()).unwrap_or("");
        let bytes = unb64(value).ok_or_else(|| format!("bad base64 from etcd: {value}"))?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// POSTs `body` (JSON) to `path` on member `i`'s v3 gateway; the JSON answer of a 200.
    /// Waits up to 5 s (a write sent while the leader is being replaced can hang that long).
    pub fn call(&self, i: usize, path: &str, body: &str) -> Result<serde_json::Value, String> {
        self.call_timeout(i, path, body, Duration::from_secs(5))
    }

    /// [`call`](Self::call) with each step of the exchange bounded by `timeout`.
    pub fn call_timeout(
        &self,
        i: usize,
        path: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value, String> {
        let (status, text) = http(self.client_addr(i), "POST", path, Some(body), timeout)?;
        if status != 200 {
            return Err(format!("{path} on member {i}: HTTP {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{path} on member {i}: {e}: {text}"))
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let initial_cluster = (0..self.len())
            .map(|j| format!("{}=http://{}", self.members[j].name, self.peer_addr(j)))
            .collect::<Vec<_>>()
            .join(",");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("open the etcd log");
        let client = format!("http://{}", self.client_addr(i));
        let peer = format!("http://{}", self.peer_addr(i));
        let mut cmd = Command::new(etcd_bin());
        // Flags only: an ETCD_* variable next to its flag makes etcd refuse to start.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--name")
            .arg(&self.members[i].name)
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_MS.to_string()])
            .args(["--quota-backend-bytes", &QUOTA_BYTES.to_string()])
            // What PSS recommends (README, High availability): a 100-object apply is one
            // transaction, and a big manifest one request.
            .args(["--max-txn-ops", "1024", "--max-request-bytes", "10485760"])
            .args(["--snapshot-count", "10000", "--max-wals", "2"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", etcd_bin().display()));
        self.members[i].child = Some(child);
        self.write_pids();
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self
            .pid(i)
            .unwrap_or_else(|| panic!("etcd member {i} is not running"));
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {pid} failed");
    }

    /// The running members' pids, for the watchdog.
    fn write_pids(&self) {
        let pids: Vec<String> = self
            .members
            .iter()
            .filter_map(|m| m.child.as_ref().map(|c| c.id().to_string()))
            .collect();
        let _ = std::fs::write(self.dir.path().join("pids"), pids.join(" "));
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// Where clusters keep their data: `$PSS_ETCD_TMPDIR`, else `/dev/shm` when it has room (each
/// member preallocates a 64 MiB WAL; a container's default `/dev/shm` is only 64 MiB), else the
/// temporary directory.
fn scratch_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PSS_ETCD_TMPDIR") {
        return PathBuf::from(d);
    }
    let shm_free_kib = Command::new("df")
        .args(["-Pk", "/dev/shm"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines()
                .nth(1)?
                .split_whitespace()
                .nth(3)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    if shm_free_kib >= 2 << 20 {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    }
}

/// A cluster token no other test's cluster has.
fn unique_token() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "pss-e2e-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `n` distinct free loopback ports (all bound at once, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// One HTTP/1.0 request (the server closes the connection after its answer: no chunking) to
/// `addr`; the status code and body. Each step is bounded by `timeout`.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("{method} {path} to {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("{method} {path} to {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path} to {addr}: no HTTP answer: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{method} {path} to {addr}: bad status line: {head:?}"))?;
    Ok((status, body.to_string()))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (what the v3 gateway expects for bytes fields).
pub fn b64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); None on a foreign character.
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
