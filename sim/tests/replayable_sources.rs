//! Tokio draws a few decisions from a generator of its own that the simulator does not seed:
//! which branch an unbiased `select!` polls first, and which of its queues a `watch` receiver
//! waits on (and so the order in which a change wakes them). Either makes the order of
//! wake-ups, and with it a simulated run, differ between two runs of one seed. Clippy forbids
//! `watch`'s types (`clippy.toml`) but cannot tell a biased `select!` from an unbiased one, so
//! this test reads the engine's sources for both.
//!
//! (The simulator's `--check-determinism` sweep catches the consequence, but only on seeds
//! where two branches happen to be ready at once; this catches the cause on every line.)

#![allow(clippy::disallowed_methods)] // reads the sources, not engine data

use std::path::{Path, PathBuf};

/// The crates whose code runs inside the simulator.
const ENGINE_DIRS: [&str; 6] = ["core/src", "dataflow", "cluster/src", "cluster/example/src", "chaos/src", "sim/src"];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name != "target" && name != "tests") {
                rust_files(&path, found);
            }
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn engine_code_never_lets_tokio_pick_at_random() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let mut files = Vec::new();
    for dir in ENGINE_DIRS {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} source files under {root:?}", files.len());
    let mut offences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("source readable");
        let lines: Vec<&str> = text.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let at = format!("{}:{}", file.strip_prefix(root).unwrap_or(file).display(), index + 1);
            if code.contains("select!") {
                let next = lines[index + 1..].iter().map(|l| l.trim()).find(|l| !l.is_empty() && !l.starts_with("//"));
                if next != Some("biased;") {
                    offences.push(format!("{at}: `select!` without `biased;` as its first line"));
                }
            }
            if code.contains("sync::watch") || code.contains("watch::channel") {
                offences.push(format!("{at}: tokio's `watch` (use a `Notify` and a value under a lock)"));
            }
        }
    }
    assert!(offences.is_empty(), "decisions the simulator cannot replay:\n{}", offences.join("\n"));
}
