//! Endpoint computation: which pods are a service's endpoints. The controller's service
//! manager publishes the result as versioned snapshots to proxies.

use pss_proto::v1 as pb;

use crate::model::{PodPhase, PodRecord, Service};

/// The endpoints of `service`: `address` of `targetPort` of every Running, ready pod of its
/// workload, sorted by address so equal sets compare equal.
pub fn endpoints_for(service: &Service, pods: &[PodRecord]) -> Vec<pb::Endpoint> {
    let mut out: Vec<pb::Endpoint> = pods
        .iter()
        .filter(|p| p.workload == service.workload && p.phase == PodPhase::Running && p.ready)
        .filter_map(|p| {
            let addr = p
                .addresses
                .iter()
                .find(|a| a.container_port == service.target_port)?;
            Some(pb::Endpoint {
                address: addr.address.clone(),
                pod: p.id.clone(),
                node: p.node.clone().unwrap_or_default(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.address.cmp(&b.address).then_with(|| a.pod.cmp(&b.pod)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PortAddress;

    fn pod(
        id: &str,
        workload: &str,
        phase: PodPhase,
        ready: bool,
        port: u16,
        addr: &str,
    ) -> PodRecord {
        let mut p = PodRecord::new(id.into(), workload, 1, 0);
        p.phase = phase;
        p.ready = ready;
        p.node = Some("n1".into());
        p.addresses = vec![PortAddress {
            container_port: port,
            address: addr.into(),
        }];
        p
    }

    fn svc() -> Service {
        Service {
            labels: Default::default(),
            name: "s".into(),
            workload: "w".into(),
            port: 80,
            target_port: 80,
        }
    }

    #[test]
    fn only_running_ready_pods_of_the_workload_with_the_target_port_are_endpoints() {
        let pods = vec![
            pod("w-b", "w", PodPhase::Running, true, 80, "127.0.0.1:2"),
            pod("w-a", "w", PodPhase::Running, true, 80, "127.0.0.1:1"),
            pod("w-c", "w", PodPhase::Running, false, 80, "127.0.0.1:3"),
            pod("w-d", "w", PodPhase::Terminating, true, 80, "127.0.0.1:4"),
            pod("w-e", "w", PodPhase::Running, true, 8080, "127.0.0.1:5"),
            pod("x-a", "x", PodPhase::Running, true, 80, "127.0.0.1:6"),
        ];
        let eps = endpoints_for(&svc(), &pods);
        let addrs: Vec<&str> = eps.iter().map(|e| e.address.as_str()).collect();
        assert_eq!(addrs, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(eps[0].pod, "w-a");
    }
}
