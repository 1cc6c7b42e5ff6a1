//! Configuration reload (SIGHUP): the pure diff between the running configuration and a new
//! one. [`plan`] decides, per service, whether it is added, removed, re-bound (its listener
//! changed) or retuned in place, and which proxy-wide changes need a restart; the proxy then
//! binds whatever is new *before* touching anything, so a reload either applies whole or not
//! at all, and open connections are never dropped (a removed or re-bound listener closes, the
//! connections it accepted finish on their own).

use std::fmt::Write as _;

use crate::config::{Engine, ProxyConfig, ServiceConfig};
use crate::{Error, Result};

/// What a reload changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Proxy-wide settings that differ but only take effect at start (the running value is
    /// kept), one line each.
    pub needs_restart: Vec<String>,
    /// Indexes in the new configuration of services that did not exist.
    pub added: Vec<usize>,
    /// Names of services that are gone.
    pub removed: Vec<String>,
    /// Indexes in the new configuration of services whose listener (address or listening
    /// socket options) changed: new sockets, then the old ones close.
    pub rebound: Vec<usize>,
    /// Services changed in place (new connections see the change), with the fields changed.
    pub retuned: Vec<(usize, Vec<&'static str>)>,
}

impl Plan {
    /// Whether anything changes at all.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.rebound.is_empty()
            && self.retuned.is_empty()
    }

    /// One line per change, for the log and the caller.
    pub fn describe(&self, new: &ProxyConfig) -> Vec<String> {
        let mut lines = Vec::new();
        for &i in &self.added {
            let s = &new.services[i];
            lines.push(format!("service {} added on {}", s.name, s.listen));
        }
        for name in &self.removed {
            lines.push(format!(
                "service {name} removed (its open connections finish)"
            ));
        }
        for &i in &self.rebound {
            let s = &new.services[i];
            lines.push(format!(
                "service {} listener re-bound on {}",
                s.name, s.listen
            ));
        }
        for (i, fields) in &self.retuned {
            let mut l = format!("service {} changed:", new.services[*i].name);
            for f in fields {
                let _ = write!(l, " {f}");
            }
            lines.push(l);
        }
        lines.extend(self.needs_restart.iter().cloned());
        lines
    }
}

/// The fields of a service that differ and can change in place.
fn changed_fields(old: &ServiceConfig, new: &ServiceConfig) -> Vec<&'static str> {
    let mut f = Vec::new();
    let mut diff = |name, changed: bool| {
        if changed {
            f.push(name);
        }
    };
    diff("backends", old.backends != new.backends);
    diff("engine", old.engine != new.engine);
    diff(
        "connect_timeout",
        old.connect_timeout != new.connect_timeout,
    );
    diff(
        "connect_attempts",
        old.connect_attempts != new.connect_attempts,
    );
    diff("idle_timeout", old.idle_timeout != new.idle_timeout);
    diff(
        "max_connections",
        old.max_connections != new.max_connections,
    );
    diff(
        "splice_threshold",
        old.splice_threshold != new.splice_threshold,
    );
    diff("health", old.health != new.health);
    diff("send_proxy", old.send_proxy != new.send_proxy);
    f
}

/// Diffs the running configuration against `new` (already validated). Fails, changing
/// nothing, when a change cannot be made without dropping connections or restarting.
pub fn plan(old: &ProxyConfig, new: &ProxyConfig) -> Result<Plan> {
    let mut p = Plan::default();
    let mut restart = |what: &str, from: String, to: String| {
        if from != to {
            p.needs_restart.push(format!(
                "{what} {from} -> {to} needs a restart; keeping {from}"
            ));
        }
    };
    restart("workers", old.workers.to_string(), new.workers.to_string());
    restart(
        "admin",
        format!("{:?}", old.admin),
        format!("{:?}", new.admin),
    );
    restart(
        "event_loop",
        format!("{:?}", old.event_loop),
        format!("{:?}", new.event_loop),
    );
    restart(
        "buffer_size",
        old.buffer_size.to_string(),
        new.buffer_size.to_string(),
    );
    restart(
        "sched_batch",
        old.sched_batch.to_string(),
        new.sched_batch.to_string(),
    );
    restart(
        "max_pipes_per_worker",
        old.max_pipes_per_worker.to_string(),
        new.max_pipes_per_worker.to_string(),
    );
    restart(
        "controller",
        old.controller
            .as_ref()
            .map_or("none".into(), |c| c.display_addresses()),
        new.controller
            .as_ref()
            .map_or("none".into(), |c| c.display_addresses()),
    );
    for (i, s) in new.services.iter().enumerate() {
        let Some(o) = old.services.iter().find(|o| o.name == s.name) else {
            p.added.push(i);
            continue;
        };
        if (o.engine == Engine::Uring) != (s.engine == Engine::Uring) {
            return Err(reject(
                i,
                "engine",
                "switching to or from uring needs a restart (the workers run another runtime)",
            ));
        }
        if o.listen != s.listen || o.tuning != s.tuning {
            if o.listen == s.listen && !(o.tuning.reuseport && s.tuning.reuseport) {
                return Err(reject(
                    i,
                    "listen",
                    "re-binding the same address needs reuseport on the old and the new listener \
                     (otherwise the port would be closed in between); restart instead",
                ));
            }
            p.rebound.push(i);
        }
        let fields = changed_fields(o, s);
        if !fields.is_empty() {
            p.retuned.push((i, fields));
        }
    }
    for o in &old.services {
        if !new.services.iter().any(|s| s.name == o.name) {
            p.removed.push(o.name.clone());
        }
    }
    Ok(p)
}

fn reject(i: usize, field: &str, reason: &str) -> Error {
    Error::Config {
        at: None,
        path: format!("services[{i}].{field}"),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backends;
    use std::time::Duration;

    fn svc(name: &str, port: u16) -> ServiceConfig {
        ServiceConfig::with_static_backends(
            name,
            ([127, 0, 0, 1], port).into(),
            vec!["127.0.0.1:9".parse().unwrap()],
        )
    }

    fn cfg(services: Vec<ServiceConfig>) -> ProxyConfig {
        ProxyConfig {
            workers: 2,
            ..ProxyConfig::new(services)
        }
    }

    #[test]
    fn same_config_changes_nothing() {
        let c = cfg(vec![svc("a", 1), svc("b", 2)]);
        let p = plan(&c, &c.clone()).unwrap();
        assert!(p.is_empty() && p.needs_restart.is_empty(), "{p:?}");
    }

    #[test]
    fn services_are_added_removed_rebound_and_retuned() {
        let old = cfg(vec![svc("a", 1), svc("b", 2), svc("c", 3)]);
        let mut b = svc("b", 22);
        b.idle_timeout = None;
        let mut c = svc("c", 3);
        c.backends = Backends::Static(vec!["127.0.0.1:10".parse().unwrap()]);
        c.connect_timeout = Duration::from_millis(1);
        let new = cfg(vec![b, c, svc("d", 4)]);
        let p = plan(&old, &new).unwrap();
        assert_eq!(p.added, vec![2]);
        assert_eq!(p.removed, vec!["a".to_string()]);
        assert_eq!(p.rebound, vec![0]);
        assert_eq!(
            p.retuned,
            vec![
                (0, vec!["idle_timeout"]),
                (1, vec!["backends", "connect_timeout"])
            ]
        );
        assert_eq!(p.describe(&new).len(), 5);
    }

    #[test]
    fn proxy_wide_changes_are_reported_as_needing_a_restart() {
        let old = cfg(vec![svc("a", 1)]);
        let new = ProxyConfig {
            workers: 7,
            ..old.clone()
        };
        let p = plan(&old, &new).unwrap();
        assert!(p.is_empty());
        assert_eq!(p.needs_restart.len(), 1);
        assert!(p.needs_restart[0].contains("workers 2 -> 7"), "{p:?}");
    }

    #[test]
    fn rebinding_the_same_address_without_reuseport_is_refused() {
        let old = cfg(vec![svc("a", 1)]);
        let mut a = svc("a", 1);
        a.tuning.reuseport = false;
        let e = plan(&old, &cfg(vec![a])).unwrap_err().to_string();
        assert!(e.contains("services[0].listen"), "{e}");
        // With reuseport on both sides a backlog change re-binds.
        let mut a = svc("a", 1);
        a.tuning.backlog = 7;
        assert_eq!(plan(&old, &cfg(vec![a])).unwrap().rebound, vec![0]);
    }
}
