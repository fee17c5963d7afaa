//! The Parallel-R1 response format, parsed without ever panicking:
//!
//! ```text
//! main <Parallel><Path>a</Path><Path>b</Path></Parallel>
//! <Summary>s</Summary> main ... Final Answer: 19
//! ```
//!
//! A response is valid when tags nest properly, every block has at least two paths and nothing
//! but whitespace between them, and every block is followed (after optional whitespace) by a
//! summary. A response without blocks is valid. The parser reports every problem it finds with
//! the byte offset where it occurs, and recovers to keep finding blocks.

use serde::{Deserialize, Serialize};
use std::ops::Range;

/// The six special tokens, in the order `<Parallel> </Parallel> <Path> </Path> <Summary> </Summary>`.
pub const TAGS: [&str; 6] = [
    "<Parallel>",
    "</Parallel>",
    "<Path>",
    "</Path>",
    "<Summary>",
    "</Summary>",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Tag {
    OpenParallel,
    CloseParallel,
    OpenPath,
    ClosePath,
    OpenSummary,
    CloseSummary,
}

impl Tag {
    pub const ALL: [Tag; 6] = [
        Tag::OpenParallel,
        Tag::CloseParallel,
        Tag::OpenPath,
        Tag::ClosePath,
        Tag::OpenSummary,
        Tag::CloseSummary,
    ];

    pub fn text(self) -> &'static str {
        TAGS[self as usize]
    }
}

/// One parallel block. Ranges are byte offsets into the parsed text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// From `<Parallel>` to the end of `</Parallel>` (or of the text, if unclosed).
    pub span: Range<usize>,
    /// The text of each path, between `<Path>` and `</Path>`.
    pub paths: Vec<Range<usize>>,
    /// The text between `<Summary>` and `</Summary>`, when the block has one.
    pub summary: Option<Range<usize>>,
}

/// What is wrong with a response's format, and where (a byte offset).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "issue", rename_all = "snake_case")]
pub enum FormatIssue {
    /// A tag was opened and never closed.
    Unclosed { tag: Tag, at: usize },
    /// A tag that makes no sense where it stands (a close without an open, a path outside a block).
    Unexpected { tag: Tag, at: usize },
    /// A block or path opened inside a path or a summary.
    Nested { tag: Tag, at: usize },
    /// A block with fewer than two paths.
    TooFewPaths {
        block: usize,
        paths: usize,
        at: usize,
    },
    /// Text inside a block but outside its paths.
    TextOutsidePaths { block: usize, at: usize },
    /// A block not followed by `<Summary>...</Summary>`.
    MissingSummary { block: usize, at: usize },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedResponse {
    pub blocks: Vec<Block>,
    pub issues: Vec<FormatIssue>,
}

impl ParsedResponse {
    pub fn is_valid(&self) -> bool {
        self.issues.is_empty()
    }

    /// At least one well-formed block, and no problem anywhere.
    pub fn has_valid_block(&self) -> bool {
        self.is_valid() && !self.blocks.is_empty()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Main,
    /// Inside block `usize`, between paths.
    Block(usize),
    Path(usize, usize),
    /// After block `usize` closed, before its summary.
    ExpectSummary(usize),
    Summary(usize, usize),
}

/// The next tag at or after `from`: its kind and byte offset.
fn next_tag(text: &str, from: usize) -> Option<(Tag, usize)> {
    let mut at = from;
    while let Some(i) = text.get(at..)?.find('<') {
        let start = at + i;
        let rest = &text[start..];
        if let Some(tag) = Tag::ALL.into_iter().find(|t| rest.starts_with(t.text())) {
            return Some((tag, start));
        }
        at = start + 1;
    }
    None
}

pub fn parse(text: &str) -> ParsedResponse {
    let mut out = ParsedResponse::default();
    let mut state = State::Main;
    let mut cursor = 0;
    loop {
        let found = next_tag(text, cursor);
        let (gap_end, tag) = match found {
            Some((tag, at)) => (at, Some((tag, at))),
            None => (text.len(), None),
        };
        let gap = &text[cursor..gap_end];
        let non_space = gap.find(|c: char| !c.is_whitespace()).map(|i| cursor + i);
        match state {
            State::Block(b) => {
                if let Some(at) = non_space {
                    out.issues
                        .push(FormatIssue::TextOutsidePaths { block: b, at });
                }
            }
            State::ExpectSummary(b) => {
                if let Some(at) = non_space.or(if tag.is_none() {
                    Some(text.len())
                } else {
                    None
                }) {
                    out.issues
                        .push(FormatIssue::MissingSummary { block: b, at });
                    state = State::Main;
                }
            }
            _ => {}
        }
        let Some((tag, at)) = tag else { break };
        let after = at + tag.text().len();
        cursor = after;
        state = step(&mut out, state, tag, at, after);
    }
    match state {
        State::Main | State::ExpectSummary(_) => {}
        State::Block(b) => {
            out.issues.push(FormatIssue::Unclosed {
                tag: Tag::OpenParallel,
                at: out.blocks[b].span.start,
            });
            out.blocks[b].span.end = text.len();
        }
        State::Path(b, start) => {
            out.issues.push(FormatIssue::Unclosed {
                tag: Tag::OpenPath,
                at: start,
            });
            out.blocks[b]
                .paths
                .push(start + Tag::OpenPath.text().len()..text.len());
            out.issues.push(FormatIssue::Unclosed {
                tag: Tag::OpenParallel,
                at: out.blocks[b].span.start,
            });
            out.blocks[b].span.end = text.len();
        }
        State::Summary(_, start) => out.issues.push(FormatIssue::Unclosed {
            tag: Tag::OpenSummary,
            at: start,
        }),
    }
    out
}

/// One transition of the format's state machine.
fn step(out: &mut ParsedResponse, state: State, tag: Tag, at: usize, after: usize) -> State {
    let issue = &mut out.issues;
    match (state, tag) {
        (State::Main | State::ExpectSummary(_), Tag::OpenParallel) => {
            if let State::ExpectSummary(b) = state {
                issue.push(FormatIssue::MissingSummary { block: b, at });
            }
            out.blocks.push(Block {
                span: at..after,
                paths: vec![],
                summary: None,
            });
            State::Block(out.blocks.len() - 1)
        }
        (State::ExpectSummary(b), Tag::OpenSummary) => State::Summary(b, at),
        (State::ExpectSummary(b), other) => {
            issue.push(FormatIssue::MissingSummary { block: b, at });
            issue.push(FormatIssue::Unexpected { tag: other, at });
            State::Main
        }
        (State::Main, other) => {
            issue.push(FormatIssue::Unexpected { tag: other, at });
            State::Main
        }
        (State::Block(b), Tag::OpenPath) => State::Path(b, at),
        (State::Block(b), Tag::CloseParallel) => {
            let block = &mut out.blocks[b];
            block.span.end = after;
            if block.paths.len() < 2 {
                issue.push(FormatIssue::TooFewPaths {
                    block: b,
                    paths: block.paths.len(),
                    at,
                });
            }
            State::ExpectSummary(b)
        }
        (State::Block(b), Tag::OpenParallel) => {
            issue.push(FormatIssue::Nested {
                tag: Tag::OpenParallel,
                at,
            });
            State::Block(b)
        }
        (State::Block(b), other) => {
            issue.push(FormatIssue::Unexpected { tag: other, at });
            State::Block(b)
        }
        (State::Path(b, start), Tag::ClosePath) => {
            out.blocks[b]
                .paths
                .push(start + Tag::OpenPath.text().len()..at);
            State::Block(b)
        }
        (State::Path(b, start), Tag::CloseParallel) => {
            // The path ends with its block; count it so the block's shape stays visible.
            issue.push(FormatIssue::Unclosed {
                tag: Tag::OpenPath,
                at: start,
            });
            out.blocks[b]
                .paths
                .push(start + Tag::OpenPath.text().len()..at);
            step(out, State::Block(b), Tag::CloseParallel, at, after)
        }
        (State::Path(b, start), Tag::OpenParallel | Tag::OpenPath) => {
            issue.push(FormatIssue::Nested { tag, at });
            State::Path(b, start)
        }
        (State::Path(b, start), other) => {
            issue.push(FormatIssue::Unexpected { tag: other, at });
            State::Path(b, start)
        }
        (State::Summary(b, start), Tag::CloseSummary) => {
            out.blocks[b].summary = Some(start + Tag::OpenSummary.text().len()..at);
            State::Main
        }
        (State::Summary(b, start), Tag::OpenParallel | Tag::OpenPath | Tag::OpenSummary) => {
            issue.push(FormatIssue::Nested { tag, at });
            State::Summary(b, start)
        }
        (State::Summary(b, start), other) => {
            issue.push(FormatIssue::Unexpected { tag: other, at });
            State::Summary(b, start)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "Total is 3+4.<Parallel><Path>3+4=7</Path><Path>4+3=7</Path></Parallel>\n<Summary>Both give 7.</Summary>\nFinal Answer: 7";

    #[test]
    fn a_well_formed_block_is_located_exactly() {
        let parsed = parse(GOOD);
        assert!(parsed.is_valid(), "{:?}", parsed.issues);
        assert_eq!(parsed.blocks.len(), 1);
        let block = &parsed.blocks[0];
        assert_eq!(&GOOD[block.paths[0].clone()], "3+4=7");
        assert_eq!(&GOOD[block.paths[1].clone()], "4+3=7");
        assert_eq!(&GOOD[block.summary.clone().unwrap()], "Both give 7.");
        assert_eq!(
            &GOOD[block.span.clone()],
            "<Parallel><Path>3+4=7</Path><Path>4+3=7</Path></Parallel>"
        );
    }

    #[test]
    fn a_response_without_blocks_is_valid() {
        assert!(parse("2+2=4. Final Answer: 4").is_valid());
        assert!(!parse("2+2=4.").has_valid_block());
    }

    #[test]
    fn three_paths_and_two_blocks_are_fine() {
        let text = "a<Parallel><Path>x</Path><Path>y</Path><Path>z</Path></Parallel>\n<Summary>s</Summary>b\
                    <Parallel><Path>p</Path><Path>q</Path></Parallel><Summary>t</Summary>";
        let parsed = parse(text);
        assert!(parsed.is_valid(), "{:?}", parsed.issues);
        assert_eq!(
            parsed
                .blocks
                .iter()
                .map(|b| b.paths.len())
                .collect::<Vec<_>>(),
            [3, 2]
        );
    }

    fn issues(text: &str) -> Vec<FormatIssue> {
        parse(text).issues
    }

    #[test]
    fn each_kind_of_malformation_is_named_where_it_occurs() {
        assert_eq!(
            issues("<Parallel><Path>a</Path></Parallel><Summary>s</Summary>"),
            [FormatIssue::TooFewPaths {
                block: 0,
                paths: 1,
                at: 24
            }]
        );
        assert_eq!(
            issues("<Parallel><Path>a</Path><Path>b</Path></Parallel> then"),
            [FormatIssue::MissingSummary { block: 0, at: 50 }]
        );
        assert_eq!(
            issues("<Parallel><Path>a</Path><Path>b</Path></Parallel>"),
            [FormatIssue::MissingSummary { block: 0, at: 49 }]
        );
        assert_eq!(
            issues("<Parallel>x<Path>a</Path><Path>b</Path></Parallel><Summary>s</Summary>"),
            [FormatIssue::TextOutsidePaths { block: 0, at: 10 }]
        );
        assert_eq!(
            issues(
                "<Parallel><Path>a<Parallel></Path><Path>b</Path></Parallel><Summary>s</Summary>"
            ),
            [FormatIssue::Nested {
                tag: Tag::OpenParallel,
                at: 17
            }]
        );
        assert_eq!(
            issues("a</Path>b"),
            [FormatIssue::Unexpected {
                tag: Tag::ClosePath,
                at: 1
            }]
        );
        assert_eq!(
            issues("<Parallel><Path>a</Path><Path>b"),
            [
                FormatIssue::Unclosed {
                    tag: Tag::OpenPath,
                    at: 24
                },
                FormatIssue::Unclosed {
                    tag: Tag::OpenParallel,
                    at: 0
                }
            ]
        );
        assert_eq!(
            issues("<Parallel><Path>a</Path><Path>b</Path></Parallel><Summary>s"),
            [FormatIssue::Unclosed {
                tag: Tag::OpenSummary,
                at: 49
            }]
        );
    }

    #[test]
    fn the_parser_survives_arbitrary_text_and_multibyte_characters() {
        for text in [
            "<",
            "<Par",
            "é<Path>ü",
            "</Summary></Summary><Summary>",
            "<<Parallel>>",
            "\u{0}<Path",
        ] {
            let parsed = parse(text);
            for block in &parsed.blocks {
                assert!(text.get(block.span.clone()).is_some());
            }
        }
    }
}
