//! Paging of lists that grow with the cluster (pods, events): a list request names where the
//! previous page ended (the last key it returned) and gets at most a page size of items after
//! it, with the key to continue from. Keyset paging, not offsets: an item added or removed
//! between two pages shifts nothing.

/// Items per page when the request names no size.
pub const DEFAULT_PAGE_SIZE: usize = 500;
/// Most items per page, whatever the request asks: a page must stay well under gRPC's default
/// 4 MiB message limit even with every object at its size limits.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The page size for a requested size (0 = default), capped at [`MAX_PAGE_SIZE`].
pub fn page_size(requested: u32) -> usize {
    match requested as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// The page of `sorted` (ascending by `key`, keys unique) that follows `after` (`None`: the
/// first page): at most `size` items (at least 1), and the key of its last item when more
/// items follow.
pub fn page<'a, T, K: Ord>(
    sorted: &'a [T],
    key: impl Fn(&T) -> K,
    after: Option<&K>,
    size: usize,
) -> (&'a [T], Option<K>) {
    let start = match after {
        None => 0,
        Some(after) => sorted.partition_point(|item| key(item) <= *after),
    };
    let end = start.saturating_add(size.max(1)).min(sorted.len());
    let items = &sorted[start..end];
    let next = (end < sorted.len())
        .then(|| items.last().map(&key))
        .flatten();
    (items, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_default_and_cap() {
        assert_eq!(page_size(0), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(10), 10);
        assert_eq!(page_size(u32::MAX), MAX_PAGE_SIZE);
    }

    proptest! {
        /// Following the tokens visits every item exactly once, in order, whatever the size.
        #[test]
        fn pages_cover_the_list_once(mut keys in proptest::collection::btree_set(0u32..10_000, 0..300), size in 1usize..50) {
            let sorted: Vec<u32> = std::mem::take(&mut keys).into_iter().collect();
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let (items, next) = page(&sorted, |k| *k, after.as_ref(), size);
                prop_assert!(items.len() <= size);
                seen.extend_from_slice(items);
                match next {
                    Some(k) => after = Some(k),
                    None => break,
                }
            }
            prop_assert_eq!(seen, sorted);
        }

        /// A token whose item was deleted meanwhile still continues right after it.
        #[test]
        fn a_vanished_token_continues_after_it(sorted in proptest::collection::btree_set(0u32..1_000, 1..100), cut in 0u32..1_000) {
            let sorted: Vec<u32> = sorted.into_iter().filter(|k| *k != cut).collect();
            let (items, _) = page(&sorted, |k| *k, Some(&cut), 1_000);
            prop_assert!(items.iter().all(|k| *k > cut));
            prop_assert_eq!(items.len(), sorted.iter().filter(|k| **k > cut).count());
        }
    }
}
