//! Object names: DNS-1123 validation and pod IDs.

/// Checks a DNS-1123 label.
pub fn validate_dns1123(name: &str) -> Result<(), String> {
    let _ = name;
    unimplemented!()
}

/// `<workload>-<5 lowercase alphanumerics>`.
pub fn generate_pod_id(workload: &str) -> String {
    let _ = workload;
    unimplemented!()
}
