//! A story's written solutions: the sequential one (one line per operation), the parallel one,
//! whose blocks do real work, and the parallel one's reasoning without its tags (`untagged`), the
//! text the base model is pretrained on.
//!
//! - **Verification** follows a hard step (a product, or a sum of two-digit numbers) that the main
//!   thread just computed directly: each path re-derives it by an easier route (tens and ones
//!   apart, repeated doubling, the other order), and the summary keeps the value two of the three
//!   agree on. In some solutions the main thread slipped and the summary corrects it; in others a
//!   path slipped and the summary overrules it. The direct product is where a small model errs
//!   most, so a check by easier routes pays.
//! - **Exploration** replaces a conditional step: each path tries one branch and states whether
//!   its condition holds, and the summary keeps the branch that passes. Paths choose their branch
//!   independently, as Unseen paths sample independently, so sometimes both try the same one; when
//!   both fail, the summary takes the other branch itself.
//!
//! A fifth of the solutions have no block, and the rest have one or two at varied places, so that
//! RL can move the parallel ratio and the blocks' positions.

use super::problem::{Op, Story};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};

/// Share of parallel solutions written without any block.
const SEQUENTIAL_SHARE: f64 = 0.2;
/// Of verification blocks: the main thread's value is a slip the block corrects...
const MAIN_SLIP: f64 = 0.15;
/// ...or one path's is, and the other two overrule it.
const PATH_SLIP: f64 = 0.1;

/// A parallel solution, with where its slips are: the wrong values a block then corrects. They
/// are shown to the model as context but never trained as targets, so that it learns to catch a
/// slip without learning to make one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Written {
    pub text: String,
    /// Byte ranges of `text`.
    pub slips: Vec<std::ops::Range<usize>>,
}

impl Written {
    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    fn push_slip(&mut self, value: i64) {
        let start = self.text.len();
        self.text.push_str(&value.to_string());
        self.slips.push(start..self.text.len());
    }
}

pub fn sequential(story: &Story) -> String {
    let totals = story.totals();
    let mut out = String::new();
    for (op, total) in story.ops.iter().zip(&totals) {
        out.push_str(&step_line(*total, *op));
    }
    out.push_str(&final_answer(story.answer()));
    out
}

pub fn parallel(story: &Story, rng: &mut StdRng) -> Written {
    let totals = story.totals();
    let eligible: Vec<usize> = (0..story.ops.len())
        .filter(|&i| block_kind(totals[i], story.ops[i]).is_some())
        .collect();
    let mut sites: Vec<usize> = Vec::new();
    if !eligible.is_empty() && !rng.random_bool(SEQUENTIAL_SHARE) {
        let count = if eligible.len() > 1 && rng.random_bool(0.5) {
            2
        } else {
            1
        };
        sites = eligible.choose_multiple(rng, count).copied().collect();
    }
    let mut out = Written::default();
    for (i, (op, total)) in story.ops.iter().zip(&totals).enumerate() {
        match block_kind(*total, *op).filter(|_| sites.contains(&i)) {
            Some(Kind::Verify(check)) => verified_step(*total, *op, check, rng, &mut out),
            Some(Kind::Explore) => out.push(&explored_step(*total, *op, rng)),
            None => out.push(&step_line(*total, *op)),
        }
    }
    out.push(&final_answer(story.answer()));
    out
}

/// Tag runs of a parallel solution and the plain text that takes their place: a block's paths and
/// its summary become lines of one thread.
const UNTAGGED: [(&str, &str); 4] = [
    ("<Parallel><Path>", ""),
    ("</Path><Path>", "\n"),
    ("</Path></Parallel>\n<Summary>", "\n"),
    ("</Summary>", ""),
];

/// The parallel solution's reasoning as one sequential thread: the same checks by other routes and
/// the same tried branches, written as plain lines without tags, its slips kept in place. A real
/// base model has read text that checks its work and tries cases; this is the built-in task's
/// share of such text, so that cold-start SFT teaches the format rather than the reasoning.
pub fn untagged(parallel: &Written) -> Written {
    let text = &parallel.text;
    let mut out = Written::default();
    let mut from = 0;
    loop {
        let next = UNTAGGED
            .iter()
            .filter_map(|(tags, plain)| {
                text[from..].find(tags).map(|at| (from + at, *tags, *plain))
            })
            .min_by_key(|(at, ..)| *at);
        let until = next.map_or(text.len(), |(at, ..)| at);
        // Where text[from..] lands in `out`.
        let to = out.text.len();
        out.slips.extend(
            parallel
                .slips
                .iter()
                .filter(|r| from <= r.start && r.end <= until)
                .map(|r| r.start - from + to..r.end - from + to),
        );
        out.text.push_str(&text[from..until]);
        let Some((at, tags, plain)) = next else {
            return out;
        };
        out.text.push_str(plain);
        from = at + tags.len();
    }
}

fn final_answer(answer: i64) -> String {
    format!("Final Answer: {answer}")
}

fn step_line(total: i64, op: Op) -> String {
    let next = op.apply(total);
    match op {
        Op::AddGroups { n, k } => format!("{n}*{k}={}. {total}+{}={next}.\n", n * k, n * k),
        Op::Add(a) => format!("{total}+{a}={next}.\n"),
        Op::Sub(s) => format!("{total}-{s}={next}.\n"),
        Op::Times(t) => format!("{total}*{t}={next}.\n"),
        Op::Branch { limit, give, find } => {
            if total > limit {
                format!("{total}>{limit}, so {total}-{give}={next}.\n")
            } else {
                format!("{total}<{limit}, so {total}+{find}={next}.\n")
            }
        }
    }
}

/// A computation a verification block re-derives.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Check {
    Product(i64, i64),
    Sum(i64, i64),
}

impl Check {
    fn value(self) -> i64 {
        match self {
            Check::Product(a, b) => a * b,
            Check::Sum(a, b) => a + b,
        }
    }

    /// How the main thread writes the computation.
    fn expression(self) -> String {
        match self {
            Check::Product(a, b) => format!("{a}*{b}"),
            Check::Sum(a, b) => format!("{a}+{b}"),
        }
    }

    /// Two independent, easier routes to the value, in random order.
    fn routes(self, rng: &mut StdRng) -> [Vec<(String, i64)>; 2] {
        let mut routes = match self {
            Check::Product(a, b) => {
                let (big, small) = if a >= b { (a, b) } else { (b, a) };
                // One-digit factors have no tens to split: the other order instead.
                let place = if big < 10 {
                    vec![(format!("{b}*{a}"), a * b)]
                } else {
                    by_place(big, small)
                };
                [place, by_doubling(big, small)]
            }
            Check::Sum(a, b) => {
                let (at, bt) = (a - a % 10, b - b % 10);
                [
                    vec![
                        (format!("{at}+{bt}"), at + bt),
                        (format!("{}+{}", a % 10, b % 10), a % 10 + b % 10),
                        (format!("{}+{}", at + bt, a % 10 + b % 10), a + b),
                    ],
                    vec![(format!("{b}+{a}"), a + b)],
                ]
            }
        };
        routes.shuffle(rng);
        routes
    }
}

/// `big*small` (big at least 10) with tens and ones apart.
fn by_place(big: i64, small: i64) -> Vec<(String, i64)> {
    let (tens, ones) = (big - big % 10, big % 10);
    match ones {
        0 => vec![
            (format!("{}*{small}", tens / 10), tens / 10 * small),
            (format!("{}*10", tens / 10 * small), big * small),
        ],
        _ => vec![
            (format!("{tens}*{small}"), tens * small),
            (format!("{ones}*{small}"), ones * small),
            (format!("{}+{}", tens * small, ones * small), big * small),
        ],
    }
}

/// `big*small` (small at most 5) by doubling and adding.
fn by_doubling(big: i64, small: i64) -> Vec<(String, i64)> {
    let mut steps = vec![(format!("{big}+{big}"), 2 * big)];
    match small {
        3 => steps.push((format!("{}+{big}", 2 * big), 3 * big)),
        4 | 5 => {
            steps.push((format!("{}+{}", 2 * big, 2 * big), 4 * big));
            if small == 5 {
                steps.push((format!("{}+{big}", 4 * big), 5 * big));
            }
        }
        _ => {}
    }
    steps
}

enum Kind {
    Verify(Check),
    Explore,
}

/// The block a step can take: a check of its hard computation, or the exploration of its branches.
fn block_kind(total: i64, op: Op) -> Option<Kind> {
    match op {
        Op::AddGroups { n, k } if n * k >= 10 => Some(Kind::Verify(Check::Product(n, k))),
        Op::Times(t) if total * t >= 10 => Some(Kind::Verify(Check::Product(total, t))),
        Op::Add(a) if total >= 10 && a >= 10 => Some(Kind::Verify(Check::Sum(total, a))),
        Op::Branch { .. } => Some(Kind::Explore),
        _ => None,
    }
}

/// A plausible arithmetic slip: off by one, two or ten, never the value itself or below 1.
fn slip(value: i64, rng: &mut StdRng) -> i64 {
    let offsets: Vec<i64> = [-10, -2, -1, 1, 2, 10]
        .into_iter()
        .filter(|d| value + d > 0)
        .collect();
    value + offsets.choose(rng).expect("+1 always qualifies")
}

fn verified_step(total: i64, op: Op, check: Check, rng: &mut StdRng, out: &mut Written) {
    let value = check.value();
    let roll: f64 = rng.random();
    let main = if roll < MAIN_SLIP {
        slip(value, rng)
    } else {
        value
    };
    let slipped_path = (MAIN_SLIP..MAIN_SLIP + PATH_SLIP).contains(&roll).then(|| {
        let path = rng.random_range(0..2);
        (path, slip(value, rng))
    });
    let routes = check.routes(rng);
    let summary = match (main != value, slipped_path) {
        (true, _) => match rng.random_range(0..2) {
            0 => format!("Both paths give {value}, not {main}."),
            _ => format!("{main} was a slip, it is {value}."),
        },
        (false, Some((_, wrong))) => match rng.random_range(0..2) {
            0 => format!("Two of three give {value}."),
            _ => format!("{wrong} is off; {value} stands."),
        },
        (false, None) => match rng.random_range(0..3) {
            0 => format!("Both paths confirm {value}."),
            1 => format!("Checked: {value}."),
            _ => format!("Both ways give {value}."),
        },
    };
    // The main thread's computation, its result a slip or not.
    out.push(&format!("{}=", check.expression()));
    if main != value {
        out.push_slip(main);
    } else {
        out.push(&main.to_string());
    }
    out.push(".\n<Parallel>");
    for (p, route) in routes.iter().enumerate() {
        out.push("<Path>");
        for (s, (expr, result)) in route.iter().enumerate() {
            if s > 0 {
                out.push(" ");
            }
            out.push(&format!("{expr}="));
            match slipped_path {
                Some((path, wrong)) if path == p && s + 1 == route.len() => out.push_slip(wrong),
                _ => out.push(&result.to_string()),
            }
            out.push(".");
        }
        out.push("</Path>");
    }
    out.push(&format!("</Parallel>\n<Summary>{summary}</Summary>\n"));
    // The product is checked before it is added.
    if let Op::AddGroups { .. } = op {
        out.push(&format!("{total}+{value}={}.\n", op.apply(total)));
    }
}

fn explored_step(total: i64, op: Op, rng: &mut StdRng) -> String {
    let Op::Branch { limit, give, find } = op else {
        unreachable!("only branches are explored")
    };
    let next = op.apply(total);
    let above = total > limit;
    let mut paths = String::new();
    let mut passed = false;
    for _ in 0..2 {
        let tries_above = rng.random_bool(0.5);
        let text = match (tries_above, above) {
            (true, true) => format!("{total}>{limit} holds: {total}-{give}={next}."),
            (true, false) => format!("{total}>{limit} fails."),
            (false, false) => format!("{total}<{limit} holds: {total}+{find}={next}."),
            (false, true) => format!("{total}<{limit} fails."),
        };
        passed |= tries_above == above;
        paths.push_str(&format!("<Path>{text}</Path>"));
    }
    let summary = if passed {
        match rng.random_range(0..3) {
            0 => format!("Keep {next}."),
            1 => format!("Only one branch holds: {next}."),
            _ => format!("The branch that holds gives {next}."),
        }
    } else if above {
        format!("Both fail, so the other branch: {total}-{give}={next}.")
    } else {
        format!("Both fail, so the other branch: {total}+{find}={next}.")
    };
    format!(
        "Compare {total} with {limit}.\n<Parallel>{paths}</Parallel>\n<Summary>{summary}</Summary>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn routes_reach_the_value_by_easier_steps() {
        let text = |route: &[(String, i64)]| {
            route
                .iter()
                .map(|(e, v)| format!("{e}={v}."))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(text(&by_place(27, 3)), "20*3=60. 7*3=21. 60+21=81.");
        assert_eq!(text(&by_doubling(27, 3)), "27+27=54. 54+27=81.");
        assert_eq!(text(&by_doubling(12, 5)), "12+12=24. 24+24=48. 48+12=60.");
        assert_eq!(text(&by_place(30, 2)), "3*2=6. 6*10=60.");
    }

    #[test]
    fn untagged_text_is_the_blocks_reasoning_as_plain_lines_with_its_slips_in_place() {
        let mut tagged = Written::default();
        tagged.push("27*3=");
        tagged.push_slip(82);
        tagged.push(".\n<Parallel><Path>20*3=60. 7*3=21. 60+21=81.</Path><Path>27+27=54. 54+27=");
        tagged.push_slip(80);
        tagged.push(
            ".</Path></Parallel>\n<Summary>Two of three give 81.</Summary>\nFinal Answer: 81",
        );
        let plain = untagged(&tagged);
        assert_eq!(
            plain.text,
            "27*3=82.\n20*3=60. 7*3=21. 60+21=81.\n27+27=54. 54+27=80.\nTwo of three give 81.\nFinal Answer: 81"
        );
        let slips: Vec<&str> = plain.slips.iter().map(|r| &plain.text[r.clone()]).collect();
        assert_eq!(slips, ["82", "80"]);
    }

    #[test]
    fn every_route_of_every_check_is_arithmetic_that_holds() {
        let mut rng = StdRng::seed_from_u64(1);
        for a in 2..60 {
            for b in 2..=5 {
                for check in [Check::Product(a, b), Check::Sum(a + 10, 10 + b * 7)] {
                    for route in check.routes(&mut rng) {
                        assert_eq!(route.last().unwrap().1, check.value(), "{check:?}");
                    }
                }
            }
        }
    }
}
