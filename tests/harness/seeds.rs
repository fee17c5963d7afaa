//! Trajectories of known shape for tests that seed the analytics: responses whose blocks explore
//! or verify, and the worker-reported token structure that goes with them.

use prl_schema::trajectory::{BlockTokens, Trajectory};

/// A block whose paths reach 5 before the main thread states it: exploration.
pub const EXPLORE: &str = "Half of 10.<Parallel><Path>10/2 = 5</Path><Path>10*0.5 = 5</Path></Parallel><Summary>So 5.</Summary>";
/// A block that opens right after the main thread computed 5, and re-derives it: verification.
pub const VERIFY: &str = "Half of 10: 10/2 = 5.<Parallel><Path>5+5 = 10, so 5</Path><Path>2*5 = 10, so 5</Path></Parallel><Summary>Checked.</Summary>";

/// `text` followed by its final answer, as a policy writes it.
pub fn answered(text: &str, answer: u32) -> String {
    format!("{text} Final Answer: {answer}")
}

/// A well-formed trajectory of prompt 0 answering 5 (correct) or 6, of 100 tokens.
pub fn trajectory(
    sample: u32,
    text: String,
    correct: bool,
    blocks: Vec<BlockTokens>,
) -> Trajectory {
    Trajectory {
        prompt: 0,
        sample,
        tokens: Some(100),
        forced: 0,
        clipped: false,
        reward: if correct { 1.0 } else { -1.0 },
        accuracy: if correct { 1.0 } else { -1.0 },
        correct,
        answer: Some(if correct { "5" } else { "6" }.to_owned()),
        format_valid: true,
        text,
        blocks,
    }
}

/// A block of two 4-token paths and a 3-token summary, starting at token `start`.
pub fn block(start: u32) -> BlockTokens {
    BlockTokens {
        start,
        end: start + 10,
        paths: vec![4, 4],
        summary: 3,
    }
}
