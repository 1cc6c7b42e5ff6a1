//! Backend selection under failure and change: dead backends, snapshot swaps under load,
//! connection limits, idle timeout, no backend at all, drain on shutdown.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pss_dataplane::{Engine, EventLoop};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_gets_no_connections_and_rejoins_after_rise() {
    let a = Backend::tagged(b'a').await;
    let b = Backend::tagged(b'b').await;
    let c = Backend::tagged(b'c').await;
    let b_addr = b.addr;
    let mut svc = service(Engine::Splice, vec![a.addr, b.addr, c.addr]);
    svc.health.rise = 3;
    svc.health.fall = 2;
    let proxy = start(config(vec![svc]));
    let addr = proxy.addr("svc");
    let handle = proxy.handle.service("svc").unwrap();

    let mut seen = HashSet::new();
    for _ in 0..30 {
        seen.insert(fetch_tag(addr).await.expect("served"));
    }
    assert_eq!(seen, HashSet::from([b'a', b'b', b'c']));

    drop(b); // killed: its port now refuses connections
             // Every connection still succeeds: a refused connect retries the next backend.
    for _ in 0..60 {
        let tag = fetch_tag(addr)
            .await
            .expect("no connection fails while b is dead");
        assert_ne!(tag, 0);
    }
    eventually("b marked down", || handle.stats().backends_up == 2).await;
    for _ in 0..30 {
        let tag = fetch_tag(addr).await.expect("served");
        assert!(tag == b'a' || tag == b'c', "dead backend b was picked");
    }

    let _b = Backend::tagged_at(b_addr, b'b').await; // back on the same port
    eventually("b back up after rise", || handle.stats().backends_up == 3).await;
    let mut seen = HashSet::new();
    for _ in 0..30 {
        seen.insert(fetch_tag(addr).await.expect("served"));
    }
    assert!(seen.contains(&b'b'), "b did not rejoin: {seen:?}");
    let stats = handle.stats();
    assert!(stats.health_flips >= 2, "{stats:?}");
    assert_eq!(stats.no_backend_closes, 0, "{stats:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_updates_under_load_fail_no_connection() {
    let backends = [
        Backend::tagged(b'a').await,
        Backend::tagged(b'b').await,
        Backend::tagged(b'c').await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let proxy = start(config(vec![service(Engine::Splice, vec![addrs[0]])]));
    let addr = proxy.addr("svc");
    let handle = proxy.handle.service("svc").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (stop, served) = (stop.clone(), served.clone());
        clients.spawn(async move {
            let mut failures = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match fetch_tag(addr).await {
                    Some(_) => served.fetch_add(1, Ordering::Relaxed),
                    None => {
                        failures += 1;
                        0
                    }
                };
            }
            failures
        });
    }
    let sets: [&[usize]; 6] = [&[0, 1], &[1, 2], &[2], &[0, 2], &[1], &[0, 1, 2]];
    for (i, set) in sets.iter().cycle().take(30).enumerate() {
        let list: Vec<_> = set.iter().map(|&j| addrs[j]).collect();
        assert!(handle.update_backends(i as u64 + 1, &list));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = 0;
    while let Some(f) = clients.join_next().await {
        failures += f.unwrap();
    }
    assert_eq!(failures, 0, "connections failed during snapshot swaps");
    assert!(served.load(Ordering::Relaxed) > 0);
    assert_eq!(handle.stats().snapshot_version, 30);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_backend_keeps_its_open_connections() {
    let a = Backend::echo().await;
    let b = Backend::echo().await;
    let proxy = start(config(vec![service(Engine::Splice, vec![a.addr])]));
    let handle = proxy.handle.service("svc").unwrap();
    let mut s = TcpStream::connect(proxy.addr("svc")).await.unwrap();
    s.write_all(b"one").await.unwrap();
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf).await.unwrap();
    assert!(handle.update_backends(1, &[b.addr]));
    // The open connection to `a` still works after `a` left the set.
    s.write_all(b"two").await.unwrap();
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"two");
    assert_eq!(handle.backends(), vec![(b.addr, true)]);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_are_closed_at_once_and_counted() {
    let backend = Backend::echo().await;
    let mut svc = service(Engine::Copy, vec![backend.addr]);
    svc.max_connections = Some(2);
    let proxy = start(config(vec![svc]));
    let addr = proxy.addr("svc");
    let handle = proxy.handle.service("svc").unwrap();
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        open.push(s);
    }
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(PATIENCE, extra.read(&mut b))
        .await
        .unwrap();
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "third connection was served: {r:?}"
    );
    assert_eq!(handle.stats().rejected_max_connections, 1);
    drop(open.pop());
    eventually("slot freed", || handle.stats().connections_active == 1).await;
    let data = payload(1000, 3);
    assert!(echo_roundtrip(addr, &data).await == data);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_busy_ones_are_not() {
    let backend = Backend::echo().await;
    for engine in engines() {
        let mut svc = service(engine, vec![backend.addr]);
        svc.idle_timeout = Some(Duration::from_millis(300));
        let proxy = start(config(vec![svc]));
        let addr = proxy.addr("svc");
        let handle = proxy.handle.service("svc").unwrap();

        let mut busy = TcpStream::connect(addr).await.unwrap();
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"hi").await.unwrap();
        let mut b = [0u8; 2];
        idle.read_exact(&mut b).await.unwrap();
        // The busy one talks every 50 ms for well over the timeout.
        for _ in 0..20 {
            busy.write_all(b"k").await.unwrap();
            busy.read_exact(&mut b[..1]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let r = tokio::time::timeout(PATIENCE, idle.read(&mut b))
            .await
            .unwrap();
        assert!(
            matches!(r, Ok(0) | Err(_)),
            "{engine}: idle connection stayed open"
        );
        busy.write_all(b"k").await.unwrap();
        busy.read_exact(&mut b[..1]).await.unwrap();
        assert!(handle.stats().idle_timeouts >= 1, "{engine}");
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_closes_the_client_at_once_and_counts_it() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let mut svc = service(Engine::Splice, vec![dead_addr]);
    // No active checks: the first client's failed connect is what takes the backend down.
    svc.health.interval = Duration::ZERO;
    svc.health.fall = 1;
    let proxy = start(config(vec![svc]));
    let handle = proxy.handle.service("svc").unwrap();
    for _ in 0..3 {
        assert_eq!(fetch_tag(proxy.addr("svc")).await, None);
    }
    eventually("counted", || handle.stats().no_backend_closes == 3).await;
    assert_eq!(handle.stats().backends_up, 0);
    assert_eq!(
        handle.stats().connect_errors,
        3,
        "without active checks every client tries it again (a restart is seen at once)"
    );
    let text = proxy.handle.metrics_text();
    assert!(
        text.contains("pss_proxy_no_backend_closes_total{service=\"svc\"} 3"),
        "{text}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_drains_open_connections() {
    let backend = Backend::echo().await;
    let proxy = start(config(vec![service(Engine::Splice, vec![backend.addr])]));
    let addr = proxy.addr("svc");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"a").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    proxy.shutdown.cancel();
    // New connections are refused once the listeners are closed.
    let mut refused = false;
    for _ in 0..500 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "still accepting after shutdown");
    // The open connection keeps working while draining.
    s.write_all(b"b").await.unwrap();
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"b");
    assert!(
        !proxy.task.is_finished(),
        "returned before the connection closed"
    );
    drop(s);
    tokio::time::timeout(PATIENCE, proxy.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_serves_prometheus_metrics() {
    let backend = Backend::echo().await;
    let mut cfg = config(vec![service(Engine::Splice, vec![backend.addr])]);
    cfg.admin = Some("127.0.0.1:0".parse().unwrap());
    let proxy = start(cfg);
    let data = payload(5000, 1);
    assert!(echo_roundtrip(proxy.addr("svc"), &data).await == data);
    let mut s = TcpStream::connect(proxy.admin.unwrap()).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains("pss_proxy_connections_total{service=\"svc\"} 1"),
        "{resp}"
    );
    assert!(
        resp.contains("pss_proxy_bytes_client_to_backend_total{service=\"svc\"} 5000"),
        "{resp}"
    );
    assert!(
        resp.contains("pss_proxy_backends_up{service=\"svc\"} 1"),
        "{resp}"
    );
    let labels = format!("{{service=\"svc\",backend=\"{}\"}}", backend.addr);
    assert!(
        resp.contains(&format!("pss_proxy_backend_up{labels} 1")),
        "{resp}"
    );
    assert!(
        resp.contains(&format!("pss_proxy_backend_connections_total{labels} 1")),
        "{resp}"
    );
    // Byte totals per backend are added when the connection ends.
    let want = format!("pss_proxy_backend_bytes_backend_to_client_total{labels} 5000");
    eventually("per-backend bytes", || {
        proxy.handle.metrics_text().contains(&want)
    })
    .await;
    proxy.stop().await;
}

/// Regression (adversarial test, issue 10): with active checks off, a lone backend that failed
/// `fall` connects stayed down forever, so a backend restart became a permanent outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_health_checks_a_restarted_lone_backend_serves_again_at_once() {
    let a = Backend::tagged(b'a').await;
    let a_addr = a.addr;
    let mut svc = service(Engine::Splice, vec![a_addr]);
    svc.health.interval = Duration::ZERO;
    svc.health.fall = 1;
    svc.connect_attempts = 1;
    let proxy = start(config(vec![svc]));
    let addr = proxy.addr("svc");
    let handle = proxy.handle.service("svc").unwrap();
    assert_eq!(fetch_tag(addr).await, Some(b'a'));

    drop(a); // restart: down for a moment
    for _ in 0..5 {
        assert_eq!(
            fetch_tag(addr).await,
            None,
            "nothing to serve while it is down"
        );
    }
    eventually("a ejected", || handle.stats().backends_up == 0).await;

    let _a = Backend::tagged_at(a_addr, b'a').await; // back on the same port
    assert_eq!(
        fetch_tag(addr).await,
        Some(b'a'),
        "served at once, without waiting for the ejection to end"
    );
    assert_eq!(handle.stats().backends_up, 1, "the success readmitted it");
    proxy.stop().await;
}

/// With active checks off and several backends, an ejected one gets traffic again after its
/// back-off (the passive readmission), not never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_health_checks_an_ejected_backend_gets_traffic_again() {
    let a = Backend::tagged(b'a').await;
    let b = Backend::tagged(b'b').await;
    let b_addr = b.addr;
    let mut svc = service(Engine::Copy, vec![a.addr, b_addr]);
    svc.health.interval = Duration::ZERO;
    svc.health.fall = 1;
    let proxy = start(config(vec![svc]));
    let addr = proxy.addr("svc");
    let handle = proxy.handle.service("svc").unwrap();

    drop(b);
    for _ in 0..4 {
        assert_eq!(fetch_tag(addr).await, Some(b'a'), "the retry goes to a");
    }
    eventually("b ejected", || handle.stats().backends_up == 1).await;
    let _b = Backend::tagged_at(b_addr, b'b').await;
    // The first ejection lasts PASSIVE_BACKOFF_INITIAL (1 s); then b is tried on probation.
    eventually("b readmitted", || handle.stats().backends_up == 2).await;
    let mut seen = HashSet::new();
    for _ in 0..10 {
        seen.insert(fetch_tag(addr).await.expect("served"));
    }
    assert!(seen.contains(&b'b'), "b never got traffic again: {seen:?}");
    proxy.stop().await;
}

/// A backend whose accept queue is full drops SYNs, so connects to it hang: the connect
/// timeout (the mio loop's sweep, the tokio loop's timer) must fire and the client go to the
/// next backend, on both worker loops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_the_handshake_times_out_and_the_next_serves() {
    use socket2::{Domain, Socket, Type};
    let stuck = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    stuck
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    stuck.listen(0).unwrap();
    let stuck_addr = stuck.local_addr().unwrap().as_socket().unwrap();
    // Fill its accept queue (never accepted): later SYNs are dropped.
    let mut fillers = Vec::new();
    for _ in 0..3 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&stuck_addr.into());
        fillers.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let good = Backend::tagged(b'g').await;
    for lp in [EventLoop::Mio, EventLoop::Tokio] {
        let mut svc = service(Engine::Splice, vec![stuck_addr, good.addr]);
        svc.connect_timeout = Duration::from_millis(200);
        svc.health.interval = Duration::from_secs(3600); // no check will run again in time
        svc.health.fall = 100;
        let proxy = start(config_on(lp, vec![svc]));
        let addr = proxy.addr("svc");
        let handle = proxy.handle.service("svc").unwrap();
        for _ in 0..4 {
            assert_eq!(fetch_tag(addr).await, Some(b'g'), "{lp:?}");
        }
        assert!(
            handle.stats().connect_errors >= 1,
            "{lp:?}: {:?}",
            handle.stats()
        );
        proxy.stop().await;
    }
    drop(fillers);
}
