//! Resource quantities: CPU (`100m`, `0.5`, `2`) and memory (`32Mi`, `1G`, `512`).

/// CPU quantity to millicores.
pub fn parse_cpu(s: &str) -> Result<u64, String> {
    let _ = s;
    unimplemented!()
}

/// Memory quantity to bytes.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let _ = s;
    unimplemented!()
}
