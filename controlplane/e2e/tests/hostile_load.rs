//! Rejecting the worst manifests never stalls the controller: while four of them are rejected
//! at the same time, heartbeats keep being answered quickly and the node stays Ready.

mod support;

use std::time::{Duration, Instant};

use pss_proto::auth::BearerToken;
use pss_proto::v1 as pb;
use pss_proto::v1::node_registry_client::NodeRegistryClient;
use pss_proto::v1::operator_client::OperatorClient;
use support::process::ControllerProcess;
use support::TOKEN;

/// The worst-case manifests of issue 9: deep flow nesting (the 195 KiB one that froze the
/// controller for 42 s), deep mappings, deep block sequences, and an alias bomb.
fn worst_cases() -> Vec<(&'static str, String)> {
    let head = "kind: Workload\nmetadata: {name: deep}\nspec:\n  replicas: 1\n  podSpec:\n    containers:\n      - name: c\n        image: i\n        args: ";
    let mut bomb =
        String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
    for i in 1..12 {
        let p = if i == 1 {
            "a".to_string()
        } else {
            format!("a{}", i - 1)
        };
        bomb += &format!("a{i}: &a{i} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n");
    }
    vec![
        ("100,000 nested [", format!("{head}{}", "[".repeat(100_000))),
        (
            "100,000 nested {",
            format!("{head}{}", "{a: ".repeat(100_000)),
        ),
        (
            "100,000 nested block sequences",
            format!("{}x\n", "- ".repeat(100_000)),
        ),
        ("alias bomb", bomb),
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_stay_fast_while_hostile_manifests_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(&dir.path().join("pss.db"), &["--node-timeout", "2s"]).await;
    let channel = support::channel(c.addr).await;
    let token = BearerToken::new(TOKEN).unwrap();
    let mut registry = NodeRegistryClient::with_interceptor(channel.clone(), token.clone());
    registry
        .register(pb::RegisterNodeRequest {
            name: "steady".into(),
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            agent_address: "127.0.0.1:1".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // The hostile applies, each on its own connection, all at once and again and again until
    // the heartbeats have been measured.
    let until = Instant::now() + Duration::from_secs(4);
    let attackers: Vec<_> = worst_cases()
        .into_iter()
        .map(|(what, manifest)| {
            let addr = c.addr;
            let token = token.clone();
            tokio::spawn(async move {
                let channel = support::channel(addr).await;
                let mut op = OperatorClient::with_interceptor(channel, token)
                    .max_decoding_message_size(usize::MAX);
                let mut rejected = 0;
                loop {
                    let started = Instant::now();
                    let r = op
                        .apply(pb::ApplyRequest {
                            objects: Vec::new(),
                            manifest: manifest.clone(),
                            source: format!("{what}.yaml"),
                        })
                        .await;
                    rejected += 1;
                    if r.is_ok() || Instant::now() >= until {
                        return (what, r.map(|_| ()), started.elapsed(), rejected);
                    }
                }
            })
        })
        .collect();

    // Meanwhile a heartbeat every 100 ms, timed.
    let mut latencies = Vec::new();
    while Instant::now() < until {
        let started = Instant::now();
        let r = registry
            .heartbeat(pb::HeartbeatRequest {
                node: "steady".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        latencies.push(started.elapsed());
        assert!(r.known);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for a in attackers {
        let (what, r, took, count) = a.await.unwrap();
        let err = r.expect_err(what);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().len() < 4096, "{what}: the error is short");
        eprintln!(
            "{what}: rejected {count} times, the last in {took:?}: {}",
            err.message()
        );
    }
    latencies.sort();
    let p99 = percentile(&latencies, 0.99);
    eprintln!(
        "heartbeats: {} sent, p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        p99,
        latencies.last().unwrap()
    );
    // Issue 11: the controller serves TLS, so the attackers' hundreds of megabytes are
    // decrypted on the runtime's threads (in a debug build, on a shared 2-core machine): that
    // costs the slowest heartbeat up to ~80 ms where plaintext stayed under 50 ms. The median
    // is the one that says parsing stays off the runtime.
    assert!(p99 < Duration::from_millis(150), "heartbeat p99 {p99:?}");
    let p50 = percentile(&latencies, 0.5);
    assert!(p50 < Duration::from_millis(25), "heartbeat p50 {p50:?}");
    let nodes = c.ctl(&["get", "nodes", "-o", "json"]).await.unwrap();
    assert!(nodes.contains("\"Ready\""), "{nodes}");
    let mut c = c;
    assert!(c.alive());
}
