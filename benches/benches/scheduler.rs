//! Placeholder replaced by the scheduler benchmark.
fn main() {}
