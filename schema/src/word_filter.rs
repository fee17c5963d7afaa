//! Word filters: Bloom filters of the words of trajectory texts, so that full-text search can
//! skip a batch, or a trajectory, that cannot match without reading its text from the log.
//!
//! **What a filter holds.** The *words* of a text are its maximal runs of ASCII letters and its
//! maximal runs of ASCII digits, lower-cased. A lexeme of PostgreSQL's `to_tsvector('simple',
//! text)` is a lower-cased token of the text, and the parser ends tokens between characters of
//! other kinds, or where letters meet digits (`+757a@b.co` is the number `+757` and the address
//! `a@b.co`), never inside such a run. So every run of letters or of digits in a lexeme (a
//! *piece*) is a word of the text: a text whose tsvector matches a query has every piece of the
//! query's lexemes among its words, and a filter without one of them rules the text out. Two
//! characters lower-case into ASCII (`İ` → `i`, the Kelvin sign → `k`) where the database's
//! locale lower-cases them, and the parser may then start a token at them: a text holding one
//! gets no filter, and is read whatever the query. This assumes that the database lower-cases
//! ASCII letters into ASCII letters, as every locale but the Turkic ones does.
//! `trajectory_search_words_match_postgres` in the integration tests checks the claim against
//! PostgreSQL's parser on texts made of what it treats specially.
//!
//! **The layout.** A filter of `m` bits (a power of two, at least 64, about 8 a word) sets 3 bits
//! per word: bit `(a + i·b + s·c) mod m` for `i` in 0..3, where `a`, `b` and `c` come from the
//! word's 64-bit FNV-1a hash (`Placement`) and `s` is the filter's *salt*, the low 16 bits of
//! its *place*: where its row is in the log (`batch_place`, `trajectory_place`; SQL computes
//! the same number from the row and passes it, and both sides take the salt from it). Without
//! a salt the words every text has set the same bits in every filter of a size, and a query word
//! whose bits they happen to cover passes every filter of that size; with it, such collisions
//! differ from row to row, so a word a text lacks passes at most about 3 % of filters (fewer
//! where the size rounded up), each on its own. Bit `n` is bit `n % 8` (from the least
//! significant) of byte `n / 8`, what PostgreSQL's `get_bit(bytea, n)` reads, so SQL tests a
//! filter with arithmetic and `get_bit` alone (`words_may_contain` in the migrations).
//! Filters are stored, so the hash, the salts and the layout are a format: changing them needs a
//! migration that clears the stored filters.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

const BITS_PER_WORD: usize = 8;
const MIN_BITS: usize = 64;
const HASHES: i64 = 3;
/// Query pieces tested per search (the SQL takes a fixed array): a few rule out nearly all
/// that the filters can.
const QUERY_PIECES: usize = 4;
/// The numbers a query passes to SQL: a word's `Placement`, `QUERY_PIECES` times.
const QUERY_NUMBERS: usize = QUERY_PIECES * 3;

/// The words of one batch's texts: what a filter costs to build (reading the texts, hashing and
/// deduplicating their words) and needs no place in the log, so that it can be found before an
/// append takes the log's lock. `filters` then only sets bits.
pub struct BatchWords {
    /// Each text's distinct word hashes; `None` for a text that cannot be filtered (see
    /// `word_hashes`).
    trajectories: Vec<Option<Vec<u64>>>,
    /// The distinct words of all the texts; `None` when one of them cannot be filtered.
    batch: Option<Vec<u64>>,
}

impl BatchWords {
    /// The words of `texts`, in order.
    pub fn of<'a>(texts: impl Iterator<Item = &'a str>) -> BatchWords {
        let (mut text, mut batch) = (WordSet::default(), Some(WordSet::default()));
        let trajectories = texts
            .map(|t| {
                text.clear();
                if !add_words(t, &mut text) {
                    batch = None;
                    return None;
                }
                if let Some(b) = batch.as_mut() {
                    b.extend(&text);
                }
                Some(text.iter().copied().collect())
            })
            .collect();
        BatchWords {
            trajectories,
            batch: batch.map(|b| b.into_iter().collect()),
        }
    }

    /// The filters of these words for the batch at `position` in the log.
    pub fn filters(&self, position: i64) -> BatchFilters {
        BatchFilters {
            batch: (self.batch.as_ref()).map(|b| filter(b, batch_place(position))),
            trajectories: (self.trajectories.iter().enumerate())
                .map(|(idx, words)| {
                    let place = trajectory_place(position, idx as i64);
                    words.as_ref().map(|w| filter(w, place))
                })
                .collect(),
        }
    }
}

/// The filters of one batch: one per trajectory, and one of all their words for the batch.
/// `None` is no filter, which passes every query: a text that cannot be filtered (see
/// `word_hashes`), and a batch holding one.
pub struct BatchFilters {
    pub batch: Option<Vec<u8>>,
    pub trajectories: Vec<Option<Vec<u8>>>,
}

/// The place of the filter of the batch at `position`: SQL passes `b.position`.
fn batch_place(position: i64) -> i64 {
    position
}

/// The place of the filter of trajectory `idx` of the batch at `position`: SQL passes
/// `t.position + t.idx + 1`, so that no trajectory shares its batch's salt.
fn trajectory_place(position: i64, idx: i64) -> i64 {
    position + idx + 1
}

/// The distinct hashes of a text's words. Hashes are already well mixed, so the set hashes
/// them no further.
type WordSet = HashSet<u64, BuildHasherDefault<AsIs>>;

#[derive(Default)]
struct AsIs(u64);

impl Hasher for AsIs {
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 hashes are kept")
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Adds the hashes of `text`'s words to `set`; false, adding nothing, for a text holding a
/// character that lower-cases into ASCII, whose lexemes depend on the database's locale.
fn add_words(text: &str, set: &mut WordSet) -> bool {
    if !text.is_ascii() && text.chars().any(lowers_into_ascii) {
        return false;
    }
    set.extend(scan(text).map(|(_, hash)| hash));
    true
}

/// The distinct hashes of `text`'s words, sorted; `None` for a text that gets no filter (see
/// `add_words`).
pub fn word_hashes(text: &str) -> Option<Vec<u64>> {
    let mut set = WordSet::default();
    add_words(text, &mut set).then(|| {
        let mut hashes: Vec<u64> = set.into_iter().collect();
        hashes.sort_unstable();
        hashes
    })
}

/// A non-ASCII character whose lower case holds an ASCII letter or digit.
fn lowers_into_ascii(c: char) -> bool {
    !c.is_ascii() && c.to_lowercase().any(|l| l.is_ascii_alphanumeric())
}

/// The maximal runs of ASCII letters and of ASCII digits in `text`.
fn words(text: &str) -> impl Iterator<Item = &str> {
    scan(text).map(|(run, _)| &text[run])
}

/// Each of `text`'s words as its byte range and its `hash`, found in one pass: a filter's text is
/// read once (finding a word and then hashing it, in two passes, took twice as long).
fn scan(text: &str) -> impl Iterator<Item = (std::ops::Range<usize>, u64)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        i += bytes[i..].iter().position(u8::is_ascii_alphanumeric)?;
        let (start, digits) = (i, bytes[i].is_ascii_digit());
        let mut hash = FNV_OFFSET;
        while let Some(&b) = bytes.get(i) {
            let lower = match (digits, b) {
                (true, b'0'..=b'9') => b,
                (false, b'a'..=b'z' | b'A'..=b'Z') => b.to_ascii_lowercase(),
                _ => break,
            };
            hash = fnv_step(hash, lower);
            i += 1;
        }
        // ASCII bytes are whole characters, so the run is on character boundaries.
        Some((start..i, hash))
    })
}

/// A word's hash, lower-cased: 64-bit FNV-1a, small and the same on every platform and version.
fn hash(word: &str) -> u64 {
    word.bytes()
        .fold(FNV_OFFSET, |h, b| fnv_step(h, b.to_ascii_lowercase()))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv_step(hash: u64, byte: u8) -> u64 {
    (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3)
}

/// A filter holding `hashes` (distinct), sized to them.
pub fn filter<'a>(
    hashes: impl IntoIterator<Item = &'a u64, IntoIter: ExactSizeIterator>,
    place: i64,
) -> Vec<u8> {
    let hashes = hashes.into_iter();
    let bits = (hashes.len() * BITS_PER_WORD)
        .next_power_of_two()
        .max(MIN_BITS);
    let mut filter = vec![0u8; bits / 8];
    for &h in hashes {
        for n in Placement::of(h).bits(place, bits) {
            filter[n / 8] |= 1 << (n % 8);
        }
    }
    filter
}

/// Whether `filter`, at its place, may hold every word of a query (`query_numbers`).
pub fn may_contain(filter: &[u8], place: i64, query: &[i64]) -> bool {
    query.chunks(3).all(|p| {
        let placement = Placement {
            a: p[0],
            b: p[1],
            c: p[2],
        };
        (placement.bits(place, filter.len() * 8)).all(|n| filter[n / 8] & (1 << (n % 8)) != 0)
    })
}

/// The numbers SQL tests filters with for a query whose lexemes (from PostgreSQL's
/// `to_tsvector('simple', query)`) are `lexemes`: the `Placement` of each of its longest
/// `QUERY_PIECES` pieces, the array filled up by repeating them. `None` when the lexemes have no
/// piece: nothing to test.
pub fn query_numbers<S: AsRef<str>>(lexemes: &[S]) -> Option<Vec<i64>> {
    let mut pieces: Vec<String> = lexemes
        .iter()
        .flat_map(|l| words(l.as_ref()))
        .map(str::to_ascii_lowercase)
        .collect();
    // Longer pieces are rarer, so they rule out more; ties in a fixed order.
    pieces.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    pieces.dedup();
    pieces.truncate(QUERY_PIECES);
    let numbers: Vec<i64> = (pieces.iter())
        .flat_map(|p| {
            let Placement { a, b, c } = Placement::of(hash(p));
            [a, b, c]
        })
        .collect();
    (!numbers.is_empty()).then(|| {
        numbers
            .iter()
            .copied()
            .cycle()
            .take(QUERY_NUMBERS)
            .collect()
    })
}

/// Where a word's bits go: `(a + i·b + s·c) mod m`. Every term fits an `int8` in SQL: `a`, `b`
/// are below 2^32, `c` below 2^31 and a salt below 2^16, so the sum stays below 2^48.
struct Placement {
    a: i64,
    b: i64,
    c: i64,
}

impl Placement {
    fn of(hash: u64) -> Placement {
        Placement {
            a: (hash & 0xffff_ffff) as i64,
            // Odd, so that a word's bits differ in every filter size.
            b: ((hash >> 32) | 1) as i64,
            c: (hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33) as i64,
        }
    }

    /// The word's bits in a filter of `size` bits at `place`.
    fn bits(&self, place: i64, size: usize) -> impl Iterator<Item = usize> {
        let start = self.a + (place & 0xffff) * self.c;
        (0..HASHES).map(move |i| (start + i * self.b) as usize & (size - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(text: &str) -> Vec<u64> {
        word_hashes(text).unwrap()
    }

    #[test]
    fn words_are_lower_cased_runs_of_ascii_letters_or_digits() {
        let text = "Route 57, ROUTE 3.14 café_x +757a@b.co";
        let found: Vec<&str> = words(text).collect();
        let expected = [
            "Route", "57", "ROUTE", "3", "14", "caf", "x", "757", "a", "b", "co",
        ];
        assert_eq!(found, expected);
        let mut distinct: Vec<u64> = expected[1..].iter().map(|w| hash(w)).collect();
        distinct.sort_unstable();
        assert_eq!(hashes(text), distinct);
        assert_eq!(hashes(""), Vec::<u64>::new());
    }

    #[test]
    fn a_text_with_characters_that_lower_case_into_ascii_has_no_filter() {
        assert_eq!(word_hashes("İstanbul"), None);
        assert_eq!(word_hashes("5 \u{212A}"), None);
        assert!(word_hashes("café Ⅻ 日本").is_some());
        let b = BatchWords::of(["one", "İki"].into_iter()).filters(7);
        assert!(b.trajectories[0].is_some());
        assert_eq!((&b.trajectories[1], &b.batch), (&None, &None));
    }

    /// A word of letters only: `first`, then `i` in base 26.
    fn word(first: char, mut i: usize) -> String {
        let mut w = first.to_string();
        loop {
            w.push((b'a' + (i % 26) as u8) as char);
            i /= 26;
            if i == 0 {
                break w;
            }
        }
    }

    #[test]
    fn a_filter_passes_its_words_and_rules_out_most_others() {
        let text = (0..200).map(|i| word('w', i) + " ").collect::<String>();
        let f = filter(&hashes(&text), 5);
        assert_eq!(f.len() * 8, 2048);
        for i in 0..200 {
            assert!(may_contain(&f, 5, &query_numbers(&[word('w', i)]).unwrap()));
        }
        let passed = (0..10_000)
            .filter(|&i| may_contain(&f, 5, &query_numbers(&[word('v', i)]).unwrap()))
            .count();
        // About 3 % for 8 bits a word and 3 bits each; the bound leaves room for the hash.
        assert!(passed < 600, "{passed} of 10,000 absent words passed");
    }

    #[test]
    fn salts_make_an_absent_word_pass_filters_of_the_same_words_independently() {
        // The same words in every filter, as the words every text has: without salts an absent
        // word would pass all of them or none.
        let words = hashes(&(0..200).map(|i| word('w', i) + " ").collect::<String>());
        for i in 0..100 {
            let query = query_numbers(&[word('v', i)]).unwrap();
            let passed = (0..1000)
                .filter(|&salt| may_contain(&filter(&words, salt), salt, &query))
                .count();
            assert!(
                passed < 150,
                "{} passed {passed} of 1,000 filters",
                word('v', i)
            );
        }
    }

    #[test]
    fn a_query_tests_its_longest_pieces_and_fills_its_numbers() {
        assert_eq!(query_numbers::<&str>(&[]), None);
        assert_eq!(query_numbers(&["日本"]), None);
        let one = query_numbers(&["route"]).unwrap();
        assert_eq!(one.len(), QUERY_NUMBERS);
        assert_eq!(one[..3], one[3..6]);
        // "3.14" is one lexeme of two pieces; the four longest of six pieces are kept.
        let many = query_numbers(&["3.14", "alpha", "beta", "gamma", "de"]).unwrap();
        let f = filter(&hashes("alpha beta gamma 14"), 0);
        assert!(may_contain(&f, 0, &many));
        assert!(!may_contain(
            &filter(&hashes("alpha beta gamma"), 0),
            0,
            &many
        ));
    }

    #[test]
    fn a_batch_filter_holds_every_trajectory_s_words() {
        let texts = ["one two", "three", ""];
        let b = BatchWords::of(texts.iter().copied()).filters(70_000);
        assert_eq!(b.trajectories.len(), 3);
        let query = |w| query_numbers(&[w]).unwrap();
        for w in ["one", "two", "three"] {
            let batch = b.batch.as_ref().unwrap();
            assert!(may_contain(batch, batch_place(70_000), &query(w)));
        }
        let second = b.trajectories[1].as_ref().unwrap();
        assert!(may_contain(
            second,
            trajectory_place(70_000, 1),
            &query("three")
        ));
        assert!(!may_contain(
            second,
            trajectory_place(70_000, 1),
            &query("one")
        ));
        assert_eq!(b.trajectories[2].as_ref().unwrap().len() * 8, MIN_BITS);
    }
}
