//! The shared token a binary starts with: from `--token-file` (preferred: a file is not in
//! `ps`), or from the `PSS_TOKEN` environment variable / `--token`; at least
//! [`MIN_TOKEN_BYTES`] bytes of header-safe text, so a guessable or empty secret never guards
//! a cluster.

use std::path::Path;

/// Shortest token accepted (16 bytes: 128 bits when random).
pub const MIN_TOKEN_BYTES: usize = 16;
/// Longest token accepted; a token file larger than this is not a token.
pub const MAX_TOKEN_BYTES: usize = 1024;
/// How to make a good token, shown with every refusal.
pub const TOKEN_HINT: &str =
    "make one with: head -c 32 /dev/urandom | base64 > token && chmod 600 token";

/// The token from `--token`/`PSS_TOKEN` (`value`) or `--token-file` (`file`); exactly one must
/// be given. A file's trailing newline is ignored. Errors say what is wrong and how to fix it.
pub fn load(value: Option<String>, file: Option<&Path>) -> Result<String, String> {
    let token = match (value.filter(|v| !v.is_empty()), file) {
        (Some(_), Some(f)) => {
            return Err(format!(
                "both a token (--token or PSS_TOKEN) and --token-file {} were given; use one",
                f.display()
            ))
        }
        (None, None) => {
            return Err(format!(
                "a shared token is required: pass --token-file FILE or set PSS_TOKEN ({TOKEN_HINT})"
            ))
        }
        (Some(v), None) => v,
        (None, Some(f)) => read_file(f)?,
    };
    check(&token)?;
    Ok(token)
}

fn read_file(f: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(f).map_err(|e| format!("--token-file {}: {e}", f.display()))?;
    let mut text = String::new();
    file.take(MAX_TOKEN_BYTES as u64 + 2)
        .read_to_string(&mut text)
        .map_err(|e| format!("--token-file {}: {e} (a token is text)", f.display()))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    Ok(text.to_string())
}

/// Whether `token` is acceptable as a shared secret.
pub fn check(token: &str) -> Result<(), String> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "the token is longer than {MAX_TOKEN_BYTES} bytes ({} bytes)",
            token.len()
        ));
    }
    if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "the token contains {c:?}: only printable ASCII without spaces is allowed ({TOKEN_HINT})"
        ));
    }
    if token.len() < MIN_TOKEN_BYTES {
        return Err(format!(
            "the token is {} bytes; at least {MIN_TOKEN_BYTES} are required ({TOKEN_HINT})",
            token.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdef";

    #[test]
    fn servers_refuse_to_start_without_a_token() {
        let e = load(None, None).unwrap_err();
        assert!(e.contains("--token-file FILE or set PSS_TOKEN"), "{e}");
        assert!(load(Some(String::new()), None).is_err());
        assert_eq!(load(Some(GOOD.into()), None).unwrap(), GOOD);
    }

    #[test]
    fn weak_tokens_are_refused_with_a_hint() {
        for weak in [
            "t",
            "short-token",
            "                ",
            "0123456789abcde f",
            "tab\tinside-the-token",
        ] {
            let e = load(Some(weak.into()), None).unwrap_err();
            assert!(e.contains("head -c 32 /dev/urandom"), "{weak:?}: {e}");
        }
        assert!(check(&"x".repeat(MAX_TOKEN_BYTES + 1)).is_err());
    }

    #[test]
    fn token_files_are_read_without_their_newline_and_not_mixed_with_a_value() {
        let dir = std::env::temp_dir().join(format!("pss-token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("token");
        std::fs::write(&f, format!("{GOOD}\n")).unwrap();
        assert_eq!(load(None, Some(&f)).unwrap(), GOOD);
        assert!(load(Some(GOOD.into()), Some(&f))
            .unwrap_err()
            .contains("use one"));
        let missing = dir.join("missing");
        assert!(load(None, Some(&missing)).unwrap_err().contains("missing"));
        std::fs::write(&f, "x".repeat(5000)).unwrap();
        assert!(load(None, Some(&f)).unwrap_err().contains("longer than"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
