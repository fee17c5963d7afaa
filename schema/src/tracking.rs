//! Runs tracked live from other tools (MLflow clients, the verl follower, the Python client):
//! their statuses, and metric values as JSON can hold them.

use serde::{Deserialize, Serialize};

/// Where a tracked run stands, as the tool that runs it says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrackedStatus {
    Scheduled,
    Running,
    Finished,
    Failed,
    Killed,
}

/// Metric values keep NaN and the infinities, which a diverging run reports and which JSON
/// numbers cannot hold: they are written as the strings `"NaN"`, `"Infinity"` and
/// `"-Infinity"` (PostgreSQL's `float8` reads those too, so SQL over the payload still casts).
pub mod metric_values {
    use serde::de::{self, Deserializer, MapAccess, Visitor};
    use serde::ser::{SerializeMap, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        values: &BTreeMap<String, f64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(values.len()))?;
        for (key, value) in values {
            match super::non_finite_name(*value) {
                Some(name) => map.serialize_entry(key, name)?,
                None => map.serialize_entry(key, value)?,
            }
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, f64>, D::Error> {
        struct Values;
        impl<'de> Visitor<'de> for Values {
            type Value = BTreeMap<String, f64>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of metric names to numbers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut values = BTreeMap::new();
                while let Some((key, value)) = access.next_entry::<String, super::MetricValue>()? {
                    values.insert(key, value.0);
                }
                Ok(values)
            }
        }
        deserializer
            .deserialize_map(Values)
            .map_err(de::Error::custom)
    }
}

/// The name a non-finite value is written under, or `None` for a finite one.
pub fn non_finite_name(value: f64) -> Option<&'static str> {
    if value.is_nan() {
        Some("NaN")
    } else if value == f64::INFINITY {
        Some("Infinity")
    } else if value == f64::NEG_INFINITY {
        Some("-Infinity")
    } else {
        None
    }
}

/// A metric value read from a JSON number or from one of the names of `non_finite_name`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricValue(pub f64);

impl<'de> Deserialize<'de> for MetricValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Name(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(v) => Ok(MetricValue(v)),
            Raw::Name(name) => match name.as_str() {
                "NaN" => Ok(MetricValue(f64::NAN)),
                "Infinity" => Ok(MetricValue(f64::INFINITY)),
                "-Infinity" => Ok(MetricValue(f64::NEG_INFINITY)),
                _ => Err(serde::de::Error::custom(format!(
                    "`{name}` is not a number (NaN, Infinity and -Infinity are the only names)"
                ))),
            },
        }
    }
}

impl Serialize for MetricValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match non_finite_name(self.0) {
            Some(name) => serializer.serialize_str(name),
            None => serializer.serialize_f64(self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Serialize, Deserialize)]
    struct Holder {
        #[serde(with = "metric_values")]
        values: BTreeMap<String, f64>,
    }

    #[test]
    fn non_finite_values_round_trip_through_json() {
        let values = BTreeMap::from([
            ("loss".to_owned(), f64::NAN),
            ("up".to_owned(), f64::INFINITY),
            ("down".to_owned(), f64::NEG_INFINITY),
            ("lr".to_owned(), 1e-5),
        ]);
        let json = serde_json::to_string(&Holder { values }).unwrap();
        assert_eq!(
            json,
            r#"{"values":{"down":"-Infinity","loss":"NaN","lr":0.00001,"up":"Infinity"}}"#
        );
        let back: Holder = serde_json::from_str(&json).unwrap();
        assert!(back.values["loss"].is_nan());
        assert_eq!(back.values["up"], f64::INFINITY);
        assert_eq!(back.values["down"], f64::NEG_INFINITY);
        assert_eq!(back.values["lr"], 1e-5);
        let bad = serde_json::from_str::<Holder>(r#"{"values":{"x":"nan"}}"#);
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("`nan` is not a number")
        );
    }
}
