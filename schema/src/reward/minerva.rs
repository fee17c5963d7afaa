//! The reference's answer check (`math_dapo.compute_score` of the Parallel-R1 code, whose
//! normalisation is Minerva's), reproduced verdict for verdict: `tests/fixtures/reward_parity.json`,
//! written by `scripts/make_reward_fixture.py` from the reference function itself, holds the cases a
//! test compares.
//!
//! The reference scores the response decoded without special tokens, so the six tags are dropped
//! before its last 300 characters are searched for `Final Answer\s*:\s*` and the rest of that line
//! (the `\s*` crosses a line break). The last match is normalised, as is the ground truth, and the
//! two must be equal.

use crate::parallel::TAGS;
use regex::Regex;
use std::sync::LazyLock;

/// How many characters from the end the reference searches.
const WINDOW: usize = 300;

/// Python's `\s` also matches the separators \x1c-\x1f, which Rust's does not.
static ANSWER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)Final Answer[\s\x1c-\x1f]*:[\s\x1c-\x1f]*([^\n]+)").unwrap());

/// What the reference's normaliser does after the plain substitutions, as (pattern, replacement)
/// in Rust's replacement syntax.
static REWRITES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"(.*?)(\$)(.*?)(\$)(.*)", "$$${3}$$"),
        (r"(\\text\{)(.*?)(\})", "${2}"),
        (r"(\\textbf\{)(.*?)(\})", "${2}"),
        (r"(\\overline\{)(.*?)(\})", "${2}"),
        (r"(\\boxed\{)(.*)(\})", "${2}"),
        (r"(frac)([^{])(.)", "frac{${2}}{${3}}"),
        (r"(sqrt)([^{])", "sqrt{${2}}"),
    ]
    .into_iter()
    .map(|(pattern, with)| (Regex::new(pattern).unwrap(), with))
    .collect()
});

const SUBSTITUTIONS: [(&str, &str); 10] = [
    ("an ", ""),
    ("a ", ""),
    (".$", "$"),
    ("\\$", ""),
    ("\\ ", ""),
    (" ", ""),
    ("mbox", "text"),
    (",\\text{and}", ","),
    ("\\text{and}", ","),
    ("\\text{m}", "\\text{}"),
];

const REMOVED: [&str; 41] = [
    "square",
    "ways",
    "integers",
    "dollars",
    "mph",
    "inches",
    "hours",
    "km",
    "units",
    "\\ldots",
    "sue",
    "points",
    "feet",
    "minutes",
    "digits",
    "cents",
    "degrees",
    "cm",
    "gm",
    "pounds",
    "meters",
    "meals",
    "edges",
    "students",
    "childrentickets",
    "multiples",
    "\\text{s}",
    "\\text{.}",
    "\\text{\ns}",
    "\\text{}^2",
    "\\text{}^3",
    "\\text{\n}",
    "\\text{}",
    "\\mathrm{th}",
    "^\\circ",
    "^{\\circ}",
    "\\;",
    ",\\!",
    "{,}",
    "\"",
    "\\dots",
];

/// The text the reference searches: the response without tags, its last 300 characters.
fn window(response: &str) -> String {
    let mut text = response.to_owned();
    for tag in TAGS {
        text = text.replace(tag, "");
    }
    let chars = text.chars().count();
    text.chars().skip(chars.saturating_sub(WINDOW)).collect()
}

/// The raw answer: what follows the last `Final Answer:` in the searched window.
pub fn extract_answer(response: &str) -> Option<String> {
    let window = window(response);
    ANSWER
        .captures_iter(&window)
        .last()
        .map(|c| c[1].to_owned())
}

/// Minerva's normalisation of a final answer, as the reference applies it.
pub fn normalize(answer: &str) -> String {
    let mut s = answer.rsplit('=').next().unwrap_or("").to_owned();
    for (before, after) in SUBSTITUTIONS {
        s = s.replace(before, after);
    }
    for expression in REMOVED {
        s = s.replace(expression, "");
    }
    for (pattern, with) in REWRITES.iter() {
        s = pattern.replace_all(&s, *with).into_owned();
    }
    s = s.replace('$', "");
    let without_commas = s.replace(',', "");
    if !without_commas.is_empty() && without_commas.chars().all(is_python_digit) {
        s = without_commas;
    }
    s.trim_matches(is_python_space).to_owned()
}

/// Python's `str.isdigit` for the digits answers hold: ASCII and fullwidth digits, superscripts
/// and subscripts (Python also counts other scripts' digits, which math answers do not use).
fn is_python_digit(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '²' | '³' | '¹' | '⁰' | '⁴'..='⁹' | '₀'..='₉' | '０'..='９')
}

/// Python's `str.strip` whitespace.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// The reference's verdict on `response` against `truth`, and the raw answer it read.
pub fn check(response: &str, truth: &str) -> (bool, Option<String>) {
    let answer = extract_answer(response);
    // The reference compares "[INVALID]" when it finds no answer; no truth normalises to that.
    let correct = answer
        .as_deref()
        .is_some_and(|a| normalize(a) == normalize(truth));
    (correct, answer)
}
