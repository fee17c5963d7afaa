//! Every advisory lock key prl takes, in one place, so that no two uses share a key. One-key
//! locks (a `bigint`) and two-key locks (two `int4`) are apart in PostgreSQL.

/// Taken, session-level, by every transaction on the log, which takes its positions under it
/// (and, as a number, by migration 0012's backfill).
pub const LOG: i64 = 0x0070_726c_5f6c_6f67; // "prl_log"

/// Held shared, to its commit, by each log transaction that let `LOG` go before committing.
pub const RELEASED_LOG: i64 = 0x0070_726c_5f66_6c79; // "prl_fly"

/// The first key of the stream locks; the second is from the stream id.
pub const STREAMS: i32 = 0x7072_6c73; // "prls"

/// Held, session-level, by the one relay of a deployment that publishes.
pub const RELAY: i64 = 0x0070_726c_5f72_656c; // "prl_rel"

#[cfg(test)]
mod tests {
    #[test]
    fn no_two_one_key_locks_share_a_key() {
        let keys = [super::LOG, super::RELEASED_LOG, super::RELAY];
        let distinct: std::collections::HashSet<i64> = keys.into_iter().collect();
        assert_eq!(distinct.len(), keys.len());
    }
}
