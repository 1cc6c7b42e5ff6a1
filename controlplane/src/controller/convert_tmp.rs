//! Temporary model -> proto conversions used until `model/convert.rs` lands.
#![allow(dead_code)]
use pss_proto::v1 as pb;

use crate::model::*;

pub fn pod(p: &PodRecord) -> pb::Pod {
    pb::Pod {
        id: p.id.clone(),
        workload: p.workload.clone(),
        node: p.node.clone().unwrap_or_default(),
        phase: phase(p.phase) as i32,
        ready: p.ready,
        addresses: p.addresses.iter().map(|a| pb::PortAddress { container_port: a.container_port.into(), address: a.address.clone() }).collect(),
        restart_count: p.restart_count,
        reason: p.reason.clone(),
        message: p.message.clone(),
        spec_hash: p.spec_hash,
        created_at_ms: p.created_at_ms,
        started_at_ms: p.started_at_ms,
        updated_at_ms: p.updated_at_ms,
        cpu_percent: p.cpu_percent,
        memory_bytes: p.memory_bytes,
        containers: p.containers.iter().map(|c| pb::ContainerStatus { name: c.name.clone(), id: c.id.clone(), state: c.state.clone(), exit_code: c.exit_code, oom_killed: c.oom_killed }).collect(),
        ready_containers: p.containers.iter().filter(|c| c.state == "running").count() as u32,
        total_containers: p.containers.len() as u32,
    }
}

pub fn phase(p: PodPhase) -> pb::PodPhase {
    match p {
        PodPhase::Pending => pb::PodPhase::Pending,
        PodPhase::Starting => pb::PodPhase::Starting,
        PodPhase::Running => pb::PodPhase::Running,
        PodPhase::Failed => pb::PodPhase::Failed,
        PodPhase::Succeeded => pb::PodPhase::Succeeded,
        PodPhase::Terminating => pb::PodPhase::Terminating,
        PodPhase::Lost => pb::PodPhase::Lost,
        PodPhase::Unknown => pb::PodPhase::Unknown,
    }
}

pub fn spec(s: &PodSpec) -> pb::PodSpec {
    pb::PodSpec {
        containers: s
            .containers
            .iter()
            .map(|c| pb::Container {
                name: c.name.clone(),
                image: c.image.clone(),
                command: c.command.clone(),
                args: c.args.clone(),
                env: c.env.iter().map(|e| pb::EnvVar { name: e.name.clone(), value: e.value.clone() }).collect(),
                resources: Some(pb::Resources { cpu_millis: c.resources.cpu_millis, memory_bytes: c.resources.memory_bytes }),
            })
            .collect(),
        ports: s.ports.iter().map(|p| pb::PortSpec { container_port: p.container_port.into(), protocol: p.protocol.as_str().into() }).collect(),
        readiness_probe: s.readiness_probe.map(|r| pb::ReadinessProbe { port: r.port.unwrap_or(0).into(), interval_ms: r.interval_ms, timeout_ms: r.timeout_ms }),
    }
}

pub fn workload(w: &Workload) -> pb::Workload {
    pb::Workload { name: w.name.clone(), replicas: w.replicas, placement: w.placement.as_str().into(), pod_spec: Some(spec(&w.pod_spec)), ..Default::default() }
}

pub fn service(s: &Service) -> pb::Service {
    pb::Service { name: s.name.clone(), workload: s.workload.clone(), port: s.port.into(), target_port: s.target_port.into(), ..Default::default() }
}

pub fn autoscaler(a: &AutoScalePolicy) -> pb::AutoScalePolicy {
    pb::AutoScalePolicy {
        name: a.name.clone(),
        workload: a.workload.clone(),
        min_replicas: a.min_replicas,
        max_replicas: a.max_replicas,
        cpu_percent: a.cpu_percent.unwrap_or(0),
        memory_percent: a.memory_percent.unwrap_or(0),
        ..Default::default()
    }
}

pub fn event(e: &EventRecord) -> pb::Event {
    pb::Event { id: e.id, time_ms: e.time_ms, r#type: e.event_type.as_str().into(), reason: e.reason.clone(), object: e.object.clone(), message: e.message.clone() }
}

pub fn node(n: &NodeRecord, allocated: Resources, pod_count: u32) -> pb::Node {
    pb::Node {
        name: n.name.clone(),
        agent_address: n.agent_address.clone(),
        cpu_millis: n.cpu_millis,
        memory_bytes: n.memory_bytes,
        status: match n.status {
            NodeStatus::Ready => pb::NodeStatus::Ready,
            NodeStatus::NotReady => pb::NodeStatus::NotReady,
        } as i32,
        cpu_allocated_millis: allocated.cpu_millis,
        memory_allocated_bytes: allocated.memory_bytes,
        cpu_usage_percent: n.cpu_usage_percent,
        memory_used_bytes: n.memory_used_bytes,
        pod_count,
        last_heartbeat_ms: n.last_heartbeat_ms,
        registered_at_ms: n.registered_at_ms,
    }
}
