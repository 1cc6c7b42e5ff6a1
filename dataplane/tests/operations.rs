//! An operator's proxy off the happy path: reloads (API and SIGHUP), signals during a drain,
//! PROXY protocol towards backends, TCP_DEFER_ACCEPT.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use pss_dataplane::{Engine, ProxyProtocol};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A long-lived echo connection through the proxy answers one more round trip.
async fn still_echoes(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut got = vec![0; msg.len()];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut got))
        .await
        .expect("echo in time")
        .expect("connection still open");
    assert_eq!(got, msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_backends_and_services_without_dropping_connections() {
    let echo = Backend::echo().await;
    let a = Backend::tagged(b'a').await;
    let b = Backend::tagged(b'b').await;
    let mut first = config(vec![service(Engine::Splice, vec![echo.addr]), {
        let mut s = service(Engine::Copy, vec![a.addr]);
        s.name = "tags".into();
        s
    }]);
    first.workers = 2;
    let proxy = start(first.clone());
    let mut open = TcpStream::connect(proxy.addr("svc")).await.unwrap();
    still_echoes(&mut open, b"before").await;
    assert_eq!(fetch_tag(proxy.addr("tags")).await, Some(b'a'));

    // New backend for `tags`, a new service `more`, `svc` untouched.
    let mut second = first.clone();
    second.services[1].backends = pss_dataplane::Backends::Static(vec![b.addr]);
    let mut more = service(Engine::Copy, vec![a.addr]);
    more.name = "more".into();
    second.services.push(more);
    let changes = proxy
        .handle
        .reload(second.clone())
        .await
        .expect("reload applies");
    assert!(
        changes.iter().any(|c| c.contains("more added")),
        "{changes:?}"
    );
    assert!(
        changes.iter().any(|c| c.contains("tags changed: backends")),
        "{changes:?}"
    );
    assert_eq!(fetch_tag(proxy.addr("tags")).await, Some(b'b'));
    assert_eq!(fetch_tag(proxy.addr("more")).await, Some(b'a'));
    still_echoes(&mut open, b"after a reload").await;

    // A reload that cannot bind is rejected whole: `more` keeps serving, nothing new appears.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut third = second.clone();
    let mut clash = service(Engine::Copy, vec![a.addr]);
    clash.name = "clash".into();
    clash.listen = busy.local_addr().unwrap();
    clash.tuning.reuseport = false;
    third.services.push(clash);
    third.services.retain(|s| s.name != "more");
    let e = proxy.handle.reload(third).await.unwrap_err().to_string();
    assert!(e.contains("service clash"), "{e}");
    assert_eq!(fetch_tag(proxy.addr("more")).await, Some(b'a'));
    assert!(proxy.handle.service("clash").is_none());

    // Removing a service closes its listener; its open connections go on.
    let mut fourth = second.clone();
    fourth.services.retain(|s| s.name != "svc");
    let svc_addr = proxy.addr("svc");
    proxy.handle.reload(fourth).await.expect("removal applies");
    assert!(proxy.handle.service("svc").is_none());
    still_echoes(&mut open, b"after its service went away").await;
    eventually_refused(svc_addr).await;
    drop(open);
    proxy.stop().await;
}

async fn eventually_refused(addr: SocketAddr) {
    for _ in 0..500 {
        if TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{addr} still accepts connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_proxy_tells_the_backend_the_client_address() {
    for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
        // The backend sends back the first line it got (v1) or the 28-byte v2 header.
        let backend = Backend::start("127.0.0.1:0".parse().unwrap(), move |s| async move {
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            let got = if version == ProxyProtocol::V1 {
                let mut line = String::new();
                r.read_line(&mut line).await.unwrap();
                line.into_bytes()
            } else {
                let mut h = vec![0; 28];
                r.read_exact(&mut h).await.unwrap();
                h
            };
            w.write_all(&got).await.unwrap();
            let _ = w.shutdown().await;
        })
        .await;
        let mut svc = service(Engine::Splice, vec![backend.addr]);
        svc.send_proxy = Some(version);
        let proxy = start(config(vec![svc]));
        let addr = proxy.addr("svc");
        let mut client = TcpStream::connect(addr).await.unwrap();
        let me = client.local_addr().unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(PATIENCE, client.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            got,
            pss_dataplane::proxy_protocol::header(version, me, addr),
            "{version:?}"
        );
        drop(client);
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defer_accept_and_smart_connect_still_serve_client_first_traffic() {
    let echo = Backend::echo().await;
    let mut svc = service(Engine::Splice, vec![echo.addr]);
    svc.tuning.defer_accept = true;
    svc.tuning.smart_connect = true;
    let proxy = start(config(vec![svc]));
    let data = payload(10_000, 3);
    assert!(echo_roundtrip(proxy.addr("svc"), &data).await == data);
    proxy.stop().await;
}

/// The real binary, for signal behaviour.
struct Bin {
    child: Child,
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bin {
    fn start(args: &[&str]) -> Bin {
        let child = Command::new(env!("CARGO_BIN_EXE_pss-proxy"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pss-proxy");
        Bin { child }
    }

    fn signal(&self, sig: libc::c_int) {
        // A test helper, not proxy code: kill(2) on our own child.
        let rc = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(rc.success());
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    async fn exited(&mut self) -> bool {
        for _ in 0..(PATIENCE.as_millis() / 20) {
            if !self.running() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_listening(addr: SocketAddr) {
    for _ in 0..(PATIENCE.as_millis() / 20) {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing listens on {addr}");
}

async fn scrape(admin: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(admin).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut resp = String::new();
    tokio::time::timeout(PATIENCE, s.read_to_string(&mut resp))
        .await
        .ok()?
        .ok()?;
    resp.starts_with("HTTP/1.1 200").then_some(resp)
}

/// Regression (adversarial test, issue 10): SIGHUP killed the proxy. Now it reloads the file:
/// a new service appears, open connections stay, and a bad file changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_file_and_a_bad_file_keeps_the_old_one() {
    let echo = Backend::echo().await;
    let tag = Backend::tagged(b't').await;
    let (p1, p2) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.yaml");
    let write = |services: &str| {
        std::fs::write(&file, format!("workers: 1\nservices:\n{services}")).unwrap();
    };
    let one = format!(
        "  - {{name: echo, listen: '127.0.0.1:{p1}', backends: ['{}']}}\n",
        echo.addr
    );
    write(&one);
    let mut bin = Bin::start(&["--config", file.to_str().unwrap()]);
    let a1: SocketAddr = ([127, 0, 0, 1], p1).into();
    let a2: SocketAddr = ([127, 0, 0, 1], p2).into();
    wait_listening(a1).await;
    let mut open = TcpStream::connect(a1).await.unwrap();
    still_echoes(&mut open, b"hello").await;

    write(&format!(
        "{one}  - {{name: tag, listen: '127.0.0.1:{p2}', backends: ['{}']}}\n",
        tag.addr
    ));
    bin.signal(libc::SIGHUP);
    wait_listening(a2).await;
    assert_eq!(fetch_tag(a2).await, Some(b't'));
    assert!(bin.running(), "SIGHUP must not kill the proxy");
    still_echoes(&mut open, b"after SIGHUP").await;

    std::fs::write(&file, "workers: [not a number\n").unwrap();
    bin.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(200)).await; // let it read and reject the file
    assert!(bin.running());
    assert_eq!(
        fetch_tag(a2).await,
        Some(b't'),
        "the old config keeps serving"
    );
    still_echoes(&mut open, b"after a bad file").await;
}

/// Regression (adversarial test, issue 10): `/metrics` went away at the start of a drain, and
/// a second SIGTERM did nothing. Now the admin server serves through the drain and a second
/// signal ends it at once (well before the 60 s drain deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_serve_during_the_drain_and_a_second_sigterm_stops_at_once() {
    let echo = Backend::echo().await;
    let (port, admin_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let admin = format!("127.0.0.1:{admin_port}");
    let backend = echo.addr.to_string();
    let mut bin = Bin::start(&[
        "--listen",
        &listen,
        "--backend",
        &backend,
        "--admin",
        &admin,
        "--workers",
        "1",
        "--drain-timeout",
        "60s",
    ]);
    let addr: SocketAddr = listen.parse().unwrap();
    let admin: SocketAddr = admin.parse().unwrap();
    wait_listening(addr).await;
    wait_listening(admin).await;
    let mut open = TcpStream::connect(addr).await.unwrap();
    still_echoes(&mut open, b"x").await;

    bin.signal(libc::SIGTERM);
    eventually_refused(addr).await; // draining: no longer accepting
    let text = scrape(admin)
        .await
        .expect("/metrics answers during the drain");
    assert!(
        text.contains("pss_proxy_connections_active{service=\"static\"} 1"),
        "{text}"
    );
    still_echoes(&mut open, b"draining").await;
    assert!(bin.running(), "the open connection holds the drain");

    bin.signal(libc::SIGTERM);
    assert!(bin.exited().await, "a second SIGTERM stops at once");
}

/// Holds `n` connections through `addr` open at once, each after one echoed message; returns
/// how many got their echo.
async fn hold_echoing(addr: SocketAddr, n: usize, msg: &'static [u8]) -> (usize, Vec<TcpStream>) {
    let tries = (0..n).map(|_| async move {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(msg).await.ok()?;
        let mut got = vec![0; msg.len()];
        tokio::time::timeout(PATIENCE, s.read_exact(&mut got))
            .await
            .ok()?
            .ok()?;
        (got == msg).then_some(s)
    });
    let held: Vec<TcpStream> = futures::future::join_all(tries)
        .await
        .into_iter()
        .flatten()
        .collect();
    (held.len(), held)
}

/// Waits until the proxy has closed every connection (their descriptors are free again).
async fn wait_idle(admin: SocketAddr) {
    for _ in 0..(PATIENCE.as_millis() / 20) {
        if let Some(text) = scrape(admin).await {
            if metric(&text, "pss_proxy_connections_active") == 0 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("connections never closed");
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Regression (adversarial test, issue 10): after a soak the splice pipe pool kept its pipes
/// and, under a low `ulimit -n`, later clients were refused while idle pipes held the
/// descriptors; at saturation `/metrics` was unreachable. Now pipes give way to clients, and a
/// reserve keeps the admin server answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_descriptor_limit_pipes_give_way_to_clients_and_metrics_stay_up() {
    let echo = Backend::echo().await;
    let (port, admin_port) = (free_port(), free_port());
    let cmd = format!(
        "ulimit -n 256 && exec {} --listen 127.0.0.1:{port} --backend {} --admin 127.0.0.1:{admin_port} --workers 2 --engine splice",
        env!("CARGO_BIN_EXE_pss-proxy"),
        echo.addr
    );
    let child = Command::new("sh")
        .args(["-c", &cmd])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _bin = Bin { child };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    wait_listening(addr).await;
    wait_listening(admin).await;
    let text = scrape(admin).await.unwrap();
    let budget = metric(&text, "pss_proxy_fds_budget") as usize;
    assert!(budget > 100 && budget < 256, "{text}");

    // Soak: bulk transfers make the splice engine take pipes.
    let bulk = payload(512 * 1024, 9);
    let soak = (0..40).map(|_| echo_roundtrip(addr, &bulk));
    for got in futures::future::join_all(soak).await {
        assert!(got == bulk, "bulk transfer intact");
    }

    wait_idle(admin).await;
    // Then as many clients as the budget has room for (minus a margin) are all served, pooled
    // pipes or not.
    let want = budget / 2 - 10;
    let (served, held) = hold_echoing(addr, want, b"ping").await;
    assert_eq!(served, want, "every client that fits the budget is served");
    drop(held);
    wait_idle(admin).await;

    // Saturation: more clients than fit. The excess is refused at once, counted, and the admin
    // server still answers.
    let (served, _held) = hold_echoing(addr, budget, b"ping").await;
    assert!(served < budget && served >= want, "{served} of {budget}");
    let text = scrape(admin)
        .await
        .expect("/metrics answers while saturated");
    assert!(
        metric(&text, "pss_proxy_no_descriptor_closes_total") > 0,
        "{text}"
    );
    assert!(
        metric(&text, "pss_proxy_backend_up") == 1,
        "the backend is not blamed: {text}"
    );
}
