//! The shared token a binary starts with: required, and never taken as something it is not.

/// The shared token a server binary was started with; refuses to go on without one.
pub fn require_token(token: Option<String>) -> Result<String, String> {
    match token {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err("a shared token is required: pass --token or set PSS_TOKEN".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_refuse_to_start_without_a_token() {
        assert!(require_token(None)
            .unwrap_err()
            .contains("--token or set PSS_TOKEN"));
        assert!(require_token(Some(String::new())).is_err());
        assert_eq!(require_token(Some("t".into())).unwrap(), "t");
    }
}
