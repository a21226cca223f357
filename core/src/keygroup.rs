//! Key groups: the unit in which keyed state is partitioned, snapshotted and reassigned.
//!
//! A key maps to one of `MAX_PARALLELISM` key groups by a fixed hash; a slot owns a contiguous
//! range of groups (Flink's assignment). Snapshots are organised by key group, so a restore at
//! another parallelism reassigns whole groups.

/// The number of key groups (upper bound on parallelism).
pub const MAX_PARALLELISM: usize = 128;

/// The key group of an `i64` key. A fixed mixing function: never `std`'s randomly seeded hasher,
/// so the assignment is identical in every process and every run.
#[inline]
pub fn key_group_of(key: i64) -> usize {
    (mix64(key as u64) % MAX_PARALLELISM as u64) as usize
}

/// The key group of a key whose deterministic hash is `hash` (any key type: see
/// `weir_dataflow::keyed::key_hash`).
#[inline]
pub fn key_group_of_hash(hash: u64) -> usize {
    (mix64(hash) % MAX_PARALLELISM as u64) as usize
}

/// The slot (`0..parallelism`) that owns `key_group`.
#[inline]
pub fn slot_of_key_group(key_group: usize, parallelism: usize) -> usize {
    debug_assert!(key_group < MAX_PARALLELISM && (1..=MAX_PARALLELISM).contains(&parallelism));
    key_group * parallelism / MAX_PARALLELISM
}

/// The key groups slot `slot` owns at `parallelism`: a contiguous range.
pub fn key_groups_of_slot(slot: usize, parallelism: usize) -> std::ops::Range<usize> {
    assert!(slot < parallelism && parallelism <= MAX_PARALLELISM, "slot {slot} of {parallelism}");
    (slot * MAX_PARALLELISM).div_ceil(parallelism)..((slot + 1) * MAX_PARALLELISM).div_ceil(parallelism)
}

/// The slot that owns `key`.
#[inline]
pub fn slot_of_key(key: i64, parallelism: usize) -> usize {
    slot_of_key_group(key_group_of(key), parallelism)
}

/// SplitMix64's finaliser: a fast, well-distributed, deterministic 64-bit mix.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_owns_some_groups() {
        for parallelism in 1..=MAX_PARALLELISM {
            let mut owned = vec![0usize; parallelism];
            for group in 0..MAX_PARALLELISM {
                owned[slot_of_key_group(group, parallelism)] += 1;
            }
            assert!(owned.iter().all(|&n| n > 0), "parallelism {parallelism}: {owned:?}");
        }
    }
}

#[cfg(test)]
mod range_tests {
    use super::*;

    #[test]
    fn a_slots_key_group_range_is_exactly_the_groups_it_owns() {
        for parallelism in 1..=MAX_PARALLELISM {
            for slot in 0..parallelism {
                for group in 0..MAX_PARALLELISM {
                    let owned = slot_of_key_group(group, parallelism) == slot;
                    assert_eq!(
                        key_groups_of_slot(slot, parallelism).contains(&group),
                        owned,
                        "{group} {slot}/{parallelism}"
                    );
                }
            }
        }
    }
}
