//! Reading a `WorkerEvent`, tagged by its `type` field, without a second pass over the common
//! case. serde's derived reader of an internally tagged enum cannot know where the tag is, so it
//! copies the whole object into a buffer of its own and reads the variant from that: for a
//! trajectory message every text was allocated twice, a tenth of the ingester's time. prl's
//! workers write the tag first (serde writes it first), and then the variant is read straight
//! from the input. An object whose tag comes later (another producer's) is read into JSON values
//! first, as serde did for every message before. Either way a second `type` or a repeated field
//! of the variant is refused, as before; unlike before, an array is refused too (serde also read
//! `["claim", 3]` as a claim, which no producer writes). One difference is left: in an object
//! whose tag comes later, a field repeated inside a nested object (a trajectory's `text` twice)
//! keeps its last value, where serde refused it.

use super::{CheckpointRef, WorkerEvent};
use crate::trajectory::{EvaluationResult, TrajectoryBatch};
use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, MapDeserializer};
use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, Visitor,
};
use std::collections::BTreeMap;

/// The variants' names, as the `type` field holds them.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Tag {
    Claim,
    Heartbeat,
    Metrics,
    Checkpoint,
    Trajectories,
    Evaluation,
    Finished,
    Failed,
}

#[derive(Deserialize)]
struct Claim {
    expected_version: i64,
}

#[derive(Deserialize)]
struct Metrics {
    step: u64,
    #[serde(with = "crate::tracking::metric_values")]
    values: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
struct Finished {
    checkpoint: Option<CheckpointRef>,
}

#[derive(Deserialize)]
struct Failed {
    reason: String,
}

/// The variant `tag` names, from the object's other fields.
fn variant<'de, D: Deserializer<'de>>(tag: Tag, fields: D) -> Result<WorkerEvent, D::Error> {
    Ok(match tag {
        Tag::Claim => {
            let Claim { expected_version } = Claim::deserialize(fields)?;
            WorkerEvent::Claim { expected_version }
        }
        Tag::Heartbeat => {
            IgnoredAny::deserialize(fields)?;
            WorkerEvent::Heartbeat
        }
        Tag::Metrics => {
            let Metrics { step, values } = Metrics::deserialize(fields)?;
            WorkerEvent::Metrics { step, values }
        }
        Tag::Checkpoint => WorkerEvent::Checkpoint(CheckpointRef::deserialize(fields)?),
        Tag::Trajectories => WorkerEvent::Trajectories(TrajectoryBatch::deserialize(fields)?),
        Tag::Evaluation => WorkerEvent::Evaluation(EvaluationResult::deserialize(fields)?),
        Tag::Finished => {
            let Finished { checkpoint } = Finished::deserialize(fields)?;
            WorkerEvent::Finished { checkpoint }
        }
        Tag::Failed => {
            let Failed { reason } = Failed::deserialize(fields)?;
            WorkerEvent::Failed { reason }
        }
    })
}

impl<'de> Deserialize<'de> for WorkerEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(Tagged)
    }
}

struct Tagged;

impl<'de> Visitor<'de> for Tagged {
    type Value = WorkerEvent;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a worker event: an object with its `type`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WorkerEvent, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Err(de::Error::missing_field(TAG));
        };
        if first == TAG {
            let tag = map.next_value()?;
            return variant(tag, MapAccessDeserializer::new(NoSecondTag(map)));
        }
        // Entries in their order, repeats kept, for the variant's reader to refuse them.
        let mut fields = vec![(first, map.next_value::<serde_json::Value>()?)];
        while let Some(entry) = map.next_entry()? {
            fields.push(entry);
        }
        let mut tags = (fields.iter().enumerate())
            .filter(|(_, (key, _))| key == TAG)
            .map(|(at, _)| at);
        let at = match (tags.next(), tags.next()) {
            (Some(at), None) => at,
            (None, _) => return Err(de::Error::missing_field(TAG)),
            (Some(_), Some(_)) => return Err(de::Error::duplicate_field(TAG)),
        };
        let tag = Tag::deserialize(fields.remove(at).1).map_err(de::Error::custom)?;
        let fields = MapDeserializer::<_, serde_json::Error>::new(fields.into_iter());
        variant(tag, fields).map_err(de::Error::custom)
    }
}

const TAG: &str = "type";

/// The object's entries after its tag, refusing another `type`: the variants' readers ignore
/// fields they do not have, and would let it pass.
struct NoSecondTag<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for NoSecondTag<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let Some(key) = self.0.next_key::<String>()? else {
            return Ok(None);
        };
        if key == TAG {
            return Err(de::Error::duplicate_field(TAG));
        }
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trajectory::{BlockTokens, PromptRecord, Trajectory};
    use serde_json::json;

    fn events() -> Vec<WorkerEvent> {
        let values = BTreeMap::from([("loss".to_string(), 0.5), ("nan".to_string(), f64::NAN)]);
        let checkpoint = CheckpointRef {
            uri: "file:///ckpt/3/".into(),
            step: 3,
            sha256: "ab".into(),
            size_bytes: 10,
        };
        let trajectories = TrajectoryBatch {
            step: 3,
            benchmark: None,
            prompts: vec![PromptRecord {
                id: "p1".into(),
                group: 0,
                text: "What is 2 + 2?".into(),
                tokens: Some(7),
                truth: "4".into(),
            }],
            trajectories: vec![Trajectory {
                prompt: 0,
                sample: 1,
                text: "<Parallel><Path>2 + 2 = 4</Path></Parallel> \"Final Answer\": 4".into(),
                tokens: Some(20),
                forced: 0,
                clipped: false,
                reward: 1.0,
                accuracy: 1.0,
                correct: true,
                answer: Some("4".into()),
                format_valid: true,
                blocks: vec![BlockTokens {
                    start: 0,
                    end: 12,
                    paths: vec![8],
                    summary: 0,
                }],
            }],
        };
        let evaluation = json!({
            "type": "evaluation", "step": 3, "benchmark": "aime", "k": 4, "prompts": 30,
            "mean_at_k": 0.25, "pass_at_k": 0.5, "parallel_ratio": 0.3,
            "format_valid_ratio": 0.9, "mean_response_tokens": null,
        });
        vec![
            WorkerEvent::Claim {
                expected_version: 3,
            },
            WorkerEvent::Heartbeat,
            WorkerEvent::Metrics { step: 7, values },
            WorkerEvent::Checkpoint(checkpoint.clone()),
            WorkerEvent::Trajectories(trajectories),
            serde_json::from_value(evaluation).unwrap(),
            WorkerEvent::Finished {
                checkpoint: Some(checkpoint),
            },
            WorkerEvent::Failed {
                reason: "out of memory".into(),
            },
        ]
    }

    /// Which arm of `variant` reads `event`. It stops compiling when a variant is added to
    /// `WorkerEvent`, which `Tag`, `variant` and `events()` must then have too.
    fn arm(event: &WorkerEvent) -> usize {
        match event {
            WorkerEvent::Claim { .. } => 0,
            WorkerEvent::Heartbeat => 1,
            WorkerEvent::Metrics { .. } => 2,
            WorkerEvent::Checkpoint(_) => 3,
            WorkerEvent::Trajectories(_) => 4,
            WorkerEvent::Evaluation(_) => 5,
            WorkerEvent::Finished { .. } => 6,
            WorkerEvent::Failed { .. } => 7,
        }
    }

    #[test]
    fn every_variant_is_read_back() {
        let arms: std::collections::BTreeSet<usize> = events().iter().map(arm).collect();
        assert_eq!(arms, (0..8).collect());
    }

    /// Debug output compares NaN metric values, which `==` does not.
    fn same(a: &WorkerEvent, b: &WorkerEvent) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    /// `fields` as a JSON object, in this order, repeats kept.
    fn object(fields: &[(&str, serde_json::Value)]) -> String {
        let fields: Vec<String> = (fields.iter())
            .map(|(k, v)| format!("{}:{v}", json!(k)))
            .collect();
        format!("{{{}}}", fields.join(","))
    }

    #[test]
    fn an_event_reads_back_whether_its_tag_comes_first_or_not() {
        for event in events() {
            let text = serde_json::to_string(&event).unwrap();
            assert!(text.starts_with(r#"{"type":"#), "{text}");
            assert!(
                same(&serde_json::from_str(&text).unwrap(), &event),
                "{text}"
            );
            let written = serde_json::to_value(&event).unwrap();
            let mut fields: Vec<_> = (written.as_object().unwrap().iter())
                .filter(|(k, _)| *k != "type")
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            fields.push(("type", written["type"].clone()));
            let text = object(&fields);
            assert!(
                same(&serde_json::from_str(&text).unwrap(), &event),
                "{text}"
            );
        }
    }

    #[test]
    fn a_heartbeat_ignores_fields_it_does_not_have() {
        let event: WorkerEvent =
            serde_json::from_str(r#"{"type":"heartbeat","note":"busy"}"#).unwrap();
        assert_eq!(event, WorkerEvent::Heartbeat);
    }

    #[test]
    fn a_second_tag_or_a_repeated_field_is_refused_wherever_the_tag_is() {
        let error = |fields: &[(&str, serde_json::Value)]| {
            let text = object(fields);
            let error = serde_json::from_str::<WorkerEvent>(&text).unwrap_err();
            (text, error.to_string())
        };
        let cases = [
            vec![
                ("type", json!("claim")),
                ("expected_version", json!(1)),
                ("type", json!("failed")),
            ],
            vec![
                ("reason", json!("x")),
                ("type", json!("claim")),
                ("type", json!("failed")),
            ],
        ];
        for fields in cases {
            let (text, error) = error(&fields);
            assert!(error.contains("duplicate field `type`"), "{text}: {error}");
        }
        for fields in [
            vec![
                ("type", json!("failed")),
                ("reason", json!("a")),
                ("reason", json!("b")),
            ],
            vec![
                ("reason", json!("a")),
                ("reason", json!("b")),
                ("type", json!("failed")),
            ],
        ] {
            let (text, error) = error(&fields);
            assert!(
                error.contains("duplicate field `reason`"),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let error = |text: &str| serde_json::from_str::<WorkerEvent>(text).unwrap_err();
        assert!(error("{}").to_string().contains("missing field `type`"));
        assert!(
            error(r#"{"step":1}"#)
                .to_string()
                .contains("missing field `type`")
        );
        let unknown = error(r#"{"type":"reboot"}"#).to_string();
        assert!(unknown.contains("unknown variant `reboot`"), "{unknown}");
        let missing = error(r#"{"type":"claim"}"#).to_string();
        assert!(
            missing.contains("missing field `expected_version`"),
            "{missing}"
        );
        let late = error(r#"{"expected_version":"x","type":"claim"}"#).to_string();
        assert!(late.contains("invalid type"), "{late}");
        assert!(
            error(r#"["claim",3]"#)
                .to_string()
                .contains("a worker event")
        );
    }
}
