//! Which role may call which gRPC method: one table, pure, enforced for every call by
//! [`crate::guard`]. Methods are gRPC paths (`/pss.v1.Operator/Apply`).
//!
//! | service (server) | operator | agent | proxy | controller | anonymous |
//! |---|---|---|---|---|---|
//! | `Operator` (controller): reads (`List*`, `Watch`, `RolloutHistory`, `Version`) | yes | - | yes | - | - |
//! | `Operator`: writes (`Apply`, `Scale`, `Autoscale`, `Delete`, `SetNodeScheduling`, `Rollout`) and `PodLogs` | yes | - | - | - | - |
//! | `NodeRegistry` (controller) | yes | yes, its own node (checked by the handler) | - | - | - |
//! | `EndpointWatch` (controller) | yes | - | yes | - | - |
//! | `Credentials/Join` (controller) | yes | yes | yes | - | yes (the token in the request decides) |
//! | `Credentials/Renew` (controller) | yes | yes | yes | - | - |
//! | `Credentials` tokens (controller) | yes | - | - | - | - |
//! | `Agent` (agent) | - | - | - | yes | - |
//!
//! Anything not in the table is refused.

use crate::identity::Role;

/// Which server a call arrives at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Controller,
    Agent,
}

/// The methods a proxy may call on the Operator service.
const READ_ONLY: &[&str] = &[
    "ListPods",
    "ListWorkloads",
    "ListServices",
    "ListNodes",
    "ListEvents",
    "ListAutoscalers",
    "RolloutHistory",
    "Watch",
    "Version",
];

/// Whether `role` (`None`: a caller without credentials) may call `path` on `server`.
pub fn allows(server: Server, role: Option<Role>, path: &str) -> bool {
    let Some((service, method)) = path
        .strip_prefix("/pss.v1.")
        .and_then(|p| p.split_once('/'))
    else {
        return false;
    };
    use Role::*;
    match server {
        Server::Agent => service == "Agent" && role == Some(Controller),
        Server::Controller => match (service, role) {
            ("Credentials", _) if method == "Join" => role != Some(Controller),
            (_, None) => false,
            ("Operator", Some(Operator)) => true,
            ("Operator", Some(Proxy)) => READ_ONLY.contains(&method),
            ("NodeRegistry", Some(Operator | Agent)) => true,
            ("EndpointWatch", Some(Operator | Proxy)) => true,
            ("Credentials", Some(Operator | Agent | Proxy)) if method == "Renew" => true,
            ("Credentials", Some(Operator)) => true,
            _ => false,
        },
    }
}

/// The refusal message: names the role and the method.
pub fn refusal(role: Option<Role>, path: &str) -> String {
    let method = path.strip_prefix("/pss.v1.").unwrap_or(path);
    match role {
        Some(r) => format!("role {r} may not call {method}"),
        None => format!("{method} needs a credential (a client certificate or a token)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Role::*;

    const C: Server = Server::Controller;

    #[test]
    fn operators_may_do_everything_on_the_controller_and_nothing_on_agents() {
        for p in [
            "/pss.v1.Operator/Apply",
            "/pss.v1.Operator/Delete",
            "/pss.v1.NodeRegistry/Register",
            "/pss.v1.EndpointWatch/WatchEndpoints",
            "/pss.v1.Credentials/CreateJoinToken",
        ] {
            assert!(allows(C, Some(Operator), p), "{p}");
        }
        assert!(!allows(
            Server::Agent,
            Some(Operator),
            "/pss.v1.Agent/RunPod"
        ));
    }

    #[test]
    fn proxies_watch_and_read_but_never_write() {
        assert!(allows(
            C,
            Some(Proxy),
            "/pss.v1.EndpointWatch/WatchEndpoints"
        ));
        assert!(allows(C, Some(Proxy), "/pss.v1.Operator/ListPods"));
        assert!(allows(C, Some(Proxy), "/pss.v1.Operator/Watch"));
        for m in [
            "Apply",
            "Scale",
            "Delete",
            "Autoscale",
            "PodLogs",
            "SetNodeScheduling",
            "Rollout",
        ] {
            assert!(
                !allows(C, Some(Proxy), &format!("/pss.v1.Operator/{m}")),
                "{m}"
            );
        }
        assert!(!allows(C, Some(Proxy), "/pss.v1.NodeRegistry/Register"));
        assert!(!allows(
            C,
            Some(Proxy),
            "/pss.v1.Credentials/CreateJoinToken"
        ));
    }

    #[test]
    fn agents_only_report_and_only_the_controller_drives_agents() {
        assert!(allows(C, Some(Agent), "/pss.v1.NodeRegistry/Heartbeat"));
        assert!(allows(C, Some(Agent), "/pss.v1.Credentials/Renew"));
        assert!(!allows(C, Some(Agent), "/pss.v1.Operator/ListPods"));
        assert!(!allows(
            C,
            Some(Agent),
            "/pss.v1.EndpointWatch/WatchEndpoints"
        ));
        for r in [Operator, Agent, Proxy] {
            assert!(!allows(Server::Agent, Some(r), "/pss.v1.Agent/RunPod"));
        }
        assert!(allows(
            Server::Agent,
            Some(Controller),
            "/pss.v1.Agent/StopPod"
        ));
        assert!(!allows(Server::Agent, None, "/pss.v1.Agent/PodLogs"));
    }

    #[test]
    fn without_credentials_only_join_and_unknown_paths_are_refused() {
        assert!(allows(C, None, "/pss.v1.Credentials/Join"));
        assert!(!allows(C, Some(Controller), "/pss.v1.Credentials/Join"));
        for p in [
            "/pss.v1.Credentials/Renew",
            "/pss.v1.Operator/Version",
            "/pss.v1.NodeRegistry/Register",
            "/grpc.health.v1.Health/Check",
            "",
            "/pss.v1.Operator",
        ] {
            assert!(!allows(C, None, p), "{p}");
            assert!(!allows(C, Some(Controller), p), "{p}");
        }
        assert!(!allows(C, Some(Operator), "/pss.v1.Nope/X"));
        assert_eq!(
            refusal(Some(Proxy), "/pss.v1.Operator/Apply"),
            "role proxy may not call Operator/Apply"
        );
    }
}
