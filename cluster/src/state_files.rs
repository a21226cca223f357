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
//! **Restore.** Before its job is built, the slot puts each restored instance's files in the
//! instance's directory, each checked against its size and checksum. A shared file comes from
//! the node's own disk when it can (*local recovery*): a process killed with the slot running
//! leaves its instance directories behind, and an SST file there with the name, size and
//! checksum the manifest records is the file; otherwise it is downloaded. The files keep their
//! names, so the reopened instance's SSTs are the shared files already uploaded, and its next
//! checkpoint uploads only what it writes after the restore.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use weir_core::checkpoint::{with_retries, CheckpointStore, FileEntry};
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
    /// The shared files of the instances the slot restores, but for those taken from the
    /// node's disk (`from_disk`: operator and file name), whose copies in the store were never
    /// read: the next checkpoint uploads them again, under new names.
    pub fn restored(instances: &[InstanceManifest], from_disk: &[(String, String)]) -> Self {
        let mut shared = SharedFiles::default();
        for instance in instances {
            for file in instance.files.iter().filter(|file| matches!(file.stored, StoredFile::Shared(_))) {
                let key = (instance.operator.clone(), file.name.clone());
                if !from_disk.contains(&key) {
                    shared.known.insert(key, file.clone());
                }
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
    /// A file does not match its size or checksum: the checkpoint is damaged (and so is every
    /// checkpoint naming the shared file `file`, if it is one).
    Damaged {
        /// The damaged shared file's name, if it is one.
        file: Option<String>,
        /// What is wrong, naming the operator and file.
        reason: String,
    },
    /// The store or the local disk failed.
    Failed(String),
}

/// Puts the files of the restored `instances` of a slot whose state directory is `slot_dir`
/// in place, each checked against its size and checksum; an error names the file. Returns the
/// shared files taken from the node's disk (operator and file name).
pub async fn download(
    store: &CheckpointStore,
    instances: &[InstanceManifest],
    slot_dir: &Path,
) -> Result<Vec<(String, String)>, DownloadError> {
    let mut taken_from_disk = Vec::new();
    for instance in instances {
        let local = local_copies(slot_dir, &instance.operator).await;
        let (mut from_disk, mut downloaded) = (0, 0);
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
            // Names come from a state file: only plain names, inside the instance's directory.
            let plain = !file.name.is_empty() && !file.name.contains(['/', '\\']) && !file.name.starts_with('.');
            if !plain {
                let reason = format!("operator {}: file name {:?} is not a plain name", instance.operator, file.name);
                return Err(DownloadError::Damaged { file: None, reason });
            }
            let entry = FileEntry { name: file.name.clone(), size: file.size, crc32: file.crc32 };
            let content = match &file.stored {
                StoredFile::Inline(content) => {
                    entry.check(content).map_err(|reason| DownloadError::Damaged {
                        file: None,
                        reason: format!("operator {}: {reason}", instance.operator),
                    })?;
                    bytes::Bytes::from(content.clone())
                }
                StoredFile::Shared(name) => match local_copy(&local, &entry).await {
                    Some(content) => {
                        from_disk += 1;
                        taken_from_disk.push((instance.operator.clone(), file.name.clone()));
                        content
                    }
                    None => {
                        downloaded += 1;
                        let shared = FileEntry { name: name.clone(), ..entry };
                        // Retried if the store fails, not if the file is damaged. A file not
                        // found is not taken for damage: the coordinator saw it at its size, so
                        // it went since (a newer deployment's restore swept it).
                        let fetched = with_retries("shared state download", || store.get_shared(&shared))
                            .await
                            .map_err(|error| {
                                let operator = &instance.operator;
                                DownloadError::Failed(format!("operator {operator}: shared file {name}: {error}"))
                            })?;
                        fetched.map_err(|reason| DownloadError::Damaged {
                            file: Some(name.clone()),
                            reason: format!("operator {}: shared {reason}", instance.operator),
                        })?
                    }
                },
            };
            let path = files_dir.join(&file.name);
            rt::blocking(move || weir_core::fs::write(&path, &content)).await.map_err(|e| {
                DownloadError::Failed(format!("cannot write {}: {e}", files_dir.join(&file.name).display()))
            })?;
        }
        tracing::info!(operator = instance.operator, from_disk, downloaded, "restored a state instance's files");
    }
    Ok(taken_from_disk)
}

/// The directories where a process killed with this slot running may have left files of its
/// instance of `operator`: in the slot's directories of other attempts on this node, the
/// instance's live files and its checkpoint directories.
async fn local_copies(slot_dir: &Path, operator: &str) -> Vec<PathBuf> {
    let (slot_dir, operator) = (slot_dir.to_path_buf(), operator.to_owned());
    rt::blocking(move || {
        let mut found = Vec::new();
        for attempt in other_attempts(&slot_dir) {
            let instance = weir_dataflow::state::instance_dir(&attempt, &operator);
            found.push(weir_dataflow::state::instance_files_dir(&instance));
            for entry in weir_core::fs::read_dir(&instance).unwrap_or_default() {
                if entry.is_dir && entry.name.starts_with("snapshot-") {
                    found.push(entry.path);
                }
            }
        }
        found
    })
    .await
}

/// The directories of the slot's other attempts on this node (`slot_dir` is the slot's own,
/// `slot-<i>-attempt-<token>`).
fn other_attempts(slot_dir: &Path) -> Vec<PathBuf> {
    let (Some(job_dir), Some(own)) = (slot_dir.parent(), slot_dir.file_name().and_then(|name| name.to_str())) else {
        return Vec::new();
    };
    let Some(prefix) = own.rfind('-').map(|end| &own[..=end]) else { return Vec::new() };
    weir_core::fs::read_dir(job_dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|attempt| attempt.is_dir && attempt.name != own && attempt.name.starts_with(prefix))
        .map(|attempt| attempt.path)
        .collect()
}

/// File `entry` from one of the `local` directories, if one holds it with its size and
/// checksum.
async fn local_copy(local: &[PathBuf], entry: &FileEntry) -> Option<bytes::Bytes> {
    let paths: Vec<PathBuf> = local.iter().map(|dir| dir.join(&entry.name)).collect();
    let entry = entry.clone();
    rt::blocking(move || {
        paths.iter().find_map(|path| {
            let size = weir_core::fs::metadata(path).ok()?.len;
            if size != entry.size {
                return None;
            }
            let content = weir_core::fs::read(path).ok()?;
            entry.check(&content).ok().map(|()| bytes::Bytes::from(content))
        })
    })
    .await
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

/// Removes the directories of this slot's other attempts on this node (the slot's directory is
/// `slot_dir`): what a process killed with the slot running left behind, once local recovery
/// has taken what it could from them. The caller holds the job's output fence, so no newer
/// deployment of the slot runs; an older one still running here loses its files and fails,
/// as it must.
pub async fn remove_other_attempts(slot_dir: &Path) {
    let slot_dir = slot_dir.to_path_buf();
    rt::blocking(move || {
        for attempt in other_attempts(&slot_dir) {
            tracing::info!(dir = %attempt.display(), "removing local state a killed process left");
            let _ = std::fs::remove_dir_all(&attempt);
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_restored_from_the_nodes_disk_are_uploaded_again_not_named_in_the_store() {
        let shared = |name: &str| InstanceFile {
            name: name.into(),
            size: 1,
            crc32: 2,
            stored: StoredFile::Shared(format!("op-s0-a1-{name}")),
        };
        let inline = InstanceFile { name: "CURRENT".into(), size: 1, crc32: 2, stored: StoredFile::Inline(vec![0]) };
        let manifest = InstanceManifest {
            operator: "op".into(),
            key_groups: (0, 128),
            files: vec![shared("000007.sst"), shared("000009.sst"), inline],
        };
        let known = SharedFiles::restored(&[manifest], &[("op".into(), "000009.sst".into())]);
        let names: Vec<&str> = known.known.keys().map(|(_, name)| name.as_str()).collect();
        assert_eq!(names, ["000007.sst"], "only a file read from the store is known to be sound there");
    }

    #[test]
    fn a_slot_finds_only_its_own_other_attempts() {
        let root = tempfile::tempdir().unwrap();
        for dir in ["slot-1-attempt-00aa", "slot-1-attempt-00bb", "slot-11-attempt-00cc", "slot-2-attempt-00dd"] {
            weir_core::fs::create_dir_all(&root.path().join(dir)).unwrap();
        }
        let found = other_attempts(&root.path().join("slot-1-attempt-00bb"));
        assert_eq!(found, vec![root.path().join("slot-1-attempt-00aa")]);
    }
}
