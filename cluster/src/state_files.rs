//! Incremental checkpoints: a slot uploads its state instances' files (RocksDB checkpoints)
//! straight to the job's checkpoint store, and downloads them again to restore.
//!
//! **Upload.** An instance's checkpoint is a directory of immutable SST files and a few small
//! files RocksDB rewrites every time (MANIFEST, OPTIONS, CURRENT). The small ones go inline in
//! the slot's state file. An SST goes once to the job's `shared/` directory, named by the
//! operator, slot and attempt that uploaded it and its file name — one name, one content — and
//! every later checkpoint that still holds it names it again without uploading it (Flink's
//! incremental checkpoints). The slot reports the shared files its state file names; the
//! coordinator records them in `_metadata`, and retention deletes a shared file once no
//! retained checkpoint names it ([`weir_core::checkpoint::CheckpointStore::retain`]). No state
//! passes through the coordinator.
//!
//! **Restore.** Before its job is built, the slot downloads each restored instance's files
//! into the instance's directory, each checked against its size and checksum. The files keep
//! their names, so the reopened instance's SSTs are the shared files already uploaded, and
//! its next checkpoint uploads only what it writes after the restore.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use weir_core::checkpoint::{with_retries, CheckpointError, CheckpointStore, FileEntry};
use weir_core::rt;
use weir_dataflow::snapshot::{InstanceFile, InstanceManifest, StoredFile};
use weir_dataflow::stateful::StateFiles;

/// The shared files a slot knows to be in the store, by operator and file name: the ones it
/// uploaded and the ones its restored instances were opened on.
#[derive(Debug, Default)]
pub struct SharedFiles {
    known: HashMap<(String, String), InstanceFile>,
}

/// Whether an instance file is one of the immutable files shared between checkpoints.
fn is_shared(name: &str) -> bool {
    name.ends_with(".sst")
}

impl SharedFiles {
    /// The shared files of the instances the slot restores.
    pub fn restored(instances: &[InstanceManifest]) -> Self {
        let mut shared = SharedFiles::default();
        for instance in instances {
            for file in instance.files.iter().filter(|file| matches!(file.stored, StoredFile::Shared(_))) {
                shared.known.insert((instance.operator.clone(), file.name.clone()), file.clone());
            }
        }
        shared
    }

    /// Uploads what the store lacks of operator `operator`'s checkpoint `files` (slot `slot`,
    /// holding `key_groups`, of attempt `attempt`); returns the instance's manifest and the
    /// bytes uploaded to the shared directory.
    pub async fn upload(
        &mut self,
        store: &CheckpointStore,
        slot: usize,
        attempt: u64,
        operator: &str,
        key_groups: Range<usize>,
        files: &StateFiles,
    ) -> Result<(InstanceManifest, u64), String> {
        let dir = files.dir().to_path_buf();
        let listed = rt::blocking(move || weir_core::fs::read_dir(&dir))
            .await
            .map_err(|e| format!("cannot list {}: {e}", files.dir().display()))?;
        let mut manifest = InstanceManifest {
            operator: operator.to_owned(),
            key_groups: (key_groups.start, key_groups.end),
            files: Vec::new(),
        };
        let mut uploaded = 0;
        for entry in listed.into_iter().filter(|entry| !entry.is_dir) {
            let size = weir_core::fs::metadata(&entry.path).map_err(|e| format!("{}: {e}", entry.path.display()))?.len;
            let key = (operator.to_owned(), entry.name.clone());
            if is_shared(&entry.name) {
                if let Some(known) = self.known.get(&key).filter(|known| known.size == size) {
                    manifest.files.push(known.clone());
                    continue;
                }
            }
            let path = entry.path.clone();
            let content = bytes::Bytes::from(
                rt::blocking(move || weir_core::fs::read(&path))
                    .await
                    .map_err(|e| format!("{}: {e}", entry.path.display()))?,
            );
            let FileEntry { size, crc32, .. } = FileEntry::of(&entry.name, &content);
            let file = if is_shared(&entry.name) {
                let name = shared_name(operator, slot, attempt, &entry.name);
                with_retries("shared state upload", || store.put_shared(&name, content.clone()))
                    .await
                    .map_err(|e| e.to_string())?;
                uploaded += size;
                let file = InstanceFile { name: entry.name.clone(), size, crc32, stored: StoredFile::Shared(name) };
                self.known.insert(key, file.clone());
                file
            } else {
                InstanceFile { name: entry.name.clone(), size, crc32, stored: StoredFile::Inline(content.to_vec()) }
            };
            manifest.files.push(file);
        }
        Ok((manifest, uploaded))
    }

    /// Forgets what an operator's instance no longer holds (it compacted those files away:
    /// no later checkpoint names them), so the map does not grow without bound.
    pub fn keep_only(&mut self, manifests: &[InstanceManifest]) {
        self.known.retain(|(operator, name), _| {
            manifests.iter().any(|m| &m.operator == operator && m.files.iter().any(|file| &file.name == name))
        });
    }
}

/// The shared files a set of manifests names, as `_metadata` records them.
pub fn shared_entries(manifests: &[InstanceManifest]) -> Vec<FileEntry> {
    manifests
        .iter()
        .flat_map(|manifest| &manifest.files)
        .filter_map(|file| match &file.stored {
            StoredFile::Shared(name) => Some(FileEntry { name: name.clone(), size: file.size, crc32: file.crc32 }),
            StoredFile::Inline(_) => None,
        })
        .collect()
}

/// The name in the shared directory of file `file` of operator `operator`'s instance in slot
/// `slot` of attempt `attempt`: unique, since an instance never reuses a file name and every
/// attempt opens instances anew.
fn shared_name(operator: &str, slot: usize, attempt: u64, file: &str) -> String {
    let operator = weir_dataflow::state::instance_dir(Path::new(""), operator);
    format!("{}-s{slot}-a{attempt:016x}-{file}", operator.display())
}

/// Why a restore's files could not be put in place.
#[derive(Debug)]
pub enum DownloadError {
    /// A file does not match its size or checksum: the checkpoint is damaged.
    Damaged(String),
    /// The store or the local disk failed.
    Failed(String),
}

/// Puts the files of the restored `instances` of a slot whose state directory is `slot_dir`
/// in place, each checked against its size and checksum; an error names the file.
pub async fn download(
    store: &CheckpointStore,
    instances: &[InstanceManifest],
    slot_dir: &Path,
) -> Result<(), DownloadError> {
    for instance in instances {
        let dir = weir_dataflow::state::instance_dir(slot_dir, &instance.operator);
        let files_dir = weir_dataflow::state::instance_files_dir(&dir);
        let fresh = files_dir.clone();
        rt::blocking(move || {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
            weir_core::fs::create_dir_all(&fresh)
        })
        .await
        .map_err(|e| DownloadError::Failed(format!("cannot prepare {}: {e}", files_dir.display())))?;
        for file in &instance.files {
            let entry = FileEntry { name: file.name.clone(), size: file.size, crc32: file.crc32 };
            let content = match &file.stored {
                StoredFile::Inline(content) => {
                    entry.check(content).map_err(|reason| {
                        DownloadError::Damaged(format!("operator {}: {reason}", instance.operator))
                    })?;
                    bytes::Bytes::from(content.clone())
                }
                StoredFile::Shared(name) => {
                    let shared = FileEntry { name: name.clone(), ..entry };
                    with_retries("shared state download", || store.get_shared(&shared)).await.map_err(|error| {
                        let reason = format!("operator {}: shared file {name}: {error}", instance.operator);
                        match error {
                            CheckpointError::Corrupt { .. }
                            | CheckpointError::Store { source: object_store::Error::NotFound { .. }, .. } => {
                                DownloadError::Damaged(reason)
                            }
                            _ => DownloadError::Failed(reason),
                        }
                    })?
                }
            };
            let path = files_dir.join(&file.name);
            rt::blocking(move || weir_core::fs::write(&path, &content)).await.map_err(|e| {
                DownloadError::Failed(format!("cannot write {}: {e}", files_dir.join(&file.name).display()))
            })?;
        }
    }
    Ok(())
}

/// Removes what [`download`] put in place for `instances` (a restore that failed before their
/// operators opened them, which would have owned and removed them).
pub async fn discard_downloads(instances: &[InstanceManifest], slot_dir: &Path) {
    let dirs: Vec<_> =
        instances.iter().map(|instance| weir_dataflow::state::instance_dir(slot_dir, &instance.operator)).collect();
    rt::blocking(move || {
        for dir in dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    })
    .await
}
