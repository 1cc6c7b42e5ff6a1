//! Node and pod resource usage, as the heartbeat reports it.
//!
//! - Node CPU: busy share of all cores between two reads of `/proc/stat` (100 = every core
//!   busy). Node memory: `MemTotal - MemAvailable` from `/proc/meminfo`.
//! - Pod CPU (`PodReport.cpu_percent`): the CPU time the pod's containers used between two
//!   stats samples (`CPUNano` deltas, summed over the containers) divided by the wall time
//!   between the samples, in percent of ONE core: 100 = one full core, 250 = two and a half.
//!   The controller divides by the pod's CPU request (or the node's capacity) to get
//!   utilisation. Pod memory: the sum of the containers' `MemUsage`, in bytes.

use std::collections::HashMap;
use std::time::Instant;

use crate::podman::ContainerStats;

/// Cumulative CPU jiffies from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user/nice).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

/// `(used, total)` memory in bytes from `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    Some((total.saturating_sub(available), total))
}

/// Percent busy between two samples (0 when no time passed).
pub fn cpu_percent_between(prev: CpuTimes, now: CpuTimes) -> f64 {
    let total = now.total.saturating_sub(prev.total);
    if total == 0 {
        return 0.0;
    }
    now.busy.saturating_sub(prev.busy) as f64 * 100.0 / total as f64
}

/// Node usage sampler: remembers the previous `/proc/stat` reading.
#[derive(Debug, Default)]
pub struct NodeSampler {
    prev: Option<CpuTimes>,
}

impl NodeSampler {
    /// The node's metrics since the previous call (CPU is 0 on the first call).
    pub fn sample(&mut self) -> pss_proto::v1::NodeMetrics {
        let cpu = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_proc_stat(&t));
        let cpu_usage_percent = match (self.prev, cpu) {
            (Some(prev), Some(now)) => cpu_percent_between(prev, now),
            _ => 0.0,
        };
        if cpu.is_some() {
            self.prev = cpu;
        }
        let (used, total) = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| parse_meminfo(&t))
            .unwrap_or((0, 0));
        pss_proto::v1::NodeMetrics {
            cpu_usage_percent,
            memory_used_bytes: used,
            memory_total_bytes: total,
            // The reporter fills in the runtime's health.
            ..Default::default()
        }
    }
}

/// Usage of one pod.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PodUsage {
    /// Percent of one core (see the module docs).
    pub cpu_percent: f64,
    pub memory_bytes: u64,
}

/// Per-container CPU deltas across stats samples.
#[derive(Debug, Default)]
pub struct PodCpuTracker {
    /// Container ID → (cumulative CPU ns, when sampled).
    prev: HashMap<String, (u64, Instant)>,
}

impl PodCpuTracker {
    /// Folds one stats sample in; returns usage per container ID. A container seen for the
    /// first time has CPU 0 until the next sample. Containers missing from `stats` are
    /// forgotten.
    pub fn update(&mut self, stats: &[ContainerStats], now: Instant) -> HashMap<String, PodUsage> {
        let mut next = HashMap::with_capacity(stats.len());
        let mut out = HashMap::with_capacity(stats.len());
        for s in stats {
            let cpu_percent = match self.prev.get(&s.container_id) {
                Some(&(prev_ns, at)) if s.cpu_nano >= prev_ns => {
                    let wall = now.saturating_duration_since(at).as_nanos() as f64;
                    if wall > 0.0 {
                        (s.cpu_nano - prev_ns) as f64 * 100.0 / wall
                    } else {
                        0.0
                    }
                }
                _ => 0.0,
            };
            next.insert(s.container_id.clone(), (s.cpu_nano, now));
            out.insert(
                s.container_id.clone(),
                PodUsage {
                    cpu_percent,
                    memory_bytes: s.mem_usage,
                },
            );
        }
        self.prev = next;
        out
    }
}

/// Sums container usages into the pod's.
pub fn pod_usage<'a>(
    container_ids: impl IntoIterator<Item = &'a str>,
    usage: &HashMap<String, PodUsage>,
) -> PodUsage {
    container_ids
        .into_iter()
        .filter_map(|id| usage.get(id))
        .fold(PodUsage::default(), |acc, u| PodUsage {
            cpu_percent: acc.cpu_percent + u.cpu_percent,
            memory_bytes: acc.memory_bytes + u.memory_bytes,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn proc_stat_busy_share() {
        let a = parse_proc_stat("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                busy: 200,
                total: 1000
            }
        );
        let b = parse_proc_stat("cpu  200 0 200 1400 200 0 0 0 0 0\n").unwrap();
        assert!((cpu_percent_between(a, b) - 20.0).abs() < 1e-9);
        assert_eq!(cpu_percent_between(a, a), 0.0);
    }

    #[test]
    fn meminfo_used_is_total_minus_available() {
        let text = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    400 kB\n";
        assert_eq!(parse_meminfo(text), Some((600 * 1024, 1000 * 1024)));
    }

    fn stat(id: &str, cpu_nano: u64, mem: u64) -> ContainerStats {
        ContainerStats {
            container_id: id.into(),
            cpu_nano,
            mem_usage: mem,
            mem_limit: 0,
        }
    }

    #[test]
    fn pod_cpu_is_percent_of_one_core_summed_over_containers() {
        let mut t = PodCpuTracker::default();
        let t0 = Instant::now();
        let first = t.update(&[stat("a", 0, 10), stat("b", 0, 20)], t0);
        assert_eq!(first["a"].cpu_percent, 0.0);
        // Over 2 s: a used 1 s of CPU (50 %), b used 3 s (150 %: 1.5 cores).
        let t1 = t0 + Duration::from_secs(2);
        let u = t.update(
            &[stat("a", 1_000_000_000, 10), stat("b", 3_000_000_000, 20)],
            t1,
        );
        let pod = pod_usage(["a", "b"], &u);
        assert!((pod.cpu_percent - 200.0).abs() < 1e-6, "{pod:?}");
        assert_eq!(pod.memory_bytes, 30);
    }

    #[test]
    fn a_restarted_container_counter_does_not_go_negative() {
        let mut t = PodCpuTracker::default();
        let t0 = Instant::now();
        t.update(&[stat("a", 5_000, 0)], t0);
        let u = t.update(&[stat("a", 1_000, 0)], t0 + Duration::from_secs(1));
        assert_eq!(u["a"].cpu_percent, 0.0);
    }
}
