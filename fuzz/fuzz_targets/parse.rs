//! The parallel-format parser and the analysis on arbitrary text: they must never panic, and
//! every range they report must lie inside the text on character boundaries.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prl_schema::analysis::analyze;
use prl_schema::reward::score;
use prl_schema::spec::RewardSchedule;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let analysis = analyze(&text);
    for block in &analysis.parsed.blocks {
        assert!(text.get(block.span.clone()).is_some());
        for path in &block.paths {
            assert!(text.get(path.clone()).is_some());
        }
        if let Some(summary) = &block.summary {
            assert!(text.get(summary.clone()).is_some());
        }
    }
    assert_eq!(analysis.blocks.len(), analysis.parsed.blocks.len());
    for shape in &analysis.blocks {
        assert!(shape.chars.start <= shape.chars.end && shape.chars.end <= analysis.chars);
    }
    let share = analysis.block_share();
    assert!((0.0..=1.0).contains(&share));
    score(RewardSchedule::S2, 9, &text, "42");
});
