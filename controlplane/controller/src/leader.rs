//! Who runs the control loops (issue 15): one leader among the controllers sharing an etcd,
//! elected through an etcd lease; with SQLite the one controller always leads.
//!
//! ## Election
//! `--leader-ttl` is the bound on a failover: the lease is granted for one second less (etcd
//! expires leases on a 500 ms tick and a follower looks every 200 ms, so a dead leader is
//! replaced within the flag's value). Each controller grants itself such a lease and campaigns
//! with one transaction:
//! "if `<prefix>leader` does not exist, create it with my lease, else read it". The winner's
//! term is the key's `create_revision`, which grows with every election. The leader keeps its
//! lease alive every TTL/3; the others read the key every [`OBSERVE_EVERY`] and campaign again
//! once it is gone (the leader's lease expired or it resigned on shutdown).
//!
//! ## Never two leaders acting
//! A leader believes it leads only until `deadline`: the instant its last successful
//! keep-alive was *sent* plus the TTL etcd answered, minus [`SAFETY_MARGIN`]. etcd cannot
//! expire the lease before that instant, so no one else can have won before it. Past it (a
//! pause, SIGSTOP, a partition, a slow keep-alive) [`Leadership::may_act`] is false at once,
//! before any loop or task notices: agent commands are gated on it. Independently, every
//! store write of a leader is fenced on its term ([`pss_store::etcd::Fence`]), so a write
//! racing the deadline is refused by etcd itself. On losing, the term's token is cancelled
//! (the loops stop), and the controller campaigns again as a follower.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pss_etcd::pb;
use pss_store::etcd::Fence;
use pss_store::EtcdStore;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often a follower looks at the leader key (a new leader acts at most this long after
/// the old lease expired).
pub const OBSERVE_EVERY: Duration = Duration::from_millis(200);
/// Subtracted from the lease's end: clocks of etcd and of this host advance at slightly
/// different rates, and a step must never be taken on a lease that may have expired.
pub const SAFETY_MARGIN: Duration = Duration::from_millis(500);
/// The lease granted for a `--leader-ttl` of `failover`: one second less (at least one second),
/// the time etcd's expiry tick and a follower's look take on top of the lease.
pub fn lease_ttl(failover: Duration) -> Duration {
    Duration::from_secs(failover.as_secs().saturating_sub(1).max(1))
}

/// Default `--leader-ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// The controller's view of its leadership.
#[derive(Clone)]
pub(crate) struct Leadership {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None`: the only controller (SQLite), always leading.
    election: Option<Mutex<Term>>,
    /// `true` while leading (loops start and stop on its changes).
    leading: watch::Sender<bool>,
    /// This controller's identity in the leader key (its address).
    me: String,
    /// `true` while the leader's loops run (the supervisor says; a term ends after they stop).
    running: watch::Sender<bool>,
}

/// The current term as this controller sees it.
struct Term {
    /// Until when acting is safe (`None`: not leading).
    deadline: Option<Instant>,
    /// The leader's term number (the leader key's `create_revision`), whoever leads.
    number: i64,
    /// Who leads, as the key says.
    leader: String,
}

impl Leadership {
    /// Always leading: the only controller.
    pub fn sole() -> Leadership {
        let (leading, _) = watch::channel(true);
        Leadership {
            inner: Arc::new(Inner {
                election: None,
                leading,
                me: String::new(),
                running: watch::channel(false).0,
            }),
        }
    }

    /// Leading only when elected (run [`Leadership::campaign`]).
    pub fn elected(me: String) -> Leadership {
        let (leading, _) = watch::channel(false);
        Leadership {
            inner: Arc::new(Inner {
                election: Some(Mutex::new(Term {
                    deadline: None,
                    number: 0,
                    leader: String::new(),
                })),
                leading,
                me,
                running: watch::channel(false).0,
            }),
        }
    }

    /// Whether this controller may act now (send commands, run a pass): it leads and its
    /// lease certainly has not expired.
    pub fn may_act(&self) -> bool {
        match &self.inner.election {
            None => true,
            Some(term) => term
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .deadline
                .is_some_and(|d| Instant::now() < d),
        }
    }

    /// Changes of "leading".
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.leading.subscribe()
    }

    /// Who leads and the term number, as last seen (empty, 0: unknown; SQLite: this one).
    pub fn leader(&self) -> (String, i64) {
        match &self.inner.election {
            None => (self.inner.me.clone(), 0),
            Some(term) => {
                let t = term.lock().unwrap_or_else(|p| p.into_inner());
                (t.leader.clone(), t.number)
            }
        }
    }

    /// Whether leadership is elected (several controllers on etcd).
    pub fn is_elected(&self) -> bool {
        self.inner.election.is_some()
    }

    /// The supervisor says whether the leader's loops run.
    pub fn set_running(&self, running: bool) {
        self.inner.running.send_replace(running);
    }

    fn set(&self, f: impl FnOnce(&mut Term)) {
        if let Some(term) = &self.inner.election {
            f(&mut term.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    fn set_leading(&self, leading: bool) {
        self.inner.leading.send_if_modified(|l| {
            let changed = *l != leading;
            *l = leading;
            changed
        });
    }

    /// Campaigns, leads and campaigns again until `shutdown`; resigns (revokes the lease) on
    /// shutdown so the next leader need not wait for the TTL.
    pub async fn campaign(
        self,
        store: Arc<EtcdStore>,
        failover: Duration,
        shutdown: CancellationToken,
    ) {
        let ttl = lease_ttl(failover);
        let etcd = store.etcd().clone();
        let key = store.key("leader");
        let ttl_secs = ttl.as_secs().max(1) as i64;
        let mut lease: Option<i64> = None;
        // When the request that last refreshed the lease was sent: the lease lasts at least
        // the TTL from then.
        let mut fresh = Instant::now();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            // A fresh lease for each campaign: a lost one may be gone.
            let id = match lease {
                Some(id) => id,
                None => {
                    fresh = Instant::now();
                    match etcd.grant(ttl_secs).await {
                        Ok(id) => {
                            lease = Some(id);
                            id
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "leader election: cannot grant a lease");
                            pause(&shutdown, OBSERVE_EVERY * 5).await;
                            continue;
                        }
                    }
                }
            };
            match try_acquire(&etcd, &key, id, &self.inner.me).await {
                Ok(Acquired::Won { term }) => {
                    let lost = self.lead(&store, id, term, fresh, ttl, &shutdown).await;
                    if lost {
                        lease = None;
                    }
                }
                Ok(Acquired::Held { leader, term }) => {
                    self.set(|t| {
                        t.leader = leader;
                        t.number = term;
                    });
                    // Watch the key with plain reads (a campaign is a write through etcd's
                    // log) until it is gone; keep our own lease alive meanwhile, every third of
                    // its TTL, so that the next campaign can use it.
                    loop {
                        pause(&shutdown, OBSERVE_EVERY).await;
                        if shutdown.is_cancelled() {
                            break;
                        }
                        if fresh.elapsed() >= ttl / 3 {
                            let sent = Instant::now();
                            match etcd.keep_alive(id, ttl / 3).await {
                                Ok(left) if left > 0 => fresh = sent,
                                Ok(_) => {
                                    lease = None;
                                    break;
                                }
                                Err(_) => {}
                            }
                        }
                        match etcd.get(&key).await {
                            Ok((Some(_), _)) => {}
                            // Gone (or etcd unreachable: the campaign says which).
                            _ => break,
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: campaign failed");
                    pause(&shutdown, OBSERVE_EVERY * 5).await;
                }
            }
        }
        if let Some(id) = lease {
            // Resign: the key goes with the lease, and a follower takes over at once.
            let _ = tokio::time::timeout(Duration::from_secs(1), etcd.revoke(id)).await;
        }
    }

    /// Leads term `term` on lease `id` until the lease is lost or shutdown; returns whether the
    /// lease was lost.
    async fn lead(
        &self,
        store: &EtcdStore,
        id: i64,
        term: i64,
        sent: Instant,
        ttl: Duration,
        shutdown: &CancellationToken,
    ) -> bool {
        let etcd = store.etcd().clone();
        store.set_fence(Some(Fence {
            key: store.key("leader"),
            create_revision: term,
        }));
        let me = self.inner.me.clone();
        self.set(|t| {
            t.deadline = Some(sent + ttl.saturating_sub(SAFETY_MARGIN));
            t.number = term;
            t.leader = me.clone();
        });
        tracing::info!(term, "leader election: this controller leads");
        self.set_leading(true);
        let lost = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break false,
                _ = tokio::time::sleep(ttl / 3) => {}
            }
            let sent = Instant::now();
            let deadline_passed = !self.may_act();
            if deadline_passed {
                // Paused past the deadline (SIGSTOP, a stall): the lease may be gone; never
                // act on it again.
                tracing::warn!(
                    term,
                    "leader election: the lease deadline passed; stepping down"
                );
                break true;
            }
            match etcd.keep_alive(id, ttl / 3).await {
                Ok(left) if left > 0 => {
                    let left = Duration::from_secs(left as u64);
                    self.set(|t| {
                        t.deadline = Some(sent + left.saturating_sub(SAFETY_MARGIN));
                    });
                }
                Ok(_) => {
                    tracing::warn!(term, "leader election: the lease expired; stepping down");
                    break true;
                }
                Err(e) => {
                    // Keep trying until the deadline passes (then the check above ends it).
                    tracing::warn!(term, error = %e, "leader election: keep-alive failed");
                }
            }
        };
        self.set(|t| t.deadline = None);
        self.set_leading(false);
        // In-flight writes of the ended term stay fenced on it (refused), until the loops have
        // stopped; the caller campaigns again, and a follower writes unfenced.
        let mut running = self.inner.running.subscribe();
        let stopped = running.wait_for(|r| !*r);
        if tokio::time::timeout(Duration::from_secs(5), stopped)
            .await
            .is_err()
        {
            tracing::warn!(term, "leader election: the loops did not stop within 5 s");
        }
        store.set_fence(None);
        if lost {
            tracing::warn!(term, "leader election: no longer leading");
        }
        lost
    }
}

async fn pause(shutdown: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

enum Acquired {
    Won { term: i64 },
    Held { leader: String, term: i64 },
}

/// One campaign transaction: create the key with our lease if absent, else read it.
async fn try_acquire(
    etcd: &pss_etcd::Etcd,
    key: &[u8],
    lease: i64,
    me: &str,
) -> pss_etcd::Result<Acquired> {
    use pb::{compare, request_op, response_op};
    let resp = etcd
        .txn(pb::TxnRequest {
            compare: vec![pb::Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Create as i32,
                key: key.to_vec(),
                target_union: Some(compare::TargetUnion::CreateRevision(0)),
                ..Default::default()
            }],
            success: vec![pb::RequestOp {
                request: Some(request_op::Request::RequestPut(pb::PutRequest {
                    key: key.to_vec(),
                    value: me.as_bytes().to_vec(),
                    lease,
                    ..Default::default()
                })),
            }],
            failure: vec![pb::RequestOp {
                request: Some(request_op::Request::RequestRange(pb::RangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                })),
            }],
        })
        .await?;
    if resp.succeeded {
        return Ok(Acquired::Won {
            term: resp.header.map_or(0, |h| h.revision),
        });
    }
    let kv = resp.responses.into_iter().find_map(|r| match r.response {
        Some(response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next(),
        _ => None,
    });
    Ok(match kv {
        Some(kv) => Acquired::Held {
            leader: String::from_utf8_lossy(&kv.value).into_owned(),
            term: kv.create_revision,
        },
        // Gone between compare and read: campaign again at once.
        None => Acquired::Held {
            leader: String::new(),
            term: 0,
        },
    })
}
