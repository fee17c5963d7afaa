//! prl's answer check gives the reference's verdict on every case of the corpus that
//! `scripts/make_reward_fixture.py` ran through the reference function itself.

use prl_schema::reward::{check_answer, extract_answer, normalize};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    response: String,
    truth: String,
    correct: bool,
    /// The reference's normalised prediction ("[INVALID]" when it found no answer).
    pred: String,
}

#[test]
fn the_answer_check_agrees_with_the_reference_on_every_corpus_case() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/reward_parity.json"
    );
    let fixture: Fixture = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(fixture.cases.len() >= 80);
    let mut disagreements = Vec::new();
    for case in &fixture.cases {
        let (correct, _) = check_answer(&case.response, &case.truth);
        let pred = extract_answer(&case.response)
            .map(|a| normalize(&a))
            .unwrap_or_else(|| "[INVALID]".to_owned());
        if correct != case.correct || pred != case.pred {
            disagreements.push(format!(
                "{:?} vs {:?}: reference {} {:?}, prl {correct} {pred:?}",
                case.response, case.truth, case.correct, case.pred
            ));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    // The corpus holds both verdicts in numbers.
    let right = fixture.cases.iter().filter(|c| c.correct).count();
    assert!(right > 20 && fixture.cases.len() - right > 10);
}
