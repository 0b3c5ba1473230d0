//! Small cached objects kept in memory, so that a hit on one costs a metadata lookup and no
//! storage round trip: no S3 GET, and on the filesystem no open and read on the blocking pool.
//! An entry is used only while the object's record names the same SHA-256, so a replaced or
//! flushed object is never served from here.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

use crate::digest::Sha256Digest;

/// Objects up to this size are kept.
pub const HOT_OBJECT_MAX: u64 = 256 * 1024;
/// Total bytes kept; the oldest entries go first.
const HOT_TOTAL_MAX: u64 = 64 * 1024 * 1024;

#[derive(Default)]
struct Inner {
    map: HashMap<String, (Sha256Digest, Bytes)>,
    order: VecDeque<String>,
    total: u64,
}

#[derive(Default)]
pub struct HotCache {
    inner: Mutex<Inner>,
}

impl HotCache {
    /// True when an object of `size` bytes belongs here.
    pub fn wants(&self, size: u64) -> bool {
        size <= HOT_OBJECT_MAX
    }

    /// The bytes of `key`, if kept with this digest.
    pub fn get(&self, key: &str, sha256: Sha256Digest) -> Option<Bytes> {
        let inner = self.inner.lock().expect("hot cache lock");
        match inner.map.get(key) {
            Some((sha, bytes)) if *sha == sha256 => Some(bytes.clone()),
            _ => None,
        }
    }

    pub fn put(&self, key: &str, sha256: Sha256Digest, bytes: Bytes) {
        if !self.wants(bytes.len() as u64) {
            return;
        }
        let mut inner = self.inner.lock().expect("hot cache lock");
        let size = bytes.len() as u64;
        if let Some((_, old)) = inner.map.insert(key.to_string(), (sha256, bytes)) {
            inner.total -= old.len() as u64;
        } else {
            inner.order.push_back(key.to_string());
        }
        inner.total += size;
        while inner.total > HOT_TOTAL_MAX {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some((_, b)) = inner.map.remove(&oldest) {
                inner.total -= b.len() as u64;
            }
        }
    }

    /// Forgets `key` (deleted or replaced).
    pub fn forget(&self, key: &str) {
        let mut inner = self.inner.lock().expect("hot cache lock");
        if let Some((_, b)) = inner.map.remove(key) {
            inner.total -= b.len() as u64;
            inner.order.retain(|k| k != key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_need_the_same_digest_and_the_oldest_go_first() {
        let (one, two) = (Sha256Digest::of(b"1"), Sha256Digest::of(b"2"));
        let hot = HotCache::default();
        hot.put("a", one, Bytes::from_static(b"x"));
        assert_eq!(hot.get("a", one).as_deref(), Some(&b"x"[..]));
        assert!(hot.get("a", two).is_none(), "another digest");
        hot.forget("a");
        assert!(hot.get("a", one).is_none());
        let big = Bytes::from(vec![0u8; HOT_OBJECT_MAX as usize]);
        let s = Sha256Digest::of(b"s");
        let n = (HOT_TOTAL_MAX / HOT_OBJECT_MAX) as usize;
        for i in 0..=n {
            hot.put(&format!("k{i}"), s, big.clone());
        }
        assert!(hot.get("k0", s).is_none(), "evicted");
        assert!(hot.get(&format!("k{n}"), s).is_some());
        assert!(!hot.wants(HOT_OBJECT_MAX + 1));
    }
}
