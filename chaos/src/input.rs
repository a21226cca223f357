//! CSV input for simulated runs: files the way real input arrives — out of order, with late
//! records, malformed and blank lines, `\r\n` endings and padded fields.
//!
//! A share of the simulator's seeds read these files instead of the generator, so that CSV
//! parsing, the error output and the byte offsets a checkpoint records (and a restore seeks
//! back to) are exercised under every fault. The content is a pure function of the seed; the
//! bids themselves come from the generator (which already delays most events a little and
//! some a lot), split over the files round-robin, with malformed lines mixed in.

use weir_core::bid::BID_HEADER;
use weir_core::generator::GeneratorConfig;
use weir_core::keygroup::mix64;

/// One input file: its name in the input directory and its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvFile {
    /// File name (`split-NN.csv`).
    pub name: String,
    /// The bytes, header first.
    pub content: Vec<u8>,
}

/// Malformed lines, each a different reason to reject a record (and a different code path of
/// the parser: field count, not an integer, overflow, empty field, quotes).
const MALFORMED: [&str; 9] = [
    "1,2,3",
    "1,2,3,4,5",
    "1,two,3,4",
    "1,2,99999999999999999999,4",
    "-9223372036854775809,2,3,4",
    "1,,3,4",
    "\"7,8\",2,3,4",
    "1,2,3,12:00",
    ",,,",
];

/// `files` CSV files holding the `events` bids of the generator seeded with `seed`, with about
/// one malformed line in 40 and one blank line in 60; some files end lines with `\r\n`, pad or
/// sign fields, or lack a final newline.
pub fn csv_files(seed: u64, events: u64, files: usize) -> Vec<CsvFile> {
    assert!(files >= 1, "at least one input file");
    let generator = GeneratorConfig::new(events, seed).generator();
    let mut random = mix64(seed ^ 0x0C5F_11E5);
    let mut draw = move |bound: u64| {
        random = random.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(random) % bound.max(1)
    };
    (0..files)
        .map(|file| {
            let crlf = draw(3) == 0;
            let padded = draw(4) == 0;
            let newline: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let mut content = Vec::new();
            content.extend_from_slice(BID_HEADER.as_bytes());
            content.extend_from_slice(newline);
            let mut index = file as u64;
            while index < events {
                if draw(40) == 0 {
                    content.extend_from_slice(MALFORMED[draw(MALFORMED.len() as u64) as usize].as_bytes());
                    content.extend_from_slice(newline);
                }
                if draw(60) == 0 {
                    content.extend_from_slice(if draw(2) == 0 { b"" } else { b"  " });
                    content.extend_from_slice(newline);
                }
                let bid = generator.bid(index);
                let line = if padded && draw(3) == 0 {
                    format!(" {} , +{},{} ,{}", bid.auction, bid.bidder, bid.price, bid.date_time)
                } else {
                    format!("{},{},{},{}", bid.auction, bid.bidder, bid.price, bid.date_time)
                };
                content.extend_from_slice(line.as_bytes());
                content.extend_from_slice(newline);
                index += files as u64;
            }
            if draw(4) == 0 && content.ends_with(newline) {
                content.truncate(content.len() - newline.len());
            }
            CsvFile { name: format!("split-{file:02}.csv"), content }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_deterministic_and_hold_every_bid_once() {
        let files = csv_files(7, 1000, 3);
        assert_eq!(files, csv_files(7, 1000, 3));
        let text: String = files.iter().map(|f| String::from_utf8(f.content.clone()).unwrap()).collect();
        assert!(MALFORMED.iter().any(|line| text.contains(line)), "some malformed lines");
        let generator = GeneratorConfig::new(1000, 7).generator();
        let bid = generator.bid(999);
        assert!(text.contains(&format!("{},", bid.auction)));
        for file in &files {
            assert!(file.content.starts_with(BID_HEADER.as_bytes()));
        }
    }
}
