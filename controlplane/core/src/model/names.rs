//! Object names: DNS-1123 validation and pod IDs.
//!
//! Every user-chosen name (workloads, services, autoscalers, containers) is a DNS-1123 label, as
//! in Kubernetes. Pods are named as a ReplicaSet names its pods: `<workload>-<5 characters>`.

use super::field::shorten;

/// Longest DNS-1123 label.
pub(crate) const MAX_LABEL_LEN: usize = 63;
/// Length of the random suffix of a pod ID.
pub(crate) const POD_SUFFIX_LEN: usize = 5;
/// Kubernetes' alphabet for generated names: no vowels (no accidental words) and no look-alikes
/// (`0`/`o`, `1`/`l`, `3`/`e`).
const POD_ID_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Checks a DNS-1123 label: 1 to 63 characters, lowercase letters, digits and `-`, starting and
/// ending with a letter or digit. The error names the rule that broke.
pub fn validate_dns1123(name: &str) -> Result<(), String> {
    let invalid = |why: String| Err(format!("invalid name {}: {why}", shorten(name)));
    let is_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if name.is_empty() {
        return invalid("must not be empty".into());
    }
    let len = name.chars().count();
    if len > MAX_LABEL_LEN {
        return invalid(format!(
            "must be at most {MAX_LABEL_LEN} characters, got {len}"
        ));
    }
    if let Some((i, c)) = name
        .chars()
        .enumerate()
        .find(|&(_, c)| !is_alnum(c) && c != '-')
    {
        let hint = if c.is_ascii_uppercase() {
            " (use lowercase)"
        } else {
            ""
        };
        return invalid(format!(
            "must consist of lowercase letters, digits and '-', found {c:?} at position {}{hint}",
            i + 1
        ));
    }
    if !name.starts_with(is_alnum) {
        return invalid("must start with a lowercase letter or digit".into());
    }
    if !name.ends_with(is_alnum) {
        return invalid("must end with a lowercase letter or digit".into());
    }
    Ok(())
}

/// The pod ID for `workload` and the random draw `draw`: `<workload>-<5 characters>`, like the
/// pods of a Kubernetes ReplicaSet, the suffix being `draw`'s first five base-27 digits over
/// `POD_ID_ALPHABET`. The caller draws (the core has no randomness). A long workload name is
/// truncated so the ID stays a valid 63-character label.
pub fn pod_id(workload: &str, draw: u64) -> String {
    let max_prefix = MAX_LABEL_LEN - POD_SUFFIX_LEN - 1;
    let prefix: String = workload.chars().take(max_prefix).collect();
    let base = POD_ID_ALPHABET.len() as u64;
    let mut rest = draw;
    let suffix: String = (0..POD_SUFFIX_LEN)
        .map(|_| {
            let digit = (rest % base) as usize;
            rest /= base;
            char::from(POD_ID_ALPHABET[digit])
        })
        .collect();
    format!("{prefix}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_valid_labels() {
        for name in ["a", "my-app", "web1", "0abc", "a-b-c", &"x".repeat(63)] {
            assert_eq!(validate_dns1123(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn rejects_naming_the_broken_rule() {
        let cases = [
            ("", "must not be empty"),
            (&*"x".repeat(64), "at most 63 characters, got 64"),
            ("My-App", "found 'M' at position 1 (use lowercase)"),
            ("my_app", "found '_' at position 3"),
            ("my.app", "found '.' at position 3"),
            ("-app", "must start with"),
            ("app-", "must end with"),
            ("héllo", "found 'é' at position 2"),
        ];
        for (name, why) in cases {
            let e = validate_dns1123(name).unwrap_err();
            assert!(e.contains(why), "{name:?}: {e}");
            assert!(
                e.contains(&format!("{name:?}")),
                "error quotes the name: {e}"
            );
        }
    }

    #[test]
    fn pod_id_is_workload_dash_five_from_the_alphabet() {
        let id = pod_id("my-app", 123_456_789);
        let suffix = id.strip_prefix("my-app-").expect("prefix");
        assert_eq!(suffix.len(), 5);
        assert!(suffix.bytes().all(|b| POD_ID_ALPHABET.contains(&b)), "{id}");
    }

    #[test]
    fn pod_ids_differ() {
        let ids: std::collections::HashSet<_> = (0..27u64.pow(3))
            .map(|d| pod_id("w", d * 27 * 27 + d))
            .collect();
        assert_eq!(
            ids.len(),
            27usize.pow(3),
            "distinct draws below 27^5 give distinct IDs"
        );
    }

    #[test]
    fn long_workload_names_are_truncated_to_keep_63() {
        let long = "a".repeat(63);
        let id = pod_id(&long, u64::MAX);
        assert_eq!(id.len(), 63);
        assert!(id.starts_with(&"a".repeat(57)));
        assert_eq!(validate_dns1123(&id), Ok(()));
    }

    proptest! {
        #[test]
        fn pod_ids_of_valid_workloads_are_valid_labels(
            workload in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
            draw in any::<u64>(),
        ) {
            let id = pod_id(&workload, draw);
            prop_assert_eq!(validate_dns1123(&id), Ok(()));
            prop_assert!(id.len() <= 63);
        }
    }
}
