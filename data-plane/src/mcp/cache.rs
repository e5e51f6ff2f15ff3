//! The data plane's caches for `/mcp`: everything here can be dropped at any
//! moment and fetched again from the control plane (or re-initialised at the
//! upstream), so any instance serves any request and a lost instance loses
//! nothing.
//!
//! [`TtlCache`] is bounded and sharded: each entry has its own deadline, an
//! expired entry is never returned, and a full shard evicts expired entries
//! first, then an arbitrary one. The lock of a shard is held only for a map
//! operation, never across an `.await`.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Shards per cache: enough that concurrent requests rarely share a lock.
const SHARDS: usize = 16;

struct Entry<V> {
    value: V,
    expires: Instant,
}

/// A bounded map whose entries expire.
pub(crate) struct TtlCache<K, V> {
    shards: Vec<Mutex<HashMap<K, Entry<V>>>>,
    per_shard: usize,
    hasher: RandomState,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    /// A cache holding at most about `capacity` entries.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &K) -> MutexGuard<'_, HashMap<K, Entry<V>>> {
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        // A panic while holding a shard leaves a map that is still a valid cache.
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live value of `key`.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        let mut shard = self.shard(key);
        match shard.get(key) {
            Some(entry) if entry.expires > Instant::now() => Some(entry.value.clone()),
            Some(_) => {
                shard.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `value` for `ttl` (nothing is kept for a zero TTL).
    pub(crate) fn insert(&self, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            self.remove(&key);
            return;
        }
        let now = Instant::now();
        let mut shard = self.shard(&key);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, entry| entry.expires > now);
            if shard.len() >= self.per_shard
                && let Some(victim) = shard.keys().next().cloned()
            {
                shard.remove(&victim);
            }
        }
        shard.insert(
            key,
            Entry {
                value,
                expires: now + ttl,
            },
        );
    }

    pub(crate) fn remove(&self, key: &K) {
        self.shard(key).remove(key);
    }

    /// Drops every entry that matches.
    pub(crate) fn remove_where(&self, matches: impl Fn(&K, &V) -> bool) {
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|key, entry| !matches(key, &entry.value));
        }
    }

    /// The keys whose values match (expired ones excepted).
    pub(crate) fn keys_where(&self, matches: impl Fn(&V) -> bool) -> Vec<K> {
        let now = Instant::now();
        let mut found = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            found.extend(
                shard
                    .iter()
                    .filter(|(_, entry)| entry.expires > now && matches(&entry.value))
                    .map(|(key, _)| key.clone()),
            );
        }
        found
    }

    /// The values that match (expired ones excepted).
    pub(crate) fn values_where(&self, matches: impl Fn(&V) -> bool) -> Vec<V> {
        let now = Instant::now();
        let mut found = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            found.extend(
                shard
                    .values()
                    .filter(|entry| entry.expires > now && matches(&entry.value))
                    .map(|entry| entry.value.clone()),
            );
        }
        found
    }

    /// Entries held (expired ones included until they are touched).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// A single value refreshed when older than its age limit; the last good value
/// stays available (stale) when a refresh fails.
pub(crate) struct Refreshing<V> {
    slot: Mutex<Option<(V, Instant)>>,
    max_age: Duration,
}

impl<V: Clone> Refreshing<V> {
    pub(crate) fn new(max_age: Duration) -> Self {
        Self {
            slot: Mutex::new(None),
            max_age,
        }
    }

    /// The value if it is younger than the age limit.
    pub(crate) fn fresh(&self) -> Option<V> {
        let slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        slot.as_ref()
            .filter(|(_, at)| at.elapsed() < self.max_age)
            .map(|(value, _)| value.clone())
    }

    /// The last value, however old.
    pub(crate) fn stale(&self) -> Option<V> {
        let slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        slot.as_ref().map(|(value, _)| value.clone())
    }

    pub(crate) fn set(&self, value: V) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some((value, Instant::now()));
    }

    pub(crate) fn clear(&self) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_are_never_returned_late() {
        // Roomy enough that the three keys never share a full shard.
        let cache = TtlCache::new(SHARDS * 4);
        cache.insert("a", 1, Duration::from_secs(60));
        cache.insert("b", 2, Duration::from_millis(1));
        cache.insert("c", 3, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.get(&"b"), None);
        assert_eq!(cache.get(&"c"), None);
        cache.remove(&"a");
        assert_eq!(cache.get(&"a"), None);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = TtlCache::new(32);
        for i in 0..1000 {
            cache.insert(i, i, Duration::from_secs(60));
        }
        assert!(cache.len() <= 32, "{}", cache.len());
        assert_eq!(cache.get(&999), Some(999), "the newest entry is kept");
    }

    #[test]
    fn a_full_shard_evicts_expired_entries_first() {
        let cache = TtlCache::new(SHARDS);
        // One entry per shard at most: fill with short-lived entries, then add.
        for i in 0..200 {
            cache.insert(i, i, Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(5));
        cache.insert(1000, 1000, Duration::from_secs(60));
        assert_eq!(cache.get(&1000), Some(1000));
    }

    #[test]
    fn remove_where_drops_matching_keys() {
        let cache = TtlCache::new(100);
        cache.insert(("g1", "a"), 1, Duration::from_secs(60));
        cache.insert(("g1", "b"), 2, Duration::from_secs(60));
        cache.insert(("g2", "a"), 3, Duration::from_secs(60));
        assert_eq!(cache.values_where(|v| *v > 1).len(), 2);
        cache.remove_where(|(grant, _), _| *grant == "g1");
        assert_eq!(cache.get(&("g1", "a")), None);
        assert_eq!(cache.get(&("g2", "a")), Some(3));
    }

    #[test]
    fn refreshing_values_go_stale_but_stay_available() {
        let value = Refreshing::new(Duration::from_millis(1));
        assert_eq!(value.fresh(), None::<u8>);
        value.set(7);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(value.fresh(), None);
        assert_eq!(value.stale(), Some(7));
        value.clear();
        assert_eq!(value.stale(), None);
    }
}
