//! What the heartbeat sends, kept apart from Podman so that a heartbeat never waits on it (the
//! heartbeat is a lease, like the kubelet's: it says "this node is alive", and a slow Podman
//! must not make a healthy node look dead).
//!
//! - [`NodeSnapshot`]: the last known pod reports (with usage) and the runtime's health. The
//!   heartbeat reads it; it is written by the [`refresh`] loop, by every status push (events,
//!   readiness), and by RunPod/StopPod, so it is never older than the newest news.
//! - [`refresh`]: every interval, reads every pod and its usage from Podman. When that does not
//!   finish within the deadline (or fails), the runtime is marked unresponsive (with the reason
//!   and the time it began); the loop keeps waiting for the late answer (each Podman call has
//!   its own deadline too), and the first answer marks the runtime responsive again.
//!
//! A refresh that started before a push or RunPod must not overwrite what that newer write
//! said: every write takes a generation number, and a refresh result only replaces entries
//! older than the refresh's start.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pss_proto::v1::PodReport;
use tokio_util::sync::CancellationToken;

use crate::metrics::{pod_usage, PodCpuTracker};
use crate::podman::ContainerState;
use crate::runtime::Runtime;

/// Default bound on one refresh (list + inspect every pod + stats) before the runtime counts
/// as unresponsive.
pub const DEFAULT_RUNTIME_DEADLINE: Duration = Duration::from_secs(5);

/// Whether the container runtime answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeHealth {
    /// The last refresh finished within the deadline.
    Responsive,
    /// It did not (or failed): since when (unix ms) and why.
    Unresponsive { since_ms: i64, reason: String },
}

impl RuntimeHealth {
    pub fn is_responsive(&self) -> bool {
        matches!(self, RuntimeHealth::Responsive)
    }
}

/// One pod's last known report and the generation of the write that set it.
#[derive(Debug, Clone)]
struct Entry {
    report: PodReport,
    generation: u64,
}

#[derive(Debug)]
struct Inner {
    pods: BTreeMap<String, Entry>,
    /// Generation of the newest write.
    generation: u64,
    health: RuntimeHealth,
    /// Pods removed (StopPod) after this generation: a refresh that started earlier must not
    /// bring them back.
    removed: BTreeMap<String, u64>,
    /// When the last refresh was installed (`None`: never).
    refreshed_at: Option<std::time::Instant>,
}

/// The node's last known state, shared by the refresher, the pushers and the heartbeat.
#[derive(Debug)]
pub struct NodeSnapshot {
    inner: Mutex<Inner>,
}

impl Default for NodeSnapshot {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                pods: BTreeMap::new(),
                generation: 0,
                health: RuntimeHealth::Responsive,
                removed: BTreeMap::new(),
                refreshed_at: None,
            }),
        }
    }
}

impl NodeSnapshot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("snapshot lock")
    }

    /// Every pod's last known report.
    pub fn pods(&self) -> Vec<PodReport> {
        self.lock()
            .pods
            .values()
            .map(|e| e.report.clone())
            .collect()
    }

    pub fn health(&self) -> RuntimeHealth {
        self.lock().health.clone()
    }

    /// The health a heartbeat reports at `now`: [`NodeSnapshot::health`], except that a
    /// snapshot not refreshed for longer than `max_age` counts as unresponsive too (the
    /// refresher itself is stuck or gone), since the moment it became too old.
    pub fn health_at(&self, now: std::time::Instant, max_age: Duration) -> RuntimeHealth {
        let inner = self.lock();
        if let (RuntimeHealth::Responsive, Some(at)) = (&inner.health, inner.refreshed_at) {
            let age = now.saturating_duration_since(at);
            if age > max_age {
                let late = age - max_age;
                return RuntimeHealth::Unresponsive {
                    since_ms: unix_ms() - ms(late),
                    reason: format!("no pod list from Podman for {}s", age.as_secs()),
                };
            }
        }
        inner.health.clone()
    }

    /// A newer report of one pod (a status push or RunPod's answer); keeps the usage figures of
    /// the previous report, which only the refresher measures.
    pub fn update(&self, report: PodReport) {
        let mut inner = self.lock();
        inner.generation += 1;
        let generation = inner.generation;
        inner.removed.remove(&report.id);
        let mut report = report;
        if let Some(old) = inner.pods.get(&report.id) {
            report.cpu_percent = old.report.cpu_percent;
            report.memory_bytes = old.report.memory_bytes;
        }
        inner
            .pods
            .insert(report.id.clone(), Entry { report, generation });
    }

    /// The pod is gone (StopPod removed it).
    pub fn remove(&self, id: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        let generation = inner.generation;
        inner.pods.remove(id);
        inner.removed.insert(id.to_string(), generation);
    }

    /// The generation a refresh starting now compares against.
    pub fn begin_refresh(&self) -> u64 {
        self.lock().generation
    }

    /// Installs a refresh that began at generation `started`: its reports replace entries not
    /// written since; pods written since are kept even if the refresh missed them; pods removed
    /// since are not brought back.
    pub fn install(&self, started: u64, reports: Vec<PodReport>) {
        let mut inner = self.lock();
        let mut pods: BTreeMap<String, Entry> = inner
            .pods
            .iter()
            .filter(|(_, e)| e.generation > started)
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect();
        for report in reports {
            if inner.removed.get(&report.id).is_some_and(|&g| g > started) {
                continue;
            }
            pods.entry(report.id.clone()).or_insert(Entry {
                report,
                generation: started,
            });
        }
        inner.pods = pods;
        inner.removed.retain(|_, g| *g > started);
        inner.refreshed_at = Some(std::time::Instant::now());
    }

    /// Marks the runtime unresponsive; true when that is news (the first such call).
    pub fn set_unresponsive(&self, reason: String, now_ms: i64) -> bool {
        let mut inner = self.lock();
        match &mut inner.health {
            RuntimeHealth::Unresponsive { reason: r, .. } => {
                *r = reason;
                false
            }
            health => {
                *health = RuntimeHealth::Unresponsive {
                    since_ms: now_ms,
                    reason,
                };
                true
            }
        }
    }

    /// Marks the runtime responsive; true when it was not.
    pub fn set_responsive(&self) -> bool {
        let mut inner = self.lock();
        let was = inner.health.is_responsive();
        inner.health = RuntimeHealth::Responsive;
        !was
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Every pod's report with its usage since the previous sample.
async fn read_pods(runtime: &Runtime, cpu: &mut PodCpuTracker) -> crate::Result<Vec<PodReport>> {
    let mut reports = runtime.reports().await?;
    // Simulated pods come with their synthetic usage.
    let Some(podman) = runtime.podman() else {
        return Ok(reports);
    };
    let running: Vec<String> = reports
        .iter()
        .flat_map(|r| r.containers.iter())
        .filter(|c| ContainerState::parse(&c.state) == ContainerState::Running)
        .map(|c| c.id.clone())
        .collect();
    // Containers may stop between the list and the stats call: only a runtime that does not
    // answer fails the refresh, other stats errors just leave the usage figures out.
    let stats = match podman.container_stats(&running).await {
        Ok(stats) => stats,
        Err(e) if e.is_unresponsive() => return Err(e.into()),
        Err(e) => {
            tracing::debug!(error = %e, "container stats");
            Vec::new()
        }
    };
    let usage = cpu.update(&stats, std::time::Instant::now());
    for r in &mut reports {
        let u = pod_usage(r.containers.iter().map(|c| c.id.as_str()), &usage);
        r.cpu_percent = u.cpu_percent;
        r.memory_bytes = u.memory_bytes;
    }
    Ok(reports)
}

/// One refresh: reads the pods; marks the runtime unresponsive when that takes longer than
/// `deadline` or fails, and responsive when it succeeds (however late).
pub async fn refresh_once(
    runtime: &Runtime,
    snapshot: &NodeSnapshot,
    cpu: &mut PodCpuTracker,
    deadline: Duration,
    shutdown: &CancellationToken,
) {
    let started = snapshot.begin_refresh();
    let began = std::time::Instant::now();
    let read = read_pods(runtime, cpu);
    tokio::pin!(read);
    let result = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = &mut read => r,
        _ = tokio::time::sleep(deadline) => {
            let reason = format!("Podman did not list this node's pods within {deadline:?}");
            if snapshot.set_unresponsive(reason.clone(), unix_ms() - ms(deadline)) {
                tracing::warn!(%reason, "container runtime unresponsive: heartbeats go on with the last known pods");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = &mut read => r,
            }
        }
    };
    match result {
        Ok(reports) => {
            snapshot.install(started, reports);
            if snapshot.set_responsive() {
                tracing::info!(after = ?began.elapsed(), "container runtime answers again");
            }
        }
        Err(e) => {
            let reason = e.to_string();
            if snapshot.set_unresponsive(reason.clone(), unix_ms()) {
                tracing::warn!(%reason, "container runtime unresponsive: heartbeats go on with the last known pods");
            }
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Refreshes the snapshot every `interval` until `shutdown` (the next refresh starts at most
/// `interval` after the previous one began, and never overlaps it).
pub async fn refresh(
    runtime: Arc<Runtime>,
    interval: Duration,
    deadline: Duration,
    shutdown: CancellationToken,
) {
    let snapshot = runtime.snapshot();
    let mut cpu = PodCpuTracker::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        refresh_once(&runtime, &snapshot, &mut cpu, deadline, &shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, phase: i32) -> PodReport {
        PodReport {
            id: id.into(),
            phase,
            ..Default::default()
        }
    }

    #[test]
    fn a_refresh_does_not_overwrite_newer_writes() {
        let s = NodeSnapshot::default();
        s.install(0, vec![report("a", 3), report("b", 3), report("c", 3)]);
        let started = s.begin_refresh();
        // While the refresh runs: a's container died (pushed), c was stopped, d was started.
        s.update(report("a", 4));
        s.remove("c");
        s.update(report("d", 2));
        // The refresh read the world before those writes.
        s.install(
            started,
            vec![report("a", 3), report("b", 3), report("c", 3)],
        );
        let pods = s.pods();
        let phases: Vec<(&str, i32)> = pods.iter().map(|p| (p.id.as_str(), p.phase)).collect();
        assert_eq!(phases, [("a", 4), ("b", 3), ("d", 2)]);
        // The next refresh is authoritative again.
        let started = s.begin_refresh();
        s.install(started, vec![report("b", 3)]);
        assert_eq!(s.pods().len(), 1);
    }

    #[test]
    fn updates_keep_the_measured_usage() {
        let s = NodeSnapshot::default();
        let mut measured = report("a", 3);
        measured.cpu_percent = 12.0;
        measured.memory_bytes = 7;
        s.install(0, vec![measured]);
        s.update(report("a", 4));
        let a = &s.pods()[0];
        assert_eq!((a.phase, a.cpu_percent, a.memory_bytes), (4, 12.0, 7));
    }

    /// A Podman that accepts connections and answers nothing until `answer` is notified, then
    /// answers every request with an empty JSON list.
    async fn hung_podman(
        socket: &std::path::Path,
        answer: Arc<tokio::sync::Notify>,
    ) -> tokio::task::JoinHandle<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        tokio::spawn(async move {
            let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (answer, answered) = (answer.clone(), answered.clone());
                tokio::spawn(async move {
                    loop {
                        let mut buf = [0u8; 4096];
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if !answered.load(std::sync::atomic::Ordering::SeqCst) {
                            answer.notified().await;
                            answered.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        let reply = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]";
                        if conn.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        })
    }

    #[tokio::test]
    async fn a_refresh_past_its_deadline_marks_the_runtime_unresponsive_until_it_answers() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("podman.sock");
        let answer = Arc::new(tokio::sync::Notify::new());
        let server = hung_podman(&socket, answer.clone()).await;
        let runtime = Arc::new(Runtime::new(
            crate::podman::Podman::new(&socket),
            "n",
            "127.0.0.1",
        ));
        let snapshot = runtime.snapshot();
        snapshot.update(report("known", 3));
        let shutdown = CancellationToken::new();
        let refresh = {
            let (runtime, snapshot, shutdown) =
                (runtime.clone(), snapshot.clone(), shutdown.clone());
            tokio::spawn(async move {
                let mut cpu = PodCpuTracker::default();
                refresh_once(
                    &runtime,
                    &snapshot,
                    &mut cpu,
                    Duration::from_millis(200),
                    &shutdown,
                )
                .await;
            })
        };
        tokio::time::sleep(Duration::from_millis(600)).await;
        match snapshot.health() {
            RuntimeHealth::Unresponsive { reason, since_ms } => {
                assert!(reason.contains("within 200ms"), "{reason}");
                assert!(since_ms > 0);
            }
            h => panic!("expected unresponsive, got {h:?}"),
        }
        // The heartbeat meanwhile still has the last known pods.
        assert_eq!(snapshot.pods().len(), 1);
        // Podman answers the call that was in flight: responsive again, the refresh installed.
        answer.notify_one();
        tokio::time::timeout(Duration::from_secs(5), refresh)
            .await
            .expect("the refresh ends once Podman answers")
            .unwrap();
        assert!(snapshot.health().is_responsive());
        assert!(snapshot.pods().is_empty(), "Podman listed no pods");
        server.abort();
    }

    #[test]
    fn a_snapshot_not_refreshed_for_too_long_counts_as_unresponsive() {
        let s = NodeSnapshot::default();
        let max_age = Duration::from_secs(9);
        let now = std::time::Instant::now();
        // Never refreshed (registration installs the first one): nothing to judge yet.
        assert!(s.health_at(now, max_age).is_responsive());
        s.install(0, Vec::new());
        let now = std::time::Instant::now();
        assert!(s.health_at(now, max_age).is_responsive());
        match s.health_at(now + Duration::from_secs(12), max_age) {
            RuntimeHealth::Unresponsive { reason, .. } => {
                assert!(reason.contains("for 12s"), "{reason}")
            }
            h => panic!("{h:?}"),
        }
        // The refresher's own verdict wins while it has one.
        s.set_unresponsive("slow".into(), 5);
        assert_eq!(
            s.health_at(now + Duration::from_secs(12), max_age),
            RuntimeHealth::Unresponsive {
                since_ms: 5,
                reason: "slow".into()
            }
        );
    }

    #[test]
    fn health_flips_are_reported_once() {
        let s = NodeSnapshot::default();
        assert!(s.health().is_responsive());
        assert!(s.set_unresponsive("slow".into(), 10));
        assert!(!s.set_unresponsive("slower".into(), 20));
        assert_eq!(
            s.health(),
            RuntimeHealth::Unresponsive {
                since_ms: 10,
                reason: "slower".into()
            }
        );
        assert!(s.set_responsive());
        assert!(!s.set_responsive());
    }
}
