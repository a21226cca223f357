//! An append-only log of records by key group, kept encoded: the state of operators whose
//! state is every record they were given (an updating stream's entries and folds, see
//! [`crate::updating`]).
//!
//! **Why encoded, in shared chunks.** Such state only grows, and every checkpoint must hold all
//! of it. Copying it record by record at each checkpoint, so as to encode the copy off the
//! slot's thread, cost more than the query itself (each record a `Vec` of values to clone, then
//! to free). Here each record is encoded once, on arrival, into its key group's open chunk; a
//! full chunk is sealed and from then on shared by reference. A snapshot copies only the open
//! chunks (each under [`CHUNK`] bytes) and the references; the encoding off the slot's thread
//! concatenates the chunks. The encoded records take less memory than the values, too.
//!
//! A key group's bytes are those of a `Vec<(EventTime, T)>` (bincode: the count, then the
//! records), so a restore decodes them as one, and restored bytes become a sealed chunk as they
//! are.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use weir_core::time::EventTime;

use crate::stateful::StateImage;

/// How large a key group's open chunk grows before it is sealed (bytes).
const CHUNK: usize = 8 * 1024;

/// Every record given, by key group, with its event time, encoded.
pub(crate) struct RecordLog<T> {
    groups: BTreeMap<usize, GroupLog>,
    records: PhantomData<fn(T) -> T>,
}

/// One key group's records.
#[derive(Default)]
struct GroupLog {
    /// How many records it holds.
    count: u64,
    /// Full chunks, shared with the snapshots that hold them.
    sealed: Vec<Arc<Vec<u8>>>,
    /// The chunk being written.
    open: Vec<u8>,
}

impl<T: Serialize + DeserializeOwned> RecordLog<T> {
    pub(crate) fn new() -> Self {
        RecordLog { groups: BTreeMap::new(), records: PhantomData }
    }

    /// Appends `record`, of key group `group`, at event time `time`.
    pub(crate) fn push(&mut self, group: usize, time: EventTime, record: &T) {
        let log = self.groups.entry(group).or_default();
        bincode::serialize_into(&mut log.open, &(time, record)).expect("records serialize");
        log.count += 1;
        if log.open.len() >= CHUNK {
            log.sealed.push(Arc::new(std::mem::take(&mut log.open)));
        }
    }

    /// The records, by key group, encoded off the slot's thread.
    pub(crate) fn snapshot(&self) -> StateImage {
        let parts: Vec<(usize, GroupLog)> = self
            .groups
            .iter()
            .map(|(&group, log)| {
                (group, GroupLog { count: log.count, sealed: log.sealed.clone(), open: log.open.clone() })
            })
            .collect();
        StateImage::deferred(move || {
            parts
                .into_iter()
                .map(|(group, GroupLog { count, sealed, open })| {
                    let length = 8 + sealed.iter().map(|chunk| chunk.len()).sum::<usize>() + open.len();
                    let mut bytes = Vec::with_capacity(length);
                    bytes.extend_from_slice(&count.to_le_bytes());
                    sealed.iter().for_each(|chunk| bytes.extend_from_slice(chunk));
                    bytes.extend_from_slice(&open);
                    (group, bytes)
                })
                .collect()
        })
    }

    /// Restores key group `group` from its snapshot bytes, and gives its records.
    pub(crate) fn restore(&mut self, group: usize, mut bytes: Vec<u8>) -> Result<Vec<(EventTime, T)>, String> {
        let records: Vec<(EventTime, T)> = crate::keyed::decode_state(&bytes)?;
        let mut log = GroupLog { count: records.len() as u64, ..GroupLog::default() };
        // The records without their count: a chunk as `push` writes them.
        bytes.drain(..8);
        if !bytes.is_empty() {
            log.sealed.push(Arc::new(bytes));
        }
        if self.groups.insert(group, log).is_some() {
            return Err(format!("key group {group} restored twice"));
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_decodes_as_the_records_given_and_restores_to_the_same_bytes() {
        let mut log: RecordLog<String> = RecordLog::new();
        // Enough records to seal several chunks of key group 3.
        let records: Vec<(EventTime, String)> = (0..2000).map(|i| (i - 1000, format!("record {i}"))).collect();
        for (time, record) in &records {
            log.push(3, *time, record);
        }
        log.push(7, 42, &"alone".to_owned());
        assert!(log.groups[&3].sealed.len() > 1, "chunks were sealed");
        let image = log.snapshot().encode();
        assert_eq!(image.iter().map(|(group, _)| *group).collect::<Vec<_>>(), [3, 7]);
        let decoded: Vec<(EventTime, String)> = crate::keyed::decode_state(&image[0].1).unwrap();
        assert_eq!(decoded, records);
        // Restored, then added to: the next snapshot holds both, in order.
        let mut restored: RecordLog<String> = RecordLog::new();
        assert_eq!(restored.restore(3, image[0].1.clone()).unwrap(), records);
        restored.push(3, 5000, &"after".to_owned());
        let again = restored.snapshot().encode();
        let decoded: Vec<(EventTime, String)> = crate::keyed::decode_state(&again[0].1).unwrap();
        assert_eq!(decoded.len(), records.len() + 1);
        assert_eq!(decoded.last().unwrap(), &(5000, "after".to_owned()));
        assert!(restored.restore(3, image[0].1.clone()).is_err(), "a key group restored twice");
    }
}
