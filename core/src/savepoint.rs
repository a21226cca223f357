//! Savepoints: checkpoints a user asks for, to stop a job and start it again — after its code
//! changed, at another parallelism, into another checkpoint directory.
//!
//! ```text
//! <dir>/savepoint-<job-id>-<n>-<token>/slot-<i>.state   each slot's state, uploaded by the slot
//! <dir>/savepoint-<job-id>-<n>-<token>/_metadata        written last, with a CRC32 of itself and
//!                                                       of every file
//! ```
//!
//! A checkpoint belongs to its job: retention deletes it, and only the job that took it restores
//! it. A savepoint is self-contained and belongs to the user: nothing ever deletes it, and any
//! job may start from it (`--from-savepoint PATH`), at any parallelism. It is taken as a
//! checkpoint of the running job — so the output it covers is committed like any checkpoint's —
//! whose slots upload their state here too (no state is uploaded through the coordinator). Each
//! file is in the canonical form: the slot's key groups, ordered by operator id and key group,
//! whatever the state backend. Like a checkpoint, it is complete iff its `_metadata` exists.

use bytes::Bytes;

use crate::checkpoint::{decode_metadata, encode_metadata, CheckpointError, CheckpointMetadata, CheckpointStore};
use crate::checkpoint::{FileEntry, RestoredCheckpoint, METADATA};

/// The name of slot `slot`'s state file in a savepoint (the savepoint's directory is unique to
/// the attempt that takes it).
pub fn savepoint_state_file(slot: usize) -> String {
    format!("slot-{slot}.state")
}

/// The directory name of the savepoint of `job_id` at checkpoint `checkpoint`, taken by the
/// deployment attempt `attempt` (unique: a checkpoint id may be taken again after a restore).
pub fn savepoint_name(job_id: &str, checkpoint: u64, attempt: u64) -> String {
    format!("savepoint-{job_id}-{checkpoint}-{attempt:016x}")
}

/// Splits a savepoint path into the location of its directory and its name.
fn split_path(path: &str) -> Result<(&str, &str), CheckpointError> {
    let trimmed = path.trim_end_matches('/');
    let (dir, name) = match trimmed.rsplit_once('/') {
        None => (".", trimmed),
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
    };
    if name.is_empty() || name.starts_with('.') || name.contains(':') || dir.ends_with(":/") {
        return Err(CheckpointError::Savepoint {
            path: path.to_string(),
            reason: "not a savepoint path: name the savepoint's own directory, as `weir job savepoint` printed it"
                .into(),
        });
    }
    Ok((dir, name))
}

/// Uploads slot `slot`'s state file of savepoint `name` in directory `dir` and returns its
/// entry for the savepoint's `_metadata`.
pub async fn put_savepoint_file(
    dir: &str,
    name: &str,
    slot: usize,
    state: Bytes,
) -> Result<FileEntry, CheckpointError> {
    let store = CheckpointStore::open(dir, name)?;
    let entry = FileEntry::of(&savepoint_state_file(slot), &state);
    store.put_object(&entry.name, state).await?;
    Ok(entry)
}

/// The size of file `file` of savepoint `name` in directory `dir`, as this process sees it;
/// `None` if it is not there.
pub async fn savepoint_file_size(dir: &str, name: &str, file: &str) -> Result<Option<u64>, CheckpointError> {
    CheckpointStore::open(dir, name)?.object_size(file).await
}

/// Deletes what was written of savepoint `name` in directory `dir` (one that will never be
/// completed: its checkpoint was declined, or a slot could not write its file).
pub async fn delete_savepoint(dir: &str, name: &str) -> Result<(), CheckpointError> {
    CheckpointStore::open(dir, name)?.delete_all().await
}

/// Completes savepoint `name` in directory `dir` by writing its `_metadata` (last, after every
/// file it lists; marked as a savepoint here). Returns the savepoint's path.
pub async fn complete_savepoint(
    dir: &str,
    name: &str,
    mut metadata: CheckpointMetadata,
) -> Result<String, CheckpointError> {
    let store = CheckpointStore::open(dir, name)?;
    metadata.savepoint = true;
    store.put_object(METADATA, Bytes::from(encode_metadata(&metadata))).await?;
    Ok(format!("{}/{name}", dir.trim_end_matches('/')))
}

/// Opens the savepoint at `path` (without creating anything: a mistyped path is an error, not
/// a new directory) and reads and verifies its metadata.
async fn open_savepoint(path: &str) -> Result<(CheckpointStore, CheckpointMetadata), CheckpointError> {
    let (dir, name) = split_path(path)?;
    let refuse = |reason: String| CheckpointError::Savepoint { path: path.to_string(), reason };
    let local = match dir.strip_prefix("file://") {
        Some(local) => Some(local),
        None if dir.contains("://") => None,
        None => Some(dir),
    };
    if let Some(local) = local {
        if crate::fs::metadata(&std::path::Path::new(local).join(name)).is_err() {
            return Err(refuse(format!(
                "has no {METADATA}: the directory does not exist (use the path `weir job savepoint` printed)"
            )));
        }
    }
    let store = CheckpointStore::open(dir, name)?;
    let raw = store.get_object(METADATA).await?.ok_or_else(|| {
        refuse(format!(
            "has no {METADATA}: it does not exist, or its writing never completed (use the path `weir job savepoint` printed)"
        ))
    })?;
    let metadata = decode_metadata(&raw).map_err(refuse)?;
    if !metadata.savepoint {
        return Err(refuse("is a checkpoint's metadata, not a savepoint's".into()));
    }
    Ok((store, metadata))
}

/// The verified metadata of the savepoint at `path` (its files are not read).
pub async fn read_savepoint_metadata(path: &str) -> Result<CheckpointMetadata, CheckpointError> {
    Ok(open_savepoint(path).await?.1)
}

/// Reads and verifies the savepoint at `path`. Every failure names the savepoint and what is
/// wrong with it: a savepoint is restored because the user named it, so nothing falls back.
pub async fn read_savepoint(path: &str) -> Result<RestoredCheckpoint, CheckpointError> {
    let refuse = |reason: String| CheckpointError::Savepoint { path: path.to_string(), reason };
    let (store, metadata) = open_savepoint(path).await?;
    let mut files = Vec::with_capacity(metadata.files.len());
    for entry in &metadata.files {
        let content = store
            .get_object(&entry.name)
            .await?
            .ok_or_else(|| refuse(format!("its file {} is missing", entry.name)))?;
        entry.check(&content).map_err(|reason| refuse(format!("{reason}: it is damaged")))?;
        files.push(content);
    }
    Ok(RestoredCheckpoint { metadata, files })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::FORMAT_VERSION;

    fn metadata() -> CheckpointMetadata {
        CheckpointMetadata {
            format_version: FORMAT_VERSION,
            job_id: "bids-1".into(),
            checkpoint_id: 7,
            parallelism: 3,
            finished: false,
            files: Vec::new(),
            attempt: 9,
            generation: 2,
            savepoint: false,
            shared: Vec::new(),
        }
    }

    #[test]
    fn paths_split_into_a_location_and_a_name() {
        assert_eq!(split_path("memory://sp/savepoint-a").unwrap(), ("memory://sp", "savepoint-a"));
        assert_eq!(split_path("/tmp/x/savepoint-a/").unwrap(), ("/tmp/x", "savepoint-a"));
        assert_eq!(split_path("file:///tmp/savepoint-a").unwrap(), ("file:///tmp", "savepoint-a"));
        assert_eq!(split_path("savepoint-a").unwrap(), (".", "savepoint-a"));
        assert!(split_path("memory://").is_err());
        assert!(split_path("/").is_err());
    }

    #[test]
    fn a_savepoint_reads_back_and_a_damaged_one_is_refused_by_name() {
        crate::rt::block_on(async {
            let name = savepoint_name("bids-1", 7, 9);
            let dir = "memory://savepoint-test";
            let mut metadata = metadata();
            for slot in 0..2 {
                let state = Bytes::from(format!("state of slot {slot}"));
                metadata.files.push(put_savepoint_file(dir, &name, slot, state).await.unwrap());
            }
            let incomplete = read_savepoint(&format!("{dir}/{name}")).await.unwrap_err().to_string();
            assert!(incomplete.contains("has no _metadata"), "{incomplete}");
            let path = complete_savepoint(dir, &name, metadata).await.unwrap();
            assert_eq!(path, format!("{dir}/{name}"));
            let restored = read_savepoint(&path).await.unwrap();
            assert!(restored.metadata.savepoint);
            assert_eq!(restored.metadata.checkpoint_id, 7);
            assert_eq!(&restored.files[1][..], b"state of slot 1");

            let store = CheckpointStore::open(dir, &name).unwrap();
            store.put_object(&savepoint_state_file(1), Bytes::from_static(b"stale")).await.unwrap();
            let error = read_savepoint(&path).await.unwrap_err().to_string();
            assert!(error.contains(&path) && error.contains("has 5 bytes, 15 expected"), "{error}");

            let error = read_savepoint("memory://savepoint-test/savepoint-nothing").await.unwrap_err().to_string();
            assert!(error.contains("has no _metadata"), "{error}");
        });
    }
}
