//! Text that crosses a process boundary and comes back out (in errors, events, logs) is cut
//! short, so one huge field can never make an event, a log line or a gRPC error huge.

use std::borrow::Cow;

/// `s` if it has at most `max` characters, else its first `max` characters followed by
/// `…(N bytes)` giving the full length (`aaaa…(1048576 bytes)`).
pub fn cut_short(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!("{}…({} bytes)", &s[..end], s.len())),
    }
}

/// Cuts `s` in place to at most `max_bytes` bytes (on a character boundary), ending in `…`;
/// true when it was cut. For text that is stored or forwarded, where the bound is in bytes.
pub fn truncate(s: &mut String, max_bytes: usize) -> bool {
    if s.len() <= max_bytes {
        return false;
    }
    let mut end = max_bytes.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_text_is_untouched_and_long_text_says_its_length() {
        assert_eq!(cut_short("abc", 3), "abc");
        assert_eq!(cut_short("abcdef", 3), "abc…(6 bytes)");
        assert_eq!(cut_short("éééé", 3), "ééé…(8 bytes)");
    }

    proptest! {
        #[test]
        fn the_cut_is_bounded_and_a_prefix(s in ".{0,200}", max in 0usize..100) {
            let cut = cut_short(&s, max);
            let kept = cut.split("…(").next().unwrap();
            prop_assert!(s.starts_with(kept));
            prop_assert!(kept.chars().count() <= max);
            let suffix = format!("…({} bytes)", s.len());
            prop_assert!(cut == s || cut.ends_with(&suffix));
        }
    }
}
