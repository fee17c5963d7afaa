//! The rollout engine: batched decoding with a KV cache, temperature and top-p sampling, and
//! parallel blocks shaped the way the method generates them.
//!
//! Every sequence in flight is a *lane* with a row of the batch cache. A request's main lane
//! decodes until it emits `<Parallel>`. Then:
//! - **Unseen**: the main lane forks `paths` path lanes. Each starts from a copy of the prefix's
//!   cached keys and values (the prefix is never computed again), begins with a forced `<Path>`
//!   and decodes side by side with every other lane in the batch, with the block's multiverse
//!   positions. A path that reaches its budget, or ends the sequence, gets `</Path>` forced. When
//!   all paths are closed their cached keys and values are gathered into the main lane, which is
//!   exactly the cache the Unseen layout gives the merged text, because an Unseen path sees only
//!   the prefix and itself.
//! - **Seen**: a later path attends to the earlier ones, so the paths cannot be decoded side by
//!   side without sampling them from another distribution than the one Seen trains; the main lane
//!   decodes them one after another, with the same controller (forced `<Path>`, budgets).
//!
//! Either way the controller then appends `</Parallel>`, a newline and `<Summary>`, and the main
//! lane decodes the summary and carries on. Positions and masks always come from the layout that
//! training uses, so generation and training agree. Tokens the controller inserted are flagged so
//! that RL leaves them out of the loss.

use crate::layout::{self, CachedGroups, GroupCodes, Layout, TagIds};
use crate::model::{CausalLm, KvCache};
use crate::sampling::Sampler;
use prl_schema::spec::{Attention, RolloutMode, StageSpec};
use std::collections::{HashMap, VecDeque};
use tch::{Device, Tensor};

/// The token ids decoding needs besides the model.
#[derive(Clone, Debug)]
pub struct Controls {
    pub tags: TagIds,
    pub open_summary: i64,
    pub eos: i64,
    pub pad: i64,
    /// What goes between `</Parallel>` and `<Summary>`.
    pub newline: Vec<i64>,
}

#[derive(Clone, Debug)]
pub struct RolloutConfig {
    pub attention: Attention,
    pub mode: RolloutMode,
    /// Paths per block.
    pub paths: usize,
    /// Tokens a path may take before `</Path>` is forced.
    pub path_budget: usize,
    /// Blocks a response may open; `<Parallel>` cannot be sampled after that.
    pub max_blocks: usize,
    /// The response's length budget: main text, paths and summaries together.
    pub max_new_tokens: usize,
    pub sampler: Sampler,
}

impl RolloutConfig {
    /// The decoding settings of an RL or eval stage; None for SFT, which does not decode.
    pub fn for_stage(stage: &StageSpec) -> Option<RolloutConfig> {
        let (attention, mode, paths, path_budget, max_blocks, max_new_tokens, temperature, top_p) =
            match stage {
                StageSpec::Rl(s) => (
                    s.attention,
                    s.mode,
                    s.paths,
                    s.max_path_tokens,
                    s.max_blocks,
                    s.max_response_tokens,
                    s.temperature,
                    s.top_p,
                ),
                StageSpec::Eval(s) => (
                    s.attention,
                    s.mode,
                    s.paths,
                    s.max_path_tokens,
                    s.max_blocks,
                    s.max_response_tokens,
                    s.temperature,
                    s.top_p,
                ),
                StageSpec::Sft(_) => return None,
            };
        Some(RolloutConfig {
            attention,
            mode,
            paths: paths.get() as usize,
            path_budget: path_budget.get() as usize,
            max_blocks: max_blocks as usize,
            max_new_tokens: max_new_tokens.get() as usize,
            sampler: Sampler {
                temperature: temperature.get(),
                top_p: top_p.get(),
            },
        })
    }
}

/// One generated response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rollout {
    /// The response in reading order, ending with end-of-sequence when it ended by itself.
    pub tokens: Vec<i64>,
    /// Whether the controller inserted each token rather than the model sampling it.
    pub forced: Vec<bool>,
    /// Whether `<Parallel>` was banned when each token was sampled (a path, a block cap, a
    /// sequential rollout), so that training reads the distribution that sampled it.
    pub banned: Vec<bool>,
    /// It reached the length budget before ending.
    pub clipped: bool,
}

impl Rollout {
    /// The response without its end-of-sequence token.
    pub fn text_tokens(&self, eos: i64) -> &[i64] {
        match self.tokens.last() {
            Some(&last) if last == eos => &self.tokens[..self.tokens.len() - 1],
            _ => &self.tokens,
        }
    }
}

/// Generates one response per prompt.
pub fn rollout(
    model: &CausalLm,
    prompts: &[Vec<i64>],
    controls: &Controls,
    config: &RolloutConfig,
    device: Device,
) -> Vec<Rollout> {
    tch::no_grad(|| Engine::new(model, prompts, controls, config, device).run())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Main,
    /// Path `index` of the block its request opened.
    Path {
        index: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Status {
    /// Feeds `next` in the coming forward pass.
    Active,
    /// A main lane whose paths are decoding (Unseen), or a path that has closed.
    Waiting,
    Done,
}

struct Lane {
    request: usize,
    role: Role,
    /// The tokens this lane attends over: prompt and response for a main lane; the prefix up to
    /// its block's `<Parallel>` and then the path for a path lane.
    seq: Vec<i64>,
    /// The layout of `seq`, extended with it.
    layout: Layout,
    /// Whether each token of `seq` was forced.
    forced: Vec<bool>,
    /// Whether `<Parallel>` was banned when each token of `seq` was sampled.
    banned: Vec<bool>,
    /// The cache column of each token of `seq` already fed (all but `next`).
    cols: Vec<usize>,
    row: usize,
    status: Status,
    next: i64,
    next_forced: bool,
    next_banned: bool,
    shaper: Shaper,
    /// Tokens a path may still take.
    budget: usize,
}

struct Request {
    prompt_len: usize,
    blocks: usize,
    clipped: bool,
    done: bool,
}

struct Engine<'a> {
    model: &'a CausalLm,
    c: &'a Controls,
    config: &'a RolloutConfig,
    device: Device,
    cache: KvCache,
    /// Columns of the cache.
    width: usize,
    /// The group code of every cached (row, column), the masks' input: `PADDING` where the
    /// column holds none of its row's lane's tokens.
    keys: Option<CachedGroups>,
    lanes: Vec<Lane>,
    requests: Vec<Request>,
    /// Decoding steps since a block first waited to fork or merge; None while none waits.
    deferred: Option<usize>,
}

impl<'a> Engine<'a> {
    fn new(
        model: &'a CausalLm,
        prompts: &[Vec<i64>],
        c: &'a Controls,
        config: &'a RolloutConfig,
        device: Device,
    ) -> Self {
        let lanes = prompts
            .iter()
            .enumerate()
            .map(|(i, prompt)| Lane {
                request: i,
                role: Role::Main,
                seq: prompt.clone(),
                layout: Layout::new(prompt, c.tags, config.attention),
                forced: vec![false; prompt.len()],
                banned: vec![false; prompt.len()],
                cols: Vec::new(),
                row: i,
                status: Status::Active,
                next: c.pad,
                next_forced: false,
                next_banned: false,
                shaper: Shaper::default(),
                budget: 0,
            })
            .collect();
        let requests = prompts
            .iter()
            .map(|p| Request {
                prompt_len: p.len(),
                blocks: 0,
                clipped: false,
                done: false,
            })
            .collect();
        Engine {
            model,
            c,
            config,
            device,
            cache: model.new_cache(),
            width: 0,
            keys: None,
            lanes,
            requests,
            deferred: None,
        }
    }

    fn run(mut self) -> Vec<Rollout> {
        let logits = self.prefill();
        self.choose_next(&logits);
        while self.requests.iter().any(|r| !r.done) {
            let logits = self.decode_step();
            self.choose_next(&logits);
            self.restructure();
        }
        let mut out = vec![Rollout::default(); self.requests.len()];
        for lane in self.lanes.iter().filter(|l| l.role == Role::Main) {
            let start = self.requests[lane.request].prompt_len;
            out[lane.request] = Rollout {
                tokens: lane.seq[start..].to_vec(),
                forced: lane.forced[start..].to_vec(),
                banned: lane.banned[start..].to_vec(),
                clipped: self.requests[lane.request].clipped,
            };
        }
        out
    }

    /// Runs each distinct prompt once (RL and evaluation sample several responses per prompt),
    /// left-padded so that every row's next token lands in the same column, then gives each lane
    /// a row of the cache holding its prompt.
    fn prefill(&mut self) -> Tensor {
        let width = self.lanes.iter().map(|l| l.seq.len()).max().unwrap_or(1);
        let mut firsts: Vec<usize> = Vec::new();
        let prompt_rows: Vec<usize> = {
            let mut distinct: HashMap<&[i64], usize> = HashMap::new();
            (self.lanes.iter().enumerate())
                .map(|(i, lane)| {
                    *distinct.entry(&lane.seq).or_insert_with(|| {
                        firsts.push(i);
                        firsts.len() - 1
                    })
                })
                .collect()
        };
        let b = firsts.len();
        let mut ids = vec![self.c.pad; b * width];
        let mut positions = vec![0i64; b * width];
        let mut codes = GroupCodes::padding(b, width);
        for (row, &first) in firsts.iter().enumerate() {
            let lane = &self.lanes[first];
            let off = width - lane.seq.len();
            ids[row * width + off..(row + 1) * width].copy_from_slice(&lane.seq);
            positions[row * width + off..(row + 1) * width].copy_from_slice(&lane.layout.positions);
            codes.write(row, off, &lane.layout);
        }
        let groups = codes.to_device(self.device);
        let mut sources = Vec::with_capacity(self.lanes.len());
        for (lane, &row) in self.lanes.iter_mut().zip(&prompt_rows) {
            lane.cols = (width - lane.seq.len()..width).collect();
            lane.row = sources.len();
            sources.push(lane.cols.iter().map(|&c| (row, c)).collect::<Vec<_>>());
            // The prompt may already be inside a block (a continuation): follow it.
            if self.config.mode == RolloutMode::Parallel {
                for &token in &lane.seq {
                    lane.shaper.observe(token, self.c, self.config);
                }
            }
        }
        self.width = width;
        let (bi, wi) = (b as i64, width as i64);
        let logits = self.model.forward_cached(
            &Tensor::from_slice(&ids).view([bi, wi]).to(self.device),
            &Tensor::from_slice(&positions)
                .view([bi, wi])
                .to(self.device),
            Some(&layout::attention_mask(&groups, &groups)),
            &mut self.cache,
        );
        if b == self.lanes.len() {
            self.keys = Some(CachedGroups::new(groups));
            return logits;
        }
        self.cache.gather(&sources, width);
        self.keys = Some(self.key_groups());
        let rows: Vec<i64> = prompt_rows.iter().map(|&r| r as i64).collect();
        logits.index_select(0, &Tensor::from_slice(&rows).to(self.device))
    }

    /// Feeds every active lane's `next` token; idle rows feed padding that nothing will see.
    /// The host does constant work per lane: the mask comes from the cached columns' group codes
    /// on the device.
    fn decode_step(&mut self) -> Tensor {
        let rows = self.cache.rows();
        let mut ids = vec![self.c.pad; rows];
        let mut positions = vec![0i64; rows];
        let mut codes = GroupCodes::padding(rows, 1);
        let width = self.width;
        for lane in self.lanes.iter_mut().filter(|l| l.status == Status::Active) {
            lane.seq.push(lane.next);
            lane.layout.push(lane.next);
            lane.forced.push(lane.next_forced);
            lane.banned.push(lane.next_banned);
            lane.cols.push(width);
            let me = lane.seq.len() - 1;
            ids[lane.row] = lane.next;
            positions[lane.row] = lane.layout.positions[me];
            codes.set(lane.row, 0, lane.layout.code(me));
        }
        let fed = codes.to_device(self.device);
        let keys = self.keys.as_mut().expect("prefilled").push(&fed);
        let mask = layout::attention_mask(&fed, &keys);
        self.width += 1;
        let r = rows as i64;
        self.model.forward_cached(
            &Tensor::from_slice(&ids).view([r, 1]).to(self.device),
            &Tensor::from_slice(&positions).view([r, 1]).to(self.device),
            Some(&mask),
            &mut self.cache,
        )
    }

    /// The group codes of the cache from the lanes' layouts, after its rows were rebuilt.
    fn key_groups(&self) -> CachedGroups {
        let mut codes = GroupCodes::padding(self.cache.rows(), self.width);
        for lane in self.lanes.iter().filter(|l| l.row != usize::MAX) {
            for (token, &col) in lane.cols.iter().enumerate() {
                codes.set(lane.row, col, lane.layout.code(token));
            }
        }
        CachedGroups::new(codes.to_device(self.device))
    }

    /// After a forward pass: what each active lane feeds next, and what its last token means.
    fn choose_next(&mut self, logits: &Tensor) {
        let tags = self.c.tags;
        // Rows that may not open a block now.
        let bans: Vec<f32> = {
            let mut bans = vec![0f32; self.cache.rows()];
            for lane in self.lanes.iter().filter(|l| l.status == Status::Active) {
                let request = &self.requests[lane.request];
                let length = lane.seq.len() - request.prompt_len;
                let banned = self.config.mode == RolloutMode::Sequential
                    || matches!(lane.role, Role::Path { .. })
                    || lane.shaper.state != Place::Main
                    || request.blocks >= self.config.max_blocks
                    || !block_fits(self.config, length);
                if banned {
                    bans[lane.row] = f32::NEG_INFINITY;
                }
            }
            bans
        };
        let sampled = self
            .config
            .sampler
            .sample(logits, &bans, tags.open_parallel);
        let fork_unseen =
            self.config.attention == Attention::Unseen && self.config.mode == RolloutMode::Parallel;
        for i in 0..self.lanes.len() {
            if self.lanes[i].status != Status::Active {
                continue;
            }
            let (request, role, row) =
                (self.lanes[i].request, self.lanes[i].role, self.lanes[i].row);
            let last = *self.lanes[i].seq.last().expect("lanes are never empty");
            let fed_response = self.lanes[i].seq.len() > self.requests[request].prompt_len;
            let lane = &mut self.lanes[i];
            match role {
                Role::Main => {
                    if fed_response && last == self.c.eos {
                        lane.status = Status::Done;
                        self.requests[request].done = true;
                        continue;
                    }
                    if fed_response && last == tags.open_parallel {
                        self.requests[request].blocks += 1;
                        if fork_unseen {
                            lane.status = Status::Waiting;
                            continue;
                        }
                    }
                    let length = lane.seq.len() - self.requests[request].prompt_len;
                    if fed_response && self.config.mode == RolloutMode::Parallel {
                        lane.shaper.after(last, self.c, self.config);
                        if last == tags.open_parallel {
                            lane.shaper.budget = path_budget(self.config, length);
                        }
                    }
                    if length >= self.config.max_new_tokens {
                        lane.status = Status::Done;
                        self.requests[request].done = true;
                        self.requests[request].clipped = true;
                        continue;
                    }
                    let in_path = matches!(lane.shaper.state, Place::InPath { .. });
                    let (next, forced) = match lane.shaper.forced.pop_front() {
                        Some(t) => (t, true),
                        // A path does not end the sequence: it is closed instead.
                        None if in_path && sampled[row] == self.c.eos => (tags.close_path, true),
                        None => (sampled[row], false),
                    };
                    lane.next = next;
                    lane.next_forced = forced;
                    lane.next_banned = bans[row] != 0.0;
                }
                Role::Path { .. } => {
                    if last == tags.close_path {
                        lane.status = Status::Waiting;
                        continue;
                    }
                    lane.budget = lane.budget.saturating_sub(1);
                    // A path that would end the sequence, or runs out of budget, is closed.
                    let (next, forced) = if lane.budget <= 1 || sampled[row] == self.c.eos {
                        (tags.close_path, true)
                    } else {
                        (sampled[row], false)
                    };
                    lane.next = next;
                    lane.next_forced = forced;
                    lane.next_banned = bans[row] != 0.0;
                }
            }
        }
    }

    /// Forks the blocks that opened, merges those whose paths have all closed, and drops finished
    /// lanes, in one gather of the cache: when a block is ready (see below), or when finished
    /// lanes hold an eighth of the rows, which every forward pass computes until they are dropped.
    fn restructure(&mut self) {
        let forking: Vec<usize> = (0..self.lanes.len())
            .filter(|&i| {
                let l = &self.lanes[i];
                l.role == Role::Main
                    && l.status == Status::Waiting
                    && !self
                        .lanes
                        .iter()
                        .any(|p| p.request == l.request && matches!(p.role, Role::Path { .. }))
            })
            .collect();
        let merging: Vec<usize> = (0..self.lanes.len())
            .filter(|&i| {
                let l = &self.lanes[i];
                let mut paths = self
                    .lanes
                    .iter()
                    .filter(|p| p.request == l.request && matches!(p.role, Role::Path { .. }));
                l.role == Role::Main
                    && l.status == Status::Waiting
                    && paths.clone().next().is_some()
                    && paths.all(|p| p.status == Status::Waiting)
            })
            .collect();
        let finished = (self.lanes.iter())
            .filter(|l| l.status == Status::Done && l.row != usize::MAX)
            .count();
        let compacting = finished * 8 >= self.cache.rows() && self.requests.iter().any(|r| !r.done);
        if forking.is_empty() && merging.is_empty() && !compacting {
            return;
        }
        // A gather copies the whole cache, so blocks wait to fork or merge together: until they
        // are an eighth of the lanes still decoding, or the first has waited a few steps. Waiting
        // changes no token, only when a lane decodes.
        let active = self
            .lanes
            .iter()
            .filter(|l| l.status == Status::Active)
            .count();
        let waited = self.deferred.map_or(0, |d| d + 1);
        if !compacting
            && (forking.len() + merging.len()) * 8 < active
            && waited < MAX_DEFERRED_STEPS
        {
            self.deferred = Some(waited);
            return;
        }
        self.deferred = None;
        // The lanes that keep a row, with where their cached tokens are now: (row, column) pairs.
        let mut next_lanes: Vec<(Lane, Vec<(usize, usize)>)> = Vec::new();
        let mut lanes = std::mem::take(&mut self.lanes);
        let sources = |l: &Lane| l.cols.iter().map(|&c| (l.row, c)).collect::<Vec<_>>();
        for i in merging {
            let request = lanes[i].request;
            let mut paths: Vec<&Lane> = lanes
                .iter()
                .filter(|p| p.request == request && matches!(p.role, Role::Path { .. }))
                .collect();
            paths.sort_by_key(|p| match p.role {
                Role::Path { index } => index,
                Role::Main => 0,
            });
            let prefix = lanes[i].seq.len();
            // The prefix from the first path's copy of it, then every path's own tokens.
            let mut srcs: Vec<(usize, usize)> = sources(paths[0])[..prefix].to_vec();
            let (mut seq, mut forced, mut banned) = (Vec::new(), Vec::new(), Vec::new());
            for p in &paths {
                seq.extend_from_slice(&p.seq[prefix..]);
                forced.extend_from_slice(&p.forced[prefix..]);
                banned.extend_from_slice(&p.banned[prefix..]);
                srcs.extend(p.cols[prefix..].iter().map(|&c| (p.row, c)));
            }
            let main = &mut lanes[i];
            for &token in &seq {
                main.layout.push(token);
            }
            main.seq.extend(seq);
            main.forced.extend(forced);
            main.banned.extend(banned);
            main.shaper.state = Place::Closing;
            main.shaper.forced.push_back(self.c.tags.close_parallel);
            main.shaper.forced.extend(&self.c.newline);
            main.shaper.forced.push_back(self.c.open_summary);
            main.status = Status::Active;
            main.next = main.shaper.forced.pop_front().expect("just queued");
            main.next_forced = true;
            let placeholder = self.placeholder();
            next_lanes.push((std::mem::replace(main, placeholder), srcs));
            for lane in lanes.iter_mut() {
                if lane.request == request && matches!(lane.role, Role::Path { .. }) {
                    lane.status = Status::Done;
                }
            }
        }
        for &i in &forking {
            let main = &lanes[i];
            let length = main.seq.len() - self.requests[main.request].prompt_len;
            let budget = path_budget(self.config, length);
            for index in 0..self.config.paths {
                let path = Lane {
                    request: main.request,
                    role: Role::Path { index },
                    seq: main.seq.clone(),
                    layout: main.layout.clone(),
                    forced: main.forced.clone(),
                    banned: main.banned.clone(),
                    cols: main.cols.clone(),
                    row: main.row,
                    status: Status::Active,
                    next: self.c.tags.open_path,
                    next_forced: true,
                    next_banned: false,
                    shaper: Shaper::default(),
                    budget,
                };
                let srcs = sources(&path);
                next_lanes.push((path, srcs));
            }
        }
        // Finished and waiting main lanes keep no row: a waiting one's prefix lives in its paths.
        let mut rowless = Vec::new();
        for lane in lanes {
            match (lane.role, lane.status) {
                _ if lane.request == usize::MAX => {}
                (Role::Path { .. }, Status::Done) => {}
                (Role::Main, Status::Waiting | Status::Done) => rowless.push(lane),
                _ => {
                    let srcs = sources(&lane);
                    next_lanes.push((lane, srcs));
                }
            }
        }
        self.gather(&mut next_lanes);
        self.lanes = next_lanes.into_iter().map(|(l, _)| l).collect();
        for mut lane in rowless {
            lane.row = usize::MAX;
            lane.cols.clear();
            self.lanes.push(lane);
        }
        self.keys = Some(self.key_groups());
    }
}

/// The most decoding steps a block waits to fork or merge (see `restructure`).
const MAX_DEFERRED_STEPS: usize = 8;

/// Whether a block opened after `length` response tokens fits in the length budget with at least
/// one token per path.
fn block_fits(config: &RolloutConfig, length: usize) -> bool {
    length + 4 + 3 * config.paths <= config.max_new_tokens
}

impl Engine<'_> {
    /// Rebuilds the cache with a row per lane of `lanes`, holding the keys and values of the
    /// (row, column) sources given for it, left-padded; updates the lanes' rows and columns.
    fn gather(&mut self, lanes: &mut [(Lane, Vec<(usize, usize)>)]) {
        let width = lanes.iter().map(|(_, s)| s.len()).max().unwrap_or(1).max(1);
        for (row, (lane, srcs)) in lanes.iter_mut().enumerate() {
            lane.row = row;
            lane.cols = (width - srcs.len()..width).collect();
        }
        let sources: Vec<Vec<(usize, usize)>> =
            lanes.iter_mut().map(|(_, s)| std::mem::take(s)).collect();
        self.cache.gather(&sources, width);
        self.width = width;
    }
}

/// The tokens each path of a block opened at response length `length` may take, tags included:
/// the configured budget, cut so that the paths fit in what is left of the response's budget
/// after the closing tags.
fn path_budget(config: &RolloutConfig, length: usize) -> usize {
    let left = config.max_new_tokens.saturating_sub(length + 3);
    config.path_budget.min(left / config.paths).max(3)
}

impl Engine<'_> {
    /// What a lane moved out of the lane list leaves behind until the list is rebuilt.
    fn placeholder(&self) -> Lane {
        Lane {
            request: usize::MAX,
            role: Role::Main,
            seq: Vec::new(),
            layout: Layout::new(&[], self.c.tags, self.config.attention),
            forced: Vec::new(),
            banned: Vec::new(),
            cols: Vec::new(),
            row: usize::MAX,
            status: Status::Done,
            next: 0,
            next_forced: false,
            next_banned: false,
            shaper: Shaper::default(),
            budget: 0,
        }
    }
}

/// The in-lane block controller: after `<Parallel>` it opens the paths one after another, forces
/// `</Path>` at the budget, and closes with `</Parallel>`, a newline and `<Summary>`.
#[derive(Default)]
struct Shaper {
    state: Place,
    forced: VecDeque<i64>,
    /// Tokens each path of the current block may take, tags included.
    budget: usize,
}

#[derive(Default, Clone, Copy, PartialEq, Debug)]
enum Place {
    #[default]
    Main,
    /// In a block, `done` paths finished, the next one not yet opened.
    Between {
        done: usize,
    },
    InPath {
        done: usize,
        len: usize,
    },
    /// After `</Parallel>`, until `<Summary>` has been emitted.
    Closing,
}

impl Shaper {
    /// Follows a token the controller did not choose (the prompt's): a queued token it does not
    /// match is dropped.
    fn observe(&mut self, token: i64, c: &Controls, config: &RolloutConfig) {
        if self.forced.front() == Some(&token) {
            self.forced.pop_front();
        } else {
            self.forced.clear();
        }
        self.after(token, c, config);
    }

    /// Updates the place after `token` and queues what must follow it.
    fn after(&mut self, token: i64, c: &Controls, config: &RolloutConfig) {
        let tags = c.tags;
        self.state = match self.state {
            Place::Main if token == tags.open_parallel => {
                self.budget = config.path_budget;
                self.forced.push_back(tags.open_path);
                Place::Between { done: 0 }
            }
            Place::Between { done } if token == tags.open_path => Place::InPath { done, len: 0 },
            Place::InPath { done, .. } if token == tags.close_path => {
                if done + 1 < config.paths {
                    self.forced.push_back(tags.open_path);
                    Place::Between { done: done + 1 }
                } else {
                    self.forced.push_back(tags.close_parallel);
                    self.forced.extend(&c.newline);
                    self.forced.push_back(c.open_summary);
                    Place::Closing
                }
            }
            Place::InPath { done, len } => {
                if len + 3 >= self.budget && self.forced.is_empty() {
                    self.forced.push_back(tags.close_path);
                }
                Place::InPath { done, len: len + 1 }
            }
            Place::Closing if token == c.open_summary => Place::Main,
            other => other,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controls() -> Controls {
        Controls {
            tags: TagIds {
                open_parallel: 3,
                close_parallel: 4,
                open_path: 5,
                close_path: 6,
            },
            open_summary: 7,
            eos: 1,
            pad: 0,
            newline: vec![2],
        }
    }

    fn config(paths: usize, path_budget: usize) -> RolloutConfig {
        RolloutConfig {
            attention: Attention::Seen,
            mode: RolloutMode::Parallel,
            paths,
            path_budget,
            max_blocks: 4,
            max_new_tokens: 100,
            sampler: Sampler {
                temperature: 0.0,
                top_p: 1.0,
            },
        }
    }

    /// What the in-lane controller emits when the model would always say `proposal`.
    fn drive(prompt: &[i64], proposal: i64, config: &RolloutConfig, steps: usize) -> Vec<i64> {
        let c = controls();
        let mut shaper = Shaper::default();
        for &t in prompt {
            shaper.observe(t, &c, config);
        }
        (0..steps)
            .map(|_| {
                let next = shaper.forced.pop_front().unwrap_or(proposal);
                shaper.after(next, &c, config);
                next
            })
            .collect()
    }

    #[test]
    fn a_block_gets_its_paths_budgets_and_closing_from_the_controller() {
        // A path of budget 4 holds `<Path>`, two tokens and `</Path>`.
        let out = drive(&[9, 3], 9, &config(3, 4), 16);
        assert_eq!(out, [5, 9, 9, 6, 5, 9, 9, 6, 5, 9, 9, 6, 4, 2, 7, 9]);
    }

    #[test]
    fn a_path_the_model_closes_itself_is_followed_by_the_next() {
        // The model would close every path at once.
        let out = drive(&[3], 6, &config(2, 8), 6);
        assert_eq!(out, [5, 6, 5, 6, 4, 2]);
    }
}
