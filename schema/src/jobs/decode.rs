//! Reading a `WorkerEvent`, tagged by its `type` field, without a second pass over the common
//! case. serde's derived reader of an internally tagged enum cannot know where the tag is, so it
//! copies the whole object into a buffer of its own and reads the variant from that: for a
//! trajectory message every text was allocated twice, a tenth of the ingester's time. prl's
//! workers write the tag first (serde writes it first), and then the variant is read straight
//! from the input. An object whose tag comes later (another producer's) is read into a
//! `serde_json` value first, which is what serde did for every message before.

use super::{CheckpointRef, WorkerEvent};
use crate::trajectory::{EvaluationResult, TrajectoryBatch};
use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
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
            return Err(de::Error::missing_field("type"));
        };
        if first == "type" {
            let tag = map.next_value()?;
            return variant(tag, MapAccessDeserializer::new(map));
        }
        let mut fields = serde_json::Map::new();
        fields.insert(first, map.next_value()?);
        while let Some((key, value)) = map.next_entry()? {
            fields.insert(key, value);
        }
        let tag = fields
            .remove("type")
            .ok_or_else(|| de::Error::missing_field("type"))?;
        let tag = Tag::deserialize(tag).map_err(de::Error::custom)?;
        variant(tag, serde_json::Value::Object(fields)).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn events() -> Vec<WorkerEvent> {
        let values = BTreeMap::from([("loss".to_string(), 0.5), ("nan".to_string(), f64::NAN)]);
        vec![
            WorkerEvent::Claim {
                expected_version: 3,
            },
            WorkerEvent::Heartbeat,
            WorkerEvent::Metrics { step: 7, values },
            WorkerEvent::Finished { checkpoint: None },
            WorkerEvent::Failed {
                reason: "out of memory".into(),
            },
        ]
    }

    /// Debug output compares NaN metric values, which `==` does not.
    fn same(a: &WorkerEvent, b: &WorkerEvent) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn an_event_reads_back_whether_its_tag_comes_first_or_not() {
        for event in events() {
            let written = serde_json::to_value(&event).unwrap();
            let text = serde_json::to_string(&event).unwrap();
            assert!(text.starts_with(r#"{"type":"#), "{text}");
            assert!(
                same(&serde_json::from_str(&text).unwrap(), &event),
                "{text}"
            );
            // The tag last: every other field, then `type`.
            let mut fields = written.as_object().unwrap().clone();
            let tag = fields.remove("type").unwrap();
            let mut last = fields
                .iter()
                .map(|(k, v)| format!("{}:{v}", json!(k)))
                .collect::<Vec<_>>();
            last.push(format!(r#""type":{tag}"#));
            let text = format!("{{{}}}", last.join(","));
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
        assert!(error("[]").to_string().contains("a worker event"));
    }
}
