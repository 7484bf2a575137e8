//! Small files kept in memory, each hit checked with one `stat(2)`.
//!
//! An entry is only made on the full, checked path (traversal and symlink
//! rules passed, file opened). A later request for the same URL path is
//! served from memory only if `stat` of that path still finds the same
//! device, inode, modification time and size: an edited file, a deleted
//! one, or a path that now leads elsewhere (a new symlink) misses, and the
//! full path runs again. nginx's `open_file_cache` does this job; it is off
//! there by default, on here for files up to `config::CACHE_MAX_FILE_BYTES`.

use crate::config;
use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// What identifies one version of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
    /// The inode's change time moves with chmod, chown and renames.
    ctime: i64,
    ctime_nsec: i64,
    mode: u32,
    len: u64,
}

impl Identity {
    pub fn of(meta: &Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
            mode: meta.mode(),
            len: meta.len(),
        }
    }
}

/// One cached file: its bytes and the headers that describe them.
#[derive(Debug)]
pub struct Entry<T> {
    pub identity: Identity,
    pub data: Arc<[u8]>,
    pub info: T,
}

/// The cache, keyed by the relative path the URL mapped to.
pub struct FileCache<T> {
    inner: RwLock<Inner<T>>,
}

struct Inner<T> {
    map: HashMap<PathBuf, Arc<Entry<T>>>,
    bytes: usize,
}

impl<T> Default for FileCache<T> {
    fn default() -> Self {
        FileCache {
            inner: RwLock::new(Inner {
                map: HashMap::new(),
                bytes: 0,
            }),
        }
    }
}

impl<T> FileCache<T> {
    /// Whether a file of `len` bytes is worth keeping.
    pub fn wants(len: u64) -> bool {
        len <= config::CACHE_MAX_FILE_BYTES
    }

    /// The entry for `rel`, if `stat` of `full` still finds the same file.
    pub fn lookup(&self, rel: &Path, full: &Path) -> Option<Arc<Entry<T>>> {
        let entry = {
            let inner = self.read();
            Arc::clone(inner.map.get(rel)?)
        };
        match std::fs::metadata(full) {
            Ok(meta) if meta.is_file() && Identity::of(&meta) == entry.identity => Some(entry),
            _ => {
                self.remove(rel, &entry);
                None
            }
        }
    }

    /// Keep `entry` for `rel` while the cache has room; a full cache keeps
    /// what it has (the files asked for first are usually the hot ones).
    pub fn insert(&self, rel: &Path, entry: Arc<Entry<T>>) {
        let mut inner = self.write();
        let old = inner.map.get(rel).map_or(0, |e| e.data.len());
        let bytes = inner.bytes - old + entry.data.len();
        let full = bytes > config::CACHE_MAX_BYTES || inner.map.len() >= config::CACHE_MAX_ENTRIES;
        if full && old == 0 {
            return;
        }
        inner.bytes = bytes;
        inner.map.insert(rel.to_path_buf(), entry);
    }

    /// Forget `stale` if it is still the entry for `rel` (another thread
    /// may have put a newer one there meanwhile).
    fn remove(&self, rel: &Path, stale: &Arc<Entry<T>>) {
        let mut inner = self.write();
        if inner.map.get(rel).is_some_and(|e| Arc::ptr_eq(e, stale)) {
            inner.map.remove(rel);
            inner.bytes -= stale.data.len();
        }
    }

    /// Bytes held, for tests.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.read().bytes
    }

    // Poisoned, the cache is recovered: nothing that can panic runs
    // between a change of the map and of its byte count, and every entry
    // is checked against the disk before it is served anyway.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner<T>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner<T>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn entry(meta: &Metadata, data: &[u8]) -> Arc<Entry<()>> {
        Arc::new(Entry {
            identity: Identity::of(meta),
            data: Arc::from(data),
            info: (),
        })
    }

    #[test]
    fn hits_only_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        fs::write(&path, b"one").unwrap();
        let cache = FileCache::default();
        let rel = Path::new("a.txt");
        assert!(cache.lookup(rel, &path).is_none());
        cache.insert(rel, entry(&fs::metadata(&path).unwrap(), b"one"));
        assert_eq!(&*cache.lookup(rel, &path).unwrap().data, b"one");
        assert_eq!(cache.bytes(), 3);

        // Rewritten with another size: a miss, and the entry is gone.
        fs::write(&path, b"three").unwrap();
        assert!(cache.lookup(rel, &path).is_none());
        assert_eq!(cache.bytes(), 0);

        // Replaced by a symlink to another file: a different inode, a miss.
        cache.insert(rel, entry(&fs::metadata(&path).unwrap(), b"three"));
        let other = dir.path().join("other.txt");
        fs::write(&other, b"three").unwrap();
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&other, &path).unwrap();
        assert!(cache.lookup(rel, &path).is_none());

        // Permissions changed (ctime moves): a miss, so access is checked again.
        cache.insert(rel, entry(&fs::metadata(&path).unwrap(), b"three"));
        assert!(cache.lookup(rel, &path).is_some());
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&other, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(cache.lookup(rel, &path).is_none());

        // Deleted: a miss.
        cache.insert(rel, entry(&fs::metadata(&other).unwrap(), b"three"));
        fs::remove_file(&path).unwrap();
        assert!(cache.lookup(rel, &path).is_none());
    }

    #[test]
    fn size_limits() {
        assert!(FileCache::<()>::wants(config::CACHE_MAX_FILE_BYTES));
        assert!(!FileCache::<()>::wants(config::CACHE_MAX_FILE_BYTES + 1));
    }
}
