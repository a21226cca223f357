//! A fault-injecting object store: the checkpoint store's seam, as the simulator sees it.
//!
//! [`FaultyStore`] wraps any `object_store` backend and, while a fault window is open, fails
//! operations, slows them down, reports a put as failed after it succeeded, or lists with a lag
//! (objects written in the last moments are not listed yet). Outside a window it is a faithful
//! pass-through. It also corrupts or truncates stored objects on request, and records every
//! checkpoint whose `_metadata` reached storage — the ground truth for the oracle that no
//! output is committed for an epoch whose checkpoint never completed.
//!
//! Every decision is drawn from a generator seeded by the run's seed, in the order the
//! (deterministic) simulation makes its calls, so a run replays bit-for-bit.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions,
    PutPayload, PutResult, Result,
};

use weir_core::keygroup::mix64;
use weir_core::rt;

/// What a storage fault window does. Rates are per mille of operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorageFaultMode {
    /// Puts, gets, lists and deletes that fail outright.
    pub error_per_mille: u32,
    /// Extra latency of every operation, in ms.
    pub slow_ms: u64,
    /// Puts that store the object and then report failure.
    pub lying_put_per_mille: u32,
    /// Objects written less than this many ms ago are missing from listings.
    pub list_lag_ms: u64,
}

impl fmt::Display for StorageFaultMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.error_per_mille > 0 {
            parts.push(format!("{}‰ of operations fail", self.error_per_mille));
        }
        if self.slow_ms > 0 {
            parts.push(format!("+{} ms per operation", self.slow_ms));
        }
        if self.lying_put_per_mille > 0 {
            parts.push(format!("{}‰ of puts succeed but report failure", self.lying_put_per_mille));
        }
        if self.list_lag_ms > 0 {
            parts.push(format!("listings lag {} ms", self.list_lag_ms));
        }
        if parts.is_empty() {
            parts.push("no effect".into());
        }
        write!(f, "{}", parts.join(", "))
    }
}

/// How a stored object is damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Damage {
    /// One bit flipped at a position drawn from the run's generator (size unchanged).
    BitFlip,
    /// Cut to half its length.
    Truncate,
}

struct Control {
    mode: StorageFaultMode,
    /// Latency of every operation, faults or not (a real store is never instant).
    latency_ms: u64,
    random: u64,
    /// When each object was last written (for lagging listings).
    written_at: BTreeMap<Path, rt::Instant>,
    /// Checkpoint ids whose `_metadata` was stored, per job.
    completed: BTreeMap<String, BTreeSet<u64>>,
    /// Job → (attempt, checkpoint) of every completed checkpoint.
    completed_by: BTreeMap<String, BTreeSet<(u64, u64)>>,
    injected: u64,
}

/// The handle the simulator keeps to steer a [`FaultyStore`].
#[derive(Clone)]
pub struct StorageFaults {
    control: Arc<Mutex<Control>>,
    inner: Arc<dyn ObjectStore>,
}

impl StorageFaults {
    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a fault window with `mode` (replacing any open one).
    pub fn begin(&self, mode: StorageFaultMode) {
        self.control().mode = mode;
    }

    /// Closes the fault window: the store is faithful again.
    pub fn heal(&self) {
        self.control().mode = StorageFaultMode::default();
    }

    /// Makes every operation take `latency_ms` (besides what fault windows add).
    pub fn set_latency(&self, latency_ms: u64) {
        self.control().latency_ms = latency_ms;
    }

    /// The checkpoints of `job_id` whose `_metadata` reached storage, ascending.
    pub fn completed_checkpoints(&self, job_id: &str) -> BTreeSet<u64> {
        self.control().completed.get(job_id).cloned().unwrap_or_default()
    }

    /// The newest checkpoint of `job_id` that deployment attempt `attempt` completed (its
    /// `_metadata` reached storage), 0 for none: the only checkpoints that cover the attempt's
    /// staged output.
    pub fn newest_completed_by(&self, job_id: &str, attempt: u64) -> u64 {
        let control = self.control();
        let completed = control.completed_by.get(job_id);
        completed.into_iter().flatten().filter(|(by, _)| *by == attempt).map(|(_, id)| *id).max().unwrap_or(0)
    }

    /// Operations that an injected fault failed or delayed so far.
    pub fn injected(&self) -> u64 {
        self.control().injected
    }

    /// Damages the stored object at `path`; `false` if it does not exist.
    pub async fn damage(&self, path: &Path, damage: Damage) -> bool {
        let Ok(got) = self.inner.get(path).await else { return false };
        let Ok(bytes) = got.bytes().await else { return false };
        if bytes.is_empty() {
            return false;
        }
        let mut content = bytes.to_vec();
        match damage {
            Damage::BitFlip => {
                let draw = self.control().draw();
                let position = (draw % content.len() as u64) as usize;
                content[position] ^= 1 << (draw >> 61);
            }
            Damage::Truncate => content.truncate(content.len() / 2),
        }
        self.inner.put(path, PutPayload::from(content)).await.is_ok()
    }

    /// The newest checkpoint of `job_id` with a `_metadata` object still in storage.
    pub async fn newest_stored_checkpoint(&self, job_id: &str) -> Option<u64> {
        let prefix = Path::from(job_id);
        let mut listing = self.inner.list(Some(&prefix));
        let mut newest = None;
        while let Some(Ok(meta)) = listing.next().await {
            let parts: Vec<String> = meta.location.parts().map(|p| p.as_ref().to_string()).collect();
            if parts.last().map(String::as_str) != Some(weir_core::checkpoint::METADATA) {
                continue;
            }
            if let Some(id) = parts.iter().rev().nth(1).and_then(|d| d.strip_prefix("chk-")?.parse::<u64>().ok()) {
                newest = newest.max(Some(id));
            }
        }
        newest
    }
}

impl Control {
    fn draw(&mut self) -> u64 {
        self.random = self.random.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.random)
    }

    fn roll(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && self.draw() % 1000 < u64::from(per_mille)
    }
}

/// An object store that injects the faults its [`StorageFaults`] handle asks for.
pub struct FaultyStore {
    faults: StorageFaults,
}

impl FaultyStore {
    /// Wraps `inner`; decisions are drawn from a generator seeded with `seed`.
    pub fn new(inner: Arc<dyn ObjectStore>, seed: u64) -> (Arc<Self>, StorageFaults) {
        let control = Control {
            mode: StorageFaultMode::default(),
            latency_ms: 0,
            random: mix64(seed ^ 0x5709_A6E5),
            written_at: BTreeMap::new(),
            completed: BTreeMap::new(),
            completed_by: BTreeMap::new(),
            injected: 0,
        };
        let faults = StorageFaults { control: Arc::new(Mutex::new(control)), inner };
        (Arc::new(FaultyStore { faults: faults.clone() }), faults)
    }

    fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.faults.inner
    }

    /// Delays the operation and decides whether it fails.
    async fn enter(&self, operation: &'static str, path: &Path) -> Result<()> {
        let (slow_ms, fail) = {
            let mut control = self.faults.control();
            let mode = control.mode;
            let fail = control.roll(mode.error_per_mille);
            if fail || mode.slow_ms > 0 {
                control.injected += 1;
            }
            (mode.slow_ms + control.latency_ms, fail)
        };
        if slow_ms > 0 {
            rt::true_sleep(Duration::from_millis(slow_ms)).await;
        }
        if fail {
            return Err(injected(operation, path));
        }
        Ok(())
    }

    /// Records a stored object; `content` is given for puts (a `_metadata` names the attempt
    /// that completed the checkpoint).
    fn record_put(&self, path: &Path, content: Option<&PutPayload>) {
        let mut control = self.faults.control();
        control.written_at.insert(path.clone(), rt::true_now());
        let parts: Vec<String> = path.parts().map(|p| p.as_ref().to_string()).collect();
        if parts.len() >= 3 && parts[parts.len() - 1] == weir_core::checkpoint::METADATA {
            if let Some(id) = parts[parts.len() - 2].strip_prefix("chk-").and_then(|n| n.parse::<u64>().ok()) {
                let job = parts[parts.len() - 3].clone();
                control.completed.entry(job.clone()).or_default().insert(id);
                let raw: Option<Vec<u8>> = content.map(|c| c.iter().flat_map(|chunk| chunk.iter().copied()).collect());
                if let Some(metadata) = raw.and_then(|raw| weir_core::checkpoint::decode_metadata(&raw).ok()) {
                    control.completed_by.entry(job).or_default().insert((metadata.attempt, id));
                }
            }
        }
    }
}

fn injected(operation: &'static str, path: &Path) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: format!("injected fault: {operation} {path} failed").into(),
    }
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner())
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner())
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.enter("put", location).await?;
        let result = self.inner().put_opts(location, payload.clone(), opts).await?;
        self.record_put(location, Some(&payload));
        let lie = {
            let mut control = self.faults.control();
            let per_mille = control.mode.lying_put_per_mille;
            let lie = control.roll(per_mille);
            control.injected += u64::from(lie);
            lie
        };
        if lie {
            return Err(injected("put (stored, reported lost)", location));
        }
        Ok(result)
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.enter("put", location).await?;
        self.inner().put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.enter("get", location).await?;
        self.inner().get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.enter("get", location).await?;
        self.inner().get_ranges(location, ranges).await
    }

    async fn delete(&self, location: &Path) -> Result<()> {
        self.enter("delete", location).await?;
        self.inner().delete(location).await?;
        self.faults.control().written_at.remove(location);
        Ok(())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let (fail, hidden) = {
            let mut control = self.faults.control();
            let mode = control.mode;
            let fail = control.roll(mode.error_per_mille);
            control.injected += u64::from(fail);
            let hidden: BTreeSet<Path> = if mode.list_lag_ms > 0 {
                let horizon = Duration::from_millis(mode.list_lag_ms);
                let now = rt::true_now();
                control
                    .written_at
                    .iter()
                    .filter(|(_, at)| now.saturating_duration_since(**at) < horizon)
                    .map(|(path, _)| path.clone())
                    .collect()
            } else {
                BTreeSet::new()
            };
            (fail, hidden)
        };
        if fail {
            let error = injected("list", prefix.unwrap_or(&Path::from("")));
            return futures::stream::once(async move { Err(error) }).boxed();
        }
        self.inner()
            .list(prefix)
            .filter(move |item| {
                let keep = !matches!(item, Ok(meta) if hidden.contains(&meta.location));
                async move { keep }
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.enter("list", prefix.unwrap_or(&Path::from(""))).await?;
        self.inner().list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        self.enter("copy", from).await?;
        self.inner().copy(from, to).await?;
        self.record_put(to, None);
        Ok(())
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.enter("copy", from).await?;
        self.inner().copy_if_not_exists(from, to).await?;
        self.record_put(to, None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[test]
    fn faithful_outside_windows_and_failing_inside() {
        futures::executor::block_on(async {
            let (store, faults) = FaultyStore::new(Arc::new(InMemory::new()), 7);
            let path = Path::from("job/chk-3/_metadata");
            store.put(&path, PutPayload::from_static(b"m")).await.unwrap();
            assert_eq!(faults.completed_checkpoints("job"), BTreeSet::from([3]));
            faults.begin(StorageFaultMode { error_per_mille: 1000, ..Default::default() });
            assert!(store.get(&path).await.is_err());
            assert!(store.put(&path, PutPayload::from_static(b"n")).await.is_err());
            faults.heal();
            assert_eq!(store.get(&path).await.unwrap().bytes().await.unwrap().as_ref(), b"m");
            // A lying put stores the object and reports failure.
            faults.begin(StorageFaultMode { lying_put_per_mille: 1000, ..Default::default() });
            assert!(store.put(&path, PutPayload::from_static(b"o")).await.is_err());
            faults.heal();
            assert_eq!(store.get(&path).await.unwrap().bytes().await.unwrap().as_ref(), b"o");
            assert!(faults.injected() >= 3);
        });
    }

    #[test]
    fn damage_changes_content_and_is_detectable() {
        futures::executor::block_on(async {
            let (store, faults) = FaultyStore::new(Arc::new(InMemory::new()), 1);
            let path = Path::from("job/chk-1/slot-0.state");
            store.put(&path, PutPayload::from_static(b"0123456789")).await.unwrap();
            assert!(faults.damage(&path, Damage::BitFlip).await);
            let flipped = store.get(&path).await.unwrap().bytes().await.unwrap();
            assert_eq!(flipped.len(), 10);
            assert_ne!(flipped.as_ref(), b"0123456789");
            assert!(faults.damage(&path, Damage::Truncate).await);
            assert_eq!(store.get(&path).await.unwrap().bytes().await.unwrap().len(), 5);
            assert!(!faults.damage(&Path::from("job/none"), Damage::Truncate).await);
        });
    }
}
