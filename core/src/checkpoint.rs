//! Checkpoint storage over `object_store`, laid out like Flink's.
//!
//! ```text
//! <root>/<job-id>/chk-<n>/slot-<i>-a<attempt>.state   one object per slot, uploaded by the slot
//! <root>/<job-id>/chk-<n>/_metadata                  written last by the coordinator, with a
//!                                                    CRC32 of itself and of every file
//! <root>/<job-id>/shared/<name>                      files that incremental checkpoints share
//!                                                    (RocksDB's SSTs), named in `_metadata`
//! ```
//!
//! Slots upload their state straight to the store, as Flink's TaskManagers do; the coordinator
//! receives only each file's name, size and checksum, so no state is uploaded through one
//! process (a restore still reads the files in the coordinator). A state file is named by its
//! attempt: a slot of a lost attempt that still runs somewhere (a partitioned worker) writes
//! beside, never over, the files of the attempt that replaced it, which `_metadata` names.
//!
//! A checkpoint is complete iff its `_metadata` exists. Restore walks complete checkpoints from
//! the newest down and takes the first whose metadata and files all verify; a corrupt or
//! partial one is skipped with a warning. Storage is any `object_store` backend: a local
//! directory (the default: [`LocalDirStore`], durable before a put returns), in-memory for
//! tests and the simulator, S3 later.

use bytes::Bytes;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutPayload, UpdateVersion};

use crate::local_store::LocalDirStore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use thiserror::Error;

/// Version of the checkpoint format written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// A checkpoint storage failure.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// The checkpoint location could not be understood.
    #[error("checkpoint location {location:?}: {reason}")]
    Location {
        /// What the user passed.
        location: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The object store failed.
    #[error("checkpoint storage: {operation} {path}: {source}")]
    Store {
        /// What was being done.
        operation: &'static str,
        /// Which object.
        path: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// A checkpoint does not verify.
    #[error("checkpoint {checkpoint} is corrupt: {reason}")]
    Corrupt {
        /// The checkpoint id.
        checkpoint: u64,
        /// What failed to verify.
        reason: String,
    },
    /// A job record (the job's spec, deployment generation or restore lineage) does not verify.
    /// Unlike a corrupt checkpoint there is nothing older to fall back to: the job cannot go on
    /// safely, and retrying would not help.
    #[error(
        "job record {path} is damaged ({reason}); there is no second copy, so the job stops here \
         rather than guess and risk duplicate or lost output. Restore the job's directory from a \
         backup, or delete it and the job's output to start over"
    )]
    CorruptRecord {
        /// Which record.
        path: String,
        /// What failed to verify.
        reason: String,
    },
    /// A savepoint cannot be read or written. Nothing falls back here: the user named it.
    #[error("savepoint {path}: {reason}")]
    Savepoint {
        /// The savepoint's path.
        path: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A conditional write lost a race: the record changed since it was read (or exists).
    #[error("job record {path} was changed by another writer")]
    Conflict {
        /// Which record.
        path: String,
    },
}

impl CheckpointError {
    /// Is this error permanent — retrying the same operation cannot succeed (a damaged record,
    /// a location that does not parse)? Store errors are transient; a corrupt checkpoint is
    /// skipped by restore.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            CheckpointError::CorruptRecord { .. }
                | CheckpointError::Location { .. }
                | CheckpointError::Savepoint { .. }
        )
    }
}

/// How a job record ends: its CRC32, so that damage is detected rather than misread.
const RECORD_TRAILER: &str = "\n# crc32 ";

/// `content` with its checksum trailer.
fn frame_record(mut content: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&content);
    content.extend_from_slice(format!("{RECORD_TRAILER}{crc:08x}\n").as_bytes());
    content
}

/// The content of a framed record, or what is wrong with it.
fn unframe_record(framed: &[u8]) -> Result<&[u8], String> {
    let trailer = RECORD_TRAILER.as_bytes();
    let at = framed
        .windows(trailer.len())
        .rposition(|window| window == trailer)
        .ok_or_else(|| {
            format!(
                "no checksum trailer in its {} bytes: truncated, or written by a Weir from before job records were checksummed",
                framed.len()
            )
        })?;
    let (content, rest) = framed.split_at(at);
    let digits = std::str::from_utf8(&rest[trailer.len()..]).ok().and_then(|d| d.strip_suffix('\n'));
    let stored = digits
        .filter(|d| d.len() == 8)
        .and_then(|d| u32::from_str_radix(d, 16).ok())
        .ok_or_else(|| "its checksum trailer is unreadable".to_string())?;
    let actual = crc32fast::hash(content);
    if stored != actual {
        return Err(format!("checksum {actual:08x} does not match the recorded {stored:08x}"));
    }
    Ok(content)
}

/// One file of a checkpoint, as recorded in its metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Name within the checkpoint directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC32 of the content.
    pub crc32: u32,
}

impl FileEntry {
    /// The entry of file `name` holding `content`.
    pub fn of(name: &str, content: &[u8]) -> Self {
        FileEntry { name: name.to_string(), size: content.len() as u64, crc32: crc32fast::hash(content) }
    }

    /// Whether `content` is this file as recorded; otherwise what is wrong with it.
    pub fn check(&self, content: &[u8]) -> Result<(), String> {
        if content.len() as u64 != self.size {
            return Err(format!("file {} has {} bytes, {} expected", self.name, content.len(), self.size));
        }
        if crc32fast::hash(content) != self.crc32 {
            return Err(format!("file {} does not match its checksum (its content is damaged)", self.name));
        }
        Ok(())
    }
}

/// The `_metadata` object of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// Format version.
    pub format_version: u32,
    /// The job this checkpoint belongs to.
    pub job_id: String,
    /// The checkpoint id `n`: it covers epochs `<= n`.
    pub checkpoint_id: u64,
    /// Parallelism the job ran at.
    pub parallelism: usize,
    /// True for the final checkpoint taken when all input was consumed.
    pub finished: bool,
    /// The state files, one per slot.
    pub files: Vec<FileEntry>,
    /// The deployment attempt that took the checkpoint (its sinks staged the covered output).
    #[serde(default)]
    pub attempt: u64,
    /// The deployment generation that took the checkpoint (see [`RestoreRecord`]).
    #[serde(default)]
    pub generation: u64,
    /// A savepoint ([`crate::savepoint`]), which any job may start from, at any parallelism.
    #[serde(default)]
    pub savepoint: bool,
    /// The shared files its state files reference (an incremental checkpoint's, in the job's
    /// `shared/` directory), each named once: what retention must keep while it is retained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<FileEntry>,
}

/// One restore in a job's lineage: deployment `generation` restored `checkpoint` (0: none).
///
/// Restoring checkpoint `n` rolls back everything after it (staged output is aborted, committed
/// output retracted), so from then on no checkpoint newer than `n` taken by an *earlier*
/// generation may ever be restored: its output is gone. Such a checkpoint exists whenever the
/// restore could not see it — a listing that lags behind writes — and it may become visible
/// later. The lineage records every restore before its rollback, and restores skip (and delete)
/// the checkpoints it rules out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRecord {
    /// The deployment generation that restored.
    pub generation: u64,
    /// The checkpoint it restored (0 for none).
    pub checkpoint: u64,
}

/// The job record holding the lineage.
const LINEAGE: &str = "_lineage";
/// The job record naming the newest complete checkpoint.
const LATEST: &str = "_latest";

/// Whether checkpoint `metadata` may still be restored after the restores of `lineage`.
pub fn in_lineage(lineage: &[RestoreRecord], metadata: &CheckpointMetadata) -> bool {
    lineage
        .iter()
        .all(|restore| restore.generation <= metadata.generation || metadata.checkpoint_id <= restore.checkpoint)
}

/// A verified checkpoint, ready to restore.
#[derive(Clone, Debug)]
pub struct RestoredCheckpoint {
    /// Its metadata.
    pub metadata: CheckpointMetadata,
    /// The content of each file, in metadata order.
    pub files: Vec<Bytes>,
}

impl RestoredCheckpoint {
    /// The content of file `name`.
    pub fn file(&self, name: &str) -> Option<&Bytes> {
        self.metadata.files.iter().position(|f| f.name == name).map(|i| &self.files[i])
    }
}

/// Checkpoints of one job in one object store.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    job_root: ObjectPath,
}

/// The name of the metadata object.
pub const METADATA: &str = "_metadata";
/// The job's directory of files shared by its checkpoints (incremental checkpoints' SSTs).
pub const SHARED: &str = "shared";

/// The name of slot `slot`'s state file in a checkpoint taken by deployment attempt `attempt`.
pub fn slot_state_file(slot: usize, attempt: u64) -> String {
    format!("slot-{slot}-a{attempt:016x}.state")
}

impl CheckpointStore {
    /// Opens checkpoint storage at `location`: a local path or `file://` URL (created if
    /// missing), `memory://` (a fresh in-process store) or `memory://NAME` (shared by name within
    /// the process: for tests and the simulator).
    pub fn open(location: &str, job_id: &str) -> Result<Self, CheckpointError> {
        let location_error = |reason: String| CheckpointError::Location { location: location.to_string(), reason };
        let store: Arc<dyn ObjectStore> = if let Some(name) = location.strip_prefix("memory://") {
            shared_memory_store(name)
        } else {
            let path = match location.strip_prefix("file://") {
                Some(path) => path,
                None if location.contains("://") => {
                    return Err(location_error(
                        "unsupported scheme: use a local path, file:///path or memory://".into(),
                    ))
                }
                None => location,
            };
            let local = LocalDirStore::new(std::path::Path::new(path))
                .map_err(|e| location_error(format!("cannot create directory: {e}")))?;
            Arc::new(local)
        };
        Ok(Self::with_store(store, job_id))
    }

    /// Checkpoint storage for `job_id` in an existing object store.
    pub fn with_store(store: Arc<dyn ObjectStore>, job_id: &str) -> Self {
        CheckpointStore { store, job_root: ObjectPath::from(job_id) }
    }

    fn path(&self, checkpoint: u64, name: &str) -> ObjectPath {
        self.job_root.child(format!("chk-{checkpoint}")).child(name)
    }

    /// Uploads one state file of `checkpoint` and returns its metadata entry.
    pub async fn put_file(&self, checkpoint: u64, name: &str, content: Bytes) -> Result<FileEntry, CheckpointError> {
        self.put_entry(self.path(checkpoint, name), name, content).await
    }

    /// Stores `content` at `path` as file `name`; returns its entry.
    async fn put_entry(&self, path: ObjectPath, name: &str, content: Bytes) -> Result<FileEntry, CheckpointError> {
        let entry = FileEntry::of(name, &content);
        self.store.put(&path, PutPayload::from_bytes(content)).await.map_err(|source| CheckpointError::Store {
            operation: "put",
            path: path.to_string(),
            source,
        })?;
        Ok(entry)
    }

    /// Completes a checkpoint by writing its `_metadata` (last, after all its files).
    pub async fn complete(&self, metadata: &CheckpointMetadata) -> Result<(), CheckpointError> {
        let path = self.path(metadata.checkpoint_id, METADATA);
        self.store
            .put(&path, PutPayload::from(encode_metadata(metadata)))
            .await
            .map_err(|source| CheckpointError::Store { operation: "put", path: path.to_string(), source })?;
        Ok(())
    }

    /// Ids of the checkpoints that have a `_metadata` object, ascending, and of all checkpoint
    /// directories (complete or not).
    async fn list_checkpoints(&self) -> Result<(Vec<u64>, Vec<u64>), CheckpointError> {
        let mut complete = Vec::new();
        let mut all = Vec::new();
        let mut listing = self.store.list(Some(&self.job_root));
        while let Some(item) = listing.next().await {
            let meta = item.map_err(|source| CheckpointError::Store {
                operation: "list",
                path: self.job_root.to_string(),
                source,
            })?;
            let parts: Vec<_> = meta.location.parts().collect();
            let Some(dir) = parts.iter().rev().nth(1) else {
                continue;
            };
            let Some(id) = dir.as_ref().strip_prefix("chk-").and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            all.push(id);
            if parts.last().map(|p| p.as_ref()) == Some(METADATA) {
                complete.push(id);
            }
        }
        complete.sort_unstable();
        complete.dedup();
        all.sort_unstable();
        all.dedup();
        Ok((complete, all))
    }

    /// Reads and verifies checkpoint `checkpoint`.
    pub async fn load(&self, checkpoint: u64) -> Result<RestoredCheckpoint, CheckpointError> {
        let corrupt = |reason: String| CheckpointError::Corrupt { checkpoint, reason };
        // A missing object is a partial checkpoint (corrupt); any other store error is transient
        // and must not make a good checkpoint look bad (it would be skipped and its output
        // rolled back).
        let missing_is_corrupt = |error: CheckpointError, what: &str| match error {
            CheckpointError::Store { source: object_store::Error::NotFound { .. }, .. } => {
                corrupt(format!("{what} is missing"))
            }
            other => other,
        };
        let raw = self.get(&self.path(checkpoint, METADATA)).await.map_err(|e| missing_is_corrupt(e, "_metadata"))?;
        let metadata = decode_metadata(&raw).map_err(corrupt)?;
        if metadata.checkpoint_id != checkpoint {
            return Err(corrupt(format!("_metadata names checkpoint {}", metadata.checkpoint_id)));
        }
        let mut files = Vec::with_capacity(metadata.files.len());
        for entry in &metadata.files {
            let content = self
                .get(&self.path(checkpoint, &entry.name))
                .await
                .map_err(|e| missing_is_corrupt(e, &format!("file {}", entry.name)))?;
            let ignores_checksum = content.len() as u64 == entry.size
                && crate::faultpoint::planted(crate::faultpoint::PlantedBug::RestoreIgnoresChecksum);
            if !ignores_checksum {
                entry.check(&content).map_err(corrupt)?;
            }
            files.push(content);
        }
        // Shared files are large and read by the slots that restore them, which check their
        // checksums; here, that each is there at its size.
        for entry in &metadata.shared {
            let path = self.shared_path(&entry.name);
            match self.store.head(&path).await {
                Ok(meta) if meta.size == entry.size => {}
                Ok(meta) => {
                    return Err(corrupt(format!(
                        "shared file {} has {} bytes, {} expected",
                        entry.name, meta.size, entry.size
                    )))
                }
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(corrupt(format!("shared file {} is missing", entry.name)))
                }
                Err(source) => {
                    return Err(CheckpointError::Store { operation: "head", path: path.to_string(), source })
                }
            }
        }
        Ok(RestoredCheckpoint { metadata, files })
    }

    /// The checkpoint to restore: the newest that verifies and that the lineage allows. Every
    /// newer one that is corrupt or ruled out by the lineage is deleted (metadata first) so that
    /// it can never be restored later, after its output has been rolled back, and so that
    /// retention counts only good checkpoints. Records nothing: see [`Self::restore_for`].
    pub async fn restore_point(&self) -> Result<(Option<RestoredCheckpoint>, Vec<CheckpointError>), CheckpointError> {
        let latest = self.latest_hint().await?;
        self.restore_point_in(&self.lineage().await?, latest).await
    }

    /// [`Self::restore_point`] with the lineage and the newest-checkpoint record already read.
    async fn restore_point_in(
        &self,
        lineage: &[RestoreRecord],
        latest: Option<u64>,
    ) -> Result<(Option<RestoredCheckpoint>, Vec<CheckpointError>), CheckpointError> {
        let (mut complete, _) = self.list_checkpoints().await?;
        // A listing may lag behind writes; the newest-checkpoint record does not (a get reads
        // what was put). Without it, a restore that cannot see the newest checkpoint yet
        // would roll back output that checkpoint let sinks commit.
        let hinted = latest.filter(|latest| !complete.contains(latest));
        complete.extend(hinted);
        complete.sort_unstable();
        let mut skipped = Vec::new();
        for &id in complete.iter().rev() {
            let loaded = self.load(id).await;
            if Some(id) == hinted
                && matches!(&loaded, Err(CheckpointError::Corrupt { reason, .. }) if reason == "_metadata is missing")
            {
                continue; // the record names a checkpoint deleted since (by a restore)
            }
            match loaded {
                Ok(restored) if in_lineage(lineage, &restored.metadata) => return Ok((Some(restored), skipped)),
                Ok(_) => {
                    tracing::warn!(checkpoint = id, "deleting a checkpoint an earlier restore rolled back");
                    self.delete_checkpoint(id).await?;
                }
                Err(error @ CheckpointError::Corrupt { .. }) => {
                    tracing::warn!(checkpoint = id, %error, "skipping corrupt checkpoint; falling back to an older one");
                    self.delete_checkpoint(id).await?;
                    skipped.push(error);
                }
                Err(other) => return Err(other),
            }
        }
        Ok((None, skipped))
    }

    /// The checkpoint deployment `generation` restores ([`Self::restore_point`]), recorded in the
    /// job's lineage — and as the newest complete checkpoint, since recovery commits the output
    /// it covers — before it is returned, that is, before any output is rolled back or
    /// committed by it.
    pub async fn restore_for(
        &self,
        generation: u64,
    ) -> Result<(Option<RestoredCheckpoint>, Vec<CheckpointError>), CheckpointError> {
        let mut lineage = self.lineage().await?;
        let latest = self.latest_hint().await?;
        let (restored, skipped) = self.restore_point_in(&lineage, latest).await?;
        let checkpoint = restored.as_ref().map_or(0, |r| r.metadata.checkpoint_id);
        lineage.retain(|restore| restore.generation != generation);
        lineage.push(RestoreRecord { generation, checkpoint });
        let encoded = serde_json::to_vec(&lineage).expect("a lineage always serializes");
        self.put_job_record(LINEAGE, encoded).await?;
        // A checkpoint whose completion was never recorded (its `_metadata` put stored the
        // object but reported failure) is found here by listing; once its output is committed,
        // a later restore must find it even if listings lag.
        if checkpoint > 0 && latest != Some(checkpoint) {
            self.record_latest(checkpoint).await?;
        }
        // Best effort: a shared file left now goes at a later restore.
        let keep = restored.iter().flat_map(|r| &r.metadata.shared).map(|entry| entry.name.clone()).collect();
        if let Err(error) = self.sweep_shared(keep).await {
            tracing::warn!(%error, "cannot sweep the job's shared files");
        }
        Ok((restored, skipped))
    }

    /// Records that deployment `generation` restores none of the job's own checkpoints — it
    /// starts from a savepoint — so that every checkpoint an earlier generation took is ruled
    /// out for good ([`in_lineage`]): the output they covered is rolled back to the savepoint's.
    pub async fn start_afresh(&self, generation: u64) -> Result<(), CheckpointError> {
        let mut lineage = self.lineage().await?;
        lineage.retain(|restore| restore.generation != generation);
        lineage.push(RestoreRecord { generation, checkpoint: 0 });
        self.put_job_record(LINEAGE, serde_json::to_vec(&lineage).expect("a lineage always serializes")).await
    }

    /// Records `checkpoint` as the newest complete one (after its `_metadata`, before any
    /// sink commits what it covers).
    pub async fn record_latest(&self, checkpoint: u64) -> Result<(), CheckpointError> {
        self.put_job_record(LATEST, checkpoint.to_string().into_bytes()).await
    }

    /// The checkpoint [`Self::record_latest`] recorded last, if any.
    async fn latest_hint(&self) -> Result<Option<u64>, CheckpointError> {
        let Some(bytes) = self.get_job_record(LATEST).await? else { return Ok(None) };
        let latest = std::str::from_utf8(&bytes).ok().and_then(|text| text.trim().parse::<u64>().ok());
        latest.map(Some).ok_or_else(|| CheckpointError::CorruptRecord {
            path: self.record_path(LATEST),
            reason: format!("not a checkpoint id: {:?}", String::from_utf8_lossy(&bytes)),
        })
    }

    /// The restores recorded so far.
    pub async fn lineage(&self) -> Result<Vec<RestoreRecord>, CheckpointError> {
        match self.get_job_record(LINEAGE).await? {
            None => Ok(Vec::new()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| CheckpointError::CorruptRecord {
                path: format!("{}/{LINEAGE}", self.job_root),
                reason: format!("not a restore lineage: {e}"),
            }),
        }
    }

    /// Called when checkpoint `completed` has just completed: deletes every checkpoint older than
    /// the `keep` newest complete ones up to `completed`, and every incomplete one older than the
    /// newest complete one up to `completed` (normally `completed` itself). Checkpoints with higher ids are left alone and not counted: the running
    /// deployment numbers its checkpoints upwards from the one it restored, so a higher id was
    /// written by a deployment a restore rolled back (still listed, or listed late); counting it
    /// would delete good checkpoints in its place. Restore deletes it, or the running deployment
    /// overwrites its `_metadata` when its ids get there (beside its state files, which are named
    /// by attempt and go when the directory is deleted).
    pub async fn retain(&self, keep: usize, completed: u64) -> Result<(), CheckpointError> {
        assert!(keep >= 1, "at least one complete checkpoint must be kept");
        let (mut complete, all) = self.list_checkpoints().await?;
        complete.retain(|&id| id <= completed);
        let Some(&newest) = complete.last() else {
            return Ok(());
        };
        let oldest_kept = complete[complete.len().saturating_sub(keep)];
        let doomed: Vec<u64> =
            all.into_iter().filter(|&id| id < oldest_kept || (id < newest && !complete.contains(&id))).collect();
        // The shared files of the complete checkpoints going, read before they go.
        let mut released = BTreeSet::new();
        for &id in doomed.iter().filter(|id| complete.contains(id)) {
            match self.metadata(id).await {
                Ok(metadata) => released.extend(metadata.into_iter().flat_map(|m| m.shared).map(|entry| entry.name)),
                // Left for the sweep at the next restore ([`Self::sweep_shared`]).
                Err(error) => tracing::warn!(checkpoint = id, %error, "cannot read its shared files"),
            }
        }
        for &id in &doomed {
            self.delete_checkpoint(id).await?;
        }
        if !released.is_empty() {
            // A shared file goes once no complete checkpoint left names it (Flink's shared
            // state registry). One a retained checkpoint names is live in every checkpoint
            // taken since: an SST file, once gone from an instance, never comes back.
            // The checkpoints kept, as listed above, and `completed`: a listing may not show
            // them (yet).
            let mut kept: Vec<u64> = complete.iter().copied().filter(|id| !doomed.contains(id)).collect();
            kept.push(completed);
            let Some(referenced) = self.referenced_shared(&kept, BTreeSet::new()).await? else {
                return Ok(());
            };
            for name in released.difference(&referenced) {
                self.delete_object(&self.shared_path(name)).await?;
            }
        }
        Ok(())
    }

    /// The shared files every complete checkpoint names — those listed and `also` (which a
    /// listing may not show yet) — with `known`; `None` if some `_metadata` cannot be read
    /// (then nothing may be deleted).
    async fn referenced_shared(
        &self,
        also: &[u64],
        mut known: BTreeSet<String>,
    ) -> Result<Option<BTreeSet<String>>, CheckpointError> {
        let (mut complete, _) = self.list_checkpoints().await?;
        complete.extend_from_slice(also);
        complete.sort_unstable();
        complete.dedup();
        for id in complete {
            match self.metadata(id).await {
                Ok(metadata) => known.extend(metadata.into_iter().flat_map(|m| m.shared).map(|entry| entry.name)),
                Err(_) => return Ok(None),
            }
        }
        Ok(Some(known))
    }

    /// Deletes the shared files no complete checkpoint names, nor `keep` (the restored
    /// checkpoint's, which a listing may not show yet): those of checkpoints deleted as corrupt
    /// or rolled back, and those uploaded for checkpoints that never completed. Run by a
    /// restore, before any slot of its deployment uploads (a slot of a lost attempt may still
    /// upload, but no checkpoint of its attempt completes any more).
    pub async fn sweep_shared(&self, keep: BTreeSet<String>) -> Result<(), CheckpointError> {
        let prefix = self.job_root.child(SHARED);
        let mut present = Vec::new();
        let mut listing = self.store.list(Some(&prefix));
        while let Some(item) = listing.next().await {
            let meta =
                item.map_err(|source| CheckpointError::Store { operation: "list", path: prefix.to_string(), source })?;
            if let Some(name) = meta.location.parts().last() {
                present.push(name.as_ref().to_string());
            }
        }
        if present.is_empty() {
            return Ok(());
        }
        let Some(referenced) = self.referenced_shared(&[], keep).await? else { return Ok(()) };
        for name in present.into_iter().filter(|name| !referenced.contains(name)) {
            tracing::debug!(file = name, "deleting a shared file no checkpoint names");
            self.delete_object(&self.shared_path(&name)).await?;
        }
        Ok(())
    }

    fn shared_path(&self, name: &str) -> ObjectPath {
        self.job_root.child(SHARED).child(name)
    }

    /// Uploads shared file `name` (an incremental checkpoint's) and returns its entry.
    pub async fn put_shared(&self, name: &str, content: Bytes) -> Result<FileEntry, CheckpointError> {
        self.put_entry(self.shared_path(name), name, content).await
    }

    /// Reads shared file `entry`: its content, or what is wrong with it (damaged: its size or
    /// checksum is not `entry`'s); the error is the store's.
    pub async fn get_shared(&self, entry: &FileEntry) -> Result<Result<Bytes, String>, CheckpointError> {
        let content = self.get(&self.shared_path(&entry.name)).await?;
        Ok(entry.check(&content).map(|()| content))
    }

    /// The metadata of complete checkpoint `checkpoint`, as stored; `None` if it has none.
    pub async fn metadata(&self, checkpoint: u64) -> Result<Option<CheckpointMetadata>, CheckpointError> {
        match self.get(&self.path(checkpoint, METADATA)).await {
            Ok(raw) => {
                decode_metadata(&raw).map(Some).map_err(|reason| CheckpointError::Corrupt { checkpoint, reason })
            }
            Err(CheckpointError::Store { source: object_store::Error::NotFound { .. }, .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Deletes checkpoint `checkpoint`, which a slot restoring it found damaged — if it is still
    /// the one taken by `attempt` (ids are taken again after a fallback) — and every other
    /// complete checkpoint naming shared file `damaged`, which none of them could restore
    /// either: the next restore falls back past them all, as past a checkpoint it finds
    /// corrupt. Returns the checkpoints deleted. The caller must hold the job's output fence, so
    /// that no newer deployment runs meanwhile.
    pub async fn invalidate(
        &self,
        checkpoint: u64,
        attempt: u64,
        damaged: Option<&str>,
    ) -> Result<Vec<u64>, CheckpointError> {
        match self.metadata(checkpoint).await? {
            Some(metadata) if metadata.attempt == attempt => {}
            _ => return Ok(Vec::new()),
        }
        let mut doomed = vec![checkpoint];
        if let Some(damaged) = damaged {
            for id in self.list_checkpoints().await?.0 {
                let names = |metadata: CheckpointMetadata| metadata.shared.iter().any(|file| file.name == damaged);
                if id != checkpoint && self.metadata(id).await?.is_some_and(names) {
                    doomed.push(id);
                }
            }
        }
        for &id in &doomed {
            self.delete_checkpoint(id).await?;
        }
        Ok(doomed)
    }

    /// Deletes every object of checkpoint `checkpoint`, metadata first so that a half-deleted
    /// checkpoint is never mistaken for a complete one.
    pub async fn delete_checkpoint(&self, checkpoint: u64) -> Result<(), CheckpointError> {
        let dir = self.job_root.child(format!("chk-{checkpoint}"));
        self.delete_object(&dir.child(METADATA)).await?;
        self.delete_under(&dir).await
    }

    /// Deletes object `path` (absent is fine).
    async fn delete_object(&self, path: &ObjectPath) -> Result<(), CheckpointError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(CheckpointError::Store { operation: "delete", path: path.to_string(), source }),
        }
    }

    /// Deletes every object under `prefix`.
    async fn delete_under(&self, prefix: &ObjectPath) -> Result<(), CheckpointError> {
        let mut listing = self.store.list(Some(prefix));
        let mut paths = Vec::new();
        while let Some(item) = listing.next().await {
            match item {
                Ok(meta) => paths.push(meta.location),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => {
                    return Err(CheckpointError::Store { operation: "list", path: prefix.to_string(), source })
                }
            }
        }
        for path in paths {
            self.delete_object(&path).await?;
        }
        Ok(())
    }

    async fn get(&self, path: &ObjectPath) -> Result<Bytes, CheckpointError> {
        let result = self.store.get(path).await.map_err(|source| CheckpointError::Store {
            operation: "get",
            path: path.to_string(),
            source,
        })?;
        result.bytes().await.map_err(|source| CheckpointError::Store {
            operation: "read",
            path: path.to_string(),
            source,
        })
    }

    /// Stores a small job-level record (`<job>/<name>`), e.g. the job's spec for a restarted
    /// coordinator. It is stored with a CRC32 trailer (a last line `# crc32 <hex>`) that
    /// [`Self::get_job_record`] verifies.
    pub async fn put_job_record(&self, name: &str, content: Vec<u8>) -> Result<(), CheckpointError> {
        let path = self.job_root.child(name);
        self.store
            .put(&path, PutPayload::from(frame_record(content)))
            .await
            .map_err(|source| CheckpointError::Store { operation: "put", path: path.to_string(), source })?;
        Ok(())
    }

    /// Job record `name` with the version to update it from ([`Self::put_job_record_if`]);
    /// `None` if it does not exist.
    pub async fn get_job_record_versioned(
        &self,
        name: &str,
    ) -> Result<Option<(Bytes, UpdateVersion)>, CheckpointError> {
        let path = self.job_root.child(name);
        let result = match self.store.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(CheckpointError::Store { operation: "get", path: path.to_string(), source }),
        };
        let version = UpdateVersion { e_tag: result.meta.e_tag.clone(), version: result.meta.version.clone() };
        let framed = result.bytes().await.map_err(|source| CheckpointError::Store {
            operation: "read",
            path: path.to_string(),
            source,
        })?;
        match unframe_record(&framed) {
            Ok(content) => Ok(Some((framed.slice_ref(content), version))),
            Err(reason) => Err(CheckpointError::CorruptRecord { path: path.to_string(), reason }),
        }
    }

    /// Stores job record `name` only if it is unchanged since it was read at `version` (`None`:
    /// only if it does not exist): a compare-and-swap on the checkpoint store. Losing the race
    /// is [`CheckpointError::Conflict`].
    pub async fn put_job_record_if(
        &self,
        name: &str,
        content: Vec<u8>,
        version: Option<UpdateVersion>,
    ) -> Result<(), CheckpointError> {
        let path = self.job_root.child(name);
        let mode = match version {
            None => PutMode::Create,
            Some(version) => PutMode::Update(version),
        };
        match self.store.put_opts(&path, PutPayload::from(frame_record(content)), mode.into()).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                Err(CheckpointError::Conflict { path: path.to_string() })
            }
            Err(source) => Err(CheckpointError::Store { operation: "put", path: path.to_string(), source }),
        }
    }

    /// Deletes job record `name` (absent is fine).
    pub async fn delete_job_record(&self, name: &str) -> Result<(), CheckpointError> {
        self.delete_object(&self.job_root.child(name)).await
    }

    /// Does job record `name` exist? (Markers such as `_finished` are judged by existence alone.)
    pub async fn has_job_record(&self, name: &str) -> Result<bool, CheckpointError> {
        let path = self.job_root.child(name);
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(CheckpointError::Store { operation: "head", path: path.to_string(), source }),
        }
    }

    /// Where job record `name` is stored (for messages).
    pub fn record_path(&self, name: &str) -> String {
        self.job_root.child(name).to_string()
    }

    /// Reads a job-level record, `None` if it does not exist; a damaged one is
    /// [`CheckpointError::CorruptRecord`].
    pub async fn get_job_record(&self, name: &str) -> Result<Option<Bytes>, CheckpointError> {
        let path = self.job_root.child(name);
        match self.get(&path).await {
            Ok(framed) => match unframe_record(&framed) {
                Ok(content) => Ok(Some(framed.slice_ref(content))),
                Err(reason) => Err(CheckpointError::CorruptRecord { path: path.to_string(), reason }),
            },
            Err(CheckpointError::Store { source: object_store::Error::NotFound { .. }, .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// The job ids that have a directory under the store's root.
    pub async fn list_jobs(location: &str) -> Result<Vec<String>, CheckpointError> {
        let probe = Self::open(location, "_probe")?;
        let listing = probe.store.list_with_delimiter(None).await.map_err(|source| CheckpointError::Store {
            operation: "list",
            path: location.to_string(),
            source,
        })?;
        let mut jobs: Vec<String> =
            listing.common_prefixes.iter().filter_map(|p| p.parts().last().map(|p| p.as_ref().to_string())).collect();
        jobs.retain(|job| !job.starts_with('_'));
        jobs.sort();
        Ok(jobs)
    }

    /// Deletes every object under the job's root (a savepoint's, when it is abandoned).
    pub async fn delete_all(&self) -> Result<(), CheckpointError> {
        self.delete_under(&self.job_root).await
    }

    /// The size of object `name` under the job's root; `None` if it does not exist.
    pub async fn object_size(&self, name: &str) -> Result<Option<u64>, CheckpointError> {
        let path = self.job_root.child(name);
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(CheckpointError::Store { operation: "head", path: path.to_string(), source }),
        }
    }

    /// Stores object `name` under the job's root as it is (no checksum trailer: the caller
    /// checksums it, as a savepoint's `_metadata` does its files).
    pub async fn put_object(&self, name: &str, content: Bytes) -> Result<(), CheckpointError> {
        let path = self.job_root.child(name);
        self.store.put(&path, PutPayload::from_bytes(content)).await.map_err(|source| CheckpointError::Store {
            operation: "put",
            path: path.to_string(),
            source,
        })?;
        Ok(())
    }

    /// Object `name` under the job's root as stored; `None` if it does not exist.
    pub async fn get_object(&self, name: &str) -> Result<Option<Bytes>, CheckpointError> {
        match self.get(&self.job_root.child(name)).await {
            Ok(content) => Ok(Some(content)),
            Err(CheckpointError::Store { source: object_store::Error::NotFound { .. }, .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Direct access to the underlying store (for fault-injection tests).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object path of `name` in `checkpoint` (for fault-injection tests).
    pub fn object_path(&self, checkpoint: u64, name: &str) -> ObjectPath {
        self.path(checkpoint, name)
    }
}

/// Attempts of one store operation before [`with_retries`] gives up.
pub const STORE_ATTEMPTS: u32 = 3;

/// Runs `operation` (`what`, for the log) up to [`STORE_ATTEMPTS`] times, backing off between
/// attempts: a store that fails now and then is not a store that cannot be used.
pub async fn with_retries<T, F, Fut>(what: &str, mut operation: F) -> Result<T, CheckpointError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CheckpointError>>,
{
    let mut attempt = 1;
    loop {
        match operation().await {
            Ok(done) => return Ok(done),
            Err(error) if attempt < STORE_ATTEMPTS => {
                tracing::warn!(attempt, %error, "{what} failed; retrying");
                crate::rt::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// `memory://` is a fresh store; `memory://NAME` is one store per name for the life of the
/// process (an object store that outlives the nodes of a simulation, as S3 outlives servers).
fn shared_memory_store(name: &str) -> Arc<dyn ObjectStore> {
    if name.is_empty() {
        return Arc::new(InMemory::new());
    }
    named_stores()
        .lock()
        .expect("store registry")
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(InMemory::new()))
        .clone()
}

type NamedStores = std::sync::Mutex<std::collections::HashMap<String, Arc<dyn ObjectStore>>>;

fn named_stores() -> &'static NamedStores {
    static STORES: std::sync::OnceLock<NamedStores> = std::sync::OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// Makes `memory://NAME` open `store` (the simulator installs its fault-injecting store this
/// way, so that the cluster reaches it through the same URL as any in-memory store).
pub fn register_memory_store(name: &str, store: Arc<dyn ObjectStore>) {
    assert!(!name.is_empty(), "a registered store needs a name");
    named_stores().lock().expect("store registry").insert(name.to_string(), store);
}

/// Forgets the store named `name` (its memory is freed once no job uses it).
pub fn unregister_memory_store(name: &str) {
    named_stores().lock().expect("store registry").remove(name);
}

/// Encodes metadata as JSON followed by a `crc32:<hex>` trailer line over the JSON bytes.
pub fn encode_metadata(metadata: &CheckpointMetadata) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(metadata).expect("metadata always serializes");
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(format!("\ncrc32:{crc:08x}\n").as_bytes());
    bytes
}

/// Decodes and verifies metadata written by [`encode_metadata`].
pub fn decode_metadata(raw: &[u8]) -> Result<CheckpointMetadata, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "_metadata is not UTF-8".to_string())?;
    let (json, trailer) = text.rsplit_once("\ncrc32:").ok_or("_metadata has no checksum trailer (truncated?)")?;
    let expected = u32::from_str_radix(trailer.trim_end(), 16).map_err(|_| "_metadata checksum is unreadable")?;
    if crc32fast::hash(json.as_bytes()) != expected {
        return Err("_metadata does not match its checksum".into());
    }
    let metadata: CheckpointMetadata =
        serde_json::from_str(json).map_err(|e| format!("_metadata does not parse: {e}"))?;
    if metadata.format_version != FORMAT_VERSION {
        return Err(format!(
            "_metadata has format version {}, this build reads {FORMAT_VERSION}",
            metadata.format_version
        ));
    }
    Ok(metadata)
}
