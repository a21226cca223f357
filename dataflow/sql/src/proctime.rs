//! Windows of processing time: `TUMBLE(TABLE t, DESCRIPTOR(p_time), size)` over a column
//! `PROCTIME() AS p_time` (Nexmark q12).
//!
//! A keyed process function on the scaffold: each row joins its group's window of the
//! processing time at which the function handles it, read through the runtime seam
//! (`weir_core::rt`, so the simulator drives it), and a processing-time timer at the window's end
//! emits the group's row and forgets the window; the end of a bounded input closes the windows
//! still open. The windows are checkpointed like any keyed state, so every row counts in exactly
//! one emitted window, through failures too.
//!
//! What a window holds depends on when rows are handled — that is what processing time means —
//! so unlike every event-time result, this one differs from run to run and with parallelism.
//! Weir's process functions hand rows over in event-time order, once the watermark has passed
//! them: a row is handled up to the watermark's delay after it is read.

use weir_dataflow::process::{Context, KeyedProcessFunction, TimeDomain};
use weir_dataflow::{MapState, TimeWindow};

use crate::aggregate::{result_row, Accumulator, GroupKey, SqlAggregates};
use crate::types::Row;

/// The event time only the end of the input passes.
const END_OF_INPUT: i64 = i64::MAX - 1;

/// A group's windows of processing time, and their aggregates.
pub struct ProcessingTimeWindows {
    /// The windows' size (ms).
    pub size: i64,
    /// The aggregates.
    pub aggregates: SqlAggregates,
    /// Each open window's accumulators, by its start.
    pub windows: MapState<i64, Vec<Accumulator>>,
}

impl ProcessingTimeWindows {
    /// Tumbling windows of `size` ms aggregating `aggregates`.
    pub fn new(size: i64, aggregates: SqlAggregates) -> Self {
        assert!(size > 0, "a window has a positive size");
        ProcessingTimeWindows { size, aggregates, windows: MapState::new("processing-time-windows") }
    }
}

impl KeyedProcessFunction<GroupKey, Row, Row> for ProcessingTimeWindows {
    fn process_element(&mut self, row: Row, ctx: &mut Context<'_, GroupKey, Row>) {
        use weir_dataflow::AggregateFunction;
        let now = ctx.current_processing_time();
        let start = now - now.rem_euclid(self.size);
        let mut accumulators =
            self.windows.get(ctx.state(), &start).unwrap_or_else(|| self.aggregates.create_accumulator());
        self.aggregates.add(&mut accumulators, &row);
        self.windows.put(ctx.state(), start, accumulators);
        ctx.register_processing_time_timer(start + self.size);
        // At the end of the input event time passes everything: the windows still open close
        // then, so that no row is left out of the output of a bounded job.
        ctx.register_event_time_timer(END_OF_INPUT);
    }

    fn on_timer(&mut self, timestamp: i64, domain: TimeDomain, ctx: &mut Context<'_, GroupKey, Row>) {
        let closing: Vec<(i64, Vec<Accumulator>)> = match domain {
            TimeDomain::ProcessingTime => {
                let start = timestamp - self.size;
                self.windows.get(ctx.state(), &start).map(|accumulators| (start, accumulators)).into_iter().collect()
            }
            TimeDomain::EventTime => self.windows.entries(ctx.state()),
        };
        let key = ctx.key().clone();
        for (start, accumulators) in closing {
            self.windows.remove(ctx.state(), &start);
            let window = TimeWindow { start, end: start + self.size };
            ctx.collect(result_row(&self.aggregates, &key, window, accumulators));
        }
    }
}
