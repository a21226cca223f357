//! Conformance suite for checkpoint storage: the same checks against every backend.
//!
//! Method: each test body takes a `CheckpointStore` and is run against the in-memory store
//! and a local directory (and, later, S3 and the simulated store). It checks the promises the
//! engine relies on: a checkpoint is complete iff its `_metadata` exists; files are verified
//! against the metadata's checksums on load; a corrupt, truncated or partial newest checkpoint
//! is skipped for the previous complete one; retention keeps the newest N complete ones and
//! removes incomplete ones older than the newest.
#![allow(clippy::disallowed_methods)] // tests arrange and inspect real directories with std::fs

use bytes::Bytes;
use weir_core::checkpoint::{
    CheckpointError, CheckpointMetadata, CheckpointStore, FileEntry, FORMAT_VERSION, METADATA,
};

fn backends() -> Vec<(CheckpointStore, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let local = CheckpointStore::open(dir.path().to_str().unwrap(), "job-a").unwrap();
    let memory = CheckpointStore::open("memory://", "job-a").unwrap();
    vec![(memory, None), (local, Some(dir))]
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

async fn write_checkpoint(store: &CheckpointStore, id: u64, complete: bool) -> CheckpointMetadata {
    write_checkpoint_of(store, id, complete, 1).await
}

async fn write_checkpoint_of(store: &CheckpointStore, id: u64, complete: bool, generation: u64) -> CheckpointMetadata {
    let mut files = Vec::new();
    for slot in 0..2 {
        let content = Bytes::from(format!("state of slot {slot} at {id}").repeat(10));
        files.push(store.put_file(id, &format!("slot-{slot}.state"), content).await.unwrap());
    }
    let metadata = CheckpointMetadata {
        format_version: FORMAT_VERSION,
        job_id: "job-a".into(),
        checkpoint_id: id,
        parallelism: 2,
        finished: false,
        files,
        attempt: 1,
        generation,
        savepoint: false,
        shared: Vec::new(),
    };
    if complete {
        store.complete(&metadata).await.unwrap();
    }
    metadata
}

#[test]
fn complete_iff_metadata_exists() {
    for (store, _guard) in backends() {
        block_on(async {
            assert!(store.restore_point().await.unwrap().0.is_none());
            write_checkpoint(&store, 1, true).await;
            write_checkpoint(&store, 2, false).await; // files uploaded, no _metadata: incomplete
            let (latest, skipped) = store.restore_point().await.unwrap();
            let latest = latest.expect("checkpoint 1 is complete");
            assert_eq!(latest.metadata.checkpoint_id, 1);
            assert!(skipped.is_empty(), "an incomplete checkpoint is not corrupt, just not there");
            assert_eq!(latest.file("slot-1.state").unwrap(), &Bytes::from("state of slot 1 at 1".repeat(10)));
        });
    }
}

#[test]
fn corrupt_newest_falls_back_to_previous() {
    for (store, _guard) in backends() {
        block_on(async {
            write_checkpoint(&store, 1, true).await;
            write_checkpoint(&store, 2, true).await;
            // Same size, one byte flipped: only the checksum can tell.
            let path = store.object_path(2, "slot-0.state");
            let mut content = store.object_store().get(&path).await.unwrap().bytes().await.unwrap().to_vec();
            content[3] ^= 1;
            store.object_store().put(&path, content.into()).await.unwrap();
            let (latest, skipped) = store.restore_point().await.unwrap();
            assert_eq!(latest.unwrap().metadata.checkpoint_id, 1);
            assert!(matches!(skipped.as_slice(), [CheckpointError::Corrupt { checkpoint: 2, .. }]));
        });
    }
}

#[test]
fn truncated_metadata_is_detected() {
    for (store, _guard) in backends() {
        block_on(async {
            write_checkpoint(&store, 1, true).await;
            write_checkpoint(&store, 2, true).await;
            let path = store.object_path(2, METADATA);
            let content = store.object_store().get(&path).await.unwrap().bytes().await.unwrap();
            store.object_store().put(&path, content.slice(..content.len() - 5).into()).await.unwrap();
            let (latest, skipped) = store.restore_point().await.unwrap();
            assert_eq!(latest.unwrap().metadata.checkpoint_id, 1);
            assert_eq!(skipped.len(), 1);
            assert!(skipped[0].to_string().contains("checksum") || skipped[0].to_string().contains("truncated"));
        });
    }
}

#[test]
fn retention_keeps_newest_complete_and_drops_stale_partials() {
    for (store, _guard) in backends() {
        block_on(async {
            for id in 1..=5 {
                write_checkpoint(&store, id, id != 3).await;
            }
            write_checkpoint(&store, 6, false).await; // in progress: must survive
            store.retain(2, 5).await.unwrap();
            for id in 1..=3 {
                assert!(store.load(id).await.is_err(), "checkpoint {id} should be gone");
                let listing = store.object_store().get(&store.object_path(id, "slot-0.state")).await;
                assert!(listing.is_err(), "files of checkpoint {id} should be gone");
            }
            assert_eq!(store.load(4).await.unwrap().metadata.checkpoint_id, 4);
            assert_eq!(store.load(5).await.unwrap().metadata.checkpoint_id, 5);
            assert!(store.object_store().get(&store.object_path(6, "slot-1.state")).await.is_ok());
        });
    }
}

async fn shared_present(store: &CheckpointStore, name: &str) -> bool {
    let path = object_store::path::Path::from(format!("job-a/shared/{name}"));
    store.object_store().head(&path).await.is_ok()
}

/// Completes checkpoint `id` naming shared files `names` (uploaded now if not there yet).
async fn complete_with_shared(store: &CheckpointStore, id: u64, names: &[&str]) {
    let mut metadata = write_checkpoint(store, id, false).await;
    for name in names {
        let content = Bytes::from(format!("sst {name}"));
        if !shared_present(store, name).await {
            store.put_shared(name, content.clone()).await.unwrap();
        }
        metadata.shared.push(FileEntry::of(name, &content));
    }
    store.complete(&metadata).await.unwrap();
}

#[test]
fn shared_files_go_once_no_retained_checkpoint_names_them_and_a_restore_sweeps_the_unnamed() {
    for (store, _guard) in backends() {
        block_on(async {
            let present = |name: &'static str| shared_present(&store, name);
            complete_with_shared(&store, 1, &["a.sst", "b.sst"]).await;
            complete_with_shared(&store, 2, &["b.sst", "c.sst"]).await;
            assert!(present("a.sst").await);
            store.retain(1, 2).await.unwrap();
            assert!(!present("a.sst").await, "named only by the checkpoint retention deleted");
            assert!(present("b.sst").await && present("c.sst").await, "named by the retained checkpoint");
            // Uploaded for a checkpoint that never completed, then a restore.
            store.put_shared("orphan.sst", Bytes::from_static(b"x")).await.unwrap();
            complete_with_shared(&store, 3, &["b.sst", "d.sst"]).await;
            let (restored, _) = store.restore_for(5).await.unwrap();
            assert_eq!(restored.unwrap().metadata.checkpoint_id, 3);
            assert!(!present("orphan.sst").await, "swept by the restore");
            assert!(present("b.sst").await, "checkpoint 2 is still there and names it");
            // A missing or truncated shared file makes its checkpoint corrupt.
            let path = object_store::path::Path::from("job-a/shared/d.sst");
            store.object_store().delete(&path).await.unwrap();
            let (restored, skipped) = store.restore_point().await.unwrap();
            assert_eq!(restored.unwrap().metadata.checkpoint_id, 2, "falls back past checkpoint 3");
            assert!(skipped[0].to_string().contains("shared file d.sst is missing"), "{}", skipped[0]);
        });
    }
}

#[test]
fn retention_does_not_count_checkpoints_of_a_rolled_back_deployment() {
    for (store, _guard) in backends() {
        block_on(async {
            // A deployment completed 1..=5; a restore went back to 2 (5's listing lagged, say),
            // and the new deployment has just completed 3 (overwriting the old 3).
            for id in 1..=5 {
                write_checkpoint(&store, id, true).await;
            }
            store.retain(1, 3).await.unwrap();
            assert_eq!(store.load(3).await.unwrap().metadata.checkpoint_id, 3, "the newest good one stays");
            for id in 1..=2 {
                assert!(store.load(id).await.is_err(), "checkpoint {id} is older than the kept one");
            }
            for id in 4..=5 {
                assert!(store.load(id).await.is_ok(), "checkpoint {id} is left for restore to judge");
            }
        });
    }
}

#[test]
fn a_checkpoint_rolled_back_by_a_restore_is_never_restored_later() {
    for (store, _guard) in backends() {
        block_on(async {
            // Generation 1 takes checkpoints 1..=3.
            for id in 1..=3 {
                write_checkpoint_of(&store, id, true, 1).await;
            }
            // Generation 2 restores while checkpoint 3 is invisible (a lagging listing), as
            // though only 1 and 2 existed: simulate by restoring with 3's metadata moved away.
            let metadata_3 =
                store.object_store().get(&store.object_path(3, METADATA)).await.unwrap().bytes().await.unwrap();
            store.object_store().delete(&store.object_path(3, METADATA)).await.unwrap();
            let (restored, _) = store.restore_for(2).await.unwrap();
            assert_eq!(restored.unwrap().metadata.checkpoint_id, 2);
            // Checkpoint 3 becomes visible again; generation 2's output after 2 was rolled back.
            store.object_store().put(&store.object_path(3, METADATA), metadata_3.into()).await.unwrap();
            let (restored, _) = store.restore_for(3).await.unwrap();
            assert_eq!(restored.unwrap().metadata.checkpoint_id, 2, "checkpoint 3 was rolled back by generation 2");
            assert!(store.load(3).await.is_err(), "the rolled-back checkpoint is deleted");
            // Checkpoints taken after the restore, by later generations, are restored normally.
            write_checkpoint_of(&store, 3, true, 3).await;
            let (restored, _) = store.restore_for(4).await.unwrap();
            assert_eq!(restored.unwrap().metadata.checkpoint_id, 3);
            assert_eq!(store.lineage().await.unwrap().len(), 3);
        });
    }
}

#[test]
fn bad_locations_are_explained() {
    let error = CheckpointStore::open("s3://bucket/prefix", "job").unwrap_err();
    assert!(error.to_string().contains("unsupported scheme"), "{error}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let error = CheckpointStore::open(file.join("sub").to_str().unwrap(), "job").unwrap_err();
    assert!(error.to_string().contains("cannot create directory"), "{error}");
}

#[test]
fn damaged_job_records_are_detected_and_permanent() {
    for (store, _guard) in backends() {
        block_on(async {
            store.put_job_record("_generation", b"7".to_vec()).await.unwrap();
            assert_eq!(store.get_job_record("_generation").await.unwrap().unwrap(), Bytes::from_static(b"7"));
            assert!(store.get_job_record("_absent").await.unwrap().is_none());
            let path = object_store::path::Path::from(store.record_path("_generation"));
            let framed = store.object_store().get(&path).await.unwrap().bytes().await.unwrap();
            // A bit flip that keeps the content a plausible number ('7' → '6'), then truncations.
            let mut flipped = framed.to_vec();
            flipped[0] ^= 1;
            for damaged in [flipped, framed[..framed.len() - 3].to_vec(), framed[..1].to_vec()] {
                store.object_store().put(&path, damaged.into()).await.unwrap();
                let error = store.get_job_record("_generation").await.unwrap_err();
                assert!(matches!(error, CheckpointError::CorruptRecord { .. }), "{error}");
                assert!(error.is_permanent());
                let message = error.to_string();
                assert!(message.contains("_generation") && message.contains("backup"), "{message}");
            }
            // The restore lineage is a record too.
            let lineage = object_store::path::Path::from(store.record_path("_lineage"));
            store.object_store().put(&lineage, b"[]".to_vec().into()).await.unwrap();
            assert!(matches!(store.lineage().await.unwrap_err(), CheckpointError::CorruptRecord { .. }));
        });
    }
}

#[test]
fn job_records_update_by_compare_and_swap() {
    for (store, _guard) in backends() {
        block_on(async {
            store.put_job_record_if("_generation", b"1".to_vec(), None).await.unwrap();
            let again = store.put_job_record_if("_generation", b"1".to_vec(), None).await.unwrap_err();
            assert!(matches!(again, CheckpointError::Conflict { .. }), "create-if-absent: {again}");
            let (content, version) = store.get_job_record_versioned("_generation").await.unwrap().unwrap();
            assert_eq!(content, Bytes::from_static(b"1"));
            store.put_job_record_if("_generation", b"2".to_vec(), Some(version.clone())).await.unwrap();
            let stale = store.put_job_record_if("_generation", b"2".to_vec(), Some(version)).await.unwrap_err();
            assert!(matches!(stale, CheckpointError::Conflict { .. }), "a racer that read 1 loses: {stale}");
            assert_eq!(store.get_job_record("_generation").await.unwrap().unwrap(), Bytes::from_static(b"2"));
            store.delete_job_record("_generation").await.unwrap();
            store.delete_job_record("_generation").await.unwrap();
            assert!(store.get_job_record_versioned("_generation").await.unwrap().is_none());
        });
    }
}

/// A store whose listings miss the objects under the prefixes in `hidden`: a listing that
/// lags behind writes, as eventually consistent stores' do.
#[derive(Debug)]
struct LaggingListings {
    inner: std::sync::Arc<dyn object_store::ObjectStore>,
    hidden: std::sync::Mutex<Vec<String>>,
}

impl std::fmt::Display for LaggingListings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LaggingListings({})", self.inner)
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for LaggingListings {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }
    async fn delete(&self, location: &object_store::path::Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }
    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        use futures::StreamExt;
        let hidden = self.hidden.lock().unwrap().clone();
        self.inner
            .list(prefix)
            .filter(move |item| {
                let keep =
                    !matches!(item, Ok(meta) if hidden.iter().any(|h| meta.location.as_ref().contains(h.as_str())));
                async move { keep }
            })
            .boxed()
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &object_store::path::Path, to: &object_store::path::Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }
    async fn copy_if_not_exists(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
    ) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

#[test]
fn a_lagging_listing_does_not_hide_the_newest_checkpoint_from_a_restore() {
    for (store, _guard) in backends() {
        block_on(async {
            let lagging = std::sync::Arc::new(LaggingListings {
                inner: store.object_store().clone(),
                hidden: std::sync::Mutex::new(vec!["chk-2/".into()]),
            });
            let seen = CheckpointStore::with_store(lagging.clone(), "job-a");
            write_checkpoint(&seen, 1, true).await;
            seen.record_latest(1).await.unwrap();
            write_checkpoint(&seen, 2, true).await;
            // Sinks commit only after the newest-checkpoint record names 2: a restore that lists
            // only 1 must still restore 2, or it would retract output that 2 let sinks commit.
            seen.record_latest(2).await.unwrap();
            let (restored, skipped) = seen.restore_point().await.unwrap();
            assert_eq!(restored.unwrap().metadata.checkpoint_id, 2);
            assert!(skipped.is_empty());
            // A record naming a checkpoint deleted since (by a restore) is passed over quietly.
            seen.delete_checkpoint(2).await.unwrap();
            let (restored, skipped) = seen.restore_point().await.unwrap();
            assert_eq!(restored.unwrap().metadata.checkpoint_id, 1);
            assert!(skipped.is_empty(), "{skipped:?}");
        });
    }
}

#[test]
fn a_restored_checkpoint_is_recorded_as_the_newest_before_its_output_is_committed() {
    // Found by the simulator (seed 803 of a 2000-seed sweep): a checkpoint whose `_metadata`
    // put stored the object but reported failure was never recorded as the newest; a restore
    // that listed it restored it (and recovery committed its output); a later restore, under a
    // listing that lagged, no longer saw it and rolled that output back.
    for (store, _guard) in backends() {
        block_on(async {
            let lagging = std::sync::Arc::new(LaggingListings {
                inner: store.object_store().clone(),
                hidden: std::sync::Mutex::new(Vec::new()),
            });
            let seen = CheckpointStore::with_store(lagging.clone(), "job-a");
            write_checkpoint(&seen, 1, true).await;
            seen.record_latest(1).await.unwrap();
            write_checkpoint(&seen, 2, true).await; // `_metadata` stored; `_latest` never written
            let (restored, _) = seen.restore_for(2).await.unwrap();
            assert_eq!(restored.unwrap().metadata.checkpoint_id, 2, "listed: restored, its output committed");
            lagging.hidden.lock().unwrap().push("chk-2/".into());
            let (restored, _) = seen.restore_for(3).await.unwrap();
            assert_eq!(restored.unwrap().metadata.checkpoint_id, 2, "a lagging listing must not roll it back");
        });
    }
}

#[test]
fn a_restore_keeps_the_shared_files_of_the_checkpoint_it_restores_though_listings_lag() {
    for (store, _guard) in backends() {
        block_on(async {
            let lagging = std::sync::Arc::new(LaggingListings {
                inner: store.object_store().clone(),
                hidden: std::sync::Mutex::new(vec!["chk-2/".into()]),
            });
            let seen = CheckpointStore::with_store(lagging, "job-a");
            complete_with_shared(&seen, 1, &["a.sst"]).await;
            complete_with_shared(&seen, 2, &["a.sst", "b.sst"]).await;
            seen.record_latest(2).await.unwrap();
            seen.put_shared("orphan.sst", Bytes::from_static(b"x")).await.unwrap();
            let (restored, _) = seen.restore_for(4).await.unwrap();
            assert_eq!(restored.unwrap().metadata.checkpoint_id, 2);
            assert!(shared_present(&seen, "b.sst").await, "named by the restored checkpoint the listing misses");
            assert!(!shared_present(&seen, "orphan.sst").await);
        });
    }
}
