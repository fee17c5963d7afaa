//! Constrained values of a spec. Each one can only be built through `TryFrom`, which is also what
//! serde calls, so an out-of-range value is rejected where it is parsed and never exists after that.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Declares a newtype over `$inner` whose `TryFrom` runs `$check` and explains a failure with
/// `$why`; `$schema` states the same bounds in JSON Schema (the references and OpenAPI show it).
macro_rules! constrained {
    ($(#[$doc:meta])* $name:ident($inner:ty = $lit:literal), |$v:ident| $check:expr, $why:expr, $schema:tt) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(try_from = $lit, into = $lit)]
        #[schema(value_type = $inner)]
        pub struct $name($inner);

        impl $name {
            pub fn get(self) -> $inner {
                self.0
            }
        }

        impl TryFrom<$inner> for $name {
            type Error = String;
            fn try_from($v: $inner) -> Result<Self, String> {
                if $check {
                    Ok(Self($v))
                } else {
                    Err(format!("{} is not allowed: {}", $v, $why))
                }
            }
        }

        impl From<$name> for $inner {
            fn from(value: $name) -> $inner {
                value.0
            }
        }

        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!($schema)
            }
        }
    };
}

constrained!(
    /// A learning rate: finite and above zero.
    LearningRate(f64 = "f64"), |v| v.is_finite() && v > 0.0, "the learning rate must be a finite number above 0",
    {"type": "number", "exclusiveMinimum": 0}
);
constrained!(
    /// A count that must be at least 1 (steps, epochs, batch sizes).
    PositiveCount(u64 = "u64"), |v| v >= 1, "it must be at least 1",
    {"type": "integer", "minimum": 1}
);
constrained!(
    /// The number of samples per prompt in a GRPO group: advantages need at least two.
    GroupSize(u32 = "u32"), |v| (2..=1024).contains(&v), "a GRPO group needs between 2 and 1024 samples",
    {"type": "integer", "minimum": 2, "maximum": 1024}
);
constrained!(
    /// The number of paths a parallel block forks into.
    Paths(u32 = "u32"), |v| (2..=16).contains(&v), "a parallel block has between 2 and 16 paths",
    {"type": "integer", "minimum": 2, "maximum": 16}
);
constrained!(
    /// k of Mean@k and Pass@k: the number of samples per evaluation prompt.
    EvalK(u32 = "u32"), |v| (1..=1024).contains(&v), "k counts samples per prompt and must be between 1 and 1024",
    {"type": "integer", "minimum": 1, "maximum": 1024}
);
constrained!(
    /// A PPO clip bound: the ratio may move by this much from 1.
    ClipBound(f64 = "f64"), |v| v.is_finite() && v > 0.0 && v < 1.0, "a clip bound must lie strictly between 0 and 1",
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
);
constrained!(
    /// A finite value at or above zero (temperatures, weight decay, KL coefficients).
    NonNegative(f64 = "f64"), |v| v.is_finite() && v >= 0.0, "it must be a finite number at or above 0",
    {"type": "number", "minimum": 0}
);
constrained!(
    /// A finite value above zero (gradient clipping norms).
    Positive(f64 = "f64"), |v| v.is_finite() && v > 0.0, "it must be a finite number above 0",
    {"type": "number", "exclusiveMinimum": 0}
);
constrained!(
    /// A fraction in [0, 1] (warmup share, top-p).
    Fraction(f64 = "f64"), |v| (0.0..=1.0).contains(&v), "it must lie between 0 and 1",
    {"type": "number", "minimum": 0, "maximum": 1}
);

/// Declares a string newtype checked by `$check`, which says why a value is refused.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, |$v:ident| $check:expr, $schema:tt) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(try_from = "String", into = "String")]
        #[schema(value_type = String)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from($v: String) -> Result<Self, String> {
                let checked: Result<(), String> = $check;
                match checked {
                    Ok(()) => Ok(Self($v)),
                    Err(why) => Err(format!("{:?} is not allowed: {why}", $v)),
                }
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!($schema)
            }
        }
    };
}

fn is_slug(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        })
}

fn require(ok: bool, why: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why.to_owned()) }
}

checked_string!(
    /// An experiment's display name: 1 to 128 characters, not only whitespace.
    ExperimentName,
    |v| require(
        !v.trim().is_empty() && v.chars().count() <= 128,
        "a name has 1 to 128 characters and is not blank"
    ),
    {"type": "string", "minLength": 1, "maxLength": 128}
);
checked_string!(
    /// A stage name, unique within its spec: lowercase letters, digits, '-', '_' and '.'.
    StageName,
    |v| require(
        is_slug(&v),
        "a stage name has 1 to 64 lowercase letters, digits, '-', '_' or '.'"
    ),
    {"type": "string", "pattern": "^[a-z0-9._-]{1,64}$"}
);
checked_string!(
    /// A label's key or value (`--label gpu=h100` on a daemon, `resources.labels` in a stage):
    /// 1 to 64 letters, digits, '-', '_', '.' or '/'.
    Label,
    |v| require(
        !v.is_empty()
            && v.len() <= 64
            && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')),
        "a label key or value has 1 to 64 letters, digits, '-', '_', '.' or '/'"
    ),
    {"type": "string", "pattern": "^[A-Za-z0-9._/-]{1,64}$"}
);
checked_string!(
    /// A tag: lowercase letters, digits, '-', '_' and '.'.
    Tag,
    |v| require(
        is_slug(&v),
        "a tag has 1 to 64 lowercase letters, digits, '-', '_' or '.'"
    ),
    {"type": "string", "pattern": "^[a-z0-9._-]{1,64}$"}
);
checked_string!(
    /// A dataset: `builtin:<easy|hard|mixed>[-test]` or `builtin:pretrain`, `jsonl:<path>`,
    /// `verl:<path>` (a path on the daemon) or `registered:<name>[:<split>]`, each optionally
    /// followed by `:sequential` for the step-by-step prompt.
    DatasetRef,
    |v| {
        require(
            v.len() <= 256 && !v.contains(char::is_whitespace),
            "a dataset reference is at most 256 characters, without whitespace",
        )
        .and_then(|()| crate::datasets::DatasetSource::parse(&v).map(|_| ()))
    },
    {
        "type": "string",
        "maxLength": 256,
        "pattern": "^(builtin|jsonl|verl|registered):\\S+$",
        "examples": ["builtin:hard", "builtin:hard-test:sequential", "jsonl:data/train.jsonl", "registered:gsm8k:test"]
    }
);

impl DatasetRef {
    /// What the reference names (checked when it was made).
    pub fn source(&self) -> crate::datasets::DatasetSource<'_> {
        crate::datasets::DatasetSource::parse(&self.0).expect("checked when made")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_negative_learning_rate_is_rejected_with_a_reason() {
        let err = LearningRate::try_from(-0.1).unwrap_err();
        assert!(err.contains("above 0"), "{err}");
        assert!(LearningRate::try_from(f64::NAN).is_err());
        assert_eq!(LearningRate::try_from(1e-5).unwrap().get(), 1e-5);
    }

    #[test]
    fn group_size_and_eval_k_have_lower_bounds() {
        assert!(GroupSize::try_from(1).is_err());
        assert!(GroupSize::try_from(2).is_ok());
        assert!(EvalK::try_from(0).is_err());
        assert!(EvalK::try_from(1).is_ok());
    }

    #[test]
    fn stage_names_are_slugs() {
        assert!(StageName::try_from("cold-start".to_owned()).is_ok());
        assert!(StageName::try_from("Cold Start".to_owned()).is_err());
        assert!(StageName::try_from(String::new()).is_err());
    }
}
