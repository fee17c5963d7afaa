//! What the strategy-evolution analysis reads off a response: where its parallel blocks are and
//! what role each plays. Pure, so that the projection, the import and anyone recomputing a
//! recorded trajectory get the same answer. The rule is documented in `docs/analytics.md`.
//!
//! **The role rule.** A path *concludes* the last number it states. A block is *verification*
//! when it opens right after the main thread wrote a result, and every path concludes a number:
//! the last number the main thread stated before the block (earlier blocks' paths excluded,
//! earlier summaries included) directly follows an `=`, so the paths have a candidate to check,
//! whether they confirm it or not. Otherwise it is *exploration*: the block opens before the
//! model has a result for what it works on (at the start, after a question or a comparison), or
//! some path reaches no value at all.

use crate::parallel::{ParsedResponse, parse};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use utoipa::openapi::schema::{SchemaType, Type};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Exploration,
    Verification,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Exploration => "exploration",
            Role::Verification => "verification",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "exploration" => Some(Role::Exploration),
            "verification" => Some(Role::Verification),
            _ => None,
        }
    }
}

/// One block of a response, in character offsets (what a reader of the text counts).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BlockShape {
    /// From `<Parallel>` to the end of `</Parallel>`, in characters.
    #[schema(schema_with = char_range)]
    pub chars: Range<usize>,
    /// Characters of each path's text.
    pub path_chars: Vec<usize>,
    /// Characters of the summary's text, when the block has one.
    pub summary_chars: Option<usize>,
    /// Where each path's text is, in characters (for showing the paths side by side).
    #[schema(schema_with = char_ranges)]
    pub path_ranges: Vec<Range<usize>>,
    /// Where the summary's text is, in characters.
    #[schema(schema_with = optional_char_range)]
    pub summary_range: Option<Range<usize>>,
    /// The number each path concludes, normalised.
    pub conclusions: Vec<Option<String>>,
    pub role: Role,
}

// OpenAPI schemas of `Range<usize>` as serde writes it, `{"start": s, "end": e}`: utoipa has
// none of its own.
fn char_range() -> utoipa::openapi::schema::Object {
    range_object(Type::Object)
}

fn char_ranges() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(char_range())
        .build()
}

fn optional_char_range() -> utoipa::openapi::schema::Object {
    range_object(SchemaType::from_iter([Type::Object, Type::Null]))
}

fn range_object(kind: impl Into<SchemaType>) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::ObjectBuilder;
    let offset = || {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
    };
    ObjectBuilder::new()
        .schema_type(kind)
        .property("start", offset())
        .required("start")
        .property("end", offset())
        .required("end")
        .description(Some("Characters `start` up to `end` of the response."))
        .build()
}

/// A parsed response with its blocks' shapes and roles.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub parsed: ParsedResponse,
    pub blocks: Vec<BlockShape>,
    /// Characters of the response.
    pub chars: usize,
}

impl Analysis {
    /// Characters inside blocks over the response's characters.
    pub fn block_share(&self) -> f64 {
        if self.chars == 0 {
            return 0.0;
        }
        let inside: usize = self.blocks.iter().map(|b| b.chars.len()).sum();
        inside as f64 / self.chars as f64
    }
}

pub fn analyze(text: &str) -> Analysis {
    let parsed = parse(text);
    let chars = CharIndex::new(text);
    // Whether the main thread's last number so far was the result of a computation.
    let mut after_result = false;
    let mut main_from = 0;
    let mut blocks = Vec::with_capacity(parsed.blocks.len());
    for block in &parsed.blocks {
        let before = text.get(main_from..block.span.start).unwrap_or("");
        if let Some((at, _)) = numbers(before).last() {
            after_result = before[..at].trim_end().ends_with('=');
        }
        main_from = block.span.end;
        let conclusions: Vec<Option<String>> = block
            .paths
            .iter()
            .map(|p| {
                numbers(text.get(p.clone()).unwrap_or(""))
                    .last()
                    .map(|(_, n)| n)
            })
            .collect();
        let verifies =
            after_result && !conclusions.is_empty() && conclusions.iter().all(Option::is_some);
        blocks.push(BlockShape {
            chars: chars.at(block.span.start)..chars.at(block.span.end),
            path_chars: block.paths.iter().map(|p| chars.len(p)).collect(),
            summary_chars: block.summary.as_ref().map(|s| chars.len(s)),
            path_ranges: block.paths.iter().map(|p| chars.range(p)).collect(),
            summary_range: block.summary.as_ref().map(|s| chars.range(s)),
            conclusions,
            role: if verifies {
                Role::Verification
            } else {
                Role::Exploration
            },
        });
    }
    Analysis {
        parsed,
        blocks,
        chars: chars.at(text.len()),
    }
}

/// The numbers a text states, in order, each with the byte offset where it starts (its sign
/// included) and normalised: `1,200` and `1200.0` are `1200`, `-3` keeps its sign when the minus
/// is not a subtraction (`5-3` states 5 and 3).
pub fn numbers(text: &str) -> impl Iterator<Item = (usize, String)> + '_ {
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() && !bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i >= bytes.len() {
            return None;
        }
        let negative = i > 0
            && bytes[i - 1] == b'-'
            && (i < 2 || !bytes[i - 2].is_ascii_alphanumeric() && bytes[i - 2] != b')');
        let start = if negative { i - 1 } else { i };
        let mut digits = String::new();
        let mut fraction = String::new();
        while i < bytes.len() {
            match bytes[i] {
                b'0'..=b'9' => digits.push(bytes[i] as char),
                // A thousands separator sits between digits.
                b',' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {}
                b'.' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    i += 1;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        fraction.push(bytes[i] as char);
                        i += 1;
                    }
                    break;
                }
                _ => break,
            }
            i += 1;
        }
        let whole = digits.trim_start_matches('0');
        let fraction = fraction.trim_end_matches('0');
        let mut out = String::new();
        if negative && !(whole.is_empty() && fraction.is_empty()) {
            out.push('-');
        }
        out.push_str(if whole.is_empty() { "0" } else { whole });
        if !fraction.is_empty() {
            out.push('.');
            out.push_str(fraction);
        }
        Some((start, out))
    })
}

/// Byte offsets to character offsets, in one pass over the text.
enum CharIndex {
    /// ASCII text: offsets are the same.
    Ascii,
    /// The byte offset of every character boundary, and the text's end.
    Boundaries(Vec<usize>),
}

impl CharIndex {
    fn new(text: &str) -> CharIndex {
        if text.is_ascii() {
            return CharIndex::Ascii;
        }
        let mut boundaries: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        boundaries.push(text.len());
        CharIndex::Boundaries(boundaries)
    }

    fn at(&self, byte: usize) -> usize {
        match self {
            CharIndex::Ascii => byte,
            CharIndex::Boundaries(b) => b.partition_point(|&o| o < byte),
        }
    }

    fn len(&self, range: &Range<usize>) -> usize {
        self.at(range.end) - self.at(range.start)
    }

    fn range(&self, range: &Range<usize>) -> Range<usize> {
        self.at(range.start)..self.at(range.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(text: &str) -> Vec<Role> {
        analyze(text).blocks.iter().map(|b| b.role).collect()
    }

    #[test]
    fn numbers_are_normalised_and_subtraction_is_not_a_sign() {
        let found: Vec<String> = numbers("1,200 apples, 3.50 each; 5-3=2, -4 and 007.0")
            .map(|(_, n)| n)
            .collect();
        assert_eq!(found, ["1200", "3.5", "5", "3", "2", "-4", "7"]);
        assert_eq!(numbers("no digits here").count(), 0);
        assert_eq!(numbers("x-0").map(|(_, n)| n).collect::<Vec<_>>(), ["0"]);
        assert_eq!(numbers("a=-4").next(), Some((2, "-4".to_owned())));
    }

    // Hand-labelled cases: the label in each comment is what a reader decides.

    #[test]
    fn re_deriving_a_result_just_written_is_verification() {
        // The main thread has just computed 48; both paths get 48 another way: a check.
        let text = "Each box has 6 rows of 8, so 6*8 = 48 eggs.<Parallel><Path>8+8+8+8+8+8 = 48</Path>\
                    <Path>6*8 = 6*10 - 6*2 = 48</Path></Parallel><Summary>Both give 48.</Summary> Final Answer: 48";
        assert_eq!(roles(text), [Role::Verification]);
    }

    #[test]
    fn a_check_that_finds_a_slip_is_still_verification() {
        // The main thread wrote 27*3=84; the paths re-derive 81 and the summary corrects it.
        let text = "27*3=84.\n<Parallel><Path>20*3=60. 7*3=21. 60+21=81.</Path><Path>27+27=54. 54+27=81.</Path>\
                    </Parallel>\n<Summary>Both paths give 81, not 84.</Summary>\nFinal Answer: 81";
        assert_eq!(roles(text), [Role::Verification]);
        // So is one whose paths disagree with each other: they still check 48.
        let disagree = "So 6*8 = 48.<Parallel><Path>6*8 = 48</Path><Path>6*9 = 54</Path></Parallel><Summary>s</Summary>";
        assert_eq!(roles(disagree), [Role::Verification]);
    }

    #[test]
    fn working_towards_a_value_not_yet_reached_is_exploration() {
        // Nothing was computed before the block; the paths find 48 for the first time.
        let text = "Each box has 6 rows of 8.<Parallel><Path>8+8+8+8+8+8 = 48</Path>\
                    <Path>6*8 = 48</Path></Parallel><Summary>48 eggs.</Summary> Final Answer: 48";
        assert_eq!(roles(text), [Role::Exploration]);
        // The paths try the two branches of a condition; one fails its check.
        let branches = "30+33=63.\nCompare 63 with 40.\n<Parallel><Path>63>40 holds: 63-12=51.</Path>\
                        <Path>63<40 fails.</Path></Parallel>\n<Summary>Keep 51.</Summary>\nFinal Answer: 51";
        assert_eq!(roles(branches), [Role::Exploration]);
        // A block at the very start has nothing to check.
        assert_eq!(
            roles("<Parallel><Path>1+1=2</Path><Path>2</Path></Parallel><Summary>2</Summary>"),
            [Role::Exploration]
        );
    }

    #[test]
    fn paths_that_conclude_nothing_explore() {
        let wordy = "So 6*8 = 48.<Parallel><Path>multiply rows</Path><Path>add columns</Path></Parallel><Summary>s</Summary>";
        assert_eq!(roles(wordy), [Role::Exploration]);
    }

    #[test]
    fn a_later_block_checks_what_an_earlier_summary_computed_but_not_its_paths() {
        // Block 1 explores to 12 and its summary computes 5+7=12; block 2 re-derives 12:
        // verification. A result only inside block 1's paths does not count.
        let text = "Start.<Parallel><Path>5+7 = 12</Path><Path>3+2+7 = 7+5 = 12</Path></Parallel>\
                    <Summary>So 5+7=12.</Summary> <Parallel><Path>24/2 = 12</Path><Path>6*2 = 12</Path></Parallel>\
                    <Summary>ok</Summary> Then 7<Parallel><Path>7</Path><Path>7</Path></Parallel><Summary>7</Summary>";
        assert_eq!(
            roles(text),
            [Role::Exploration, Role::Verification, Role::Exploration]
        );
        let inside_paths_only = "Start.<Parallel><Path>5+7 = 12</Path><Path>12</Path></Parallel>\
                    <Summary>ok</Summary><Parallel><Path>12</Path><Path>12</Path></Parallel><Summary>ok</Summary>";
        assert_eq!(
            roles(inside_paths_only),
            [Role::Exploration, Role::Exploration]
        );
    }

    #[test]
    fn offsets_are_characters_and_shares_add_up() {
        let text = "é=1<Parallel><Path>ü 1</Path><Path>1</Path></Parallel><Summary>ß</Summary>";
        let a = analyze(text);
        let block = &a.blocks[0];
        assert_eq!(block.chars.start, 3);
        assert_eq!(block.path_chars, [3, 1]);
        assert_eq!(block.summary_chars, Some(1));
        // "é=1<Parallel><Path>" is 19 characters; the first path is "ü 1".
        assert_eq!(block.path_ranges, [19..22, 35..36]);
        let chars: Vec<char> = text.chars().collect();
        let summary = block.summary_range.clone().unwrap();
        assert_eq!(chars[summary].iter().collect::<String>(), "ß");
        assert_eq!(a.chars, text.chars().count());
        let expected = block.chars.len() as f64 / a.chars as f64;
        assert!((a.block_share() - expected).abs() < 1e-12);
        assert_eq!(block.role, Role::Verification);
    }

    #[test]
    fn malformed_responses_still_get_shapes() {
        let a = analyze("<Parallel><Path>3</Path><Path>4");
        assert!(!a.parsed.is_valid());
        assert_eq!(a.blocks.len(), 1);
        assert_eq!(a.blocks[0].path_chars, [1, 1]);
        assert_eq!(a.blocks[0].summary_chars, None);
    }
}
