//! The watch hub behind `Operator/Watch`: one change sequence for every kind, the way an
//! informer expects it (a list at a revision, then each change in order, resumable).
//!
//! The store calls back after every committed write; the hub then renders the objects as
//! clients see them ([`crate::views`]), compares them with what it last saw, and numbers each
//! difference (ADDED, MODIFIED, DELETED) with the next revision. Figures that move on every
//! heartbeat (CPU and memory use, heartbeat times) are left out of the comparison, so a quiet
//! cluster is quiet on the watch. Changes are broadcast to the watchers and the newest
//! [`KEPT_CHANGES`] are kept so a client can resume; a resume from an older revision is refused
//! and the client lists again, as Kubernetes answers 410 Gone.
//!
//! Bounded throughout: the change log, the broadcast buffer (a watcher that falls that far
//! behind is ended, told where to resume) and the number of watchers.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use pss_core::model::Selector;
use pss_proto::v1 as pb;
use pss_proto::v1::watch_event::{Object, Type};
use tokio::sync::{broadcast, Notify, OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::{views, Shared};

/// Changes kept for resuming watchers.
pub(crate) const KEPT_CHANGES: usize = 10_000;
/// Changes a watcher may lag behind before it is ended.
const BROADCAST_BUFFER: usize = 4_096;
/// Watch streams open at once.
pub(crate) const MAX_WATCHERS: usize = 4_096;
/// A resync without a store callback (a safety net; changes normally arrive at once).
const RESYNC: Duration = Duration::from_secs(5);
/// The shortest time between two renderings: under a stream of writes the hub renders at
/// most this often (the changes in between are merged).
const MIN_RENDER_INTERVAL: Duration = Duration::from_millis(20);

/// The kinds a watch follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Workloads,
    Services,
    Nodes,
    Pods,
    Autoscalers,
}

impl Kind {
    pub(crate) fn parse(s: &str) -> Option<Kind> {
        Some(match s.to_ascii_lowercase().as_str() {
            "workloads" | "workload" | "wl" => Kind::Workloads,
            "services" | "service" | "svc" => Kind::Services,
            "nodes" | "node" | "no" => Kind::Nodes,
            "pods" | "pod" | "po" => Kind::Pods,
            "autoscalers" | "autoscaler" | "hpa" | "autoscalepolicy" | "autoscalepolicies" => {
                Kind::Autoscalers
            }
            _ => return None,
        })
    }

    fn of(object: &Object) -> Kind {
        match object {
            Object::Workload(_) => Kind::Workloads,
            Object::Service(_) => Kind::Services,
            Object::Node(_) => Kind::Nodes,
            Object::Pod(_) => Kind::Pods,
            Object::Autoscaler(_) => Kind::Autoscalers,
        }
    }
}

fn name(object: &Object) -> &str {
    match object {
        Object::Workload(w) => &w.name,
        Object::Service(s) => &s.name,
        Object::Node(n) => &n.name,
        Object::Pod(p) => &p.id,
        Object::Autoscaler(a) => &a.name,
    }
}

fn labels(object: &Object) -> Option<&std::collections::HashMap<String, String>> {
    match object {
        Object::Workload(w) => Some(&w.labels),
        Object::Service(s) => Some(&s.labels),
        Object::Node(n) => Some(&n.labels),
        Object::Pod(p) => Some(&p.labels),
        Object::Autoscaler(_) => None,
    }
}

/// The object without the figures that move on every heartbeat: what a change is judged on.
fn stable(object: &Object) -> Object {
    let mut o = object.clone();
    match &mut o {
        Object::Pod(p) => {
            p.cpu_percent = 0.0;
            p.memory_bytes = 0;
            p.updated_at_ms = 0;
        }
        Object::Node(n) => {
            n.cpu_usage_percent = 0.0;
            n.memory_used_bytes = 0;
            n.last_heartbeat_ms = 0;
        }
        Object::Autoscaler(a) => {
            a.current_cpu_percent = 0.0;
            a.current_memory_percent = 0.0;
        }
        Object::Workload(_) | Object::Service(_) => {}
    }
    o
}

/// One numbered change.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub revision: u64,
    pub kind: Kind,
    pub typ: Type,
    pub object: Object,
}

impl Change {
    fn event(&self) -> pb::WatchEvent {
        pb::WatchEvent {
            r#type: self.typ as i32,
            revision: self.revision,
            object: Some(self.object.clone()),
        }
    }
}

#[derive(Default)]
struct State {
    revision: u64,
    /// What clients were last shown, per kind and name.
    seen: BTreeMap<(Kind, String), Object>,
    log: VecDeque<Arc<Change>>,
}

pub(crate) struct WatchHub {
    state: Mutex<State>,
    tx: broadcast::Sender<Arc<Change>>,
    wake: Notify,
    watchers: Arc<Semaphore>,
    /// Written to since the last rendering. While nobody watches the hub does not render at
    /// all (a cluster without watchers pays nothing); the next rendering records the net
    /// changes, which is all an informer needs.
    dirty: std::sync::atomic::AtomicBool,
}

impl WatchHub {
    pub(crate) fn new() -> Self {
        WatchHub {
            state: Mutex::new(State::default()),
            tx: broadcast::channel(BROADCAST_BUFFER).0,
            wake: Notify::new(),
            watchers: Arc::new(Semaphore::new(MAX_WATCHERS)),
            dirty: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Something was written: look again soon.
    pub(crate) fn poke(&self) {
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
        self.wake.notify_one();
    }

    fn watched(&self) -> bool {
        self.watchers.available_permits() < MAX_WATCHERS
    }

    /// Compares `objects` (everything, every kind) with what was last seen and records the
    /// differences; returns how many there were.
    pub(crate) fn apply(&self, objects: Vec<Object>) -> usize {
        let mut state = self.state.lock().expect("watch hub poisoned");
        let mut now: BTreeMap<(Kind, String), Object> = BTreeMap::new();
        for o in objects {
            now.insert((Kind::of(&o), name(&o).to_string()), o);
        }
        let mut changes = Vec::new();
        for (key, object) in &now {
            match state.seen.get(key) {
                None => changes.push((key.0, Type::Added, object.clone())),
                Some(old) if stable(old) != stable(object) => {
                    changes.push((key.0, Type::Modified, object.clone()))
                }
                Some(_) => {}
            }
        }
        for (key, object) in &state.seen {
            if !now.contains_key(key) {
                changes.push((key.0, Type::Deleted, object.clone()));
            }
        }
        let n = changes.len();
        for (kind, typ, object) in changes {
            state.revision += 1;
            let change = Arc::new(Change {
                revision: state.revision,
                kind,
                typ,
                object,
            });
            if state.log.len() == KEPT_CHANGES {
                state.log.pop_front();
            }
            state.log.push_back(change.clone());
            // No receiver is fine: nobody watches.
            let _ = self.tx.send(change);
        }
        // Keep the newest rendering (usage figures included) for the next initial list.
        state.seen = now;
        n
    }

    /// Opens a watch of `kind` for objects matching `selector`: the initial events (a list
    /// and SYNCED, or the kept changes after `resume_from`), then the live changes.
    pub(crate) fn watch(
        &self,
        kind: Kind,
        selector: Selector,
        resume_from: u64,
    ) -> Result<WatchStream, Status> {
        let permit = self.watchers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{MAX_WATCHERS} watches are open, the most this controller serves"
            ))
        })?;
        let wanted = move |c: &Change| {
            c.kind == kind && labels(&c.object).is_none_or(|l| views::matches(&selector, l))
        };
        // Subscribe before reading the state, so that no change falls between the two.
        let rx = self.tx.subscribe();
        let state = self.state.lock().expect("watch hub poisoned");
        let mut initial: Vec<pb::WatchEvent> = Vec::new();
        if resume_from == 0 {
            for ((k, _), object) in &state.seen {
                let c = Change {
                    revision: state.revision,
                    kind: *k,
                    typ: Type::Added,
                    object: object.clone(),
                };
                if wanted(&c) {
                    initial.push(c.event());
                }
            }
        } else {
            let oldest = state.log.front().map_or(state.revision + 1, |c| c.revision);
            if resume_from > state.revision || resume_from + 1 < oldest {
                return Err(Status::failed_precondition(format!(
                    "revision {resume_from} is not kept (kept: {} to {}): watch again from 0",
                    oldest.saturating_sub(1),
                    state.revision
                )));
            }
            initial.extend(
                state
                    .log
                    .iter()
                    .filter(|c| c.revision > resume_from && wanted(c))
                    .map(|c| c.event()),
            );
        }
        initial.push(pb::WatchEvent {
            r#type: Type::Synced as i32,
            revision: state.revision,
            object: None,
        });
        let after = state.revision;
        drop(state);
        Ok(Box::pin(watch_stream(
            initial,
            rx,
            after,
            Box::new(wanted),
            permit,
        )))
    }
}

pub(crate) type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

struct Watcher {
    initial: std::vec::IntoIter<pb::WatchEvent>,
    rx: broadcast::Receiver<Arc<Change>>,
    /// Changes up to here were in the initial events.
    after: u64,
    wanted: Box<dyn Fn(&Change) -> bool + Send + Sync>,
    _permit: OwnedSemaphorePermit,
    done: bool,
}

fn watch_stream(
    initial: Vec<pb::WatchEvent>,
    rx: broadcast::Receiver<Arc<Change>>,
    after: u64,
    wanted: Box<dyn Fn(&Change) -> bool + Send + Sync>,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<pb::WatchEvent, Status>> + Send {
    let w = Watcher {
        initial: initial.into_iter(),
        rx,
        after,
        wanted,
        _permit: permit,
        done: false,
    };
    futures::stream::unfold(w, |mut w| async move {
        if w.done {
            return None;
        }
        if let Some(e) = w.initial.next() {
            return Some((Ok(e), w));
        }
        loop {
            match w.rx.recv().await {
                Ok(c) if c.revision <= w.after || !(w.wanted)(&c) => continue,
                Ok(c) => {
                    w.after = c.revision;
                    return Some((Ok(c.event()), w));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    w.done = true;
                    let status = Status::aborted(format!(
                        "this watch fell more than {BROADCAST_BUFFER} changes behind: watch again with resume_from {}",
                        w.after
                    ));
                    return Some((Err(status), w));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// Renders every object as clients see them.
fn render(shared: &Shared) -> Result<Vec<Object>, pss_store::Error> {
    let mut out = Vec::new();
    out.extend(views::workloads(shared)?.into_iter().map(Object::Workload));
    out.extend(views::services(shared)?.into_iter().map(Object::Service));
    out.extend(views::nodes(shared)?.into_iter().map(Object::Node));
    out.extend(views::pods(shared)?.into_iter().map(Object::Pod));
    out.extend(
        views::autoscalers(shared)?
            .into_iter()
            .map(Object::Autoscaler),
    );
    Ok(out)
}

/// Renders the objects (on a blocking thread) and records the differences, if anything was
/// written since the last time.
pub(crate) async fn refresh(shared: &Arc<Shared>) {
    if !shared
        .watch
        .dirty
        .swap(false, std::sync::atomic::Ordering::AcqRel)
    {
        return;
    }
    let s = shared.clone();
    match tokio::task::spawn_blocking(move || render(&s)).await {
        Ok(Ok(objects)) => {
            shared.watch.apply(objects);
        }
        Ok(Err(e)) => {
            shared.watch.poke();
            tracing::warn!(error = %e, "watch hub could not read the store");
        }
        Err(e) => {
            shared.watch.poke();
            tracing::warn!(error = %e, "watch hub render failed");
        }
    }
}

/// Follows the store until shutdown: after each write (and every [`RESYNC`]) while someone
/// watches, renders and records the differences, at most every [`MIN_RENDER_INTERVAL`].
pub(crate) async fn run(shared: Arc<Shared>) {
    loop {
        if shared.watch.watched() {
            refresh(&shared).await;
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.watch.wake.notified() => {}
            _ = tokio::time::sleep(RESYNC) => {
                shared.watch.dirty.store(true, std::sync::atomic::Ordering::Release);
            }
        }
        tokio::time::sleep(MIN_RENDER_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn pod(id: &str, phase: pb::PodPhase, cpu: f64) -> Object {
        Object::Pod(pb::Pod {
            id: id.into(),
            phase: phase as i32,
            cpu_percent: cpu,
            ..Default::default()
        })
    }

    fn types(events: &[pb::WatchEvent]) -> Vec<(i32, u64)> {
        events.iter().map(|e| (e.r#type, e.revision)).collect()
    }

    #[tokio::test]
    async fn lists_then_changes_in_order_and_ignores_usage_figures() {
        let hub = WatchHub::new();
        assert_eq!(hub.apply(vec![pod("a", pb::PodPhase::Starting, 0.0)]), 1);
        let mut w = hub.watch(Kind::Pods, Selector::default(), 0).unwrap();
        let first = w.next().await.unwrap().unwrap();
        assert_eq!(first.r#type, Type::Added as i32);
        let synced = w.next().await.unwrap().unwrap();
        assert_eq!((synced.r#type, synced.revision), (Type::Synced as i32, 1));
        // Only the CPU figure moved: no change.
        assert_eq!(hub.apply(vec![pod("a", pb::PodPhase::Starting, 50.0)]), 0);
        assert_eq!(
            hub.apply(vec![
                pod("a", pb::PodPhase::Running, 50.0),
                pod("b", pb::PodPhase::Pending, 0.0)
            ]),
            2
        );
        assert_eq!(hub.apply(vec![pod("b", pb::PodPhase::Pending, 0.0)]), 1);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(w.next().await.unwrap().unwrap());
        }
        assert_eq!(
            types(&got),
            vec![
                (Type::Modified as i32, 2),
                (Type::Added as i32, 3),
                (Type::Deleted as i32, 4)
            ]
        );
        // Resuming after revision 2 replays 3 and 4.
        let mut r = hub.watch(Kind::Pods, Selector::default(), 2).unwrap();
        let mut replay = Vec::new();
        for _ in 0..3 {
            replay.push(r.next().await.unwrap().unwrap());
        }
        assert_eq!(
            types(&replay),
            vec![
                (Type::Added as i32, 3),
                (Type::Deleted as i32, 4),
                (Type::Synced as i32, 4)
            ]
        );
        // Other kinds see nothing of it; a revision from the future is refused.
        let mut n = hub.watch(Kind::Nodes, Selector::default(), 0).unwrap();
        assert_eq!(n.next().await.unwrap().unwrap().r#type, Type::Synced as i32);
        assert!(hub.watch(Kind::Pods, Selector::default(), 99).is_err());
    }

    #[tokio::test]
    async fn old_revisions_are_refused_and_laggards_are_told_where_to_resume() {
        let hub = WatchHub::new();
        let mut w = hub.watch(Kind::Pods, Selector::default(), 0).unwrap();
        assert_eq!(w.next().await.unwrap().unwrap().r#type, Type::Synced as i32);
        for i in 0..(KEPT_CHANGES + 10) {
            hub.apply(vec![pod(&format!("p{i}"), pb::PodPhase::Running, 0.0)]);
        }
        let Err(e) = hub.watch(Kind::Pods, Selector::default(), 1) else {
            panic!("revision 1 is no longer kept");
        };
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        // The first watcher fell behind the broadcast buffer: it ends with where to resume.
        let mut last = None;
        while let Some(item) = w.next().await {
            last = Some(item);
        }
        let e = last.unwrap().unwrap_err();
        assert_eq!(e.code(), tonic::Code::Aborted);
        assert!(e.message().contains("resume_from"), "{}", e.message());
    }
}
