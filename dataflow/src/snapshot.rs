//! Snapshot parts, their collection per epoch, and the slot state file format.
//!
//! Operators of a slot report their part of checkpoint `n` independently, when *they* see
//! epoch `n` complete: each source records its split positions when it moves past epoch `n`,
//! each stateful operator a copy of its state once its input frontier has passed epoch `n`, and
//! each sink when its staged output for epoch `n` is written, with what remains to make it
//! durable. The [`SnapshotCollector`] joins the parts; the slot's snapshot for checkpoint `n`
//! exists only when all have arrived. State is keyed by key group so that a restore can
//! reassign whole groups to other slots.
//!
//! **Asynchronous snapshots.** Nothing here waits on a disk or encodes state on the slot's
//! thread: the joined parts are a [`PendingSnapshot`], which the slot's snapshot writer
//! finishes elsewhere — it makes the sinks' staged output durable, encodes every operator's
//! state copy, and only then reports the checkpoint. Records keep flowing meanwhile.

use std::collections::BTreeMap;

use crate::sink::Durability;
use crate::stateful::{FileEncoder, Form, KeyGroupStates, StateFiles, StateImage};
use weir_core::codec::{DecodeError, Decoder, Encoder};
use weir_core::time::Epoch;
use weir_core::watermark::SplitClock;

/// The position and clock of one source split at an epoch boundary.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SplitState {
    /// Index of the split in the job's split list.
    pub split: usize,
    /// Byte offset of the next unread line (files), or index of the next event (generator).
    pub position: u64,
    /// 1-based number of the next unread line (files; 0 for the generator).
    pub line: u64,
    /// The split's event-time clock.
    pub clock: SplitClock,
}

/// The state of one key group of one stateful operator, encoded by the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateEntry {
    /// The operator's stable id (its `uid`).
    pub operator: String,
    /// The key group.
    pub key_group: usize,
    /// The operator's encoding of that key group's state.
    pub bytes: Vec<u8>,
}

/// Everything one slot contributes to one checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotSnapshot {
    /// The slot's split states.
    pub splits: Vec<SplitState>,
    /// The keyed state of the slot's stateful operators, by operator and key group.
    pub state: Vec<StateEntry>,
    /// The state instances of an incremental checkpoint, by operator: the files holding what
    /// `state` leaves out of those operators (never in a savepoint, which stands alone).
    pub instances: Vec<InstanceManifest>,
}

/// The files of one operator's state instance (RocksDB) in an incremental checkpoint: what
/// restores the instance as it was, in the same slot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstanceManifest {
    /// The operator's stable id.
    pub operator: String,
    /// The key groups `[start, end)` of the slot that took it, which the files hold: they
    /// restore only to a slot owning the same range (a checkpoint restores at the parallelism
    /// that took it; a savepoint, canonical, at any).
    pub key_groups: (usize, usize),
    /// The instance's files.
    pub files: Vec<InstanceFile>,
}

/// One file of a state instance.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstanceFile {
    /// Its name in the instance's directory.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// CRC32 of its content.
    pub crc32: u32,
    /// Where its content is.
    pub stored: StoredFile,
}

/// Where an instance file's content is kept.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StoredFile {
    /// In the job's shared directory under this name, uploaded once and referenced by every
    /// checkpoint that holds it (the immutable SST files).
    Shared(String),
    /// Here, in the state file (the small files RocksDB rewrites at every checkpoint: its
    /// MANIFEST, OPTIONS and CURRENT).
    Inline(Vec<u8>),
}

/// A state file without instances (every savepoint's, and a memory backend's checkpoints).
const MAGIC: u64 = u64::from_le_bytes(*b"WEIRSLT2");
/// A state file with instances: the above, then the instance manifests.
const MAGIC_WITH_INSTANCES: u64 = u64::from_le_bytes(*b"WEIRSLT3");

impl SlotSnapshot {
    /// Encodes the snapshot of `slot` at `epoch` as a state file.
    pub fn encode(&self, slot: usize, epoch: Epoch) -> Vec<u8> {
        // Sized up front: a slot's state runs to hundreds of megabytes, and growing a buffer
        // that size by doubling copies it again and again.
        let state_bytes: usize = self.state.iter().map(|entry| entry.operator.len() + entry.bytes.len() + 3 * 8).sum();
        let mut encoder = Encoder::with_capacity(4 * 8 + self.splits.len() * 64 + 8 + state_bytes);
        let magic = if self.instances.is_empty() { MAGIC } else { MAGIC_WITH_INSTANCES };
        encoder.u64(magic).u64(slot as u64).u64(epoch);
        encoder.u64(self.splits.len() as u64);
        for split in &self.splits {
            let clock = encode_clock(&split.clock);
            encoder.u64(split.split as u64).u64(split.position).u64(split.line).bytes(&clock);
        }
        encoder.u64(self.state.len() as u64);
        for entry in &self.state {
            encoder.bytes(entry.operator.as_bytes()).u64(entry.key_group as u64).bytes(&entry.bytes);
        }
        if !self.instances.is_empty() {
            encoder.bytes(&bincode::serialize(&self.instances).expect("manifests serialize"));
        }
        encoder.finish()
    }

    /// Decodes a state file, checking it belongs to `epoch`.
    pub fn decode(bytes: &[u8], epoch: Epoch) -> Result<(usize, SlotSnapshot), DecodeError> {
        let mut decoder = Decoder::new(bytes);
        let magic = decoder.u64("magic")?;
        if magic != MAGIC && magic != MAGIC_WITH_INSTANCES {
            return Err(DecodeError { what: "magic number (not a Weir slot state file)", offset: 0 });
        }
        let slot = decoder.u64("slot")? as usize;
        if decoder.u64("epoch")? != epoch {
            return Err(DecodeError { what: "epoch (file belongs to another checkpoint)", offset: 16 });
        }
        let split_count = decoder.count(32, "split count")?;
        let mut splits = Vec::with_capacity(split_count);
        for _ in 0..split_count {
            let split = decoder.u64("split index")? as usize;
            let position = decoder.u64("split position")?;
            let line = decoder.u64("split line")?;
            let clock = decode_clock(decoder.bytes("split clock")?)?;
            splits.push(SplitState { split, position, line, clock });
        }
        let entry_count = decoder.count(24, "state entry count")?;
        let mut state = Vec::with_capacity(entry_count);
        for _ in 0..entry_count {
            let operator = std::str::from_utf8(decoder.bytes("operator id")?)
                .map_err(|_| DecodeError { what: "operator id (not UTF-8)", offset: 0 })?
                .to_owned();
            let key_group = decoder.u64("key group")? as usize;
            // MAX_PARALLELISM itself: state every slot holds alike (`process::REPLICATED_GROUP`).
            if key_group > weir_core::keygroup::MAX_PARALLELISM {
                return Err(DecodeError { what: "key group (out of range)", offset: 0 });
            }
            let bytes = decoder.bytes("state bytes")?.to_vec();
            state.push(StateEntry { operator, key_group, bytes });
        }
        let mut instances = Vec::new();
        if magic == MAGIC_WITH_INSTANCES {
            instances = bincode::deserialize(decoder.bytes("instance manifests")?)
                .map_err(|_| DecodeError { what: "instance manifests", offset: 0 })?;
        }
        decoder.finish("end of slot state")?;
        Ok((slot, SlotSnapshot { splits, state, instances }))
    }
}

fn encode_clock(clock: &SplitClock) -> Vec<u8> {
    serde_json::to_vec(clock).expect("clock serializes")
}

fn decode_clock(bytes: &[u8]) -> Result<SplitClock, DecodeError> {
    serde_json::from_slice(bytes).map_err(|_| DecodeError { what: "split clock", offset: 0 })
}

/// Joins the parts operators report for each epoch into whole slot snapshots.
///
/// Every source, stateful operator and sink of the slot registers when the job is built, so
/// the collector knows which parts make a whole snapshot.
#[derive(Debug, Default)]
pub struct SnapshotCollector {
    /// Per epoch, each source's split states (`None` until it reports).
    sources: BTreeMap<Epoch, Vec<Option<Vec<SplitState>>>>,
    source_count: usize,
    operators: Vec<OperatorParts>,
    /// Per sink: every epoch `<=` this is prepared (durable once `durability` has run).
    sinks_through: Vec<Epoch>,
    /// What the sinks have left to do to make their prepared epochs durable, in the order they
    /// prepared them: run with the next snapshot taken.
    durability: Vec<Durability>,
    start_epoch: Epoch,
}

#[derive(Debug)]
struct OperatorParts {
    uid: String,
    parts: BTreeMap<Epoch, StateImage>,
    /// The operator's final state, valid for every epoch from the key on.
    last: Option<(Epoch, KeyGroupStates)>,
}

/// A slot's snapshot for one checkpoint as the slot's thread took it: split positions, a copy
/// of each operator's state, and the sinks' work left to make their output durable.
#[derive(Debug)]
pub struct PendingSnapshot {
    /// The checkpoint.
    pub epoch: Epoch,
    splits: Vec<SplitState>,
    operators: Vec<(String, StateImage)>,
    durability: Vec<Durability>,
}

impl PendingSnapshot {
    /// Makes the sinks' staged output durable, then encodes the state (off the slot's thread:
    /// this may wait on a disk) — all but the state held in files ([`StateImage::with_files`]),
    /// which [`FinishedSnapshot`] encodes or hands over as the checkpoint asks. An error names
    /// the sink or operator that failed.
    pub fn finish(self) -> Result<FinishedSnapshot, String> {
        for durability in self.durability {
            durability.wait().map_err(|error| error.to_string())?;
        }
        let mut operators = Vec::with_capacity(self.operators.len());
        for (operator, image) in self.operators {
            let part = match image.into_files() {
                Ok((files, encode)) => OperatorState::WithFiles(files, encode),
                Err(image) => {
                    OperatorState::Encoded(image.try_encode().map_err(|reason| cannot_snapshot(&operator, &reason))?)
                }
            };
            operators.push((operator, part));
        }
        operators.sort_by(|a, b| a.0.cmp(&b.0));
        let mut splits = self.splits;
        splits.sort_by_key(|split| split.split);
        Ok(FinishedSnapshot { splits, operators })
    }
}

fn cannot_snapshot(operator: &str, reason: &str) -> String {
    format!("operator {operator}: cannot snapshot its state: {reason}")
}

/// Each operator's files of a snapshot, by operator id.
pub type OperatorFiles = Vec<(String, std::sync::Arc<StateFiles>)>;

/// A slot's snapshot with its sinks' output durable and its state encoded, but for the state
/// held in files: ready to become a savepoint's state file (canonical, standing alone) or a
/// checkpoint's (the files uploaded beside it).
#[derive(Debug)]
pub struct FinishedSnapshot {
    splits: Vec<SplitState>,
    operators: Vec<(String, OperatorState)>,
}

enum OperatorState {
    Encoded(KeyGroupStates),
    WithFiles(std::sync::Arc<StateFiles>, FileEncoder),
}

impl std::fmt::Debug for OperatorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OperatorState::Encoded(states) => write!(f, "Encoded({} key groups)", states.len()),
            OperatorState::WithFiles(files, _) => write!(f, "WithFiles({files:?})"),
        }
    }
}

impl FinishedSnapshot {
    /// Whether some operator's state is held in files.
    pub fn has_files(&self) -> bool {
        self.operators.iter().any(|(_, state)| matches!(state, OperatorState::WithFiles(..)))
    }

    /// The whole state in the canonical form (a savepoint's; a checkpoint's without files).
    pub fn canonical(&self) -> Result<SlotSnapshot, String> {
        let parts = self.operators.iter().map(|(operator, part)| (operator.clone(), part.encode(Form::Canonical)));
        assemble(self.splits.clone(), parts)
    }

    /// [`FinishedSnapshot::canonical`] without copying the encoded state (a checkpoint without
    /// files).
    pub fn into_canonical(self) -> Result<SlotSnapshot, String> {
        let parts = self.operators.into_iter().map(|(operator, part)| {
            let encoded = match part {
                OperatorState::Encoded(states) => Ok(states),
                OperatorState::WithFiles(_, encode) => encode(Form::Canonical),
            };
            (operator, encoded)
        });
        assemble(self.splits, parts)
    }

    /// The state beside the files, and the files of each operator that has them (a
    /// checkpoint's: its slot uploads the files and records them in the snapshot's
    /// [`SlotSnapshot::instances`]).
    pub fn beside_files(&self) -> Result<(SlotSnapshot, OperatorFiles), String> {
        let files = self
            .operators
            .iter()
            .filter_map(|(operator, state)| match state {
                OperatorState::WithFiles(files, _) => Some((operator.clone(), files.clone())),
                OperatorState::Encoded(_) => None,
            })
            .collect();
        let parts = self.operators.iter().map(|(operator, part)| (operator.clone(), part.encode(Form::BesideFiles)));
        Ok((assemble(self.splits.clone(), parts)?, files))
    }
}

impl OperatorState {
    fn encode(&self, form: Form) -> Result<KeyGroupStates, String> {
        match self {
            OperatorState::Encoded(states) => Ok(states.clone()),
            OperatorState::WithFiles(_, encode) => encode(form),
        }
    }
}

/// A slot snapshot of `splits` and each operator's encoded state, in the canonical order: by
/// operator id, then key group (a savepoint's promise; checkpoints share it).
fn assemble(
    splits: Vec<SplitState>,
    operators: impl Iterator<Item = (String, Result<KeyGroupStates, String>)>,
) -> Result<SlotSnapshot, String> {
    let mut state = Vec::new();
    for (operator, encoded) in operators {
        let encoded = encoded.map_err(|reason| cannot_snapshot(&operator, &reason))?;
        state.extend(encoded.into_iter().map(|(key_group, bytes)| StateEntry {
            operator: operator.clone(),
            key_group,
            bytes,
        }));
    }
    state.sort_by(|a, b| (&a.operator, a.key_group).cmp(&(&b.operator, b.key_group)));
    Ok(SlotSnapshot { splits, state, instances: Vec::new() })
}

/// A source's handle in the collector.
#[derive(Copy, Clone, Debug)]
pub struct SourcePart(usize);
/// A stateful operator's handle in the collector.
#[derive(Copy, Clone, Debug)]
pub struct OperatorPart(usize);
/// A sink's handle in the collector.
#[derive(Copy, Clone, Debug)]
pub struct SinkPart(usize);

impl SnapshotCollector {
    /// A collector for a slot starting at `start_epoch`.
    pub fn new(start_epoch: Epoch) -> Self {
        SnapshotCollector { start_epoch, ..Default::default() }
    }
    /// Registers a source (before the first step).
    pub fn register_source(&mut self) -> SourcePart {
        assert!(self.sources.is_empty(), "sources register before any reports");
        self.source_count += 1;
        SourcePart(self.source_count - 1)
    }
    /// Registers a stateful operator (before the first step).
    pub fn register_operator(&mut self, uid: &str) -> OperatorPart {
        assert!(self.operators.iter().all(|o| o.uid != uid), "operator {uid} registered twice");
        self.operators.push(OperatorParts { uid: uid.to_owned(), parts: BTreeMap::new(), last: None });
        OperatorPart(self.operators.len() - 1)
    }
    /// Registers a sink (before the first step).
    pub fn register_sink(&mut self) -> SinkPart {
        self.sinks_through.push(self.start_epoch - 1);
        SinkPart(self.sinks_through.len() - 1)
    }
    /// A source's split states at the end of `epoch`.
    pub fn source_part(&mut self, source: SourcePart, epoch: Epoch, splits: Vec<SplitState>) {
        let count = self.source_count;
        let parts = self.sources.entry(epoch).or_insert_with(|| vec![None; count]);
        let previous = parts[source.0].replace(splits);
        assert!(previous.is_none(), "source {} reported epoch {epoch} twice", source.0);
    }
    /// A stateful operator's state at the end of `epoch`, by key group.
    pub fn operator_part(&mut self, operator: OperatorPart, epoch: Epoch, image: StateImage) {
        let parts = &mut self.operators[operator.0];
        assert!(parts.last.is_none(), "operator {} reported after its final state", parts.uid);
        let previous = parts.parts.insert(epoch, image);
        assert!(previous.is_none(), "operator {} reported epoch {epoch} twice", parts.uid);
    }
    /// A stateful operator's final state, valid for `epoch` and every later epoch (encoded
    /// now: it is copied into every later snapshot).
    pub fn operator_final(&mut self, operator: OperatorPart, epoch: Epoch, image: StateImage) {
        let parts = &mut self.operators[operator.0];
        assert!(parts.last.is_none(), "operator {} finished twice", parts.uid);
        parts.last = Some((epoch, image.encode()));
    }
    /// A sink has written every epoch `<= through`; they are durable once `durability` ran.
    pub fn sink_prepared(&mut self, sink: SinkPart, through: Epoch, durability: Durability) {
        // Before the sources leave the minimum epoch a sink may report less than the start.
        self.sinks_through[sink.0] = self.sinks_through[sink.0].max(through);
        self.durability.push(durability);
    }

    /// The oldest epoch whose parts have all arrived, with the joined snapshot.
    pub fn take_ready(&mut self) -> Option<PendingSnapshot> {
        let (&epoch, parts) = self.sources.first_key_value()?;
        if parts.iter().any(Option::is_none) || self.sinks_through.iter().any(|&through| through < epoch) {
            return None;
        }
        let ready = |operator: &OperatorParts| {
            operator.parts.contains_key(&epoch) || operator.last.as_ref().is_some_and(|(from, _)| *from <= epoch)
        };
        if !self.operators.iter().all(ready) {
            return None;
        }
        let operators = self
            .operators
            .iter_mut()
            .map(|operator| {
                let image = match operator.parts.remove(&epoch) {
                    Some(image) => image,
                    None => StateImage::encoded(operator.last.as_ref().expect("checked above").1.clone()),
                };
                (operator.uid.clone(), image)
            })
            .collect();
        let splits = self.sources.remove(&epoch).expect("present").into_iter().flatten().flatten().collect();
        // Every sink has prepared through `epoch`: the work that makes that durable was
        // handed over by now, and runs before this snapshot is reported.
        let durability = std::mem::take(&mut self.durability);
        Some(PendingSnapshot { epoch, splits, operators, durability })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn split(position: u64) -> Vec<SplitState> {
        vec![SplitState { split: 0, position, line: 0, clock: SplitClock::new(0) }]
    }

    #[test]
    fn a_snapshot_is_ready_when_every_part_arrived_and_finishes_durability_before_encoding() {
        let mut collector = SnapshotCollector::new(1);
        let source = collector.register_source();
        let operator = collector.register_operator("counts");
        let sink = collector.register_sink();
        let steps = Arc::new(AtomicUsize::new(0));
        collector.source_part(source, 1, split(10));
        let encoded_at = steps.clone();
        collector.operator_part(
            operator,
            1,
            StateImage::deferred(move || vec![(3, vec![encoded_at.fetch_add(1, Ordering::SeqCst) as u8])]),
        );
        assert!(collector.take_ready().is_none(), "the sink has not prepared epoch 1");
        let synced_at = steps.clone();
        collector.sink_prepared(
            sink,
            1,
            Durability::after(move || {
                synced_at.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }),
        );
        let pending = collector.take_ready().expect("every part arrived");
        assert_eq!(pending.epoch, 1);
        assert_eq!(steps.load(Ordering::SeqCst), 0, "nothing runs on the slot's thread");
        let snapshot = pending.finish().unwrap().into_canonical().unwrap();
        assert_eq!(snapshot.splits, split(10));
        // The sync ran first (step 0), the encoding second (step 1).
        assert_eq!(snapshot.state, vec![StateEntry { operator: "counts".into(), key_group: 3, bytes: vec![1] }]);
    }

    #[test]
    fn a_state_file_names_its_instances_and_one_without_keeps_the_earlier_format() {
        let mut snapshot = SlotSnapshot {
            splits: split(7),
            state: vec![StateEntry { operator: "p".into(), key_group: 2, bytes: vec![9] }],
            instances: Vec::new(),
        };
        let plain = snapshot.encode(1, 4);
        assert_eq!(plain[..8], *b"WEIRSLT2", "a savepoint's file reads as before");
        assert_eq!(SlotSnapshot::decode(&plain, 4).unwrap(), (1, snapshot.clone()));
        snapshot.instances.push(InstanceManifest {
            operator: "p".into(),
            key_groups: (64, 128),
            files: vec![
                InstanceFile {
                    name: "000009.sst".into(),
                    size: 3,
                    crc32: 7,
                    stored: StoredFile::Shared("p-s1-9.sst".into()),
                },
                InstanceFile { name: "CURRENT".into(), size: 2, crc32: 5, stored: StoredFile::Inline(vec![1, 2]) },
            ],
        });
        let with_instances = snapshot.encode(1, 4);
        assert_eq!(SlotSnapshot::decode(&with_instances, 4).unwrap(), (1, snapshot));
        assert!(SlotSnapshot::decode(&with_instances[..with_instances.len() - 1], 4).is_err());
    }

    #[test]
    fn a_sink_that_cannot_make_its_output_durable_fails_the_snapshot_with_its_error() {
        let mut collector = SnapshotCollector::new(1);
        let source = collector.register_source();
        let sink = collector.register_sink();
        collector.source_part(source, 1, split(0));
        let refused = || std::io::Error::other("output /out: cannot write: disk full");
        collector.sink_prepared(sink, 1, Durability::after(move || Err(refused())));
        let error = collector.take_ready().expect("ready").finish().unwrap_err();
        assert_eq!(error, "output /out: cannot write: disk full");
    }
}
