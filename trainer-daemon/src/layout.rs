//! Where each token of a parallel-format sequence sits and what it may attend to, for the two
//! attention variants. Shared by training (whole sequences) and generation (a token at a time,
//! the layout growing with the sequence), so that both use exactly the same positions and
//! isolation; masks are built from it with tensor operations on the device.
//!
//! Unseen ("multiverse") rule: if `<Parallel>` sits at position p, every path of the block starts
//! at p+1 and counts up from there; `</Parallel>` takes one past the longest path's last token and
//! everything after continues from it. A token inside a path cannot attend to the tokens of the
//! block's other paths; everything after the block attends to all of them. Seen is plain causal
//! attention with positions 0, 1, 2, ...

use prl_schema::spec::Attention;
use tch::{Device, Kind, Tensor};

/// The token ids of the six tags in a vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagIds {
    pub open_parallel: i64,
    pub close_parallel: i64,
    pub open_path: i64,
    pub close_path: i64,
}

/// Positions and path membership of every token of one sequence, extended a token at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub positions: Vec<i64>,
    /// `(block, path)` for tokens inside a path (its tags included), `None` elsewhere.
    pub groups: Vec<Option<(u32, u32)>>,
    tags: TagIds,
    attention: Attention,
    /// Position of the next token outside a block.
    next: i64,
    blocks: u32,
    block: Option<Block>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
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

impl Layout {
    pub fn new(tokens: &[i64], tags: TagIds, attention: Attention) -> Layout {
        let mut layout = Layout {
            positions: Vec::with_capacity(tokens.len()),
            groups: Vec::with_capacity(tokens.len()),
            tags,
            attention,
            next: 0,
            blocks: 0,
            block: None,
        };
        for &token in tokens {
            layout.push(token);
        }
        layout
    }

    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Lays out one more token, in constant time.
    pub fn push(&mut self, token: i64) {
        let (position, group) = match self.attention {
            Attention::Seen => (self.positions.len() as i64, None),
            Attention::Unseen => self.place(token),
        };
        self.positions.push(position);
        self.groups.push(group);
    }

    fn place(&mut self, token: i64) -> (i64, Option<(u32, u32)>) {
        let tags = self.tags;
        let Some(b) = self.block.as_mut() else {
            let at = self.next;
            self.next += 1;
            if token == tags.open_parallel {
                self.block = Some(Block {
                    index: self.blocks,
                    at,
                    paths: 0,
                    longest: 0,
                    open: None,
                });
                self.blocks += 1;
            }
            return (at, None);
        };
        match b.open {
            Some((path, len)) => {
                b.open = (token != tags.close_path).then_some((path, len + 1));
                b.longest = b.longest.max(len + 1);
                (b.at + 1 + len, Some((b.index, path)))
            }
            None if token == tags.open_path => {
                let path = b.paths;
                b.open = Some((path, 1));
                b.paths += 1;
                b.longest = b.longest.max(1);
                (b.at + 1, Some((b.index, path)))
            }
            None => {
                // `</Parallel>`, or stray text between paths (malformed): after every path.
                let at = b.at + 1 + b.longest;
                if token == tags.close_parallel {
                    self.next = at + 1;
                    self.block = None;
                } else {
                    b.longest += 1;
                }
                (at, None)
            }
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

    /// Token `i`'s group as the codes masks are built from: `(block, path)`, `OUTSIDE` when it
    /// is in no path.
    pub fn code(&self, i: usize) -> (i64, i64) {
        self.groups[i].map_or(OUTSIDE, |(b, p)| (b as i64, p as i64))
    }
}

/// The group code of a token in no path.
pub const OUTSIDE: (i64, i64) = (-1, -1);
/// The group code of padding: it attends to itself only, and nothing attends to it.
pub const PADDING: (i64, i64) = (-2, -2);

/// Group codes of a (rows, columns) grid of tokens, filled on the host, all `PADDING` at first.
pub struct GroupCodes {
    columns: usize,
    block: Vec<i64>,
    path: Vec<i64>,
}

impl GroupCodes {
    pub fn padding(rows: usize, columns: usize) -> Self {
        GroupCodes {
            columns,
            block: vec![PADDING.0; rows * columns],
            path: vec![PADDING.1; rows * columns],
        }
    }

    pub fn set(&mut self, row: usize, column: usize, (block, path): (i64, i64)) {
        debug_assert!(column < self.columns, "column {column} of {}", self.columns);
        self.block[row * self.columns + column] = block;
        self.path[row * self.columns + column] = path;
    }

    /// Writes `layout`'s codes into `row` from `column` on.
    pub fn write(&mut self, row: usize, column: usize, layout: &Layout) {
        for i in 0..layout.len() {
            self.set(row, column + i, layout.code(i));
        }
    }

    pub fn to_device(&self, device: Device) -> Groups {
        let shape = [
            (self.block.len() / self.columns.max(1)) as i64,
            self.columns as i64,
        ];
        Groups {
            block: Tensor::from_slice(&self.block).view(shape).to(device),
            path: Tensor::from_slice(&self.path).view(shape).to(device),
        }
    }
}

/// Group codes on the device, (B, L) each.
#[derive(Debug)]
pub struct Groups {
    pub block: Tensor,
    pub path: Tensor,
}

/// The group codes of a KV cache's columns, in (B, capacity) buffers that a decoding step extends
/// in place (appending by concatenation would copy every column each step).
#[derive(Debug)]
pub struct CachedGroups {
    buffers: Groups,
    len: i64,
}

impl CachedGroups {
    pub fn new(groups: Groups) -> Self {
        let len = groups.block.size2().expect("(B, L) groups").1;
        CachedGroups {
            buffers: groups,
            len,
        }
    }

    /// Appends `column`, (B, 1), and returns the codes of every column so far: views of the
    /// buffers.
    pub fn push(&mut self, column: &Groups) -> Groups {
        let capacity = self.buffers.block.size()[1];
        if self.len == capacity {
            let grown = capacity + capacity / 2 + 16;
            for buffer in [&mut self.buffers.block, &mut self.buffers.path] {
                let rows = buffer.size()[0];
                let fresh = Tensor::full([rows, grown], PADDING.0, (Kind::Int64, buffer.device()));
                fresh.narrow(1, 0, self.len).copy_(buffer);
                *buffer = fresh;
            }
        }
        self.buffers
            .block
            .narrow(1, self.len, 1)
            .copy_(&column.block);
        self.buffers.path.narrow(1, self.len, 1).copy_(&column.path);
        self.len += 1;
        Groups {
            block: self.buffers.block.narrow(1, 0, self.len),
            path: self.buffers.path.narrow(1, 0, self.len),
        }
    }
}

/// The additive attention mask (B, 1, Q, K), float 0 or -inf, of queries that are the last Q of
/// K keys (a whole sequence when Q = K, one new token when Q = 1). A query sees the keys up to
/// itself except those in another path of its own block; padding sees only itself and is seen by
/// nothing, so that no softmax row is empty.
pub fn attention_mask(queries: &Groups, keys: &Groups) -> Tensor {
    let q = queries.block.size2().expect("(B, Q) query groups").1;
    let k = keys.block.size2().expect("(B, K) key groups").1;
    let device = queries.block.device();
    let (qb, qp) = (queries.block.unsqueeze(2), queries.path.unsqueeze(2));
    let (kb, kp) = (keys.block.unsqueeze(1), keys.path.unsqueeze(1));
    // In place where it can be: at decoding time this runs every step over every cached column.
    let mut allowed = kb.not_equal_tensor(&qb);
    let _ = allowed.logical_or_(&kp.eq_tensor(&qp));
    let _ = allowed.logical_and_(&kb.not_equal(PADDING.0));
    let _ = allowed.logical_and_(&qb.not_equal(PADDING.0));
    if q == 1 {
        // One new token: every key is at or before it, and it is the last.
        let _ = allowed.narrow(2, k - 1, 1).fill_(1);
    } else {
        let key_column = Tensor::arange(k, (Kind::Int64, device)).view([1, 1, k]);
        let query_column = (Tensor::arange(q, (Kind::Int64, device)) + (k - q)).view([1, q, 1]);
        let _ = allowed.logical_and_(&key_column.le_tensor(&query_column));
        let _ = allowed.logical_or_(&key_column.eq_tensor(&query_column));
    }
    // Scalars make a float32 (the default dtype) result.
    Tensor::where_scalar(&allowed.unsqueeze(1), 0.0, f64::NEG_INFINITY)
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
    fn device_masks_agree_with_the_layout_for_either_padding_and_for_one_new_token() {
        let a = unseen(&[1, P, A, 2, EA, A, 3, 3, EA, EP, 4]);
        let b = unseen(&[P, A, 5, EA, A, 6, EA]);
        let width = a.len() + 2;
        for left in [false, true] {
            let offsets = [a.len(), b.len()].map(|n| if left { width - n } else { 0 });
            let mut codes = GroupCodes::padding(2, width);
            codes.write(0, offsets[0], &a);
            codes.write(1, offsets[1], &b);
            let groups = codes.to_device(Device::Cpu);
            let mask = attention_mask(&groups, &groups);
            for (row, layout) in [&a, &b].into_iter().enumerate() {
                let token = |c: usize| c.checked_sub(offsets[row]).filter(|&t| t < layout.len());
                for i in 0..width {
                    for j in 0..width {
                        let expected = match (token(i), token(j)) {
                            (Some(qi), Some(kj)) => layout.allowed(qi, kj),
                            (None, _) => i == j,
                            (Some(_), None) => false,
                        };
                        let open = mask.double_value(&[row as i64, 0, i as i64, j as i64]) == 0.0;
                        assert_eq!(open, expected, "row {row}, query {i}, key {j}, left {left}");
                    }
                }
            }
            // The last column alone as the query: the last row of the whole mask.
            let last = Groups {
                block: groups.block.narrow(1, width as i64 - 1, 1),
                path: groups.path.narrow(1, width as i64 - 1, 1),
            };
            let one = attention_mask(&last, &groups);
            assert!(one.equal(&mask.narrow(2, width as i64 - 1, 1)));
        }
    }

    #[test]
    fn a_layout_extended_a_token_at_a_time_from_a_copy_is_the_whole_sequences_layout() {
        // A path lane starts from a copy of its main lane's layout at `<Parallel>`.
        let main = unseen(&[1, P]);
        let mut path = main.clone();
        for token in [A, 2, 2, EA] {
            path.push(token);
        }
        assert_eq!(path, unseen(&[1, P, A, 2, 2, EA]));
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
