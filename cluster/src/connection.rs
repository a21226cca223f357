//! One framed connection run as two tasks: a writer that sends what its queue holds (and a
//! keepalive whenever the queue stays idle), and a reader that hands each message to a handler.
//!
//! Every connection of the cluster — a worker's control connection at both ends, and both ends
//! of a data connection between workers — runs this way, so that they all fail the same way:
//! when either task ends (the peer closed or reset, a write failed, the peer was silent for the
//! idle timeout, a frame did not decode, or the handler refused a message as a protocol
//! violation), the connection has *ended*, with a reason. Whoever owns the connection awaits
//! [`Ended::wait`] and acts: the coordinator loses the worker, a worker registers again, a data
//! connection ends its attempt. Nothing ends silently.
//!
//! Keepalives are sent whenever nothing was written for an eighth of the idle timeout (so the
//! longest gap between two writes is a quarter of it); a peer silent for the whole timeout is
//! gone (or the path to it is), and so is one that takes nothing while a write waits for the
//! whole timeout. The timekeeping is one ticker task per connection, not a timer per message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use weir_core::rt;

use crate::net::TlsStream;
use crate::wire::{decode, encode, read_frame, write_keepalive, ReadLimits};

/// Why a connection ended: the first reason its reader or writer recorded.
#[derive(Clone, Default)]
pub struct Ended {
    reason: Arc<Mutex<Option<String>>>,
    notify: Arc<Notify>,
}

impl Ended {
    /// Records `reason` unless one was recorded already, and wakes every waiter.
    pub fn set(&self, reason: String) {
        let mut current = self.reason.lock().expect("ended lock");
        if current.is_none() {
            *current = Some(reason);
            self.notify.notify_waiters();
        }
    }

    /// The reason, if the connection has ended.
    fn reason(&self) -> Option<String> {
        self.reason.lock().expect("ended lock").clone()
    }

    /// Waits until the connection has ended, and says why.
    pub async fn wait(&self) -> String {
        loop {
            // Registered before the check: a `set` in between still wakes it.
            let notified = self.notify.notified();
            if let Some(reason) = self.reason() {
                return reason;
            }
            notified.await;
        }
    }
}

/// A running connection: the queue of what to send, and its end. Dropping it stops its tasks.
pub struct Connection<Out> {
    /// What to send, in order.
    pub outbox: UnboundedSender<Out>,
    /// Why it ended (once it has).
    pub ended: Ended,
    tasks: [JoinHandle<()>; 3],
}

impl<Out> Drop for Connection<Out> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What each side did since the ticker last looked.
#[derive(Default)]
struct Activity {
    read: AtomicBool,
    written: AtomicBool,
    /// A write is under way (it may wait on a peer that does not read).
    writing: AtomicBool,
}

/// Ticks per idle timeout: silence ends a connection after this many ticks, and a side that
/// wrote nothing for a tick sends a keepalive, so that the longest gap between two writes is
/// two ticks — a quarter of the timeout.
const TICKS_PER_TIMEOUT: u32 = 8;

impl<Out: Serialize + Send + 'static> Connection<Out> {
    /// Runs `stream`: frames of at most `frame_bytes_max` come in, each handed to the handler
    /// made by `handler` (which gets the connection's own outbox, to reply on it); a handler
    /// error ends the connection with that reason. The peer must send something (a keepalive
    /// at least) every `idle_timeout`; this side writes at least every quarter of it.
    ///
    /// One ticker per connection does the timekeeping — it asks for a keepalive when nothing
    /// was written for a tick, and ends the connection when nothing was read (or a write has
    /// waited) for the timeout — so that sending and receiving a message costs no timer.
    pub fn spawn<In, H, F>(stream: TlsStream, frame_bytes_max: usize, idle_timeout: Duration, handler: H) -> Self
    where
        In: DeserializeOwned + Send + 'static,
        H: FnOnce(UnboundedSender<Out>) -> F,
        F: FnMut(In) -> Result<(), String> + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        let (outbox, queue) = mpsc::unbounded_channel::<Out>();
        let ended = Ended::default();
        let activity = Arc::new(Activity::default());
        let keepalive = Arc::new(Notify::new());
        let handle = handler(outbox.clone());
        let reader_task = tokio::spawn(read_loop(reader, frame_bytes_max, activity.clone(), ended.clone(), handle));
        let writer_task = tokio::spawn(write_loop(writer, queue, activity.clone(), keepalive.clone(), ended.clone()));
        let ticker_task = tokio::spawn(tick(idle_timeout, activity, keepalive, ended.clone()));
        Connection { outbox, ended, tasks: [reader_task, writer_task, ticker_task] }
    }
}

async fn read_loop<In: DeserializeOwned>(
    mut reader: ReadHalf<TlsStream>,
    frame_bytes_max: usize,
    activity: Arc<Activity>,
    ended: Ended,
    mut handle: impl FnMut(In) -> Result<(), String>,
) {
    // The ticker watches for silence: reads here wait as long as they must.
    let limits = ReadLimits { frame_bytes_max, idle_timeout: None };
    let reason = loop {
        match read_frame(&mut reader, limits, || activity.read.store(true, Ordering::Relaxed)).await {
            Ok(Some(body)) if body.is_empty() => {} // a keepalive
            Ok(Some(body)) => match decode::<In>(&body) {
                Ok(message) => {
                    if let Err(violation) = handle(message) {
                        break format!("protocol violation by the peer: {violation}");
                    }
                }
                Err(error) => break error.to_string(),
            },
            Ok(None) => break "closed by the peer".to_string(),
            Err(error) => break error.to_string(),
        }
    };
    ended.set(reason);
}

async fn write_loop<Out: Serialize>(
    mut writer: WriteHalf<TlsStream>,
    mut queue: mpsc::UnboundedReceiver<Out>,
    activity: Arc<Activity>,
    keepalive: Arc<Notify>,
    ended: Ended,
) {
    let reason = loop {
        let written = tokio::select! {
            biased;
            message = queue.recv() => match message {
                Some(message) => match encode(&message) {
                    Ok(frame) => {
                        activity.writing.store(true, Ordering::Relaxed);
                        write_progressively(&mut writer, &frame, &activity).await
                    }
                    Err(error) => Err(error),
                },
                None => {
                    // Every sender is gone: this side is done with the connection.
                    let _ = writer.shutdown().await;
                    break "closed by this side".to_string();
                }
            },
            _ = keepalive.notified() => {
                activity.writing.store(true, Ordering::Relaxed);
                write_keepalive(&mut writer).await
            }
        };
        activity.writing.store(false, Ordering::Relaxed);
        match written {
            Ok(()) => activity.written.store(true, Ordering::Relaxed),
            Err(error) => break format!("write failed: {error}"),
        }
    };
    ended.set(reason);
}

/// Writes a frame in chunks, each accepted chunk counting as written: a large frame that moves
/// slowly is not a peer that takes nothing.
async fn write_progressively(
    writer: &mut WriteHalf<TlsStream>,
    frame: &[u8],
    activity: &Activity,
) -> std::io::Result<()> {
    const CHUNK_BYTES: usize = 64 << 10;
    for chunk in frame.chunks(CHUNK_BYTES) {
        writer.write_all(chunk).await?;
        activity.written.store(true, Ordering::Relaxed);
    }
    writer.flush().await
}

/// Every tick: asks for a keepalive if nothing was written, and ends the connection once
/// nothing has been read — or a write has waited — for `idle_timeout` (a peer that sends but
/// never reads would otherwise hold a writer, and what queues behind it, forever).
async fn tick(idle_timeout: Duration, activity: Arc<Activity>, keepalive: Arc<Notify>, ended: Ended) {
    let every = idle_timeout / TICKS_PER_TIMEOUT;
    let (mut silent, mut stuck) = (0, 0);
    loop {
        rt::sleep(every).await;
        let written = activity.written.swap(false, Ordering::Relaxed);
        if !written {
            keepalive.notify_one();
        }
        stuck = if !written && activity.writing.load(Ordering::Relaxed) { stuck + 1 } else { 0 };
        silent = if activity.read.swap(false, Ordering::Relaxed) { 0 } else { silent + 1 };
        if silent >= TICKS_PER_TIMEOUT {
            return ended.set(format!("the peer sent nothing for {idle_timeout:?}"));
        }
        if stuck >= TICKS_PER_TIMEOUT {
            return ended.set(format!("the peer took nothing for {idle_timeout:?} (a write waited)"));
        }
    }
}
