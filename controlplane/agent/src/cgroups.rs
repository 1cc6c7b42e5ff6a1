//! Whether this node's Podman can enforce the CPU and memory limits of a pod's `resources`.
//!
//! Rootful Podman always can. Rootless Podman (the seed's default) can only where the host
//! delegates cgroup controllers to the user: never on cgroup v1 (Podman ignores the limits with
//! "Resource limits are not supported and ignored on cgroups V1 rootless systems"), and on
//! cgroup v2 only for the controllers systemd delegates to the user's session (`cpu`, `memory`
//! in `user@UID.service`'s `cgroup.controllers`); asking for an undelegated one fails the
//! container.
//!
//! The agent asks Podman itself (`GET /libpod/info`: `host.security.rootless`,
//! `host.cgroupVersion`, `host.cgroupControllers`), so the answer is right whoever runs the
//! agent and whichever socket it found. What cannot be enforced is left out of the containers
//! it creates ([`LimitSupport::apply`]) and reported with the node (`Node.limits_unenforced`);
//! the scheduler keeps placing pods by their requests, which stay honest bookkeeping, and the
//! agent warns once at start.

use crate::podman::{Podman, ResourceLimits};

/// What Podman on this node can enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSupport {
    /// Podman runs rootless.
    pub rootless: bool,
    /// `v1` or `v2` (`""`: Podman did not say).
    pub cgroup_version: String,
    /// CPU quotas are applied.
    pub cpu: bool,
    /// Memory limits are applied.
    pub memory: bool,
}

impl Default for LimitSupport {
    /// Everything enforced (rootful Podman; also what is assumed when Podman cannot be asked).
    fn default() -> Self {
        Self {
            rootless: false,
            cgroup_version: String::new(),
            cpu: true,
            memory: true,
        }
    }
}

impl LimitSupport {
    /// Reads the answer out of Podman's `GET /libpod/info` body.
    pub fn from_info(info: &serde_json::Value) -> Self {
        let host = &info["host"];
        let rootless = host["security"]["rootless"].as_bool().unwrap_or(false);
        let cgroup_version = host["cgroupVersion"].as_str().unwrap_or("").to_string();
        if !rootless {
            return Self {
                cgroup_version,
                ..Self::default()
            };
        }
        let (cpu, memory) = match host["cgroupControllers"].as_array() {
            // Podman lists the controllers usable by this (rootless) user: none on v1, the
            // delegated ones on v2.
            Some(list) => {
                let has = |name: &str| list.iter().any(|c| c.as_str() == Some(name));
                (has("cpu"), has("memory"))
            }
            // Older Podman: only v1 is known not to work.
            None => {
                let v2 = cgroup_version == "v2";
                (v2, v2)
            }
        };
        Self {
            rootless,
            cgroup_version,
            cpu,
            memory,
        }
    }

    /// Asks Podman; when it cannot be asked, assumes limits are enforced (the behaviour before
    /// this check existed) and says so.
    pub async fn probe(podman: &Podman) -> Self {
        match podman.info().await {
            Ok(info) => Self::from_info(&info),
            Err(e) => {
                tracing::warn!(error = %e, "GET /libpod/info failed; assuming Podman enforces resource limits");
                Self::default()
            }
        }
    }

    /// Both kinds of limits are enforced.
    pub fn all_enforced(&self) -> bool {
        self.cpu && self.memory
    }

    /// A one-line explanation when something is not enforced (shown on the node), else `None`.
    pub fn unenforced(&self) -> Option<String> {
        let what = match (self.cpu, self.memory) {
            (true, true) => return None,
            (false, false) => "cpu and memory limits",
            (false, true) => "cpu limits",
            (true, false) => "memory limits",
        };
        let why = if self.cgroup_version == "v1" {
            "rootless Podman on cgroup v1".to_string()
        } else {
            format!(
                "rootless Podman without delegated cgroup controllers (cgroup {})",
                if self.cgroup_version.is_empty() {
                    "?"
                } else {
                    &self.cgroup_version
                }
            )
        };
        Some(format!("{what} not enforced: {why}"))
    }

    /// The part of `limits` this node can enforce (`None` when nothing is left).
    pub fn apply(&self, limits: ResourceLimits) -> Option<ResourceLimits> {
        let limits = ResourceLimits {
            cpu: limits.cpu.filter(|_| self.cpu),
            memory: limits.memory.filter(|_| self.memory),
        };
        (limits.cpu.is_some() || limits.memory.is_some()).then_some(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::podman::{CpuLimits, MemoryLimits};
    use serde_json::json;

    fn limits() -> ResourceLimits {
        ResourceLimits {
            cpu: Some(CpuLimits {
                quota: 50_000,
                period: 100_000,
            }),
            memory: Some(MemoryLimits { limit: 64 << 20 }),
        }
    }

    #[test]
    fn rootful_podman_enforces_everything() {
        let s = LimitSupport::from_info(&json!({"host": {
            "security": {"rootless": false}, "cgroupVersion": "v1",
            "cgroupControllers": ["cpu", "memory"]}}));
        assert!(s.all_enforced() && !s.rootless);
        assert_eq!(s.unenforced(), None);
        let l = s.apply(limits()).unwrap();
        assert!(l.cpu.is_some() && l.memory.is_some());
    }

    /// What Podman 4.3 answers for a rootless user on this machine kind (hybrid cgroup v1).
    #[test]
    fn rootless_on_cgroup_v1_enforces_nothing_and_says_why() {
        let s = LimitSupport::from_info(&json!({"host": {
            "security": {"rootless": true}, "cgroupVersion": "v1", "cgroupControllers": []}}));
        assert!(s.rootless && !s.cpu && !s.memory);
        assert_eq!(
            s.unenforced().unwrap(),
            "cpu and memory limits not enforced: rootless Podman on cgroup v1"
        );
        assert!(s.apply(limits()).is_none(), "no limits sent to Podman");
    }

    #[test]
    fn rootless_on_cgroup_v2_applies_only_delegated_controllers() {
        let s = LimitSupport::from_info(&json!({"host": {
            "security": {"rootless": true}, "cgroupVersion": "v2",
            "cgroupControllers": ["memory", "pids"]}}));
        assert!(!s.cpu && s.memory);
        assert!(s
            .unenforced()
            .unwrap()
            .starts_with("cpu limits not enforced"));
        let l = s.apply(limits()).unwrap();
        assert!(l.cpu.is_none() && l.memory.is_some());

        let all = LimitSupport::from_info(&json!({"host": {
            "security": {"rootless": true}, "cgroupVersion": "v2",
            "cgroupControllers": ["cpu", "io", "memory", "pids"]}}));
        assert!(all.all_enforced());
    }

    #[test]
    fn an_unreadable_answer_assumes_enforcement() {
        assert_eq!(LimitSupport::from_info(&json!({})), LimitSupport::default());
        let old = LimitSupport::from_info(&json!({"host": {
            "security": {"rootless": true}, "cgroupVersion": "v1"}}));
        assert!(!old.cpu && !old.memory);
    }
}
