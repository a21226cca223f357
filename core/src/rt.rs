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

/// Folds an event into the run's trace hash (what the simulator prints to show that a seed
/// replays bit-for-bit). Events carry no wall-clock time, ports chosen by the OS, or ciphertext:
/// only what the seed determines, stamped with the runtime's clock.
pub fn trace(event: &str) {
    let millis = now().saturating_duration_since(trace_state().1).as_millis() as u64;
    let mut state = trace_state();
    let mut hash = state.0 ^ millis.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for chunk in event.as_bytes().chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        hash = crate::keygroup::mix64(hash ^ u64::from_le_bytes(word));
    }
    state.0 = hash;
    tracing::debug!(target: "weir::trace", millis, event);
}

/// Starts a new trace (the simulator calls it at the start of every run).
pub fn trace_reset() {
    *trace_state() = (0, now());
}

/// The hash of the events traced since [`trace_reset`].
pub fn trace_hash() -> u64 {
    trace_state().0
}

fn trace_state() -> std::sync::MutexGuard<'static, (u64, Instant)> {
    static TRACE: std::sync::OnceLock<std::sync::Mutex<(u64, Instant)>> = std::sync::OnceLock::new();
    TRACE.get_or_init(|| std::sync::Mutex::new((0, now()))).lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sleeps for `duration` on the runtime's clock.
pub async fn sleep(duration: Duration) {
    tokio::time::sleep(duration).await
}

/// A handle to a running slot.
#[derive(Debug)]
pub struct SlotHandle {
    #[cfg(not(madsim))]
    inner: std::thread::JoinHandle<()>,
    #[cfg(madsim)]
    inner: tokio::task::JoinHandle<()>,
}

impl SlotHandle {
    /// Waits for the slot to end; `Err` carries the panic message if it panicked.
    pub async fn join(self) -> Result<(), String> {
        #[cfg(not(madsim))]
        {
            let inner = self.inner;
            tokio::task::spawn_blocking(move || inner.join().map_err(|panic| panic_message(&*panic)))
                .await
                .map_err(|e| e.to_string())?
        }
        #[cfg(madsim)]
        {
            self.inner.await.map_err(|e| e.to_string())
        }
    }
}

/// The message of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".to_string())
}

/// Runs a slot: `make` builds the slot's future where it will run (a timely worker is `!Send`,
/// so it is created inside). In production that is a dedicated OS thread with a
/// current-thread runtime; under madsim, a task on the current node.
#[allow(clippy::disallowed_methods)] // the one sanctioned place that creates OS threads
pub fn spawn_slot<F, Fut>(name: String, make: F) -> std::io::Result<SlotHandle>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    #[cfg(not(madsim))]
    {
        let inner = std::thread::Builder::new().name(name).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("slot runtime");
            runtime.block_on(make());
        })?;
        Ok(SlotHandle { inner })
    }
    #[cfg(madsim)]
    {
        let _ = name;
        Ok(SlotHandle { inner: tokio::task::spawn_local(async move { make().await }) })
    }
}

/// Runs `future` to completion on a fresh current-thread runtime (production entry points).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime").block_on(future)
}

/// A token naming one deployment attempt of a job, unique across processes and restarts (it
/// fences the staged output of attempts that were given up but may still run somewhere).
#[allow(clippy::disallowed_methods)] // uniqueness, not time: never compared or ordered
pub fn attempt_token() -> u64 {
    #[cfg(madsim)]
    {
        // Drawn from the simulation's seeded generator: unique and replayable.
        tokio::madsim::rand::random::<u64>().max(1)
    }
    #[cfg(not(madsim))]
    {
        token_from_clock()
    }
}

#[cfg(not(madsim))]
#[allow(clippy::disallowed_methods)] // uniqueness, not time: never compared or ordered
fn token_from_clock() -> u64 {
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
