//! The etcd harness (`support::etcd`) the issue-15 tests stand on: a real 3-member etcd cluster
//! on loopback starts healthy, replicates a write, keeps accepting writes with a member killed
//! (its leader, the harder case), takes the member back, survives SIGSTOP, and keeps its data
//! across a kill of every member. Needs the `etcd` binary (`scripts/test.sh` installs
//! etcd-server); fails, never skips, without it.

mod support;

use std::time::{Duration, Instant};

use support::etcd::{b64, etcd_available, unb64, EtcdCluster};

/// Retries `f` every 100 ms until it succeeds; panics after `timeout` with its last error.
fn retry<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => {
                panic!("{what}: still failing after {timeout:?}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn etcd_is_installed() {
    assert!(
        etcd_available(),
        "etcd is missing: apt-get install etcd-server etcd-client (scripts/test.sh does)"
    );
}

#[test]
fn base64_round_trips() {
    for s in [
        "",
        "a",
        "ab",
        "abc",
        "abcd",
        "/pss/objects/Workload/web",
        "\u{e9}t\u{e9}",
    ] {
        assert_eq!(unb64(&b64(s.as_bytes())).unwrap(), s.as_bytes(), "{s:?}");
    }
    assert_eq!(b64(b"foo"), "Zm9v");
    assert_eq!(b64(b"fo"), "Zm8=");
    assert_eq!(b64(b"f"), "Zg==");
    assert!(unb64("not base64!").is_none());
}

#[test]
fn three_members_start_healthy_with_a_leader() {
    let t0 = Instant::now();
    let c = EtcdCluster::start(3);
    eprintln!("3-member etcd healthy after {:?}", t0.elapsed());
    assert_eq!(c.len(), 3);
    for i in 0..3 {
        assert!(c.healthy(i), "member {i} healthy\n{}", c.log_tail(i, 20));
    }
    let endpoints = c.endpoints();
    let addrs: Vec<&str> = endpoints.split(',').collect();
    assert_eq!(addrs.len(), 3, "{endpoints}");
    for (i, a) in addrs.iter().enumerate() {
        assert_eq!(*a, c.client_addr(i).to_string());
        assert!(a.starts_with("127.0.0.1:"), "{a}");
    }
    assert_eq!(c.store_url(), format!("etcd://{endpoints}"));
    let leader = retry(Duration::from_secs(5), "a leader", || {
        c.leader().ok_or_else(|| "no leader yet".to_string())
    });
    assert!(leader < 3);
}

#[test]
fn a_write_through_one_member_is_read_through_another() {
    let c = EtcdCluster::start(3);
    c.put(0, "/pss/harness/k", "v1").unwrap();
    assert_eq!(c.get(1, "/pss/harness/k").unwrap().as_deref(), Some("v1"));
    assert_eq!(c.get(2, "/pss/harness/k").unwrap().as_deref(), Some("v1"));
    c.put(2, "/pss/harness/k", "v2").unwrap();
    assert_eq!(c.get(0, "/pss/harness/k").unwrap().as_deref(), Some("v2"));
    assert_eq!(c.get(1, "/pss/harness/missing").unwrap(), None);
    // The raw gateway answer, as any client sees it.
    let v = c
        .call(
            1,
            "/v3/kv/range",
            &format!(r#"{{"key":"{}"}}"#, b64(b"/pss/harness/k")),
        )
        .unwrap();
    assert_eq!(v["count"], "1", "{v}");
    assert_eq!(v["kvs"][0]["value"], b64(b"v2"), "{v}");
}

#[test]
fn writes_go_on_with_the_leader_killed_and_it_rejoins() {
    let mut c = EtcdCluster::start(3);
    c.put(0, "/pss/harness/before", "1").unwrap();
    let leader = retry(Duration::from_secs(5), "a leader", || {
        c.leader().ok_or_else(|| "no leader yet".to_string())
    });
    c.kill(leader);
    assert!(!c.healthy(leader));
    let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    // A new leader is elected within a few election timeouts; writes then go through.
    let t0 = Instant::now();
    let new_leader = retry(Duration::from_secs(10), "a new leader", || {
        c.leader().ok_or_else(|| "no leader yet".to_string())
    });
    eprintln!("new leader {new_leader} after {:?}", t0.elapsed());
    assert_ne!(new_leader, leader);
    retry(
        Duration::from_secs(10),
        "a write with the old leader dead",
        || c.put(rest[0], "/pss/harness/during", "2"),
    );
    eprintln!(
        "write accepted {:?} after the leader was killed",
        t0.elapsed()
    );
    assert_eq!(
        c.get(rest[1], "/pss/harness/during").unwrap().as_deref(),
        Some("2")
    );

    let t0 = Instant::now();
    c.restart(leader);
    eprintln!("member {leader} rejoined after {:?}", t0.elapsed());
    // Linearizable reads through the restarted member: it caught up with what it missed.
    assert_eq!(
        c.get(leader, "/pss/harness/during").unwrap().as_deref(),
        Some("2")
    );
    assert_eq!(
        c.get(leader, "/pss/harness/before").unwrap().as_deref(),
        Some("1")
    );
    c.put(leader, "/pss/harness/after", "3").unwrap();
    assert_eq!(
        c.get(rest[0], "/pss/harness/after").unwrap().as_deref(),
        Some("3")
    );
}

#[test]
fn a_stopped_member_answers_nothing_and_comes_back_on_cont() {
    let mut c = EtcdCluster::start(3);
    c.stop(2);
    assert!(c.running(2), "a stopped member still exists");
    assert!(!c.healthy(2), "a stopped member does not answer");
    retry(
        Duration::from_secs(10),
        "a write with member 2 frozen",
        || c.put(0, "/pss/harness/frozen", "x"),
    );
    c.cont(2);
    retry(Duration::from_secs(10), "member 2 back", || {
        c.get(2, "/pss/harness/frozen")?
            .filter(|v| v == "x")
            .ok_or_else(|| "not there yet".to_string())
    });
    c.wait_until_healthy(&[0, 1, 2], Duration::from_secs(10))
        .unwrap();
}

#[test]
fn data_survives_killing_every_member() {
    let mut c = EtcdCluster::start(3);
    let endpoints = c.endpoints();
    c.put(1, "/pss/harness/durable", "yes").unwrap();
    c.kill_all();
    for i in 0..3 {
        assert!(!c.running(i));
        assert!(c.get(i, "/pss/harness/durable").is_err());
    }
    c.restart_all();
    assert_eq!(c.endpoints(), endpoints, "members come back on their ports");
    assert_eq!(
        c.get(2, "/pss/harness/durable").unwrap().as_deref(),
        Some("yes")
    );
}

#[test]
fn a_single_member_cluster_works() {
    let c = EtcdCluster::start(1);
    assert_eq!(c.endpoints(), c.client_addr(0).to_string());
    c.put(0, "k", "").unwrap();
    assert_eq!(c.get(0, "k").unwrap().as_deref(), Some(""));
}
