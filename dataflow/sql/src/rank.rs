//! Top-N and deduplication: `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …)` filtered by
//! `rownum <= n` in the query over it — Flink's Rank, an updating result.
//!
//! Over an append-only stream it is a fold ([`weir_dataflow::GroupFold`]) that keeps each
//! partition's first `n` rows. Over an updating result it runs as a differential reduce keyed by
//! the partition: whenever a partition's rows change, its first `n` rows by the `ORDER BY` are
//! taken again. Either way the rows that left the top (or changed rank) are retracted and the
//! new ones inserted. Rows equal in every `ORDER BY` key
//! are ordered by their values, column by column, so the answer is the same in every run; Flink
//! breaks such ties by arrival order, which varies (documented in docs/sql.md).

use std::cmp::Ordering;

use weir_dataflow::GroupFold;

use crate::aggregate::{total_order, GroupKey, SortedRow};
use crate::types::Value;

/// One `ORDER BY` key of a Top-N.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct OrderKey {
    /// `DESC`.
    pub descending: bool,
    /// `NULLS FIRST` (Flink's default: first when ascending, last when descending).
    pub nulls_first: bool,
}

/// A Top-N over rows laid out as `[columns…, partition keys…, order keys…]` (see
/// [`crate::plan::Stage::TopN`]).
#[derive(Clone, Debug)]
pub struct TopN {
    /// How many columns the result has.
    pub width: usize,
    /// How many partition keys follow them.
    pub partition: usize,
    /// The order keys, after the partition keys.
    pub order: Vec<OrderKey>,
    /// How many rows per partition are kept.
    pub limit: usize,
    /// The result column that holds the row's rank (from 1; the query over it may drop it).
    pub rank: usize,
}

impl TopN {
    /// The partition's first rows, as result rows: `rows` are its rows with their
    /// multiplicities (positive).
    pub fn top(&self, rows: &[(&SortedRow, isize)]) -> Vec<SortedRow> {
        let mut all: Vec<&SortedRow> = Vec::new();
        for (row, count) in rows {
            assert!(*count > 0, "a partition holds a row a negative number of times: {:?}", row.0);
            all.extend(std::iter::repeat_n(*row, *count as usize));
        }
        let compare = |a: &&SortedRow, b: &&SortedRow| self.compare(a, b);
        let limit = self.limit.min(all.len());
        if limit < all.len() {
            all.select_nth_unstable_by(limit, compare);
            all.truncate(limit);
        }
        all.sort_by(compare);
        all.into_iter().enumerate().map(|(index, row)| self.ranked(index, row)).collect()
    }

    /// The order of rows in a partition: by the order keys, ties by the rows' values.
    fn compare(&self, a: &SortedRow, b: &SortedRow) -> Ordering {
        let first = self.width + self.partition;
        self.order
            .iter()
            .enumerate()
            .map(|(i, key)| key.compare(&a.0[first + i], &b.0[first + i]))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| a.cmp(b))
    }

    /// The result row of `row` at place `index` (from 0) of its partition.
    fn ranked(&self, index: usize, row: &SortedRow) -> SortedRow {
        let mut result = row.0[..self.width].to_vec();
        result[self.rank] = Value::Int(index as i64 + 1);
        SortedRow(result)
    }
}

/// A Top-N over an append-only stream: a partition's first `n` rows only, kept sorted — a row
/// that falls out of them can never come back, since no row above it is ever retracted.
impl GroupFold<GroupKey, SortedRow> for TopN {
    type Acc = Vec<SortedRow>;
    type Row = SortedRow;

    fn create(&self) -> Vec<SortedRow> {
        Vec::new()
    }

    fn add(&self, first: &mut Vec<SortedRow>, row: &SortedRow) -> bool {
        let place = first.partition_point(|kept| self.compare(kept, row).is_le());
        if place < self.limit {
            if first.len() == self.limit {
                first.pop();
            }
            first.insert(place, row.clone());
        }
        place < self.limit
    }

    fn rows(&self, _partition: &GroupKey, first: &Vec<SortedRow>, rows: &mut Vec<SortedRow>) {
        rows.extend(first.iter().enumerate().map(|(index, row)| self.ranked(index, row)));
    }
}

impl OrderKey {
    fn compare(&self, a: &Value, b: &Value) -> Ordering {
        match (a, b) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => {
                if self.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (_, Value::Null) => {
                if self.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            _ if self.descending => total_order(b, a),
            _ => total_order(a, b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Value::{Int, Null};

    fn row(values: &[Value]) -> SortedRow {
        SortedRow(values.to_vec())
    }

    #[test]
    fn the_first_rows_by_the_order_keys_with_their_ranks_and_ties_by_value() {
        // Rows: [name, rank placeholder, partition, price]; the top 2 by price descending.
        let top = TopN {
            width: 2,
            partition: 1,
            order: vec![OrderKey { descending: true, nulls_first: false }],
            limit: 2,
            rank: 1,
        };
        let (a, b, c, d) = (
            row(&[Int(1), Null, Int(9), Int(5)]),
            row(&[Int(2), Null, Int(9), Int(7)]),
            row(&[Int(3), Null, Int(9), Null]),
            row(&[Int(0), Null, Int(9), Int(5)]),
        );
        let got = top.top(&[(&a, 1), (&b, 1), (&c, 1), (&d, 1)]);
        assert_eq!(got, vec![row(&[Int(2), Int(1)]), row(&[Int(0), Int(2)])], "7 first; of the two 5s the lesser row");
        // A row twice counts twice.
        let got = top.top(&[(&b, 2)]);
        assert_eq!(got, vec![row(&[Int(2), Int(1)]), row(&[Int(2), Int(2)])]);
        // NULLs last when descending (Flink's default), first when asked.
        let nulls_first = TopN { order: vec![OrderKey { descending: true, nulls_first: true }], limit: 1, ..top };
        assert_eq!(nulls_first.top(&[(&a, 1), (&c, 1)]), vec![row(&[Int(3), Int(1)])]);
    }
}

#[cfg(test)]
mod fold_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Over an append-only stream the fold keeps only the first rows, yet gives after every
        /// row what the Top-N of all rows so far gives (duplicates, NULLs and ties included).
        #[test]
        fn folding_rows_in_gives_the_top_n_of_all_rows_so_far(
            rows in proptest::collection::vec((0i64..4, proptest::option::of(0i64..5)), 0..40),
            limit in 1usize..5,
            descending in any::<bool>(),
            nulls_first in any::<bool>(),
        ) {
            // Rows: [id, rank placeholder, partition, order key].
            let top = TopN { width: 2, partition: 1, order: vec![OrderKey { descending, nulls_first }], limit, rank: 1 };
            let rows: Vec<SortedRow> = rows
                .into_iter()
                .map(|(id, key)| SortedRow(vec![Value::Int(id), Value::Null, Value::Int(0), key.map_or(Value::Null, Value::Int)]))
                .collect();
            let partition = GroupKey::new([Value::Int(0)]);
            let mut first = top.create();
            for (seen, row) in rows.iter().enumerate() {
                top.add(&mut first, row);
                let mut folded = Vec::new();
                top.rows(&partition, &first, &mut folded);
                let all: Vec<(&SortedRow, isize)> = rows[..=seen].iter().map(|row| (row, 1)).collect();
                prop_assert_eq!(folded, top.top(&all));
            }
        }
    }
}
