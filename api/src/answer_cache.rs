//! The strategy and comparison answers the API has served, kept in memory beside the versions of
//! the rows they were read from (`strategy_versions`, written with the rows). A request reads
//! the versions, one index lookup a run, and is answered from here when they are unchanged:
//! moving, decoding and formatting a run's 200 step rows costs ten times as much (BENCHMARKS.md).
//!
//! The versions are read before the rows, on the same connection, so the rows kept are at least
//! as new as their versions (one server, whose state only moves forward; a replica behind a
//! load balancer could otherwise answer the two from different servers). Every change of a
//! run's rows gives it a new version, never one used before, in the same commit, so a request
//! that reads the same versions later finds the rows no newer than the kept ones: it gets what
//! it would have read. An answer read across a commit is kept under the older versions and only
//! read again.

use bytes::Bytes;
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use std::sync::Arc;
use uuid::Uuid;

/// What an answer was read from: for each run, its rows' version and, where the answer shows it,
/// its experiment's name (which a tracked run's update may change).
pub type Versions = Vec<(Uuid, Uuid, Option<String>)>;

/// Which answer: the endpoint's and the set of ids it was asked for, sorted.
pub type Key = (&'static str, Vec<Uuid>);

struct Answer {
    versions: Versions,
    body: Bytes,
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<Key, Arc<Answer>> for ByBytes {
    fn weight(&self, key: &Key, answer: &Arc<Answer>) -> u64 {
        let versions: usize = (answer.versions.iter())
            .map(|(_, _, name)| 32 + name.as_ref().map_or(0, String::len))
            .sum();
        (key.1.len() * 16 + answer.body.len() + versions) as u64
    }
}

/// The kept answers, at most `capacity` bytes of them; the least recently used go first.
pub struct AnswerCache {
    answers: Option<Cache<Key, Arc<Answer>, ByBytes>>,
}

impl AnswerCache {
    /// A cache of `capacity` bytes; 0 keeps nothing.
    pub fn new(capacity: u64) -> Self {
        // A run's strategy answer is about 150 KB: the estimate only sizes the first tables.
        let answers = (capacity > 0).then(|| Cache::with_weighter(1024, capacity, ByBytes));
        AnswerCache { answers }
    }

    pub fn enabled(&self) -> bool {
        self.answers.is_some()
    }

    /// The answer kept for `key`, if it was read at exactly `versions`.
    pub fn get(&self, key: &Key, versions: &Versions) -> Option<Bytes> {
        let answer = self.answers.as_ref()?.get(key)?;
        (answer.versions == *versions).then(|| answer.body.clone())
    }

    pub fn put(&self, key: Key, versions: Versions, body: Bytes) {
        if let Some(answers) = &self.answers {
            answers.insert(key, Arc::new(Answer { versions, body }));
        }
    }
}
