//! Durations on every command line read like `10s`, `500ms`, `2m` (humantime syntax).

use std::time::Duration;

/// clap value parser for durations: `10s`, `500ms`, `2m`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 10s, 500ms, 2m)"))
}

/// A duration that reads and prints as humantime (`10s`, `5m`): lets a flag's default be a
/// `Duration` constant (`default_value_t = HumanDuration(DEFAULT)`) shown in `--help`, so a
/// default is defined once, where the code that uses it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(HumanDuration)
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Duration {
        d.0
    }
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
    fn human_durations_round_trip_for_flag_defaults() {
        let d: HumanDuration = "5m".parse().unwrap();
        assert_eq!(d.0, Duration::from_secs(300));
        assert_eq!(d.to_string(), "5m");
        assert_eq!(
            HumanDuration(Duration::from_millis(1500)).to_string(),
            "1s 500ms"
        );
    }

    #[test]
    fn rejects_garbage_naming_it() {
        let e = parse_duration("ten").unwrap_err();
        assert!(e.contains("\"ten\""), "{e}");
        assert!(parse_duration("10").is_err());
    }
}
