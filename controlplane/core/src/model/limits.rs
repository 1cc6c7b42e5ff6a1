//! Bounds on what a user may ask for: one [`Limits`] value, checked by the manifest parser and
//! by the protobuf conversions alike, so that no input (a manifest, a raw gRPC request, an
//! object stored by an older version) can make the controller allocate, loop or wrap without
//! bound.
//!
//! The defaults are generous for real workloads and small enough that the worst accepted input
//! is cheap. `pssctl` checks manifests against [`Limits::default`]; the controller passes its own
//! (e.g. `--max-replicas`).

use super::names::{MAX_LABEL_LEN, POD_SUFFIX_LEN};

/// Where the replica limit is set, quoted in errors so a user knows what to change.
pub const MAX_REPLICAS_SETTING: &str = "pss-controller --max-replicas";

/// The longest workload name: its pod IDs (`<workload>-<5 characters>`) must stay DNS-1123
/// labels of at most 63 characters.
pub const MAX_WORKLOAD_NAME_LEN: usize = MAX_LABEL_LEN - 1 - POD_SUFFIX_LEN;

/// Size, count and length bounds on user input. Every field says what it bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Replicas of one workload (`spec.replicas`, `pssctl scale`, an autoscaler's
    /// `maxReplicas`). The scheduler does work per replica: this bounds it.
    pub max_replicas: u32,
    /// Containers in one pod.
    pub max_containers: usize,
    /// Ports one pod declares.
    pub max_ports: usize,
    /// Length of a workload name, so that pod IDs stay 63-character labels; a value above
    /// [`MAX_WORKLOAD_NAME_LEN`] counts as that.
    pub max_workload_name_len: usize,
    /// Length of an image reference in bytes.
    pub max_image_len: usize,
    /// Words in a container's `command`, and again in its `args`.
    pub max_command_words: usize,
    /// Length of one `command` or `args` word in bytes.
    pub max_command_word_len: usize,
    /// Environment variables of one container.
    pub max_env: usize,
    /// Length of an environment variable's name in bytes.
    pub max_env_name_len: usize,
    /// Length of an environment variable's value in bytes.
    pub max_env_value_len: usize,
    /// Readiness probe interval and timeout, in milliseconds.
    pub max_probe_ms: u64,
    /// Size of one manifest (a file, or an `Apply` request's text) in bytes; checked first.
    pub max_manifest_bytes: usize,
    /// Nesting of YAML collections (sequences and mappings) in a manifest; a manifest needs 8.
    pub max_yaml_depth: usize,
    /// Documents in one manifest.
    pub max_documents: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_replicas: 1_000,
            max_containers: 32,
            max_ports: 64,
            max_workload_name_len: MAX_WORKLOAD_NAME_LEN,
            max_image_len: 512,
            max_command_words: 256,
            max_command_word_len: 16 * 1024,
            max_env: 256,
            max_env_name_len: 256,
            max_env_value_len: 32 * 1024,
            max_probe_ms: 3_600_000,
            max_manifest_bytes: 1 << 20,
            max_yaml_depth: 32,
            max_documents: 100,
        }
    }
}

/// The message for a count or size above its limit: `40 is above the limit of 32`.
pub(crate) fn above(value: impl std::fmt::Display, limit: impl std::fmt::Display) -> String {
    format!("{value} is above the limit of {limit}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{pod_id, validate_dns1123};

    #[test]
    fn the_longest_workload_name_gives_a_valid_pod_id() {
        let name = "a".repeat(Limits::default().max_workload_name_len);
        let id = pod_id(&name, u64::MAX);
        assert_eq!(id.len(), 63);
        assert_eq!(validate_dns1123(&id), Ok(()));
    }
}
