//! Small objects for tests and benchmarks of stores (here, in `tests/` and in `benches/`):
//! one definition instead of a copy per test file.

use pss_core::model::{Container, NodeRecord, NodeStatus, Placement, PodSpec, Resources, Workload};

/// A one-container workload `name` with `replicas`, as the store tests use it.
pub fn workload(name: &str, replicas: u32) -> Workload {
    Workload {
        labels: Default::default(),
        rollout: Default::default(),
        name: name.to_string(),
        replicas,
        placement: Placement::Spread,
        pod_spec: PodSpec {
            restart_policy: Default::default(),
            restarted_at_ms: 0,
            containers: vec![Container {
                liveness_probe: None,
                limits: None,
                name: "web".into(),
                image: "localhost/pss-demo:latest".into(),
                command: vec![],
                args: vec![],
                env: vec![],
                resources: Resources {
                    cpu_millis: 100,
                    memory_bytes: 64 << 20,
                },
            }],
            ports: vec![],
            readiness_probe: None,
        },
    }
}

/// A Ready node `name` with 1 CPU and 1 GiB, registered and heard from at time 1.
pub fn node(name: &str) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        agent_address: "127.0.0.1:1".into(),
        cpu_millis: 1000,
        memory_bytes: 1 << 30,
        status: NodeStatus::Ready,
        cpu_usage_percent: 0.0,
        memory_used_bytes: 0,
        last_heartbeat_ms: 1,
        registered_at_ms: 1,
        conditions: Default::default(),
        limits_unenforced: String::new(),
        labels: Default::default(),
        unschedulable: false,
        draining: false,
    }
}
