//! Criterion benchmarks for PSS; see `benches/` and BENCHMARKS.md.
