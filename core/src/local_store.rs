//! [`LocalDirStore`]: an `object_store` over a local directory that is durable when it says so.
//!
//! `object_store`'s own `LocalFileSystem` never calls `fsync`: an object it reports stored can
//! vanish, or come back empty, after an OS crash. For checkpoints that breaks the protocol's
//! one promise — a checkpoint is complete iff its `_metadata` exists — because sinks commit
//! output as soon as `_metadata` is stored. This store makes every put durable before it
//! returns: the content goes to a temporary file in the object's directory, which is synced,
//! renamed into place, and the directory synced too (new directories are synced into their
//! parents). Deletes sync the directory. All of it goes through the storage seam
//! ([`crate::fs`]), so that the simulator's crash model sees every step.
//!
//! Conditional puts are supported: `PutMode::Create` links the synced temporary file to the
//! object's name, which fails if the name exists (atomic create-if-absent, also across
//! processes); `PutMode::Update` compares the object's entity tag (a checksum and length of its
//! content) under an exclusive lock of the object, taken by every conditional writer.
//!
//! Temporary and lock files are hidden from listings (names start with `.`).

use std::io::Write;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    Error, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use crate::faultpoint::{self, PlantedBug};
use crate::fs;

const STORE: &str = "LocalDirStore";

/// An object store in a local directory, every put durable before it returns. Its file I/O
/// runs off the async runtime ([`crate::rt::blocking`]): an `fsync` may take a while.
#[derive(Clone, Debug)]
pub struct LocalDirStore {
    root: PathBuf,
}

impl std::fmt::Display for LocalDirStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalDirStore({})", self.root.display())
    }
}

fn generic(path: &FsPath, error: std::io::Error) -> Error {
    if error.kind() == std::io::ErrorKind::NotFound {
        return Error::NotFound { path: path.display().to_string(), source: error.into() };
    }
    Error::Generic { store: STORE, source: format!("{}: {error}", path.display()).into() }
}

/// The entity tag of an object's content: its CRC32 and length. Content-derived, so that any
/// process computes the same tag for the same object.
fn entity_tag(content: &[u8]) -> String {
    format!("{:08x}-{}", crc32fast::hash(content), content.len())
}

impl LocalDirStore {
    /// A store rooted at `root`, which is created (durably) if missing.
    pub fn new(root: &FsPath) -> std::io::Result<Self> {
        let root = std::path::absolute(root)?;
        fs::create_dir_all_durable(&root)?;
        Ok(LocalDirStore { root })
    }

    fn file(&self, location: &Path) -> PathBuf {
        let mut path = self.root.clone();
        for part in location.parts() {
            path.push(part.as_ref());
        }
        path
    }

    fn location(&self, file: &FsPath) -> Option<Path> {
        let relative = file.strip_prefix(&self.root).ok()?;
        let parts: Vec<String> = relative.iter().map(|part| part.to_string_lossy().into_owned()).collect();
        Path::parse(parts.join("/")).ok()
    }

    fn meta(&self, location: &Path, content: &[u8]) -> ObjectMeta {
        ObjectMeta {
            location: location.clone(),
            // Not tracked: a wall clock would be a non-deterministic input, and nothing in
            // Weir orders objects by time.
            last_modified: chrono::DateTime::UNIX_EPOCH,
            size: content.len() as u64,
            e_tag: Some(entity_tag(content)),
            version: None,
        }
    }

    /// Writes `content` to a synced temporary file next to `target`.
    fn stage(&self, target: &FsPath, content: &[u8], sync: bool) -> std::io::Result<PathBuf> {
        fs::create_dir_all_durable(fs::parent_of(target))?;
        let temporary = fs::temporary_sibling(target);
        let mut file = fs::File::create_new(&temporary)?;
        file.write_all(content)?;
        if sync {
            file.sync_all()?;
        }
        Ok(temporary)
    }

    fn put_now(&self, location: &Path, content: &[u8], mode: &PutMode) -> Result<PutResult> {
        let target = self.file(location);
        // Planted bug: only `_metadata` reaches the disk; the state files it names may not.
        let sync = !(faultpoint::planted(PlantedBug::StoreSkipsFsync)
            && location.filename() != Some(crate::checkpoint::METADATA));
        let temporary = self.stage(&target, content, sync).map_err(|e| generic(&target, e))?;
        let placed = match mode {
            PutMode::Overwrite => fs::rename(&temporary, &target).map_err(|e| generic(&target, e)),
            PutMode::Create => {
                let linked = fs::hard_link(&temporary, &target);
                let _ = fs::remove_file(&temporary);
                match linked {
                    Ok(()) => Ok(()),
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Err(Error::AlreadyExists { path: location.to_string(), source: error.into() })
                    }
                    Err(error) => Err(generic(&target, error)),
                }
            }
            PutMode::Update(version) => {
                let lock_path = fs::parent_of(&target).join(format!(
                    ".{}.lock",
                    target.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                ));
                let lock = fs::lock(&lock_path).map_err(|e| generic(&lock_path, e))?;
                let current = match fs::read(&target) {
                    Ok(current) => Some(entity_tag(&current)),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                    Err(error) => return Err(generic(&target, error)),
                };
                if current.is_none() || current != version.e_tag {
                    drop(lock);
                    let _ = fs::remove_file(&temporary);
                    return Err(Error::Precondition {
                        path: location.to_string(),
                        source: format!("entity tag is {current:?}, expected {:?}", version.e_tag).into(),
                    });
                }
                let renamed = fs::rename(&temporary, &target).map_err(|e| generic(&target, e));
                drop(lock);
                renamed
            }
        };
        if placed.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        placed?;
        if sync {
            fs::sync_dir(fs::parent_of(&target)).map_err(|e| generic(&target, e))?;
        }
        Ok(PutResult { e_tag: Some(entity_tag(content)), version: None })
    }

    fn walk(&self, dir: &FsPath, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        for entry in entries {
            if entry.name.starts_with('.') {
                continue;
            }
            if entry.is_dir {
                self.walk(&entry.path, out)?;
            } else if let Some(location) = self.location(&entry.path) {
                let size = match fs::metadata(&entry.path) {
                    Ok(metadata) => metadata.len,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue, // deleted meanwhile
                    Err(error) => return Err(error),
                };
                // The entity tag needs the content; listings carry none (as S3's do not
                // promise one either).
                out.push(ObjectMeta {
                    location,
                    last_modified: chrono::DateTime::UNIX_EPOCH,
                    size,
                    e_tag: None,
                    version: None,
                });
            }
        }
        Ok(())
    }
}

impl LocalDirStore {
    /// Runs `work` on a copy of the store, off the async runtime.
    async fn off_runtime<T: Send + 'static>(&self, work: impl FnOnce(&LocalDirStore) -> T + Send + 'static) -> T {
        let store = self.clone();
        crate::rt::blocking(move || work(&store)).await
    }
}

#[async_trait]
impl ObjectStore for LocalDirStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        // One chunk (every put of Weir's) is taken as it is; more are joined once.
        let content = Bytes::from(payload);
        let location = location.clone();
        self.off_runtime(move |store| store.put_now(&location, &content, &opts.mode)).await
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Err(Error::NotImplemented)
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let file = self.file(location);
        let content = {
            let reading = file.clone();
            crate::rt::blocking(move || fs::read(&reading)).await.map_err(|e| generic(&file, e))?
        };
        let meta = self.meta(location, &content);
        options.check_preconditions(&meta)?;
        let range: Range<u64> = match &options.range {
            Some(range) => range
                .as_range(content.len() as u64)
                .map_err(|e| Error::Generic { store: STORE, source: e.to_string().into() })?,
            None => 0..content.len() as u64,
        };
        let body = if options.head {
            Bytes::new()
        } else {
            Bytes::from(content[range.start as usize..range.end as usize].to_vec())
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(body) }).boxed()),
            meta,
            range,
            attributes: Default::default(),
        })
    }

    async fn delete(&self, location: &Path) -> Result<()> {
        let file = self.file(location);
        crate::rt::blocking(move || {
            fs::remove_file(&file).map_err(|e| generic(&file, e))?;
            fs::sync_dir(fs::parent_of(&file)).map_err(|e| generic(&file, e))
        })
        .await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let dir = prefix.map_or_else(|| self.root.clone(), |prefix| self.file(prefix));
        let store = self.clone();
        let listing = crate::rt::blocking(move || {
            let mut objects = Vec::new();
            match store.walk(&dir, &mut objects) {
                Ok(()) => objects.into_iter().map(Ok).collect(),
                Err(error) => vec![Err(generic(&dir, error))],
            }
        });
        futures::stream::once(listing).flat_map(futures::stream::iter).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let prefix = prefix.cloned();
        self.off_runtime(move |store| store.list_one_level(prefix.as_ref())).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        self.copy_as(from, to, PutMode::Overwrite).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.copy_as(from, to, PutMode::Create).await
    }
}

impl LocalDirStore {
    /// Copies object `from` to `to`, putting it with `mode`.
    async fn copy_as(&self, from: &Path, to: &Path, mode: PutMode) -> Result<()> {
        let (from, to) = (from.clone(), to.clone());
        self.off_runtime(move |store| {
            let source = store.file(&from);
            let content = fs::read(&source).map_err(|e| generic(&source, e))?;
            store.put_now(&to, &content, &mode).map(|_| ())
        })
        .await
    }
}

impl LocalDirStore {
    fn list_one_level(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let dir = prefix.map_or_else(|| self.root.clone(), |prefix| self.file(prefix));
        let mut result = ListResult { common_prefixes: Vec::new(), objects: Vec::new() };
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(result),
            Err(error) => return Err(generic(&dir, error)),
        };
        for entry in entries.into_iter().filter(|entry| !entry.name.starts_with('.')) {
            let Some(location) = self.location(&entry.path) else { continue };
            if entry.is_dir {
                result.common_prefixes.push(location);
            } else if let Ok(metadata) = fs::metadata(&entry.path) {
                result.objects.push(ObjectMeta {
                    location,
                    last_modified: chrono::DateTime::UNIX_EPOCH,
                    size: metadata.len,
                    e_tag: None,
                    version: None,
                });
            }
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::UpdateVersion;

    #[test]
    fn conditional_puts_and_listings() {
        crate::rt::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = LocalDirStore::new(dir.path()).unwrap();
            let path = Path::from("job/_generation");
            let created = store.put_opts(&path, PutPayload::from_static(b"1"), PutMode::Create.into()).await.unwrap();
            let again = store.put_opts(&path, PutPayload::from_static(b"1"), PutMode::Create.into()).await;
            assert!(matches!(again, Err(Error::AlreadyExists { .. })), "{again:?}");
            let got = store.get(&path).await.unwrap();
            assert_eq!(got.meta.e_tag, created.e_tag);
            let update = |e_tag: Option<String>| PutMode::Update(UpdateVersion { e_tag, version: None });
            let updated = store
                .put_opts(&path, PutPayload::from_static(b"2"), update(created.e_tag.clone()).into())
                .await
                .unwrap();
            let stale = store.put_opts(&path, PutPayload::from_static(b"3"), update(created.e_tag).into()).await;
            assert!(matches!(stale, Err(Error::Precondition { .. })), "{stale:?}");
            store.put_opts(&path, PutPayload::from_static(b"3"), update(updated.e_tag).into()).await.unwrap();
            assert_eq!(store.get(&path).await.unwrap().bytes().await.unwrap().as_ref(), b"3");
            store.put(&Path::from("job/chk-1/_metadata"), PutPayload::from_static(b"m")).await.unwrap();
            let listed: Vec<String> =
                store.list(Some(&Path::from("job"))).map(|m| m.unwrap().location.to_string()).collect().await;
            assert_eq!(
                listed,
                ["job/_generation", "job/chk-1/_metadata"],
                "hidden lock and temporary files are not listed"
            );
            let top = store.list_with_delimiter(None).await.unwrap();
            assert_eq!(top.common_prefixes, [Path::from("job")]);
            store.delete(&path).await.unwrap();
            assert!(matches!(store.get(&path).await, Err(Error::NotFound { .. })));
            assert!(matches!(store.delete(&path).await, Err(Error::NotFound { .. })));
        });
    }
}
