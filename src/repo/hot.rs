//! Small cached objects kept in memory, so that a hit on one costs a metadata lookup and no
//! storage round trip: no S3 GET, and on the filesystem no open and read on the blocking pool.
//! An entry is used only while the object's record names the same SHA-256, so a replaced or
//! flushed object is never served from here.

use bytes::Bytes;
use moka::sync::Cache;

use crate::digest::Sha256Digest;

/// Objects up to this size are kept.
pub const HOT_OBJECT_MAX: u64 = 256 * 1024;
/// Total bytes kept (object bytes plus key bytes). Which entries stay is moka's choice:
/// TinyLFU admission and LRU eviction, so one scan over many objects does not flush the
/// objects read often.
const HOT_TOTAL_MAX: u64 = 64 * 1024 * 1024;

pub struct HotCache {
    map: Cache<String, (Sha256Digest, Bytes)>,
}

impl Default for HotCache {
    fn default() -> Self {
        HotCache::with_capacity(HOT_TOTAL_MAX)
    }
}

impl HotCache {
    fn with_capacity(bytes: u64) -> HotCache {
        HotCache {
            map: Cache::builder()
                .max_capacity(bytes)
                .weigher(|k: &String, (_, b): &(Sha256Digest, Bytes)| {
                    u32::try_from(k.len() + b.len()).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    /// True when an object of `size` bytes belongs here.
    pub fn wants(&self, size: u64) -> bool {
        size <= HOT_OBJECT_MAX
    }

    /// The bytes of `key`, if kept with this digest.
    pub fn get(&self, key: &str, sha256: Sha256Digest) -> Option<Bytes> {
        match self.map.get(key) {
            Some((sha, bytes)) if sha == sha256 => Some(bytes),
            _ => None,
        }
    }

    pub fn put(&self, key: &str, sha256: Sha256Digest, bytes: Bytes) {
        if self.wants(bytes.len() as u64) {
            self.map.insert(key.to_string(), (sha256, bytes));
        }
    }

    /// Forgets `key` (deleted or replaced).
    pub fn forget(&self, key: &str) {
        self.map.invalidate(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_need_the_same_digest_and_the_total_stays_bounded() {
        let (one, two) = (Sha256Digest::of(b"1"), Sha256Digest::of(b"2"));
        let hot = HotCache::with_capacity(4 * HOT_OBJECT_MAX);
        hot.put("a", one, Bytes::from_static(b"x"));
        assert_eq!(hot.get("a", one).as_deref(), Some(&b"x"[..]));
        assert!(hot.get("a", two).is_none(), "another digest");
        hot.forget("a");
        assert!(hot.get("a", one).is_none());
        let big = Bytes::from(vec![0u8; HOT_OBJECT_MAX as usize]);
        let s = Sha256Digest::of(b"s");
        for i in 0..100 {
            hot.put(&format!("k{i}"), s, big.clone());
        }
        hot.map.run_pending_tasks();
        assert!(hot.map.weighted_size() <= 4 * HOT_OBJECT_MAX + 16 * 4);
        let kept = (0..100)
            .filter(|i| hot.get(&format!("k{i}"), s).is_some())
            .count();
        assert!((1..=4).contains(&kept), "{kept} kept");
        assert!(!hot.wants(HOT_OBJECT_MAX + 1));
    }
}
