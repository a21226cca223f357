//! The runtime seam: the only door to clocks, threads and randomness.
//!
//! Engine code never calls `std::time::Instant::now`, `SystemTime::now`, `std::thread::spawn`
//! or an OS-seeded random generator directly (clippy's `disallowed-methods` enforces it); it
//! calls this module. Under `--cfg madsim` the same functions are served by the simulator, so
//! a simulated run sees every tick and every task, and replays bit-for-bit from its seed.

use std::time::Duration;

/// A monotonic instant from the runtime's clock (simulated under madsim).
pub type Instant = tokio::time::Instant;

/// The current monotonic instant.
pub fn now() -> Instant {
    tokio::time::Instant::now()
}

/// Milliseconds elapsed since `start`.
pub fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(now().saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX)
}

/// Sleeps for `duration` on the runtime's clock.
pub async fn sleep(duration: Duration) {
    tokio::time::sleep(duration).await
}

/// A handle to a slot's dedicated execution context.
#[derive(Debug)]
pub struct SlotHandle {
    inner: std::thread::JoinHandle<()>,
}

impl SlotHandle {
    /// Waits for the slot to end; `Err` carries the panic message if it panicked.
    pub fn join(self) -> Result<(), String> {
        self.inner.join().map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "slot panicked".to_string())
        })
    }

    /// Whether the slot has ended.
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }
}

/// Runs `body` as a slot: in production, on its own OS thread (a timely worker is single-threaded
/// and `!Send`, so it is built inside `body`), with a current-thread runtime for its async parts.
#[allow(clippy::disallowed_methods)] // the one sanctioned place that creates OS threads
pub fn spawn_slot<F>(name: String, body: F) -> std::io::Result<SlotHandle>
where
    F: FnOnce() + Send + 'static,
{
    let inner = std::thread::Builder::new().name(name).spawn(body)?;
    Ok(SlotHandle { inner })
}

/// A token naming one deployment attempt of a job, unique across processes and restarts (it
/// fences the staged output of attempts that were given up but may still run somewhere).
#[allow(clippy::disallowed_methods)] // uniqueness, not time: never compared or ordered
pub fn attempt_token() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mixed = nanos
        ^ ((std::process::id() as u64) << 40)
        ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    crate::keygroup::mix64(mixed).max(1)
}

/// Milliseconds of CPU time used by this process so far (user + system), when the platform
/// reports it. Used for the events-per-CPU-second figure; never for control decisions.
pub fn process_cpu_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    // The kernel reports clock ticks; USER_HZ is 100 on every Linux we run on.
    Some((user + system) * 10)
}

/// Peak resident set size of this process in KiB, when the platform reports it.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
