//! The autoscaler's recommendation as a pure function, after Kubernetes' HPA:
//! `ceil(current x metric / target)` per metric, the larger wins, 10 % tolerance, clamped to
//! [min, max], a cooldown between actions and a stabilization window for scale-down.
//! The async loop that feeds it metrics and applies its decisions lives in `controller/`.
//!
//! Per metric (CPU, memory; utilisation in percent of the pods' requests, see
//! [`pod_utilisation`]), as the HPA's replica calculator does it:
//! - the ratio is the mean utilisation of the ready pods that have a sample, over the target;
//!   within the tolerance (`|ratio - 1| <= 0.1`) nothing changes;
//! - ready pods without a sample count as using 0 % when scaling up and 100 % of the target
//!   when scaling down; pods that are not ready count as using 0 % when scaling up and are left
//!   out when scaling down; when these assumptions would reverse the direction, nothing changes;
//! - the recommendation is `ceil(ratio x pods counted)`.
//!
//! The larger recommendation of the two metrics wins and is clamped to [min, max]. A workload
//! whose replicas are outside [min, max] is brought to the bound at once, whatever the metrics
//! and the cooldown (the bounds are the user's word, like a manual scale). Otherwise:
//! - scale-down uses the highest recommendation over the stabilization window (default 300 s),
//!   so a short dip does not remove pods that the next spike needs;
//! - no change happens within `cooldown` (default 60 s, the seed's) of the previous one.
//!
//! Time is an argument and the history lives in [`AutoscalerState`], which the caller keeps
//! between evaluations: [`recommend`] returns the updated state with its decision.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::model::{AutoScalePolicy, PodPhase, PodRecord, Resources};

/// No change while `|ratio - 1|` is at most this.
pub const DEFAULT_TOLERANCE: f64 = 0.1;
/// Least time between two scaling actions (the seed's cooldown).
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(60);
/// Scale-down uses the highest recommendation over this window.
pub const DEFAULT_STABILIZATION_WINDOW: Duration = Duration::from_secs(300);

/// Float noise allowance when rounding a replica count up: `ceil(3.0000000001)` must stay 3.
const CEIL_EPSILON: f64 = 1e-9;

/// How one workload is autoscaled.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscalerConfig {
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Target CPU utilisation in percent of requests; `None` = not used.
    pub target_cpu_percent: Option<u32>,
    /// Target memory utilisation in percent of requests; `None` = not used.
    pub target_memory_percent: Option<u32>,
    pub tolerance: f64,
    pub cooldown: Duration,
    pub stabilization_window: Duration,
}

impl AutoscalerConfig {
    /// The policy's bounds and targets with the default tolerance, cooldown and window.
    pub fn from_policy(policy: &AutoScalePolicy) -> Self {
        AutoscalerConfig {
            min_replicas: policy.min_replicas,
            max_replicas: policy.max_replicas,
            target_cpu_percent: policy.cpu_percent.filter(|&p| p > 0),
            target_memory_percent: policy.memory_percent.filter(|&p| p > 0),
            tolerance: DEFAULT_TOLERANCE,
            cooldown: DEFAULT_COOLDOWN,
            stabilization_window: DEFAULT_STABILIZATION_WINDOW,
        }
    }

    fn clamp(&self, replicas: u32) -> u32 {
        replicas
            .max(self.min_replicas)
            .min(self.max_replicas.max(self.min_replicas))
    }
}

/// One pod's latest utilisation sample.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PodMetrics {
    /// Ready (serving); unready pods are treated as the HPA treats them.
    pub ready: bool,
    /// CPU use in percent of the pod's CPU request; `None` = no sample yet.
    pub cpu_percent: Option<f64>,
    /// Memory use in percent of the pod's memory request; `None` = no sample yet.
    pub memory_percent: Option<f64>,
}

/// A pod's utilisation in percent of its requests, from what the agent reports:
/// `cpu_percent_of_core` as `podman stats` shows it (100 = one full core, from successive
/// `CPUNano` deltas) and the memory in use. A resource the pod requests nothing of is measured
/// against the node's capacity instead (the pod's share of the node); `None` when neither is
/// known (both 0).
pub fn pod_utilisation(
    cpu_percent_of_core: f64,
    memory_bytes: u64,
    requests: Resources,
    node_capacity: Resources,
) -> (Option<f64>, Option<f64>) {
    // 100 % of one core is 1000 millicores.
    let cpu_millis = cpu_percent_of_core * 10.0;
    let cpu = percent_of(cpu_millis, requests.cpu_millis, node_capacity.cpu_millis);
    let memory = percent_of(
        memory_bytes as f64,
        requests.memory_bytes,
        node_capacity.memory_bytes,
    );
    (cpu, memory)
}

/// A pod record's [`PodMetrics`]: ready when Running and ready; utilisation from its latest
/// sample via [`pod_utilisation`]. A record with no memory in use has had no sample yet (a
/// running container always uses some memory), so it counts as missing, as the HPA counts a pod
/// without metrics.
pub fn pod_metrics(pod: &PodRecord, requests: Resources, node_capacity: Resources) -> PodMetrics {
    let ready = pod.phase == PodPhase::Running && pod.ready;
    if pod.memory_bytes == 0 {
        return PodMetrics {
            ready,
            cpu_percent: None,
            memory_percent: None,
        };
    }
    let (cpu_percent, memory_percent) =
        pod_utilisation(pod.cpu_percent, pod.memory_bytes, requests, node_capacity);
    PodMetrics {
        ready,
        cpu_percent,
        memory_percent,
    }
}

fn percent_of(used: f64, request: u64, fallback: u64) -> Option<f64> {
    let base = if request > 0 { request } else { fallback };
    (base > 0 && used.is_finite()).then(|| used.max(0.0) * 100.0 / base as f64)
}

/// What the autoscaler remembers between evaluations of one policy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AutoscalerState {
    /// When the autoscaler last changed the replicas (unix ms); 0 = never.
    pub last_scale_at_ms: i64,
    /// Recent recommendations `(time ms, replicas)` inside the stabilization window, kept as a
    /// monotone queue: replicas strictly decrease from front to back, so the front is the
    /// highest recommendation of the window (an older entry no higher than a newer one can
    /// never be the maximum again and is dropped).
    pub recent: VecDeque<(i64, u32)>,
}

impl AutoscalerState {
    /// Adds the recommendation made at `now_ms` and forgets those older than `window`.
    fn record(&mut self, now_ms: i64, replicas: u32, window: Duration) {
        while self.recent.back().is_some_and(|&(_, r)| r <= replicas) {
            self.recent.pop_back();
        }
        self.recent.push_back((now_ms, replicas));
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        while self
            .recent
            .front()
            .is_some_and(|&(t, _)| now_ms.saturating_sub(t) >= window_ms && t != now_ms)
        {
            self.recent.pop_front();
        }
    }

    /// The highest recommendation inside the window.
    fn highest(&self) -> Option<u32> {
        self.recent.front().map(|&(_, r)| r)
    }
}

/// Everything one evaluation needs.
#[derive(Debug, Clone, Copy)]
pub struct AutoscalerInput<'a> {
    pub config: &'a AutoscalerConfig,
    /// The workload's replicas now.
    pub current_replicas: u32,
    /// The workload's pods (Pending, Starting, Running; not those being stopped).
    pub pods: &'a [PodMetrics],
    pub now_ms: i64,
    /// The state returned by the previous evaluation (default the first time).
    pub state: &'a AutoscalerState,
}

/// Why the decision is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleReason {
    /// The replicas were below `min_replicas`.
    BelowMin,
    /// The replicas were above `max_replicas`.
    AboveMax,
    /// A metric is above its target.
    ScaleUp,
    /// The metrics are below their targets and have been for the whole window.
    ScaleDown,
    /// The metrics are within the tolerance of their targets (or already at a bound).
    WithinTolerance,
    /// No pod has a sample for any targeted metric.
    NoMetrics,
    /// A change is due but the previous one was less than the cooldown ago.
    Cooldown,
    /// A scale-down is due but a higher recommendation was made within the window.
    Stabilizing,
}

impl ScaleReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ScaleReason::BelowMin => "below the minimum replicas",
            ScaleReason::AboveMax => "above the maximum replicas",
            ScaleReason::ScaleUp => "utilisation above target",
            ScaleReason::ScaleDown => "utilisation below target",
            ScaleReason::WithinTolerance => "utilisation within tolerance of target",
            ScaleReason::NoMetrics => "no metrics yet",
            ScaleReason::Cooldown => "waiting for the cooldown",
            ScaleReason::Stabilizing => "waiting for the stabilization window",
        }
    }
}

/// The decision of one evaluation, with its numbers (for the event and `get autoscalers`).
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub current_replicas: u32,
    /// What the workload should run now; equal to `current_replicas` when nothing changes.
    pub desired_replicas: u32,
    /// What the metrics alone ask for (clamped), before the window and the cooldown.
    pub recommended_replicas: u32,
    /// Mean CPU utilisation of the ready pods with a sample, in percent of requests.
    pub current_cpu_percent: Option<f64>,
    /// Mean memory utilisation of the ready pods with a sample, in percent of requests.
    pub current_memory_percent: Option<f64>,
    pub target_cpu_percent: Option<u32>,
    pub target_memory_percent: Option<u32>,
    pub reason: ScaleReason,
    /// To store and pass to the next evaluation.
    pub state: AutoscalerState,
}

impl Recommendation {
    /// Whether the workload must be scaled to `desired_replicas`.
    pub fn scales(&self) -> bool {
        self.desired_replicas != self.current_replicas
    }
}

impl fmt::Display for Recommendation {
    /// E.g. `scale 2 -> 4 replicas (utilisation above target): cpu 140.0% / target 70%,
    /// memory 20.0% / target 80%`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scales() {
            write!(
                f,
                "scale {} -> {} replicas",
                self.current_replicas, self.desired_replicas
            )?;
        } else {
            write!(f, "keep {} replicas", self.current_replicas)?;
            if self.recommended_replicas != self.current_replicas {
                write!(f, " (recommended {})", self.recommended_replicas)?;
            }
        }
        write!(f, " ({})", self.reason.as_str())?;
        let mut sep = ':';
        for (name, current, target) in [
            ("cpu", self.current_cpu_percent, self.target_cpu_percent),
            (
                "memory",
                self.current_memory_percent,
                self.target_memory_percent,
            ),
        ] {
            let Some(target) = target else { continue };
            match current {
                Some(c) => write!(f, "{sep} {name} {c:.1}% / target {target}%")?,
                None => write!(f, "{sep} {name} unknown / target {target}%")?,
            }
            sep = ',';
        }
        Ok(())
    }
}

/// One evaluation: the decision and the state to keep for the next one.
pub fn recommend(input: &AutoscalerInput<'_>) -> Recommendation {
    let config = input.config;
    let current = input.current_replicas;
    let cpu = MetricSamples::collect(input.pods, |p| p.cpu_percent);
    let memory = MetricSamples::collect(input.pods, |p| p.memory_percent);
    let per_metric = [
        config
            .target_cpu_percent
            .and_then(|t| cpu.replicas(current, f64::from(t), config.tolerance)),
        config
            .target_memory_percent
            .and_then(|t| memory.replicas(current, f64::from(t), config.tolerance)),
    ];
    let wanted = per_metric.into_iter().flatten().max();
    let recommended = config.clamp(wanted.unwrap_or(current));

    let mut state = input.state.clone();
    state.record(input.now_ms, recommended, config.stabilization_window);
    let (desired, reason) = decide(input, recommended, wanted.is_some(), &state);
    if desired != current {
        state.last_scale_at_ms = input.now_ms;
    }
    Recommendation {
        current_replicas: current,
        desired_replicas: desired,
        recommended_replicas: recommended,
        current_cpu_percent: cpu.ready_mean(),
        current_memory_percent: memory.ready_mean(),
        target_cpu_percent: config.target_cpu_percent,
        target_memory_percent: config.target_memory_percent,
        reason,
        state,
    }
}

/// Applies the bounds, the stabilization window and the cooldown to `recommended`.
fn decide(
    input: &AutoscalerInput<'_>,
    recommended: u32,
    has_metrics: bool,
    state: &AutoscalerState,
) -> (u32, ScaleReason) {
    let config = input.config;
    let current = input.current_replicas;
    if current < config.min_replicas {
        return (config.clamp(current), ScaleReason::BelowMin);
    }
    if current > config.clamp(current) {
        return (config.clamp(current), ScaleReason::AboveMax);
    }
    if !has_metrics {
        return (current, ScaleReason::NoMetrics);
    }
    let (target, reason) = if recommended > current {
        (recommended, ScaleReason::ScaleUp)
    } else if recommended < current {
        let highest = state.highest().unwrap_or(recommended).min(current);
        if highest == current {
            return (current, ScaleReason::Stabilizing);
        }
        (highest, ScaleReason::ScaleDown)
    } else {
        return (current, ScaleReason::WithinTolerance);
    };
    let since_last = input.now_ms.saturating_sub(input.state.last_scale_at_ms);
    let cooldown_ms = i64::try_from(config.cooldown.as_millis()).unwrap_or(i64::MAX);
    if input.state.last_scale_at_ms > 0 && since_last < cooldown_ms {
        return (current, ScaleReason::Cooldown);
    }
    (target, reason)
}

/// One metric's samples, grouped as the HPA groups pods.
#[derive(Debug, Default)]
struct MetricSamples {
    /// Utilisation of the ready pods that have a sample.
    ready: Vec<f64>,
    /// Ready pods without a sample.
    missing: usize,
    /// Pods that are not ready (with or without a sample).
    unready: usize,
}

impl MetricSamples {
    fn collect(pods: &[PodMetrics], metric: impl Fn(&PodMetrics) -> Option<f64>) -> Self {
        let mut samples = MetricSamples::default();
        for pod in pods {
            match (pod.ready, metric(pod).filter(|v| v.is_finite())) {
                (false, _) => samples.unready += 1,
                (true, None) => samples.missing += 1,
                (true, Some(v)) => samples.ready.push(v.max(0.0)),
            }
        }
        samples
    }

    fn ready_mean(&self) -> Option<f64> {
        (!self.ready.is_empty()).then(|| self.ready.iter().sum::<f64>() / self.ready.len() as f64)
    }

    /// The HPA replica calculation for this metric, or `None` without a single sample.
    fn replicas(&self, current: u32, target: f64, tolerance: f64) -> Option<u32> {
        let mean = self.ready_mean()?;
        let ratio = mean / target;
        let scale_up_with_unready = self.unready > 0 && ratio > 1.0;
        if !scale_up_with_unready && self.missing == 0 {
            if (ratio - 1.0).abs() <= tolerance {
                return Some(current);
            }
            return Some(ceil_replicas(ratio * self.ready.len() as f64));
        }
        // Fill in the pods without a usable sample, conservatively for the direction.
        let mut sum: f64 = self.ready.iter().sum();
        let mut counted = self.ready.len();
        if self.missing > 0 && ratio < 1.0 {
            sum += self.missing as f64 * target;
            counted += self.missing;
        } else if self.missing > 0 && ratio > 1.0 {
            counted += self.missing;
        }
        if scale_up_with_unready {
            counted += self.unready;
        }
        let new_ratio = sum / counted as f64 / target;
        let reverses = (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0);
        if (new_ratio - 1.0).abs() <= tolerance || reverses {
            return Some(current);
        }
        let replicas = ceil_replicas(new_ratio * counted as f64);
        if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
            return Some(current);
        }
        Some(replicas)
    }
}

fn ceil_replicas(x: f64) -> u32 {
    let r = (x - CEIL_EPSILON).ceil();
    if r <= 0.0 {
        0
    } else if r >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        r as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(min: u32, max: u32) -> AutoscalerConfig {
        AutoscalerConfig {
            min_replicas: min,
            max_replicas: max,
            target_cpu_percent: Some(50),
            target_memory_percent: None,
            tolerance: DEFAULT_TOLERANCE,
            cooldown: DEFAULT_COOLDOWN,
            stabilization_window: DEFAULT_STABILIZATION_WINDOW,
        }
    }

    fn ready(cpu: f64) -> PodMetrics {
        PodMetrics {
            ready: true,
            cpu_percent: Some(cpu),
            memory_percent: None,
        }
    }

    fn eval(
        config: &AutoscalerConfig,
        current: u32,
        pods: &[PodMetrics],
        now_ms: i64,
        state: &AutoscalerState,
    ) -> Recommendation {
        recommend(&AutoscalerInput {
            config,
            current_replicas: current,
            pods,
            now_ms,
            state,
        })
    }

    #[test]
    fn scales_up_by_the_ratio_to_target() {
        let r = eval(
            &config(1, 10),
            2,
            &[ready(100.0), ready(100.0)],
            1_000,
            &AutoscalerState::default(),
        );
        assert_eq!((r.desired_replicas, r.reason), (4, ScaleReason::ScaleUp));
        assert_eq!(r.current_cpu_percent, Some(100.0));
        assert_eq!(r.state.last_scale_at_ms, 1_000);
        assert_eq!(
            r.to_string(),
            "scale 2 -> 4 replicas (utilisation above target): cpu 100.0% / target 50%"
        );
    }

    #[test]
    fn larger_metric_wins_and_max_clamps() {
        let mut c = config(1, 5);
        c.target_memory_percent = Some(50);
        let pods = [PodMetrics {
            ready: true,
            cpu_percent: Some(60.0),
            memory_percent: Some(150.0),
        }; 2];
        let r = eval(&c, 2, &pods, 1, &AutoscalerState::default());
        assert_eq!(r.recommended_replicas, 5, "memory asks for 6, capped at 5");
        assert_eq!(r.desired_replicas, 5);
    }

    #[test]
    fn tolerance_keeps_small_deviations() {
        let r = eval(
            &config(1, 10),
            4,
            &[ready(54.0); 4],
            1,
            &AutoscalerState::default(),
        );
        assert_eq!(
            (r.desired_replicas, r.reason),
            (4, ScaleReason::WithinTolerance)
        );
        let r = eval(
            &config(1, 10),
            4,
            &[ready(56.0); 4],
            1,
            &AutoscalerState::default(),
        );
        assert_eq!(r.desired_replicas, 5);
    }

    #[test]
    fn bounds_apply_regardless_of_metrics_and_cooldown() {
        let state = AutoscalerState {
            last_scale_at_ms: 1_000,
            ..Default::default()
        };
        let r = eval(&config(3, 10), 1, &[ready(1.0)], 2_000, &state);
        assert_eq!((r.desired_replicas, r.reason), (3, ScaleReason::BelowMin));
        let r = eval(&config(3, 10), 12, &[], 2_000, &state);
        assert_eq!((r.desired_replicas, r.reason), (10, ScaleReason::AboveMax));
    }

    #[test]
    fn no_metrics_no_change() {
        let r = eval(
            &config(1, 10),
            3,
            &[PodMetrics {
                ready: true,
                ..Default::default()
            }],
            1,
            &AutoscalerState::default(),
        );
        assert_eq!((r.desired_replicas, r.reason), (3, ScaleReason::NoMetrics));
        assert_eq!(
            r.to_string(),
            "keep 3 replicas (no metrics yet): cpu unknown / target 50%"
        );
    }

    #[test]
    fn missing_samples_count_as_zero_up_and_as_target_down() {
        let missing = PodMetrics {
            ready: true,
            ..Default::default()
        };
        // Up: 2 x 100% + 2 x 0% over 4 pods = 50% -> exactly on target: no change.
        let r = eval(
            &config(1, 10),
            4,
            &[ready(100.0), ready(100.0), missing, missing],
            1,
            &AutoscalerState::default(),
        );
        assert_eq!(r.desired_replicas, 4);
        // Up: 2 x 150% + 2 x 0% = 75% -> ceil(1.5 x 4) = 6.
        let r = eval(
            &config(1, 10),
            4,
            &[ready(150.0), ready(150.0), missing, missing],
            1,
            &AutoscalerState::default(),
        );
        assert_eq!(r.desired_replicas, 6);
        // Down: 2 x 10% + 2 x 50% (target) = 30% -> ceil(0.6 x 4) = 3 (not 1 as the samples alone say).
        let r = eval(
            &config(1, 10),
            4,
            &[ready(10.0), ready(10.0), missing, missing],
            1,
            &AutoscalerState::default(),
        );
        assert_eq!(r.desired_replicas, 3);
    }

    #[test]
    fn unready_pods_count_as_zero_when_scaling_up_and_are_ignored_down() {
        let unready = PodMetrics {
            ready: false,
            cpu_percent: Some(500.0),
            memory_percent: None,
        };
        // 2 x 100% + 2 x 0% = 50%: the starting pods are expected to absorb the load.
        let r = eval(
            &config(1, 10),
            4,
            &[ready(100.0), ready(100.0), unready, unready],
            1,
            &AutoscalerState::default(),
        );
        assert_eq!(r.desired_replicas, 4);
        let r = eval(
            &config(1, 10),
            4,
            &[ready(10.0), ready(10.0), unready, unready],
            1,
            &AutoscalerState::default(),
        );
        assert_eq!(r.desired_replicas, 1, "ceil(0.2 x 2 ready pods)");
    }

    #[test]
    fn scale_down_waits_for_the_window_and_uses_its_highest_recommendation() {
        let c = config(1, 10);
        let mut state = AutoscalerState::default();
        let r = eval(&c, 4, &[ready(50.0); 4], 0, &state);
        state = r.state;
        let r = eval(&c, 4, &[ready(30.0); 4], 100_000, &state);
        assert_eq!(
            (r.desired_replicas, r.reason),
            (4, ScaleReason::Stabilizing)
        );
        state = r.state;
        let r = eval(&c, 4, &[ready(5.0); 4], 200_000, &state);
        assert_eq!((r.recommended_replicas, r.desired_replicas), (1, 4));
        state = r.state;
        // At 300 s the 4 of t=0 leaves the window; the 3 of t=100 s is now the highest.
        let r = eval(&c, 4, &[ready(5.0); 4], 300_000, &state);
        assert_eq!((r.desired_replicas, r.reason), (3, ScaleReason::ScaleDown));
        assert_eq!(r.state.recent, VecDeque::from([(100_000, 3), (300_000, 1)]));
    }

    #[test]
    fn cooldown_blocks_a_second_action() {
        let c = config(1, 10);
        let r = eval(
            &c,
            2,
            &[ready(100.0); 2],
            1_000,
            &AutoscalerState::default(),
        );
        assert_eq!(r.desired_replicas, 4);
        let r = eval(&c, 4, &[ready(100.0); 4], 60_999, &r.state);
        assert_eq!((r.desired_replicas, r.reason), (4, ScaleReason::Cooldown));
        let r = eval(&c, 4, &[ready(100.0); 4], 61_000, &r.state);
        assert_eq!(r.desired_replicas, 8);
    }

    #[test]
    fn pod_utilisation_is_relative_to_requests_or_the_node() {
        let node = Resources {
            cpu_millis: 2000,
            memory_bytes: 1000,
        };
        let requests = Resources {
            cpu_millis: 100,
            memory_bytes: 0,
        };
        assert_eq!(
            pod_utilisation(5.0, 250, requests, node),
            (Some(50.0), Some(25.0))
        );
        assert_eq!(
            pod_utilisation(5.0, 250, Resources::default(), Resources::default()),
            (None, None)
        );
        let mut record = PodRecord::new("w-abcde".into(), "w", 1, 0);
        assert_eq!(
            pod_metrics(&record, requests, node),
            PodMetrics::default(),
            "no sample yet, not ready"
        );
        record.phase = PodPhase::Running;
        record.ready = true;
        record.cpu_percent = 20.0;
        record.memory_bytes = 100;
        let m = pod_metrics(&record, requests, node);
        assert_eq!(
            (m.ready, m.cpu_percent, m.memory_percent),
            (true, Some(200.0), Some(10.0))
        );
    }

    fn arb_config() -> impl Strategy<Value = AutoscalerConfig> {
        (
            1u32..5,
            0u32..10,
            prop::option::of(1u32..=100),
            prop::option::of(1u32..=100),
        )
            .prop_map(|(min, extra, cpu, memory)| AutoscalerConfig {
                target_cpu_percent: cpu,
                target_memory_percent: memory,
                ..config(min, min + extra)
            })
    }

    fn arb_pods() -> impl Strategy<Value = Vec<PodMetrics>> {
        prop::collection::vec(
            (
                any::<bool>(),
                prop::option::of(0.0f64..400.0),
                prop::option::of(0.0f64..400.0),
            )
                .prop_map(|(not_ready, cpu, memory)| PodMetrics {
                    ready: !not_ready,
                    cpu_percent: cpu,
                    memory_percent: memory,
                }),
            0..12,
        )
    }

    /// Evaluates every 15 s for `steps` with `load(t)` total utilisation (percent x pods),
    /// spread over the current replicas; returns the replica count after each evaluation.
    fn run(
        config: &AutoscalerConfig,
        start: u32,
        steps: usize,
        load: impl Fn(i64) -> f64,
    ) -> Vec<(i64, u32)> {
        let mut state = AutoscalerState::default();
        let mut replicas = start;
        let mut trace = Vec::new();
        for step in 1..=steps {
            let now = step as i64 * 15_000;
            let per_pod = load(now) / f64::from(replicas.max(1));
            let pods = vec![
                PodMetrics {
                    ready: true,
                    cpu_percent: Some(per_pod),
                    memory_percent: Some(per_pod / 2.0)
                };
                replicas as usize
            ];
            let r = eval(config, replicas, &pods, now, &state);
            replicas = r.desired_replicas;
            state = r.state;
            trace.push((now, replicas));
        }
        trace
    }

    proptest! {
        #[test]
        fn never_outside_min_max(config in arb_config(), current in 0u32..20, pods in arb_pods(), last in 0i64..200_000) {
            let state = AutoscalerState { last_scale_at_ms: last, ..Default::default() };
            let r = eval(&config, current, &pods, 200_000, &state);
            prop_assert!(r.desired_replicas >= config.min_replicas && r.desired_replicas <= config.max_replicas);
            prop_assert!(r.recommended_replicas >= config.min_replicas && r.recommended_replicas <= config.max_replicas);
        }

        #[test]
        fn no_action_inside_the_cooldown(config in arb_config(), offset in 0u32..20, pods in arb_pods(), since in 0i64..60_000) {
            // Inside [min, max]: out-of-bounds corrections ignore the cooldown by design.
            let current = config.min_replicas + offset % (config.max_replicas - config.min_replicas + 1);
            let state = AutoscalerState { last_scale_at_ms: 1_000_000 - since, ..Default::default() };
            let r = eval(&config, current, &pods, 1_000_000, &state);
            prop_assert_eq!(r.desired_replicas, current);
            prop_assert_eq!(r.state.last_scale_at_ms, state.last_scale_at_ms);
        }

        #[test]
        fn constant_load_does_not_flap(config in arb_config(), start in 1u32..15, load in 0.0f64..2000.0) {
            let trace = run(&config, start, 80, |_| load);
            let changes = trace.windows(2).filter(|w| w[0].1 != w[1].1).count()
                + usize::from(trace[0].1 != start);
            // At most one bound correction and one metric-driven action.
            prop_assert!(changes <= 2, "{:?}", trace);
            let last = trace.last().unwrap().1;
            prop_assert!(trace[trace.len() / 2..].iter().all(|&(_, r)| r == last), "{:?}", trace);
        }

        #[test]
        fn scale_down_waits_for_the_window(high in 200.0f64..1000.0, low in 0.0f64..20.0, spike_steps in 1usize..30) {
            let mut config = config(1, 20);
            config.target_memory_percent = None;
            let spike_end = spike_steps as i64 * 15_000;
            let trace = run(&config, 2, 80, |t| if t <= spike_end { high } else { low });
            let peak = trace.iter().filter(|&&(t, _)| t <= spike_end).map(|&(_, r)| r).max().unwrap();
            let window = DEFAULT_STABILIZATION_WINDOW.as_millis() as i64;
            let mut seen_peak = false;
            let mut previous = 2;
            for &(t, r) in &trace {
                seen_peak |= r == peak;
                if t < spike_end + window {
                    prop_assert!(r >= previous, "scaled down at {} before the window: {:?}", t, trace);
                }
                previous = r;
            }
            prop_assert!(seen_peak && peak > 2, "never scaled up: {:?}", trace);
            prop_assert!(trace.last().unwrap().1 < peak, "never scaled down: {:?}", trace);
        }
    }
}
