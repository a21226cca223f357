//! Processing-time timers fire in a real run: `mix`'s batcher flushes its buffers on them, not
//! only on the event-time timers that flush what is left when the input ends. A test binary of
//! its own, because the flush counter is per process and other tests run `mix` too.
#![allow(clippy::disallowed_methods)] // the test reads real directories with std::fs

use std::sync::atomic::Ordering;
use std::time::Duration;

use weir_cluster::run::{run_job, RunOptions};
use weir_core::job::BadRecordPolicy;
use weir_dataflow::source::Generator;
use weir_example::mix::{ReadingGenerator, Sensors, PROCESSING_TIME_FLUSHES};

#[test]
fn the_batcher_flushes_on_processing_time_timers_and_loses_nothing() {
    let mut registry = weir_cluster::jobs::builtin();
    weir_example::register(&mut registry);
    let root = tempfile::tempdir().unwrap();
    let output = root.path().join("out");
    let given = [("output", output.display().to_string()), ("events", "20000".into()), ("seed", "6".into())]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let spec = registry.get("mix").unwrap().spec(&given, 2, BadRecordPolicy::Skip).unwrap();
    let mut options = RunOptions::new(spec);
    options.checkpoint_interval = Some(Duration::from_millis(5));
    // 20 000 readings over at least 100 ms: far longer than a batch's 5 ms delay.
    options.rate_limit = Some(200_000);
    run_job(&registry, options).expect("runs");

    assert!(PROCESSING_TIME_FLUSHES.load(Ordering::Relaxed) > 0, "no batch was flushed by a processing-time timer");
    let generator = ReadingGenerator(Sensors::new(20_000, 50, 6).unwrap());
    let readings: Vec<Vec<_>> = (0..2)
        .map(|split| (0..generator.split_len(split, 2)).map(|i| generator.generate(split, 2, i)).collect())
        .collect();
    let expected = weir_example::reference::mix(&readings, &[Vec::new(), Vec::new()], 1_000).batched.len();
    let mut committed = 0;
    for entry in std::fs::read_dir(output.join("batched")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with(['.', '_']) && path.is_file() {
            committed += std::fs::read_to_string(&path).unwrap().lines().skip(1).count();
        }
    }
    assert_eq!(committed, expected, "every on-time reading once");
}
