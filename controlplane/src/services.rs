//! The service manager: turns ready pods into endpoint snapshots (one per service, with a
//! monotonic version) and fans every new snapshot out to subscribed proxies.
//!
//! [`endpoints_for`] is the pure part (which pods are endpoints of a service). [`ServiceManager`]
//! keeps one `tokio::sync::watch` channel per service holding the latest snapshot: a proxy's
//! `WatchEndpoints` stream subscribes to it, so a slow proxy only ever skips to the newest
//! snapshot and never blocks the controller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pss_proto::v1 as pb;
use tokio::sync::watch;

use crate::model::{PodPhase, PodRecord, Service};
use crate::store::StateStore;
use crate::Result;

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

/// Latest snapshot per service, shared with every subscribed proxy.
#[derive(Default)]
pub struct ServiceManager {
    /// One channel per service that exists (or existed since start, for deleted ones).
    channels: Mutex<HashMap<String, watch::Sender<Arc<pb::EndpointSnapshot>>>>,
}

impl ServiceManager {
    pub fn new() -> Self {
        Self::default()
    }

    /// Recomputes every service's endpoints from the store and publishes the ones that changed
    /// (a new version each). Deleted services publish an empty snapshot once. Returns the
    /// services whose snapshot changed.
    pub fn refresh(&self, store: &dyn StateStore) -> Result<Vec<String>> {
        let services = store.list_services()?;
        let pods = store.list_pods(None)?;
        let mut changed = Vec::new();
        let mut channels = self.channels.lock().expect("service channels poisoned");
        for stored in &services {
            let svc = &stored.service;
            let endpoints = endpoints_for(svc, &pods);
            let current = channels.get(&svc.name).map(|tx| tx.borrow().clone());
            let same = current.as_ref().is_some_and(|c| {
                c.endpoints == endpoints
                    && c.port == u32::from(svc.port)
                    && c.target_port == u32::from(svc.target_port)
            });
            if same {
                continue;
            }
            let snapshot = Arc::new(pb::EndpointSnapshot {
                service: svc.name.clone(),
                version: store.next_snapshot_version(&svc.name)?,
                endpoints,
                port: u32::from(svc.port),
                target_port: u32::from(svc.target_port),
            });
            tracing::info!(service = %svc.name, version = snapshot.version, endpoints = snapshot.endpoints.len(), "endpoint snapshot");
            match channels.get(&svc.name) {
                Some(tx) => {
                    tx.send_replace(snapshot);
                }
                None => {
                    channels.insert(svc.name.clone(), watch::channel(snapshot).0);
                }
            }
            changed.push(svc.name.clone());
        }
        // Services that went away: publish an empty snapshot so proxies stop forwarding.
        let live: std::collections::HashSet<&str> =
            services.iter().map(|s| s.service.name.as_str()).collect();
        let gone: Vec<String> = channels
            .keys()
            .filter(|n| !live.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            let tx = channels.remove(&name).expect("present");
            if !tx.borrow().endpoints.is_empty() || tx.receiver_count() > 0 {
                let prev = tx.borrow().clone();
                tx.send_replace(Arc::new(pb::EndpointSnapshot {
                    service: name.clone(),
                    version: store.next_snapshot_version(&name)?,
                    endpoints: Vec::new(),
                    port: prev.port,
                    target_port: prev.target_port,
                }));
            }
            changed.push(name);
        }
        Ok(changed)
    }

    /// Subscribes to a service's snapshots; `None` when the service is unknown.
    pub fn subscribe(&self, service: &str) -> Option<watch::Receiver<Arc<pb::EndpointSnapshot>>> {
        self.channels
            .lock()
            .expect("service channels poisoned")
            .get(service)
            .map(|tx| tx.subscribe())
    }

    /// The current snapshot of a service.
    pub fn current(&self, service: &str) -> Option<Arc<pb::EndpointSnapshot>> {
        self.channels
            .lock()
            .expect("service channels poisoned")
            .get(service)
            .map(|tx| tx.borrow().clone())
    }
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
