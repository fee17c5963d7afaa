//! A built-in problem's story: a quantity that a chain of operations changes, told in words.

use super::Difficulty;
use rand::Rng;
use rand::rngs::StdRng;

const NAMES: &[&str] = &[
    "Mia", "Leo", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ivan", "Sara", "Tom",
];
const ITEMS: &[&str] = &[
    "apples", "marbles", "stickers", "books", "coins", "shells", "pencils", "cards",
];

/// One operation on the running total.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// Gets `n` groups of `k` more.
    AddGroups {
        n: i64,
        k: i64,
    },
    Add(i64),
    Sub(i64),
    /// Ends with `n` times as many.
    Times(i64),
    /// Gives away `give` if the total is above `limit`, else finds `find` more.
    Branch {
        limit: i64,
        give: i64,
        find: i64,
    },
}

impl Op {
    pub fn apply(self, total: i64) -> i64 {
        match self {
            Op::AddGroups { n, k } => total + n * k,
            Op::Add(a) => total + a,
            Op::Sub(s) => total - s,
            Op::Times(t) => total * t,
            Op::Branch { limit, give, find } => {
                if total > limit {
                    total - give
                } else {
                    total + find
                }
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Story {
    pub name: &'static str,
    pub item: &'static str,
    pub start: i64,
    pub ops: Vec<Op>,
}

impl Story {
    pub fn random(rng: &mut StdRng, difficulty: Difficulty) -> Story {
        let (steps, max) = match difficulty {
            Difficulty::Easy => (2, 15),
            Difficulty::Hard => (rng.random_range(3..=5), 40),
        };
        let start = rng.random_range(2..=max);
        let mut total = start;
        let mut ops = Vec::with_capacity(steps);
        for _ in 0..steps {
            let op = match rng.random_range(0..9) {
                0 | 1 => Op::AddGroups {
                    n: rng.random_range(2..=5),
                    k: rng.random_range(3..=max / 2 + 3),
                },
                2 | 3 => Op::Add(rng.random_range(3..=max)),
                4 if total > 5 => Op::Sub(rng.random_range(2..total - 1)),
                5 if total <= 60 => Op::Times(rng.random_range(2..=5)),
                6..=8 if total > 4 => {
                    // A limit near the total, never equal to it, so that the comparison matters.
                    let mut limit = total + rng.random_range(-9..=9);
                    if limit == total {
                        limit += 1;
                    }
                    let limit = limit.max(4);
                    Op::Branch {
                        limit,
                        give: rng.random_range(2..=limit.min(total) - 1),
                        find: rng.random_range(3..=max),
                    }
                }
                _ => Op::Add(rng.random_range(3..=max)),
            };
            total = op.apply(total);
            ops.push(op);
        }
        Story {
            name: NAMES[rng.random_range(0..NAMES.len())],
            item: ITEMS[rng.random_range(0..ITEMS.len())],
            start,
            ops,
        }
    }

    /// The running total before each operation, and the final one.
    pub fn totals(&self) -> Vec<i64> {
        let mut totals = vec![self.start];
        for op in &self.ops {
            totals.push(op.apply(*totals.last().expect("starts with one")));
        }
        totals
    }

    pub fn answer(&self) -> i64 {
        *self.totals().last().expect("starts with one")
    }

    pub fn question(&self) -> String {
        let (name, item) = (self.name, self.item);
        let mut question = format!("{name} has {} {item}.", self.start);
        for op in &self.ops {
            question.push(' ');
            question.push_str(&match *op {
                Op::AddGroups { n, k } => format!("{name} gets {n} boxes with {k} {item} each."),
                Op::Add(a) => format!("{name} finds {a} more {item}."),
                Op::Sub(s) => format!("{name} gives away {s} {item}."),
                Op::Times(t) => format!("Then {name} ends up with {t} times as many {item}."),
                Op::Branch { limit, give, find } => format!(
                    "If {name} has more than {limit} {item}, {name} gives away {give}; otherwise {name} finds {find} more."
                ),
            });
        }
        question.push_str(&format!(" How many {item} does {name} have now?"));
        question
    }
}
