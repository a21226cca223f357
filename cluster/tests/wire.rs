//! Decoders never panic on what a peer sends.
//!
//! Method: property tests over every message type of the cluster's wire — the hello, both
//! directions of the control connection, client requests and responses, data frames — and over
//! the other decoders that read bytes written elsewhere (slot state files, checkpoint
//! metadata). Each decoder gets (a) random bytes and (b) valid encodings mutated the ways a
//! broken or hostile peer would: bits flipped, truncated, extended with garbage, and an
//! 8-byte window overwritten with a huge length. A decoder must return `Ok` or `Err`; a panic,
//! an abort on a huge allocation, or a hang fails the test. The framed reader is fed whole
//! byte streams, length prefixes included, under a small frame limit.

use proptest::prelude::*;

use weir_cluster::jobs::bids::BidsParams;
use weir_cluster::protocol::{
    ClientRequest, ClientResponse, DataFrame, Deployment, Hello, JobOptions, JobState, JobStatus, MetricsSnapshot,
    Placement, ToCoordinator, ToWorker,
};
use weir_cluster::slot::{SavepointTarget, SlotCommand, SlotEvent};
use weir_cluster::wire::{decode, encode, read_message, ReadLimits};
use weir_core::checkpoint::{decode_metadata, encode_metadata, CheckpointMetadata, FileEntry, FORMAT_VERSION};
use weir_core::job::{BadRecordPolicy, JobSpec};
use weir_core::time::Time;
use weir_core::Bid;
use weir_dataflow::exchange::ExchangeMessage;
use weir_dataflow::snapshot::SlotSnapshot;

fn spec() -> JobSpec {
    BidsParams::generated(1000, 7, std::path::Path::new("/tmp/out")).spec(2, BadRecordPolicy::Skip)
}

fn status() -> JobStatus {
    JobStatus {
        job_id: "bids-1".into(),
        state: JobState::Running,
        parallelism: 2,
        watermark: Some(5),
        last_checkpoint: Some(3),
        restarts: 1,
        records_read: 10,
        message: Some("m".into()),
        savepoint: Some("/tmp/sp/savepoint-bids-1-3-0".into()),
    }
}

/// One valid encoding (a frame body) of every variant of every message type, tagged by type.
fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let body = |frame: Vec<u8>| frame[4..].to_vec();
    let bid = Bid { auction: 1, bidder: 2, price: 3, date_time: 4 };
    let deployment = Deployment {
        attempt: 9,
        job_id: "bids-1".into(),
        spec: spec(),
        start_epoch: 4,
        restored_epoch: 3,
        restored_attempt: 8,
        restored_parallelism: 3,
        checkpoint_dir: "/var/weir/checkpoints".into(),
        attempt_token: 77,
        generation: 2,
        placement: vec![Placement { worker_id: 1, data_address: "127.0.0.1:7500".into() }],
        slots: vec![(0, vec![1, 2, 3])],
        exchange_credits: 16,
        rate_limit: Some(100),
    };
    let options = JobOptions {
        checkpoint_interval_ms: Some(100),
        checkpoint_timeout_ms: 600_000,
        retained_checkpoints: 3,
        rate_limit: None,
        from_savepoint: Some("memory://sp/savepoint-bids-1-3-0".into()),
        allow_non_restored_state: true,
    };
    let mut samples = Vec::new();
    for hello in [
        Hello::Worker { slots: 2, data_address: "127.0.0.1:7500".into() },
        Hello::Client,
        Hello::Data { from_worker: 3, attempt: 4 },
    ] {
        samples.push(("hello", body(encode(&hello).unwrap())));
    }
    for message in [
        ToWorker::Welcome { worker_id: 1, heartbeat_timeout_ms: 3000 },
        ToWorker::Refused { reason: "no".into() },
        ToWorker::Deploy(Box::new(deployment)),
        ToWorker::Command {
            attempt: 1,
            slot: 0,
            command: SlotCommand::Trigger { checkpoint: 3, last: false, savepoint: None },
        },
        ToWorker::Command {
            attempt: 1,
            slot: 0,
            command: SlotCommand::Trigger {
                checkpoint: 4,
                last: false,
                savepoint: Some(SavepointTarget { dir: "/sp".into(), name: "savepoint-bids-1-4-1".into() }),
            },
        },
        ToWorker::Command { attempt: 1, slot: 0, command: SlotCommand::Complete { checkpoint: 3 } },
        ToWorker::Cancel { attempt: 1 },
    ] {
        samples.push(("to-worker", body(encode(&message).unwrap())));
    }
    for message in [
        ToCoordinator::Heartbeat { attempt: Some(1), metrics: vec![(0, MetricsSnapshot::default())] },
        ToCoordinator::Event {
            attempt: 1,
            event: SlotEvent::Snapshot {
                slot: 0,
                checkpoint: 3,
                file: FileEntry { name: "slot-0-a0000000000000001.state".into(), size: 40, crc32: 7 },
                shared: vec![FileEntry {
                    name: "p-0a1b2c3d-s0-a0000000000000001-000012.sst".into(),
                    size: 900,
                    crc32: 3,
                }],
                uploaded: 900,
                savepoint_file: Some(Ok(FileEntry { name: "slot-0.state".into(), size: 40, crc32: 7 })),
                records_read: 9,
            },
        },
        ToCoordinator::Event {
            attempt: 1,
            event: SlotEvent::Snapshot {
                slot: 1,
                checkpoint: 3,
                file: FileEntry { name: "slot-1-a0000000000000001.state".into(), size: 40, crc32: 7 },
                shared: Vec::new(),
                uploaded: 0,
                savepoint_file: Some(Err("savepoint directory not writable".into())),
                records_read: 9,
            },
        },
        ToCoordinator::Event {
            attempt: 1,
            event: SlotEvent::SnapshotFailed { slot: 0, checkpoint: 3, message: "disk full".into() },
        },
        ToCoordinator::Event { attempt: 1, event: SlotEvent::Committed { slot: 1, checkpoint: 3 } },
        ToCoordinator::Deployed { attempt: 1 },
        ToCoordinator::DeployFailed { attempt: 1, message: "x".into() },
        ToCoordinator::LinkFailed { attempt: 1, message: "y".into() },
    ] {
        samples.push(("to-coordinator", body(encode(&message).unwrap())));
    }
    for request in [
        ClientRequest::Submit { spec: spec(), options },
        ClientRequest::List,
        ClientRequest::Status { job_id: "bids-1".into() },
        ClientRequest::Cancel { job_id: "bids-1".into() },
        ClientRequest::Savepoint { job_id: "bids-1".into(), dir: Some("/tmp/sp".into()), stop: true },
    ] {
        samples.push(("client-request", body(encode(&request).unwrap())));
    }
    for response in [
        ClientResponse::Submitted { job_id: "bids-1".into() },
        ClientResponse::Jobs(vec![status()]),
        ClientResponse::Status(status()),
        ClientResponse::Cancelled { job_id: "bids-1".into() },
        ClientResponse::Savepoint { job_id: "bids-1".into(), path: "/tmp/sp/savepoint-bids-1-3-0".into() },
        ClientResponse::Error("e".into()),
    ] {
        samples.push(("client-response", body(encode(&response).unwrap())));
    }
    for frame in [
        DataFrame::Batch {
            exchange: 0,
            from: 0,
            to: 1,
            message: ExchangeMessage::Data(Time::new(3, 4), bincode::serialize(&vec![bid; 5]).unwrap()),
        },
        DataFrame::Batch { exchange: 1, from: 0, to: 1, message: ExchangeMessage::Progress(vec![Time::new(3, 4)]) },
        DataFrame::Credit { exchange: 0, from: 0, to: 1, credits: 1 },
    ] {
        samples.push(("data", body(encode(&frame).unwrap())));
    }
    let snapshot = SlotSnapshot::default();
    samples.push(("slot-state", snapshot.encode(0, 3)));
    let metadata = CheckpointMetadata {
        format_version: FORMAT_VERSION,
        job_id: "bids-1".into(),
        checkpoint_id: 3,
        parallelism: 2,
        finished: false,
        files: vec![FileEntry { name: "slot-0.state".into(), size: 10, crc32: 7 }],
        attempt: 1,
        generation: 2,
        savepoint: false,
        shared: Vec::new(),
    };
    samples.push(("metadata", encode_metadata(&metadata)));
    samples
}

/// Runs the decoder of `kind` on `bytes`: it must return (either way), never panic.
fn decode_as(kind: &str, bytes: &[u8]) {
    match kind {
        "hello" => drop(decode::<Hello>(bytes)),
        "to-worker" => drop(decode::<ToWorker>(bytes)),
        "to-coordinator" => drop(decode::<ToCoordinator>(bytes)),
        "client-request" => drop(decode::<ClientRequest>(bytes)),
        "client-response" => drop(decode::<ClientResponse>(bytes)),
        "data" => drop(decode::<DataFrame>(bytes)),
        "slot-state" => drop(SlotSnapshot::decode(bytes, 3)),
        "metadata" => drop(decode_metadata(bytes)),
        other => unreachable!("no decoder {other}"),
    }
}

const KINDS: [&str; 8] =
    ["hello", "to-worker", "to-coordinator", "client-request", "client-response", "data", "slot-state", "metadata"];

#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Truncate { at: usize },
    Extend { garbage: Vec<u8> },
    HugeLength { at: usize, value: u64 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        proptest::collection::vec(any::<u8>(), 1..32).prop_map(|garbage| Mutation::Extend { garbage }),
        (any::<usize>(), prop_oneof![Just(u64::MAX), Just(1 << 40), Just(u32::MAX as u64), any::<u64>()])
            .prop_map(|(at, value)| Mutation::HugeLength { at, value }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len().max(1);
        match mutation {
            Mutation::Flip { at, bit } => {
                if !bytes.is_empty() {
                    bytes[at % len] ^= 1 << bit;
                }
            }
            Mutation::Truncate { at } => bytes.truncate(at % len),
            Mutation::Extend { garbage } => bytes.extend(garbage),
            Mutation::HugeLength { at, value } => {
                if bytes.len() >= 8 {
                    let at = at % (bytes.len() - 7);
                    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
                }
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for kind in KINDS {
            decode_as(kind, &bytes);
        }
    }

    #[test]
    fn mutated_messages_never_panic_a_decoder(
        sample in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let samples = samples();
        let (kind, bytes) = sample.get(&samples);
        decode_as(kind, &mutate(bytes.clone(), &mutations));
    }

    #[test]
    fn the_framed_reader_survives_any_stream(stream in proptest::collection::vec(any::<u8>(), 0..256)) {
        futures::executor::block_on(async {
            let mut reader = stream.as_slice();
            let limits = ReadLimits { frame_bytes_max: 128, idle_timeout: None };
            // Frames are read until the stream ends or an error: never a panic, never more than
            // the limit allocated.
            for _ in 0..64 {
                match read_message::<_, ToCoordinator>(&mut reader, limits).await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        });
    }
}

#[test]
fn every_sample_decodes_unmutated() {
    for (kind, bytes) in samples() {
        let decoded = match kind {
            "hello" => decode::<Hello>(&bytes).is_ok(),
            "to-worker" => decode::<ToWorker>(&bytes).is_ok(),
            "to-coordinator" => decode::<ToCoordinator>(&bytes).is_ok(),
            "client-request" => decode::<ClientRequest>(&bytes).is_ok(),
            "client-response" => decode::<ClientResponse>(&bytes).is_ok(),
            "data" => decode::<DataFrame>(&bytes).is_ok(),
            "slot-state" => SlotSnapshot::decode(&bytes, 3).is_ok(),
            "metadata" => decode_metadata(&bytes).is_ok(),
            _ => false,
        };
        assert!(decoded, "the {kind} sample must decode (else the mutations test nothing)");
    }
}
