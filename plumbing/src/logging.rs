//! Logging set-up: structured logs to stderr, filtered by `RUST_LOG`, as text or JSON.

use tracing_subscriber::EnvFilter;

/// Structured logs to stderr, `RUST_LOG` filtering (default `info`), text or JSON; colours
/// only when stderr is a terminal, so files and journals get plain text.
pub fn init(format: &str) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
