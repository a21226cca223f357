//! Oracle tests: the committed output of the embedded cluster equals the sequential
//! reference (`weir_chaos::reference`) at 1, 2 and 4 slots.
//!
//! Method: proptest generates CSV inputs of several files whose event times advance with
//! jitter (out of order within and beyond the bound, so some records are late), including
//! malformed lines; the job runs with checkpoints every 2 ms, so epochs, alignment and
//! per-epoch commits are all exercised. The output is compared as multisets of rows, late
//! records and error locations. The generator path is checked the same way.
#![allow(clippy::disallowed_methods)] // tests arrange and inspect real directories with std::fs

mod common;

use common::run as run_bids_job;
use common::*;
use proptest::prelude::*;

fn line_strategy() -> impl Strategy<Value = (i64, i64, i64, u8)> {
    // (auction, price, time jitter, kind): kind 0..=2 ordinary, 3 long delay, 4 malformed.
    (0i64..12, 1i64..1_000, 0i64..3_000, 0u8..30)
}

fn render(lines: &[(i64, i64, i64, u8)], base: i64, step: i64) -> Vec<String> {
    lines
        .iter()
        .enumerate()
        .map(|(i, &(auction, price, jitter, kind))| {
            let time = base + i as i64 * step - jitter;
            match kind {
                0 => format!("{auction},{},{price},{}", i % 7, time - 20_000), // far behind: late
                1 => format!("{auction},{}", price),                           // wrong field count
                2 => format!("{auction},x{price},{price},{time}"),             // not an integer
                _ => format!("{auction},{},{price},{time}", i % 7),
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn committed_output_equals_reference_at_1_2_4_slots(
        files in proptest::collection::vec(proptest::collection::vec(line_strategy(), 0..400), 1..5),
        step in 1i64..200,
        window_ms in prop_oneof![Just(1_000i64), Just(2_500), Just(10_000)],
        out_of_orderness_ms in 0i64..3_000,
    ) {
        let root = tempfile::tempdir().unwrap();
        let rendered: Vec<Vec<String>> = files.iter().enumerate().map(|(i, f)| render(f, 1_000_000 + i as i64 * 333, step)).collect();
        let input = write_input(root.path(), &rendered);
        for parallelism in [1, 2, 4] {
            let output = root.path().join(format!("out-{parallelism}"));
            let options = file_job(&input, &output, parallelism, window_ms, out_of_orderness_ms);
            let summary = run_bids_job(options.clone()).expect("job runs");
            prop_assert!(!summary.already_finished);
            assert_exactly_once(&options);
        }
    }
}

#[test]
fn generated_input_matches_reference_at_1_2_4_slots() {
    for parallelism in [1, 2, 4] {
        let root = tempfile::tempdir().unwrap();
        let options = generated_job(300_000, 42 + parallelism as u64, &root.path().join("out"), parallelism);
        let summary = run_bids_job(options.clone()).expect("job runs");
        assert_eq!(summary.records_read, 300_000);
        assert!(summary.records_late > 0, "the generator makes some records late");
        assert!(summary.coordinator.checkpoints_completed >= 1);
        assert_exactly_once(&options);
    }
}

#[test]
fn file_output_is_independent_of_parallelism() {
    let root = tempfile::tempdir().unwrap();
    let files: Vec<Vec<String>> = (0..5)
        .map(|f| {
            (0..3_000)
                .map(|i| format!("{},{},{},{}", (i * 7 + f) % 50, i, i % 97, 1_000_000 + i * 10 - (i % 13) * 150))
                .collect()
        })
        .collect();
    let input = write_input(root.path(), &files);
    let mut outputs = Vec::new();
    for parallelism in [1, 2, 3, 4] {
        let options = file_job(&input, &root.path().join(format!("out-{parallelism}")), parallelism, 1_000, 500);
        run_bids_job(options.clone()).expect("job runs");
        assert_exactly_once(&options);
        outputs.push(weir_chaos::oracle::committed_output(&common::output_of(&options)).unwrap());
    }
    assert!(outputs.windows(2).all(|pair| pair[0] == pair[1]));
    assert!(!outputs[0].late.is_empty() && !outputs[0].rows.is_empty());
}
