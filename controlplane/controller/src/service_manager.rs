//! The service manager: turns ready pods into endpoint snapshots (one per service, with a
//! monotonic version) and fans every new snapshot out to subscribed proxies.
//!
//! `pss_core::endpoints::endpoints_for` is the pure part (which pods are endpoints of a service). [`ServiceManager`]
//! keeps one `tokio::sync::watch` channel per service holding the latest snapshot: a proxy's
//! `WatchEndpoints` stream subscribes to it, so a slow proxy only ever skips to the newest
//! snapshot and never blocks the controller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pss_proto::v1 as pb;
use tokio::sync::watch;

use crate::Result;
use pss_core::endpoints::endpoints_for;
use pss_store::StateStore;

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
        let mut changed = Vec::new();
        let mut channels = self.channels.lock().expect("service channels poisoned");
        for stored in &services {
            let svc = &stored.service;
            // Only the service's workload's pods: a cached store answers this from its index.
            let pods = store.list_pods(Some(&svc.workload))?;
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
