//! The runtime seam: the only door to clocks, threads and randomness.
//!
//! Engine code never calls `std::time::Instant::now`, `SystemTime::now`, `std::thread::spawn`
//! or an OS-seeded random generator directly (clippy's `disallowed-methods` enforces it); it
//! calls this module. Under `--cfg madsim` the same functions are served by the simulator, so
//! a simulated run sees every tick and every task, and replays bit-for-bit from its seed.

use std::time::Duration;

/// A monotonic instant from the runtime's clock (simulated under madsim).
pub type Instant = tokio::time::Instant;

/// The current monotonic instant on this node's clock.
///
/// Nothing in Weir compares instants of two processes (an `Instant` never crosses the wire):
/// every timer is a duration measured by one node on its own clock, and event time comes from
/// the data. Under madsim each node's clock may be skewed, drift and jump (`skew_clock`), so
/// every simulated run with clock faults exercises that this stays true.
pub fn now() -> Instant {
    #[cfg(madsim)]
    {
        node_clocks::now()
    }
    #[cfg(not(madsim))]
    {
        true_now()
    }
}

/// The true clock: the OS monotonic clock, or the simulator's global clock, which no node's skew
/// touches. Only for instruments that stand outside the nodes (the simulator's fault windows in
/// a shared object store, a stalled split's deadline, the trace); engine decisions use [`now`].
#[allow(clippy::disallowed_methods)] // the one sanctioned reader of the runtime clock
pub fn true_now() -> Instant {
    tokio::time::Instant::now()
}

/// Sleeps for `duration` of the true clock (see [`true_now`]: instruments only).
#[allow(clippy::disallowed_methods)] // the seam itself
pub async fn true_sleep(duration: Duration) {
    tokio::time::sleep(duration).await
}

/// Processing time: this node's wall clock in milliseconds since the Unix epoch (simulated
/// under madsim). What processing-time timers follow; never used for event time.
#[allow(clippy::disallowed_methods)] // the seam itself
pub fn processing_time_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds elapsed since `start`.
pub fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(now().saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX)
}

/// Folds an event into the run's trace hash (what the simulator prints to show that a seed
/// replays bit-for-bit). Events carry no wall-clock time, ports chosen by the OS, or ciphertext:
/// only what the seed determines, stamped with the runtime's clock.
pub fn trace(event: &str) {
    let millis = true_now().saturating_duration_since(trace_state().1).as_millis() as u64;
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
    *trace_state() = (0, true_now());
}

/// The hash of the events traced since [`trace_reset`].
pub fn trace_hash() -> u64 {
    trace_state().0
}

fn trace_state() -> std::sync::MutexGuard<'static, (u64, Instant)> {
    static TRACE: std::sync::OnceLock<std::sync::Mutex<(u64, Instant)>> = std::sync::OnceLock::new();
    TRACE.get_or_init(|| std::sync::Mutex::new((0, true_now()))).lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sleeps for `duration` on this node's clock (the deadline is taken when it is called, as
/// tokio's is).
pub fn sleep(duration: Duration) -> impl std::future::Future<Output = ()> {
    #[cfg(madsim)]
    {
        let now = now();
        // Far enough to be "never", near enough not to overflow.
        let deadline = now.checked_add(duration).unwrap_or(now + Duration::from_secs(30 * 365 * 86_400));
        node_clocks::sleep_until(deadline)
    }
    #[cfg(not(madsim))]
    #[allow(clippy::disallowed_methods)] // the seam itself
    {
        tokio::time::sleep(duration)
    }
}

/// Sleeps until `deadline` on this node's clock.
pub async fn sleep_until(deadline: Instant) {
    #[cfg(madsim)]
    {
        node_clocks::sleep_until(deadline).await
    }
    #[cfg(not(madsim))]
    #[allow(clippy::disallowed_methods)] // the seam itself
    {
        tokio::time::sleep_until(deadline).await
    }
}

/// A [`timeout`] whose duration passed before its future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline elapsed")
    }
}

/// Runs `future` for at most `duration` of this node's clock (from when it is called).
pub fn timeout<F: std::future::Future>(
    duration: Duration,
    future: F,
) -> impl std::future::Future<Output = Result<F::Output, Elapsed>> {
    #[cfg(madsim)]
    {
        let deadline = sleep(duration);
        async move {
            let future = std::pin::pin!(future);
            let deadline = std::pin::pin!(deadline);
            match futures::future::select(future, deadline).await {
                futures::future::Either::Left((output, _)) => Ok(output),
                futures::future::Either::Right(_) => Err(Elapsed),
            }
        }
    }
    #[cfg(not(madsim))]
    #[allow(clippy::disallowed_methods)] // the seam itself
    {
        let timed = tokio::time::timeout(duration, future);
        async move { timed.await.map_err(|_| Elapsed) }
    }
}

/// Skews the clock of simulated node `node` from now on: it jumps forward by `jump` and then
/// runs at `rate_permille` / 1000 of true speed. Timers on the node measure its own clock (a
/// jump fires them early, within 50 ms of true time; a slow clock makes them late), exactly as
/// a process whose monotonic clock misbehaves sees it. Only sleeps begun on a skewed node watch
/// for jumps: skew every node by `(0, 1000)` at the start of a run that will skew clocks later.
#[cfg(madsim)]
pub fn skew_clock(node: tokio::madsim::task::NodeId, jump: Duration, rate_permille: u32) {
    node_clocks::skew(node, jump, rate_permille)
}

/// Gives every simulated node a true clock again (the simulator calls it at the start of a run).
#[cfg(madsim)]
pub fn reset_clocks() {
    node_clocks::reset()
}

/// One node's clock as an affine map of the true clock: `local = local_anchor + (true -
/// true_anchor) × rate`. Pure arithmetic, so that it is tested outside the simulator.
#[cfg(any(madsim, test))]
#[derive(Clone, Copy, Debug)]
struct NodeClock {
    true_anchor: Instant,
    local_anchor: Instant,
    rate_permille: u32,
}

#[cfg(any(madsim, test))]
impl NodeClock {
    /// The local reading at true instant `true_instant`.
    fn local(&self, true_instant: Instant) -> Instant {
        let elapsed = true_instant.saturating_duration_since(self.true_anchor).as_nanos();
        let scaled = elapsed * u128::from(self.rate_permille) / 1000;
        self.local_anchor + Duration::from_nanos(u64::try_from(scaled).unwrap_or(u64::MAX))
    }

    /// The true time that passes while this clock advances by `local` (rounded up, so that a
    /// sleep never ends before its local deadline).
    fn true_duration(&self, local: Duration) -> Duration {
        let nanos = local.as_nanos() * 1000;
        let rate = u128::from(self.rate_permille.max(1));
        Duration::from_nanos(u64::try_from(nanos.div_ceil(rate)).unwrap_or(u64::MAX))
    }

    /// The same clock from true instant `at` on: jumped forward by `jump`, at a new rate.
    fn skewed(&self, at: Instant, jump: Duration, rate_permille: u32) -> NodeClock {
        assert!(rate_permille > 0, "a clock must move forward");
        NodeClock { true_anchor: at, local_anchor: self.local(at) + jump, rate_permille }
    }
}

/// Per-node clocks under the simulator. madsim has one global clock; this module maps it, for
/// each node that has been skewed, through an affine function `local = anchor + (true - true
/// anchor) × rate`. Sleeps on a skewed node wake in short true-time steps to re-read the local
/// clock, so that a jump fires the timers it overtakes.
#[cfg(madsim)]
mod node_clocks {
    use super::{true_now, Instant, NodeClock};
    use std::collections::BTreeMap;
    use std::sync::{Mutex, MutexGuard};
    use std::time::Duration;
    use tokio::madsim::task::NodeId;

    /// How soon (true time) a sleeping task on a skewed node notices that its clock jumped.
    pub const JUMP_NOTICED_WITHIN: Duration = Duration::from_millis(50);

    fn clocks() -> MutexGuard<'static, BTreeMap<NodeId, NodeClock>> {
        static CLOCKS: Mutex<BTreeMap<NodeId, NodeClock>> = Mutex::new(BTreeMap::new());
        CLOCKS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn this_node() -> NodeId {
        tokio::madsim::plugin::node()
    }

    pub fn now() -> Instant {
        let truth = true_now();
        clocks().get(&this_node()).map_or(truth, |clock| clock.local(truth))
    }

    pub async fn sleep_until(deadline: Instant) {
        loop {
            let truth = true_now();
            let clock = clocks().get(&this_node()).copied();
            match clock {
                // A node never skewed in this run keeps the true clock: one timer.
                #[allow(clippy::disallowed_methods)] // the seam itself
                None => return tokio::time::sleep_until(deadline).await,
                Some(clock) => {
                    let local = clock.local(truth);
                    if deadline <= local {
                        return;
                    }
                    let step = clock.true_duration(deadline - local).min(JUMP_NOTICED_WITHIN);
                    #[allow(clippy::disallowed_methods)] // the seam itself
                    tokio::time::sleep(step.max(Duration::from_micros(1))).await;
                }
            }
        }
    }

    pub fn skew(node: NodeId, jump: Duration, rate_permille: u32) {
        let truth = true_now();
        let mut clocks = clocks();
        let true_clock = NodeClock { true_anchor: truth, local_anchor: truth, rate_permille: 1000 };
        let clock = clocks.get(&node).copied().unwrap_or(true_clock);
        clocks.insert(node, clock.skewed(truth, jump, rate_permille));
    }

    pub fn reset() {
        clocks().clear();
    }
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

/// Runs blocking work — file I/O that may wait on a disk, an `fsync` — off the async runtime's
/// threads, so that it delays no connection's keepalives or timeouts: on tokio's blocking pool
/// in production; inline under the simulator, whose file system is memory (and where inline
/// keeps the run deterministic). A panic in `work` resumes in the caller.
#[allow(clippy::disallowed_methods)] // the seam itself
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    #[cfg(not(madsim))]
    {
        match tokio::task::spawn_blocking(work).await {
            Ok(value) => value,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
    #[cfg(madsim)]
    {
        work()
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
#[allow(clippy::disallowed_methods)] // the process's own statistics, not engine data
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
#[allow(clippy::disallowed_methods)] // the process's own statistics, not engine data
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_clock_jumps_drifts_and_never_goes_back() {
        let start = true_now();
        let ms = Duration::from_millis;
        let true_clock = NodeClock { true_anchor: start, local_anchor: start, rate_permille: 1000 };
        assert_eq!(true_clock.local(start + ms(250)), start + ms(250));
        // Jump 10 s at true 100 ms, then run at half speed.
        let slow = true_clock.skewed(start + ms(100), ms(10_000), 500);
        assert_eq!(slow.local(start + ms(100)), start + ms(10_100));
        assert_eq!(slow.local(start + ms(300)), start + ms(10_200));
        assert_eq!(slow.true_duration(ms(100)), ms(200), "a slow clock's timers fire late");
        // Back to double speed at true 300 ms: continuous, no step back.
        let fast = slow.skewed(start + ms(300), Duration::ZERO, 2000);
        assert_eq!(fast.local(start + ms(300)), start + ms(10_200));
        assert_eq!(fast.local(start + ms(400)), start + ms(10_400));
        assert_eq!(fast.true_duration(ms(100)), ms(50), "a fast clock's timers fire early");
        // Rounding never ends a sleep before its local deadline.
        let odd = true_clock.skewed(start, Duration::ZERO, 3000);
        let true_wait = odd.true_duration(Duration::from_nanos(10));
        assert!(odd.local(start + true_wait) >= start + Duration::from_nanos(10));
        // Instants before the anchor read as the anchor: the clock never goes back.
        assert_eq!(fast.local(start), start + ms(10_200));
    }
}
