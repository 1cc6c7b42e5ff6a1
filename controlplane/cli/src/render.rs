//! `pssctl get`: fetches a kind and renders it as a table (normal or wide), JSON or YAML.
//! JSON/YAML use stable field names (camelCase, phases and statuses as words) so scripts can
//! rely on them.

use pss_proto::v1 as pb;
use pss_proto::v1::watch_event::Object;
use serde_json::{json, Value};

use crate::client::{CliError, Client};
use crate::table::{age, bytes, human_duration, Table};
use crate::{Output, Resource};
use pss_plumbing::clock::now_ms;

/// Fetches and renders one kind; with `name`, only that object (an error when there is none),
/// and JSON/YAML give the object itself rather than a list.
pub async fn get(
    client: &mut Client,
    resource: Resource,
    name: Option<&str>,
    output: Output,
    filter: String,
    limit: u32,
) -> Result<String, CliError> {
    let now = now_ms();
    let wide = output == Output::Wide;
    // Keeps only the object called `name`, if one is asked for.
    fn only<T>(items: &mut Vec<T>, name: Option<&str>, key: impl Fn(&T) -> &str) {
        if let Some(name) = name {
            items.retain(|i| key(i) == name);
        }
    }
    let (values, names, table, what): (Vec<Value>, Vec<String>, Table, &str) = match resource {
        Resource::Pods => {
            let mut items = client.list_pods(filter).await?;
            only(&mut items, name, |p| &p.id);
            (
                items.iter().map(pod_json).collect(),
                items.iter().map(|p| format!("pod/{}", p.id)).collect(),
                pods_table(&items, wide, now),
                "pods",
            )
        }
        Resource::Workloads => {
            let mut items = client.list_workloads().await?;
            only(&mut items, name, |w| &w.name);
            (
                items.iter().map(workload_json).collect(),
                items
                    .iter()
                    .map(|w| format!("workload/{}", w.name))
                    .collect(),
                workloads_table(&items, wide, now),
                "workloads",
            )
        }
        Resource::Services => {
            let mut items = client.list_services().await?;
            only(&mut items, name, |s| &s.name);
            (
                items.iter().map(service_json).collect(),
                items
                    .iter()
                    .map(|s| format!("service/{}", s.name))
                    .collect(),
                services_table(&items, wide, now),
                "services",
            )
        }
        Resource::Nodes => {
            let mut items = client.list_nodes().await?;
            only(&mut items, name, |n| &n.name);
            (
                items.iter().map(node_json).collect(),
                items.iter().map(|n| format!("node/{}", n.name)).collect(),
                nodes_table(&items, wide, now),
                "nodes",
            )
        }
        Resource::Events => {
            let mut items = client.list_events(limit).await?;
            // An event is named by its object: `get events pod/x` shows that pod's events.
            if let Some(name) = name {
                items.retain(|e| e.object == name || e.object.ends_with(&format!("/{name}")));
            }
            (
                items.iter().map(event_json).collect(),
                items.iter().map(|e| format!("event/{}", e.id)).collect(),
                events_table(&items, now),
                "events",
            )
        }
        Resource::Autoscalers => {
            let mut items = client.list_autoscalers(filter).await?;
            only(&mut items, name, |a| &a.name);
            (
                items.iter().map(autoscaler_json).collect(),
                items
                    .iter()
                    .map(|a| format!("autoscaler/{}", a.name))
                    .collect(),
                autoscalers_table(&items, wide, now),
                "autoscalers",
            )
        }
    };
    if let Some(name) = name {
        if values.is_empty() && resource != Resource::Events {
            let kind = what.trim_end_matches('s');
            return Err(CliError::NotFound(format!("{kind} \"{name}\" not found")));
        }
    }
    // One named object reads as that object, as kubectl prints it.
    let doc = match (name, resource) {
        (Some(_), r) if r != Resource::Events && values.len() == 1 => values[0].clone(),
        _ => json!({ "items": values }),
    };
    Ok(match output {
        Output::Table | Output::Wide => table.render(what),
        Output::Name => names.iter().map(|n| format!("{n}\n")).collect(),
        Output::Json => serde_json::to_string_pretty(&doc).expect("json") + "\n",
        Output::Yaml => serde_saphyr::to_string(&doc).expect("yaml"),
    })
}

fn phase_name(p: i32) -> &'static str {
    match pb::PodPhase::try_from(p).unwrap_or(pb::PodPhase::Unknown) {
        pb::PodPhase::Pending => "Pending",
        pb::PodPhase::Starting => "Starting",
        pb::PodPhase::Running => "Running",
        pb::PodPhase::Failed => "Failed",
        pb::PodPhase::Succeeded => "Succeeded",
        pb::PodPhase::Terminating => "Terminating",
        pb::PodPhase::Lost => "Lost",
        pb::PodPhase::Unknown | pb::PodPhase::Unspecified => "Unknown",
    }
}

/// STATUS column: the phase, or the reason when it says more (ImageNotFound, Unschedulable).
fn pod_status(p: &pb::Pod) -> String {
    let phase = phase_name(p.phase);
    match phase {
        "Failed" | "Pending" if !p.reason.is_empty() => p.reason.clone(),
        _ => phase.to_string(),
    }
}

fn addresses(p: &pb::Pod) -> String {
    if p.addresses.is_empty() {
        return "<none>".into();
    }
    p.addresses
        .iter()
        .map(|a| a.address.clone())
        .collect::<Vec<_>>()
        .join(",")
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

fn pod_json(p: &pb::Pod) -> Value {
    json!({
        "name": p.id, "workload": p.workload, "node": p.node, "phase": phase_name(p.phase),
        "ready": p.ready, "restarts": p.restart_count, "reason": p.reason, "message": p.message,
        "addresses": p.addresses.iter().map(|a| json!({"containerPort": a.container_port, "address": a.address})).collect::<Vec<_>>(),
        "containers": p.containers.iter().map(|c| json!({"name": c.name, "id": c.id, "state": c.state, "exitCode": c.exit_code, "oomKilled": c.oom_killed})).collect::<Vec<_>>(),
        "cpuPercent": p.cpu_percent, "memoryBytes": p.memory_bytes,
        "createdAtMs": p.created_at_ms, "startedAtMs": p.started_at_ms, "specHash": format!("{:016x}", p.spec_hash),
        "labels": p.labels,
    })
}

fn pods_table(items: &[pb::Pod], wide: bool, now: i64) -> Table {
    let mut headers = vec![
        "NAME", "READY", "STATUS", "RESTARTS", "NODE", "ADDRESS", "AGE",
    ];
    if wide {
        headers.extend(["WORKLOAD", "CPU%", "MEMORY", "MESSAGE"]);
    }
    let mut t = Table::new(&headers);
    for p in items {
        // Like kubectl: containers ready out of all; readiness is the pod's probe, so a pod
        // whose probe has not passed shows 0 ready however many containers run.
        let ready_containers = if p.ready { p.ready_containers } else { 0 };
        let ready = format!("{ready_containers}/{}", p.total_containers.max(1));
        let mut row = vec![
            p.id.clone(),
            ready,
            pod_status(p),
            p.restart_count.to_string(),
            or_none(&p.node),
            addresses(p),
            age(p.created_at_ms, now),
        ];
        if wide {
            row.extend([
                p.workload.clone(),
                format!("{:.1}", p.cpu_percent),
                bytes(p.memory_bytes),
                or_none(&p.message),
            ]);
        }
        t.row(row);
    }
    t
}

fn images(w: &pb::Workload) -> String {
    w.pod_spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| c.image.clone())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// `k=v,k2=v2`, sorted, or `-`.
fn labels(map: &std::collections::HashMap<String, String>) -> String {
    let sorted: std::collections::BTreeMap<_, _> = map.clone().into_iter().collect();
    pss_core::model::format_labels(&sorted)
}

fn workload_json(w: &pb::Workload) -> Value {
    let strategy = w.strategy.clone().unwrap_or_default();
    let mut v = json!({
        "name": w.name, "replicas": w.replicas, "placement": w.placement,
        "currentReplicas": w.current_replicas, "readyReplicas": w.ready_replicas,
        "updatedReplicas": w.updated_replicas,
        "images": images(w), "generation": w.generation, "createdAtMs": w.created_at_ms,
        "labels": w.labels,
        "revision": w.revision,
        "rollout": {
            "state": w.rollout_state, "message": w.rollout_message,
            "maxSurge": strategy.max_surge, "maxUnavailable": strategy.max_unavailable,
            "revisionHistoryLimit": w.revision_history_limit,
            "progressDeadlineMs": w.progress_deadline_ms,
            "autoRevert": w.auto_revert, "paused": w.paused,
        },
    });
    if !w.problem.is_empty() {
        v["problem"] = json!(w.problem);
    }
    v
}

fn workloads_table(items: &[pb::Workload], wide: bool, now: i64) -> Table {
    let mut headers = vec![
        "NAME",
        "READY",
        "UP-TO-DATE",
        "CURRENT",
        "DESIRED",
        "PLACEMENT",
        "AGE",
    ];
    if wide {
        headers.extend(["IMAGES", "REVISION", "ROLLOUT", "LABELS"]);
    }
    // Workloads the controller does not run say why, in a column shown only then.
    let problems = items.iter().any(|w| !w.problem.is_empty());
    if problems {
        headers.push("PROBLEM");
    }
    let mut t = Table::new(&headers);
    for w in items {
        let mut row = vec![
            w.name.clone(),
            format!("{}/{}", w.ready_replicas, w.replicas),
            w.updated_replicas.to_string(),
            w.current_replicas.to_string(),
            w.replicas.to_string(),
            w.placement.clone(),
            age(w.created_at_ms, now),
        ];
        if wide {
            row.extend([
                images(w),
                w.revision.to_string(),
                w.rollout_state.clone(),
                labels(&w.labels),
            ]);
        }
        if problems {
            row.push(w.problem.clone());
        }
        t.row(row);
    }
    t
}

fn service_json(s: &pb::Service) -> Value {
    json!({
        "name": s.name, "workload": s.workload, "port": s.port, "targetPort": s.target_port,
        "endpoints": s.endpoints.iter().map(|e| json!({"address": e.address, "pod": e.pod, "node": e.node})).collect::<Vec<_>>(),
        "snapshotVersion": s.snapshot_version, "createdAtMs": s.created_at_ms,
        "labels": s.labels,
    })
}

fn services_table(items: &[pb::Service], wide: bool, now: i64) -> Table {
    let mut headers = vec![
        "NAME",
        "WORKLOAD",
        "PORT",
        "TARGET-PORT",
        "ENDPOINTS",
        "AGE",
    ];
    if wide {
        headers.extend(["VERSION", "ADDRESSES"]);
    }
    let mut t = Table::new(&headers);
    for s in items {
        let mut row = vec![
            s.name.clone(),
            s.workload.clone(),
            s.port.to_string(),
            s.target_port.to_string(),
            s.endpoints.len().to_string(),
            age(s.created_at_ms, now),
        ];
        if wide {
            let addrs: Vec<_> = s.endpoints.iter().map(|e| e.address.clone()).collect();
            row.extend([
                s.snapshot_version.to_string(),
                if addrs.is_empty() {
                    "<none>".into()
                } else {
                    addrs.join(",")
                },
            ]);
        }
        t.row(row);
    }
    t
}

fn node_status(n: &pb::Node) -> &'static str {
    match pb::NodeStatus::try_from(n.status).unwrap_or(pb::NodeStatus::Unspecified) {
        pb::NodeStatus::Ready => "Ready",
        pb::NodeStatus::NotReady => "NotReady",
        pb::NodeStatus::Unspecified => "Unknown",
    }
}

/// `Ready`, or with the node's conditions appended like kubectl's `Ready,SchedulingDisabled`:
/// `Ready,RuntimeUnresponsive`, `Ready,SchedulingDisabled`, `Ready,SchedulingDisabled,Draining`.
fn node_status_with_conditions(n: &pb::Node) -> String {
    std::iter::once(node_status(n))
        .chain(n.conditions.iter().map(String::as_str))
        .chain(n.cordoned.then_some("SchedulingDisabled"))
        .chain(n.draining.then_some("Draining"))
        .collect::<Vec<_>>()
        .join(",")
}

fn node_json(n: &pb::Node) -> Value {
    json!({
        "name": n.name, "status": node_status(n), "conditions": n.conditions,
        "unschedulable": n.unschedulable, "runtimeReason": n.runtime_reason,
        "runtimeUnresponsiveSinceMs": n.runtime_unresponsive_since_ms,
        "agentAddress": n.agent_address,
        "cpuMillis": n.cpu_millis, "memoryBytes": n.memory_bytes,
        "cpuAllocatedMillis": n.cpu_allocated_millis, "memoryAllocatedBytes": n.memory_allocated_bytes,
        "cpuUsagePercent": n.cpu_usage_percent, "memoryUsedBytes": n.memory_used_bytes,
        "pods": n.pod_count, "lastHeartbeatMs": n.last_heartbeat_ms, "registeredAtMs": n.registered_at_ms,
        "limitsUnenforced": n.limits_unenforced,
        "cordoned": n.cordoned, "draining": n.draining, "labels": n.labels,
    })
}

fn nodes_table(items: &[pb::Node], wide: bool, now: i64) -> Table {
    let mut headers = vec![
        "NAME",
        "STATUS",
        "PODS",
        "CPU(ALLOC/CAP)",
        "MEMORY(ALLOC/CAP)",
        "CPU%",
        "ADDRESS",
        "AGE",
    ];
    if wide {
        headers.extend(["MEMORY-USED", "LAST-HEARTBEAT", "LIMITS", "LABELS"]);
    }
    let mut t = Table::new(&headers);
    for n in items {
        let mut row = vec![
            n.name.clone(),
            node_status_with_conditions(n),
            n.pod_count.to_string(),
            format!("{}m/{}m", n.cpu_allocated_millis, n.cpu_millis),
            format!(
                "{}/{}",
                bytes(n.memory_allocated_bytes),
                bytes(n.memory_bytes)
            ),
            format!("{:.1}", n.cpu_usage_percent),
            n.agent_address.clone(),
            age(n.registered_at_ms, now),
        ];
        if wide {
            row.extend([
                bytes(n.memory_used_bytes),
                format!("{} ago", human_duration(now - n.last_heartbeat_ms)),
                // What rootless Podman cannot hold pods to (their requests still count).
                if n.limits_unenforced.is_empty() {
                    "enforced".to_string()
                } else {
                    n.limits_unenforced.clone()
                },
                labels(&n.labels),
            ]);
        }
        t.row(row);
    }
    t
}

fn event_json(e: &pb::Event) -> Value {
    json!({"id": e.id, "timeMs": e.time_ms, "type": e.r#type, "reason": e.reason, "object": e.object, "message": e.message})
}

fn events_table(items: &[pb::Event], now: i64) -> Table {
    let mut t = Table::new(&["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]);
    for e in items {
        t.row(vec![
            age(e.time_ms, now),
            e.r#type.clone(),
            e.reason.clone(),
            e.object.clone(),
            e.message.clone(),
        ]);
    }
    t
}

fn autoscaler_json(a: &pb::AutoScalePolicy) -> Value {
    json!({
        "name": a.name, "workload": a.workload, "minReplicas": a.min_replicas, "maxReplicas": a.max_replicas,
        "targetCpuPercent": a.cpu_percent, "targetMemoryPercent": a.memory_percent,
        "currentCpuPercent": a.has_metrics.then_some(a.current_cpu_percent),
        "currentMemoryPercent": a.has_metrics.then_some(a.current_memory_percent),
        "currentReplicas": a.current_replicas, "desiredReplicas": a.desired_replicas,
        "lastScaleAtMs": a.last_scale_at_ms, "createdAtMs": a.created_at_ms,
    })
}

/// `current%/target%`, `<unknown>/70%` without metrics, `-` when the metric is not used.
fn metric(current: f64, target: u32, has: bool) -> String {
    match (target, has) {
        (0, _) => "-".into(),
        (t, true) => format!("{current:.0}%/{t}%"),
        (t, false) => format!("<unknown>/{t}%"),
    }
}

fn autoscalers_table(items: &[pb::AutoScalePolicy], wide: bool, now: i64) -> Table {
    let mut headers = vec![
        "NAME", "WORKLOAD", "CPU", "MEMORY", "MIN", "MAX", "REPLICAS", "DESIRED", "AGE",
    ];
    if wide {
        headers.push("LAST-SCALE");
    }
    let mut t = Table::new(&headers);
    for a in items {
        let mut row = vec![
            a.name.clone(),
            a.workload.clone(),
            metric(a.current_cpu_percent, a.cpu_percent, a.has_metrics),
            metric(a.current_memory_percent, a.memory_percent, a.has_metrics),
            a.min_replicas.to_string(),
            a.max_replicas.to_string(),
            a.current_replicas.to_string(),
            a.desired_replicas.to_string(),
            age(a.created_at_ms, now),
        ];
        if wide {
            row.push(if a.last_scale_at_ms > 0 {
                format!("{} ago", human_duration(now - a.last_scale_at_ms))
            } else {
                "<never>".into()
            });
        }
        t.row(row);
    }
    t
}

/// `pssctl top nodes`: what each node's agent last reported (heartbeats), beside its capacity.
pub fn top_nodes(nodes: &[pb::Node]) -> String {
    let mut t = Table::new(&["NAME", "CPU%", "MEMORY", "MEMORY%", "PODS"]);
    for n in nodes {
        let mem_pct = if n.memory_bytes == 0 {
            0.0
        } else {
            n.memory_used_bytes as f64 * 100.0 / n.memory_bytes as f64
        };
        t.row(vec![
            n.name.clone(),
            format!("{:.1}", n.cpu_usage_percent),
            bytes(n.memory_used_bytes),
            format!("{mem_pct:.1}"),
            n.pod_count.to_string(),
        ]);
    }
    t.render("nodes")
}

/// `pssctl top pods`: each running pod's last reported CPU (percent of one core) and memory.
pub fn top_pods(pods: &[pb::Pod]) -> String {
    let mut t = Table::new(&["NAME", "NODE", "CPU%", "MEMORY"]);
    for p in pods
        .iter()
        .filter(|p| p.phase == pb::PodPhase::Running as i32)
    {
        t.row(vec![
            p.id.clone(),
            p.node.clone(),
            format!("{:.1}", p.cpu_percent),
            bytes(p.memory_bytes),
        ]);
    }
    t.render("pods")
}

/// `pssctl describe KIND/NAME`: the object in full (as `get -o yaml` shows it), then its recent
/// events, oldest first, as `kubectl describe` ends.
pub async fn describe(
    client: &mut Client,
    resource: Resource,
    name: &str,
) -> Result<String, CliError> {
    let object_kind = match resource {
        Resource::Pods => "pod",
        Resource::Workloads => "workload",
        Resource::Services => "service",
        Resource::Nodes => "node",
        Resource::Autoscalers => "autoscalepolicy",
        Resource::Events => {
            return Err(CliError::Usage(
                "describe shows pods, workloads, services, nodes or autoscalers".into(),
            ))
        }
    };
    let mut text = get(client, resource, Some(name), Output::Yaml, String::new(), 0).await?;
    let object = format!("{object_kind}/{name}");
    let events: Vec<pb::Event> = client
        .list_events(0)
        .await?
        .into_iter()
        .filter(|e| e.object == object)
        .collect();
    text.push_str("\nEvents:\n");
    if events.is_empty() {
        text.push_str("  <none>\n");
    } else {
        for line in events_table(&events, now_ms()).render("events").lines() {
            text.push_str("  ");
            text.push_str(line);
            text.push('\n');
        }
    }
    Ok(text)
}

/// `pssctl token list`: id, role, age, time left, state (never a secret).
pub fn join_tokens(tokens: &[pb::JoinTokenInfo], now_ms: i64) -> String {
    let mut t = Table::new(&["ID", "ROLE", "AGE", "EXPIRES", "STATE"]);
    for k in tokens {
        let state = if k.revoked {
            "revoked"
        } else if k.expires_ms != 0 && k.expires_ms <= now_ms {
            "expired"
        } else {
            "valid"
        };
        let expires = if k.expires_ms == 0 {
            "never".to_string()
        } else if k.expires_ms <= now_ms {
            "-".to_string()
        } else {
            crate::table::human_duration(k.expires_ms - now_ms)
        };
        t.row(vec![
            k.id.clone(),
            k.role.clone(),
            crate::table::age(k.created_ms, now_ms),
            expires,
            state.to_string(),
        ]);
    }
    t.render("join tokens")
}

/// `pssctl rollout history`: one row per revision kept, oldest first.
pub fn history(revisions: &[pb::Revision], now: i64) -> String {
    let mut t = Table::new(&["REVISION", "IMAGES", "CAUSE", "AGE"]);
    for r in revisions {
        t.row(vec![
            r.revision.to_string(),
            r.images.clone(),
            r.cause.clone(),
            age(r.created_at_ms, now),
        ]);
    }
    t.render("revisions")
}

/// `get -w`: the table of one kind's objects (the watch's initial list), as `get` prints it.
pub fn watch_table(resource: Resource, objects: &[Object], output: Output) -> String {
    let (table, what) = table_of(resource, objects, output == Output::Wide);
    match output {
        Output::Table | Output::Wide => table.render(what),
        _ => objects
            .iter()
            .map(|o| watch_json("ADDED", 0, o) + "\n")
            .collect(),
    }
}

/// `get -w`: one line for one change: the event type and the object's row (or, for `-o json`,
/// one JSON document per line with `type`, `revision` and `object`).
pub fn watch_line(
    resource: Resource,
    event: &str,
    revision: u64,
    object: &Object,
    output: Output,
) -> String {
    match output {
        Output::Table | Output::Wide => {
            let (table, what) = table_of(
                resource,
                std::slice::from_ref(object),
                output == Output::Wide,
            );
            let row = table
                .render(what)
                .lines()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            format!("{event:<9} {row}\n")
        }
        Output::Name => format!("{event:<9} {}\n", object_name(object)),
        Output::Json | Output::Yaml => watch_json(event, revision, object) + "\n",
    }
}

fn object_name(object: &Object) -> String {
    match object {
        Object::Workload(w) => format!("workload/{}", w.name),
        Object::Service(s) => format!("service/{}", s.name),
        Object::Node(n) => format!("node/{}", n.name),
        Object::Pod(p) => format!("pod/{}", p.id),
        Object::Autoscaler(a) => format!("autoscaler/{}", a.name),
    }
}

fn watch_json(event: &str, revision: u64, object: &Object) -> String {
    let value = match object {
        Object::Workload(w) => workload_json(w),
        Object::Service(s) => service_json(s),
        Object::Node(n) => node_json(n),
        Object::Pod(p) => pod_json(p),
        Object::Autoscaler(a) => autoscaler_json(a),
    };
    json!({"type": event, "revision": revision, "object": value}).to_string()
}

/// The table of `objects` (of `resource`'s kind; others are skipped).
fn table_of(resource: Resource, objects: &[Object], wide: bool) -> (Table, &'static str) {
    let now = now_ms();
    macro_rules! pick {
        ($variant:ident) => {
            objects
                .iter()
                .filter_map(|o| match o {
                    Object::$variant(x) => Some(x.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
    }
    match resource {
        Resource::Pods => (pods_table(&pick!(Pod), wide, now), "pods"),
        Resource::Workloads => (workloads_table(&pick!(Workload), wide, now), "workloads"),
        Resource::Services => (services_table(&pick!(Service), wide, now), "services"),
        Resource::Nodes => (nodes_table(&pick!(Node), wide, now), "nodes"),
        Resource::Autoscalers => (
            autoscalers_table(&pick!(Autoscaler), wide, now),
            "autoscalers",
        ),
        Resource::Events => (Table::new(&["NAME"]), "events"),
    }
}
