//! Durations on every command line read like `10s`, `500ms`, `2m` (humantime syntax).

use std::time::Duration;

/// clap value parser for durations: `10s`, `500ms`, `2m`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 10s, 500ms, 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_common_forms() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    }

    #[test]
    fn rejects_garbage_naming_it() {
        let e = parse_duration("ten").unwrap_err();
        assert!(e.contains("\"ten\""), "{e}");
        assert!(parse_duration("10").is_err());
    }
}
