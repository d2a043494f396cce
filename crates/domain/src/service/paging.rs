//! Stable paging of search results (<http://hl7.org/fhir/R4/search.html#paging>:
//! paging links must stay correct while other clients write).
//!
//! Offset paging shifts when a resource is created, updated or deleted
//! between two pages: a match is shown twice or skipped. So when a search's
//! first page is full, the Service keeps the ordered (type, id) list of all
//! its matches (up to [`STABLE_PAGING_LIMIT`]) under a token, and later pages
//! (`_page=token&_offset=n`) are slices of that list, each resource read at
//! its current version; one deleted since is left out of its page. A search
//! with more matches than the limit pages by offset. The lists live in this
//! process, most recent first, within a budget of keys; an evicted or unknown
//! token answers 410 Gone, and the client repeats the search.

use crate::store::ResourceKey;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Most matches a search may have for its pages to be kept stable.
pub const STABLE_PAGING_LIMIT: usize = 5_000;
/// Keys kept over all searches (about 64 bytes each).
const KEY_BUDGET: usize = 500_000;

#[derive(Default)]
pub(crate) struct PagingCache {
    inner: Mutex<Inner>,
}

/// A kept result list and the resource type its search was over (`None`:
/// all types), so that a token is honoured only by the search it came from.
pub(crate) struct Kept {
    pub(crate) resource_type: Option<String>,
    pub(crate) keys: Vec<ResourceKey>,
}

#[derive(Default)]
struct Inner {
    lists: HashMap<String, Arc<Kept>>,
    /// Tokens, oldest first.
    order: VecDeque<String>,
    keys: usize,
}

impl PagingCache {
    /// Keeps `keys` under `token`, evicting the oldest lists beyond the budget.
    pub(crate) fn insert(&self, token: String, resource_type: Option<String>, keys: Vec<ResourceKey>) {
        let mut inner = self.inner.lock();
        inner.keys += keys.len();
        inner.lists.insert(token.clone(), Arc::new(Kept { resource_type, keys }));
        inner.order.push_back(token);
        while inner.keys > KEY_BUDGET && inner.order.len() > 1 {
            let Some(oldest) = inner.order.pop_front() else { break };
            if let Some(list) = inner.lists.remove(&oldest) {
                inner.keys -= list.keys.len();
            }
        }
    }

    pub(crate) fn get(&self, token: &str) -> Option<Arc<Kept>> {
        self.inner.lock().lists.get(token).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<ResourceKey> {
        (0..n).map(|i| ("Patient".to_string(), i.to_string())).collect()
    }

    #[test]
    fn keeps_lists_within_the_budget_oldest_out_first() {
        let cache = PagingCache::default();
        cache.insert("a".into(), None, keys(KEY_BUDGET / 2));
        cache.insert("b".into(), None, keys(KEY_BUDGET / 2));
        assert!(cache.get("a").is_some());
        cache.insert("c".into(), Some("Patient".into()), keys(10));
        assert!(cache.get("a").is_none(), "the oldest list goes first");
        assert_eq!(cache.get("b").map(|l| l.keys.len()), Some(KEY_BUDGET / 2));
        assert_eq!(cache.get("c").map(|l| l.keys.len()), Some(10));
        assert_eq!(cache.get("c").and_then(|l| l.resource_type.clone()).as_deref(), Some("Patient"));
        assert!(cache.get("nope").is_none());
    }
}
