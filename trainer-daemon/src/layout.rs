//! Where each token of a parallel-format sequence sits and what it may attend to, for the two
//! attention variants. Pure data, shared by training (full masks) and generation (one row at a
//! time), so that both use exactly the same positions and isolation.
//!
//! Unseen ("multiverse") rule: if `<Parallel>` sits at position p, every path of the block starts
//! at p+1 and counts up from there; `</Parallel>` takes one past the longest path's last token and
//! everything after continues from it. A token inside a path cannot attend to the tokens of the
//! block's other paths; everything after the block attends to all of them. Seen is plain causal
//! attention with positions 0, 1, 2, ...

use prl_schema::spec::Attention;

/// The token ids of the six tags in a vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagIds {
    pub open_parallel: i64,
    pub close_parallel: i64,
    pub open_path: i64,
    pub close_path: i64,
}

/// Positions and path membership of every token of one sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub positions: Vec<i64>,
    /// `(block, path)` for tokens inside a path (its tags included), `None` elsewhere.
    pub groups: Vec<Option<(u32, u32)>>,
}

impl Layout {
    pub fn new(tokens: &[i64], tags: TagIds, attention: Attention) -> Layout {
        match attention {
            Attention::Seen => Layout {
                positions: (0..tokens.len() as i64).collect(),
                groups: vec![None; tokens.len()],
            },
            Attention::Unseen => multiverse(tokens, tags),
        }
    }

    /// Whether query token `i` may attend to key token `j`.
    pub fn allowed(&self, i: usize, j: usize) -> bool {
        if j > i {
            return false;
        }
        match (self.groups[i], self.groups[j]) {
            (Some((bi, pi)), Some((bj, pj))) => bi != bj || pi == pj,
            _ => true,
        }
    }

    /// Writes this sequence's additive mask into `block` (row-major `width × width`, all
    /// `f32::NEG_INFINITY` before), for the sequence left-padded to `width`: padding queries see
    /// only themselves, so that no softmax row is empty.
    pub fn write_left_padded(&self, width: usize, block: &mut [f32]) {
        let off = width - self.positions.len();
        for i in 0..width {
            for j in 0..=i {
                let open = match (i.checked_sub(off), j.checked_sub(off)) {
                    (Some(qi), Some(kj)) => self.allowed(qi, kj),
                    (None, _) => i == j,
                    (Some(_), None) => false,
                };
                if open {
                    block[i * width + j] = 0.0;
                }
            }
        }
    }

    /// The additive mask, row-major `len × len`: 0 where allowed, `f32::NEG_INFINITY`-like
    /// `masked` elsewhere.
    pub fn additive_mask(&self, masked: f32) -> Vec<f32> {
        let n = self.positions.len();
        let mut out = vec![masked; n * n];
        for i in 0..n {
            for j in 0..=i {
                if self.allowed(i, j) {
                    out[i * n + j] = 0.0;
                }
            }
        }
        out
    }
}

struct Block {
    index: u32,
    /// Position of `<Parallel>`.
    at: i64,
    paths: u32,
    /// Length in tokens of the longest path so far, tags included.
    longest: i64,
    /// `(path, tokens so far)` of the open path.
    open: Option<(u32, i64)>,
}

fn multiverse(tokens: &[i64], tags: TagIds) -> Layout {
    let mut positions = Vec::with_capacity(tokens.len());
    let mut groups = Vec::with_capacity(tokens.len());
    let mut next = 0i64;
    let mut blocks = 0u32;
    let mut block: Option<Block> = None;
    for &token in tokens {
        match block.as_mut() {
            None => {
                positions.push(next);
                groups.push(None);
                if token == tags.open_parallel {
                    block = Some(Block {
                        index: blocks,
                        at: next,
                        paths: 0,
                        longest: 0,
                        open: None,
                    });
                    blocks += 1;
                }
                next += 1;
            }
            Some(b) => match b.open {
                Some((path, len)) => {
                    positions.push(b.at + 1 + len);
                    groups.push(Some((b.index, path)));
                    b.open = if token == tags.close_path {
                        None
                    } else {
                        Some((path, len + 1))
                    };
                    b.longest = b.longest.max(len + 1);
                }
                None if token == tags.open_path => {
                    positions.push(b.at + 1);
                    groups.push(Some((b.index, b.paths)));
                    b.open = Some((b.paths, 1));
                    b.paths += 1;
                    b.longest = b.longest.max(1);
                }
                None => {
                    // `</Parallel>`, or stray text between paths (malformed): after every path.
                    let at = b.at + 1 + b.longest;
                    positions.push(at);
                    groups.push(None);
                    if token == tags.close_parallel {
                        next = at + 1;
                        block = None;
                    } else {
                        b.longest += 1;
                    }
                }
            },
        }
    }
    Layout { positions, groups }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGS: TagIds = TagIds {
        open_parallel: 100,
        close_parallel: 101,
        open_path: 102,
        close_path: 103,
    };
    const P: i64 = 100;
    const EP: i64 = 101;
    const A: i64 = 102;
    const EA: i64 = 103;

    fn unseen(tokens: &[i64]) -> Layout {
        Layout::new(tokens, TAGS, Attention::Unseen)
    }

    /// The mask as rows of 1 (may attend) and 0.
    fn matrix(layout: &Layout) -> Vec<String> {
        let n = layout.positions.len();
        (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| if layout.allowed(i, j) { '1' } else { '0' })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn two_paths_share_positions_and_cannot_see_each_other() {
        // x <P> <A> a </A> <A> b </A> </P> y
        let layout = unseen(&[1, P, A, 2, EA, A, 3, EA, EP, 4]);
        assert_eq!(layout.positions, [0, 1, 2, 3, 4, 2, 3, 4, 5, 6]);
        assert_eq!(
            matrix(&layout),
            [
                "1000000000",
                "1100000000",
                "1110000000",
                "1111000000",
                "1111100000",
                "1100010000",
                "1100011000",
                "1100011100",
                "1111111110",
                "1111111111",
            ]
        );
    }

    #[test]
    fn three_paths_of_different_lengths_end_after_the_longest() {
        // <P> <A> a </A> <A> b b b </A> <A> c </A> </P> z
        let layout = unseen(&[P, A, 1, EA, A, 2, 2, 2, EA, A, 3, EA, EP, 9]);
        assert_eq!(layout.positions, [0, 1, 2, 3, 1, 2, 3, 4, 5, 1, 2, 3, 6, 7]);
        let third_path_start = 9;
        for j in 1..9 {
            assert!(
                !layout.allowed(third_path_start + 1, j),
                "path 3 sees token {j}"
            );
        }
        assert!(layout.allowed(third_path_start + 1, 0));
        assert!(
            (0..13).all(|j| layout.allowed(12, j)),
            "</Parallel> sees every path"
        );
    }

    #[test]
    fn two_blocks_count_on_from_where_the_first_ended() {
        // <P><A>a</A><A>b c</A></P> x <P><A>d</A><A>e</A></P>
        let layout = unseen(&[P, A, 1, EA, A, 2, 3, EA, EP, 7, P, A, 4, EA, A, 5, EA, EP]);
        assert_eq!(
            layout.positions,
            [0, 1, 2, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 8, 9, 10, 11]
        );
        // Paths of different blocks are not isolated from each other.
        assert!(layout.allowed(12, 2));
        assert!(!layout.allowed(15, 12));
        assert_eq!(layout.groups[12], Some((1, 0)));
    }

    #[test]
    fn seen_attention_is_plain_causal() {
        let layout = Layout::new(&[1, P, A, 2, EA, A, 3, EA, EP], TAGS, Attention::Seen);
        assert_eq!(layout.positions, (0..9).collect::<Vec<_>>());
        assert!(layout.allowed(6, 3));
        assert!(!layout.allowed(3, 6));
    }

    #[test]
    fn malformed_sequences_get_a_layout_without_panicking() {
        for tokens in [
            vec![P, A, 1],
            vec![EP, EA, A],
            vec![P, 5, A, 1, EA, 6, EP],
            vec![P, P, A, EA, EP, EP],
        ] {
            let layout = unseen(&tokens);
            assert_eq!(layout.positions.len(), tokens.len());
        }
    }
}
