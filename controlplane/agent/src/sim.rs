//! A simulated node runtime (like kubemark's hollow kubelet): pods live in memory instead of
//! Podman, so thousands of agents can run in one process against a real controller.
//!
//! - RunPod creates the pod at once: every container `running`, the pod Running (and ready,
//!   see [`crate::runtime::Runtime`]), each declared port at `<advertise>:<synthetic port>`
//!   (ports come from one process-wide counter, so they are unique per node and across the
//!   simulated nodes of a process until the range wraps).
//! - StopPod removes the pod at once; logs are one fixed line per container; usage is a
//!   synthetic, stable figure derived from the pod ID.
//! - Nothing survives the process: a simulated agent restarted with a fresh [`SimPods`] has no
//!   pods to adopt (a rebooted node).
//!
//! Pure in-memory logic, no I/O; [`crate::runtime::Runtime`] dispatches to it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use pss_proto::v1::{ContainerStatus, PodPhase, PodReport, PortAddress, RunPodRequest};

/// First synthetic host port; the counter wraps back here after 65535.
const FIRST_PORT: u32 = 20_000;
/// The process-wide synthetic port counter (offset from [`FIRST_PORT`]).
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

/// The line every simulated container logs.
pub const LOG_LINE: &str = "simulated container: no process runs here\n";

fn next_port() -> u16 {
    let span = 65_536 - FIRST_PORT;
    let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed) % span;
    u16::try_from(FIRST_PORT + n).expect("port in range")
}

/// One simulated pod: its report as RunPod created it.
#[derive(Debug, Clone)]
struct SimPod {
    report: PodReport,
}

/// The pods of one simulated node.
#[derive(Debug, Default)]
pub struct SimPods {
    pods: Mutex<BTreeMap<String, SimPod>>,
}

/// Synthetic usage of a pod: stable per pod ID, 1–20 % of a core and 8–63 MiB.
pub fn synthetic_usage(id: &str) -> (f64, u64) {
    // FNV-1a: a stable hash (std's is randomly seeded).
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let cpu = 1.0 + (h % 20) as f64;
    let mem = (8 + (h >> 8) % 56) * 1024 * 1024;
    (cpu, mem)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl SimPods {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SimPod>> {
        self.pods.lock().expect("sim pods lock")
    }

    /// Runs the pod (idempotent: an existing pod is returned as it is). `advertise` is the
    /// host part of its addresses.
    pub fn run(&self, req: &RunPodRequest, advertise: &str) -> PodReport {
        let mut pods = self.lock();
        if let Some(pod) = pods.get(&req.id) {
            if pod.report.spec_hash == req.spec_hash {
                return pod.report.clone();
            }
        }
        let spec = req.spec.clone().unwrap_or_default();
        let containers = spec
            .containers
            .iter()
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                id: format!("{}-{}", req.id, c.name),
                state: "running".into(),
                exit_code: 0,
                oom_killed: false,
            })
            .collect();
        let addresses = spec
            .ports
            .iter()
            .map(|p| PortAddress {
                container_port: p.container_port,
                address: format!("{advertise}:{}", next_port()),
            })
            .collect();
        let (cpu_percent, memory_bytes) = synthetic_usage(&req.id);
        let report = PodReport {
            id: req.id.clone(),
            workload: req.workload.clone(),
            phase: PodPhase::Running as i32,
            ready: true,
            addresses,
            containers,
            cpu_percent,
            memory_bytes,
            started_at_ms: now_ms(),
            spec_hash: req.spec_hash,
            ..Default::default()
        };
        pods.insert(
            req.id.clone(),
            SimPod {
                report: report.clone(),
            },
        );
        report
    }

    /// Removes the pod; false when there was none.
    pub fn stop(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    /// IDs of the node's pods.
    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The pod's report (with its synthetic usage), `None` when it does not exist.
    pub fn report(&self, id: &str) -> Option<PodReport> {
        self.lock().get(id).map(|p| p.report.clone())
    }

    /// The names of the pod's containers, `None` when it does not exist.
    pub fn containers(&self, id: &str) -> Option<Vec<String>> {
        self.lock()
            .get(id)
            .map(|p| p.report.containers.iter().map(|c| c.name.clone()).collect())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pss_proto::v1::{Container, PodSpec, PortSpec};

    fn req(id: &str, hash: u64) -> RunPodRequest {
        RunPodRequest {
            id: id.into(),
            workload: "w".into(),
            spec: Some(PodSpec {
                restart_policy: Default::default(),
                restarted_at_ms: 0,
                containers: vec![Container {
                    name: "web".into(),
                    image: "nginx".into(),
                    ..Default::default()
                }],
                ports: vec![PortSpec {
                    container_port: 80,
                    protocol: String::new(),
                }],
                readiness_probe: None,
            }),
            spec_hash: hash,
        }
    }

    #[test]
    fn pods_run_at_once_with_unique_ports_and_stop_at_once() {
        let sim = SimPods::default();
        let a = sim.run(&req("a", 1), "127.0.0.1");
        let b = sim.run(&req("b", 1), "127.0.0.1");
        assert_eq!(a.phase, PodPhase::Running as i32);
        assert!(a.ready);
        assert_eq!(a.containers[0].state, "running");
        assert!(a.addresses[0].address.starts_with("127.0.0.1:"));
        assert_ne!(a.addresses[0].address, b.addresses[0].address);
        assert!(a.cpu_percent > 0.0 && a.memory_bytes > 0);
        // Idempotent: the same pod again keeps its address.
        assert_eq!(sim.run(&req("a", 1), "127.0.0.1").addresses, a.addresses);
        assert_eq!(sim.ids(), ["a", "b"]);
        assert!(sim.stop("a"));
        assert!(!sim.stop("a"));
        assert!(sim.report("a").is_none());
        assert_eq!(sim.len(), 1);
    }

    #[test]
    fn usage_is_stable_per_pod() {
        assert_eq!(synthetic_usage("x"), synthetic_usage("x"));
        let (cpu, mem) = synthetic_usage("y");
        assert!((1.0..=20.0).contains(&cpu));
        assert!((8..64).contains(&(mem / 1024 / 1024)));
    }
}
