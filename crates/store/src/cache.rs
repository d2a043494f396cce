//! The SQLite store's cache of current resource versions (`Store::read`).
//!
//! Why: SQLite empties a connection's page cache whenever another
//! connection has committed (WAL readers start afresh after any change),
//! and with SQLCipher every page read again is decrypted and its HMAC
//! checked. The audit trail commits many times a second, so without this
//! cache almost every read by id decrypts its pages anew.
//!
//! Coherence, within this process: the writer thread invalidates every
//! resource a group wrote after its COMMIT and before it answers, so whoever
//! wrote reads their write. A reader that misses takes a [`Ticket`] (its
//! shard's epoch) *before* it reads the database, and its row is kept only if
//! no invalidation touched the shard since: a row read from a snapshot older
//! than a commit never replaces that commit's invalidation.
//!
//! Other processes (`hearth import` or `hearth migrate` beside a running
//! server): each store counts its resource-writing commits in the
//! `resource_writer` table (migration 0006); the checkpointer thread looks at
//! the other writers' counts every 100 ms and empties the cache when they
//! moved. So another process's write is seen within that interval.
//!
//! Eviction: CLOCK (second chance) per shard, within a byte budget.

use domain::store::StoredResource;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

const SHARDS: usize = 16;

/// What an entry costs beyond its body and key (its slot and ring entry).
const ENTRY_OVERHEAD: usize = 128;

pub(crate) struct ResourceCache {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    /// Bytes each shard may hold.
    shard_budget: usize,
}

/// A shard's epoch when a reader missed; see the module comment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    shard: usize,
    epoch: u64,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<String, Slot>,
    /// Keys in insertion order with the generation they were inserted
    /// under; an item whose generation is not the entry's is stale.
    ring: VecDeque<(String, u64)>,
    bytes: usize,
    /// Bumped by every invalidation.
    epoch: u64,
    next_generation: u64,
}

struct Slot {
    resource: StoredResource,
    weight: usize,
    generation: u64,
    /// Read since the clock hand last passed.
    referenced: bool,
}

fn key(resource_type: &str, id: &str) -> String {
    let mut key = String::with_capacity(resource_type.len() + 1 + id.len());
    key.push_str(resource_type);
    key.push('/');
    key.push_str(id);
    key
}

impl ResourceCache {
    /// A cache holding at most about `budget_bytes` of resources; `None`
    /// when the budget is zero (caching off).
    pub(crate) fn new(budget_bytes: usize) -> Option<ResourceCache> {
        if budget_bytes == 0 {
            return None;
        }
        Some(ResourceCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            shard_budget: (budget_bytes / SHARDS).max(1),
        })
    }

    fn shard_of(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// The cached current version, or a ticket to keep what the database gives.
    pub(crate) fn get(&self, resource_type: &str, id: &str) -> Result<StoredResource, Ticket> {
        let key = key(resource_type, id);
        let shard = self.shard_of(&key);
        let mut guard = self.shards[shard].lock();
        match guard.entries.get_mut(&key) {
            Some(slot) => {
                slot.referenced = true;
                Ok(slot.resource.clone())
            }
            None => Err(Ticket { shard, epoch: guard.epoch }),
        }
    }

    /// Keeps `resource` (read from the database after `ticket` was taken)
    /// unless an invalidation came in between.
    pub(crate) fn keep(&self, ticket: Ticket, resource: &StoredResource) {
        let key = key(&resource.resource_type, &resource.id);
        let weight = key.len() + resource.body.as_ref().map_or(0, |b| b.len()) + ENTRY_OVERHEAD;
        if weight > self.shard_budget {
            return;
        }
        let mut shard = self.shards[ticket.shard].lock();
        if shard.epoch != ticket.epoch {
            return;
        }
        shard.next_generation += 1;
        let generation = shard.next_generation;
        let slot = Slot { resource: resource.clone(), weight, generation, referenced: false };
        if let Some(old) = shard.entries.insert(key.clone(), slot) {
            shard.bytes -= old.weight;
        }
        shard.bytes += weight;
        shard.ring.push_back((key, generation));
        shard.evict(self.shard_budget);
        shard.compact();
    }

    /// Forgets a resource that was just written.
    pub(crate) fn invalidate(&self, resource_type: &str, id: &str) {
        let key = key(resource_type, id);
        let mut shard = self.shards[self.shard_of(&key)].lock();
        shard.epoch += 1;
        if let Some(old) = shard.entries.remove(&key) {
            shard.bytes -= old.weight;
        }
        shard.compact();
    }

    /// Forgets everything (another process wrote).
    pub(crate) fn clear(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock();
            shard.epoch += 1;
            shard.entries.clear();
            shard.ring.clear();
            shard.bytes = 0;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().entries.len()).sum()
    }
}

impl Shard {
    /// Drops entries the clock hand finds unreferenced until within budget.
    fn evict(&mut self, budget: usize) {
        while self.bytes > budget {
            let Some((key, generation)) = self.ring.pop_front() else { break };
            let Some(slot) = self.entries.get_mut(&key) else { continue };
            if slot.generation != generation {
                continue;
            }
            if slot.referenced {
                slot.referenced = false;
                self.ring.push_back((key, generation));
            } else if let Some(old) = self.entries.remove(&key) {
                self.bytes -= old.weight;
            }
        }
    }

    /// Drops stale ring items once they outnumber the entries.
    fn compact(&mut self) {
        if self.ring.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.ring.retain(|(key, generation)| entries.get(key).is_some_and(|s| s.generation == *generation));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::store::Method;
    use fhir::instant::Instant;
    use std::sync::Arc;

    fn resource(id: &str, version: u64, body: &str) -> StoredResource {
        StoredResource {
            resource_type: "Patient".into(),
            id: id.into(),
            version_id: version,
            last_updated: Instant(0),
            method: Method::Put,
            body: Some(Arc::from(body)),
        }
    }

    #[test]
    fn a_kept_row_is_served_until_invalidated() {
        let cache = ResourceCache::new(1 << 20).expect("on");
        let ticket = cache.get("Patient", "a").expect_err("empty");
        cache.keep(ticket, &resource("a", 1, "{}"));
        assert_eq!(cache.get("Patient", "a").expect("hit").version_id, 1);
        cache.invalidate("Patient", "a");
        assert!(cache.get("Patient", "a").is_err());
    }

    #[test]
    fn a_row_read_before_an_invalidation_is_not_kept() {
        let cache = ResourceCache::new(1 << 20).expect("on");
        let ticket = cache.get("Patient", "a").expect_err("empty");
        // The writer commits version 2 while the reader holds version 1.
        cache.invalidate("Patient", "a");
        cache.keep(ticket, &resource("a", 1, "{}"));
        assert!(cache.get("Patient", "a").is_err(), "the stale version must not be cached");
        let ticket = cache.get("Patient", "a").expect_err("empty");
        cache.keep(ticket, &resource("a", 2, "{}"));
        assert_eq!(cache.get("Patient", "a").expect("hit").version_id, 2);
    }

    #[test]
    fn clear_forgets_everything_and_refuses_older_tickets() {
        let cache = ResourceCache::new(1 << 20).expect("on");
        let early = cache.get("Patient", "b").expect_err("empty");
        let ticket = cache.get("Patient", "a").expect_err("empty");
        cache.keep(ticket, &resource("a", 1, "{}"));
        cache.clear();
        assert!(cache.get("Patient", "a").is_err());
        cache.keep(early, &resource("b", 1, "{}"));
        assert!(cache.get("Patient", "b").is_err());
    }

    #[test]
    fn the_budget_holds_and_referenced_entries_survive_longer() {
        let body = "x".repeat(1000);
        // About 4 entries per shard.
        let cache = ResourceCache::new(SHARDS * 4 * (1000 + ENTRY_OVERHEAD + 20)).expect("on");
        for n in 0..2000 {
            let id = format!("p{n}");
            if let Err(ticket) = cache.get("Patient", &id) {
                cache.keep(ticket, &resource(&id, 1, &body));
            }
            // p0 is read again and again: the clock hand spares it.
            if let Err(ticket) = cache.get("Patient", "p0") {
                cache.keep(ticket, &resource("p0", 1, &body));
            }
        }
        assert!(cache.len() <= SHARDS * 4, "{} entries", cache.len());
        assert!(cache.get("Patient", "p0").is_ok());
        for shard in &cache.shards {
            let shard = shard.lock();
            assert!(shard.bytes <= cache.shard_budget);
            assert!(shard.ring.len() <= 2 * shard.entries.len() + 64 + 2000 / SHARDS * 2);
        }
    }

    #[test]
    fn invalidations_do_not_grow_the_ring_without_bound() {
        let cache = ResourceCache::new(1 << 30).expect("on");
        for version in 0..10_000 {
            let ticket = cache.get("Patient", "a").expect_err("invalidated each time");
            cache.keep(ticket, &resource("a", version, "{}"));
            cache.invalidate("Patient", "a");
        }
        let ring: usize = cache.shards.iter().map(|s| s.lock().ring.len()).sum();
        assert!(ring <= 2 * SHARDS + 64 * SHARDS, "{ring} ring items");
    }

    #[test]
    fn zero_budget_turns_caching_off() {
        assert!(ResourceCache::new(0).is_none());
    }
}
