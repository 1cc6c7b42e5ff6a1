//! Every engine forwards bytes intact both ways, propagates half-close in both directions, and
//! survives a 64 MiB transfer.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_engine_forwards_random_payloads_intact_both_ways() {
    let backend = Backend::echo().await;
    for (engine, lp) in engine_loops() {
        let proxy = start(config_on(lp, vec![service(engine, vec![backend.addr])]));
        let addr = proxy.addr("svc");
        // Sizes around the copy buffer, the splice threshold and the pipe size.
        let sizes = [
            0usize,
            1,
            64,
            1000,
            4095,
            4096,
            4097,
            65_535,
            65_536,
            65_537,
            300_000,
            1 << 20,
        ];
        let mut total = 0;
        for (i, &len) in sizes.iter().enumerate() {
            let data = payload(len, i as u64 + 1);
            let got = echo_roundtrip(addr, &data).await;
            assert!(
                got == data,
                "{engine}: {len} bytes came back different ({} bytes)",
                got.len()
            );
            total += len as u64;
        }
        // Many connections at once.
        let mut set = tokio::task::JoinSet::new();
        for i in 0..32 {
            set.spawn(async move {
                let data = payload(10_000 + i * 777, 100 + i as u64);
                assert!(echo_roundtrip(addr, &data).await == data);
                data.len() as u64
            });
        }
        while let Some(n) = set.join_next().await {
            total += n.unwrap();
        }
        eventually("connections closed", || {
            proxy
                .handle
                .service("svc")
                .unwrap()
                .stats()
                .connections_active
                == 0
        })
        .await;
        let stats = proxy.handle.service("svc").unwrap().stats();
        assert_eq!(stats.bytes_client_to_backend, total, "{engine}");
        assert_eq!(stats.bytes_backend_to_client, total, "{engine}");
        assert_eq!(stats.connections_total, sizes.len() as u64 + 32);
        proxy.stop().await;
    }
}

/// Client shuts its write side first; the backend only answers after seeing that EOF, and the
/// client still reads the whole answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_reaches_backend_and_client_still_reads() {
    let backend = Backend::start("127.0.0.1:0".parse().unwrap(), |mut s| async move {
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap(); // returns only on the forwarded EOF
        got.reverse();
        s.write_all(&got).await.unwrap();
        s.shutdown().await.unwrap();
    })
    .await;
    for (engine, lp) in engine_loops() {
        let proxy = start(config_on(lp, vec![service(engine, vec![backend.addr])]));
        let data = payload(200_000, 7);
        let mut s = TcpStream::connect(proxy.addr("svc")).await.unwrap();
        s.write_all(&data).await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(PATIENCE, s.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        let mut want = data.clone();
        want.reverse();
        assert!(got == want, "{engine}: reversed answer differs");
        proxy.stop().await;
    }
}

/// The backend shuts its write side first; the client sees EOF, then still sends, and the
/// backend receives all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_half_close_reaches_client_and_backend_still_reads() {
    for (engine, lp) in engine_loops() {
        let (tx, rx) = oneshot::channel::<Vec<u8>>();
        let tx = std::sync::Mutex::new(Some(tx));
        let tx = std::sync::Arc::new(tx);
        let backend = Backend::start("127.0.0.1:0".parse().unwrap(), move |mut s| {
            let tx = tx.clone();
            async move {
                s.write_all(b"greeting").await.unwrap();
                s.shutdown().await.unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(got);
                }
            }
        })
        .await;
        let mut svc = service(engine, vec![backend.addr]);
        svc.health.interval = std::time::Duration::ZERO; // only the test's connection
        let proxy = start(config_on(lp, vec![svc]));
        let mut s = TcpStream::connect(proxy.addr("svc")).await.unwrap();
        let mut greeting = Vec::new();
        tokio::time::timeout(PATIENCE, s.read_to_end(&mut greeting))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(greeting, b"greeting");
        let data = payload(150_000, 9);
        s.write_all(&data).await.unwrap();
        s.shutdown().await.unwrap();
        let got = tokio::time::timeout(PATIENCE, rx).await.unwrap().unwrap();
        assert!(got == data, "{engine}: backend got {} bytes", got.len());
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_engine_carries_64_mib_both_ways() {
    let backend = Backend::echo().await;
    let data = payload(64 << 20, 64);
    for (engine, lp) in engine_loops() {
        let proxy = start(config_on(lp, vec![service(engine, vec![backend.addr])]));
        let got = echo_roundtrip(proxy.addr("svc"), &data).await;
        assert_eq!(got.len(), data.len(), "{engine}");
        assert!(got == data, "{engine}: 64 MiB came back different");
        proxy.stop().await;
    }
}

/// Many tiny writes with pauses: the splice engine must stay in copy mode and lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_segments_arrive_in_order() {
    let backend = Backend::echo().await;
    for (engine, lp) in engine_loops() {
        // Small buffers: the 4-byte messages fit one, and the buffer size is configurable.
        let mut cfg = config_on(lp, vec![service(engine, vec![backend.addr])]);
        cfg.buffer_size = 1024;
        let proxy = start(cfg);
        let mut s = TcpStream::connect(proxy.addr("svc")).await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 16];
        for i in 0..500u32 {
            let msg = i.to_le_bytes();
            s.write_all(&msg).await.unwrap();
            tokio::time::timeout(PATIENCE, s.read_exact(&mut buf[..4]))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..4], &msg, "{engine}");
        }
        drop(s); // else the stop waits out the drain
        proxy.stop().await;
    }
}

/// Bulk, then chatter, then bulk again on one connection: the splice engine switches a
/// direction to a pipe and back to copying, and no byte is lost or reordered on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_moves_between_bulk_and_small_messages() {
    let backend = Backend::echo().await;
    for (engine, lp) in engine_loops() {
        let proxy = start(config_on(lp, vec![service(engine, vec![backend.addr])]));
        let mut s = TcpStream::connect(proxy.addr("svc")).await.unwrap();
        s.set_nodelay(true).unwrap();
        for round in 0..3u64 {
            let bulk = payload(1 << 20, round + 40);
            let (mut r, mut w) = s.split();
            let mut got = vec![0u8; bulk.len()];
            let (a, b) = tokio::join!(w.write_all(&bulk), r.read_exact(&mut got));
            a.unwrap();
            b.unwrap();
            assert!(got == bulk, "{engine}: bulk round {round} differs");
            for i in 0..100u32 {
                let msg = (i ^ round as u32).to_le_bytes();
                s.write_all(&msg).await.unwrap();
                let mut back = [0u8; 4];
                tokio::time::timeout(PATIENCE, s.read_exact(&mut back))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(back, msg, "{engine}");
            }
        }
        drop(s);
        let handle = proxy.handle.service("svc").unwrap();
        eventually("connection closed", || {
            handle.stats().connections_active == 0
        })
        .await;
        assert_eq!(
            handle.stats().pipes_in_use,
            0,
            "{engine}: a pipe was not returned"
        );
        proxy.stop().await;
    }
}
