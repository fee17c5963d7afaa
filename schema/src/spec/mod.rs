//! The experiment spec: what a researcher submits. Parse, don't validate: `ExperimentSpec::from_json`
//! and `from_toml` are the only ways in from outside, and a spec that parses is valid.

mod model;
mod resources;
mod stages;
mod values;
mod verl;

pub use model::{ModelPreset, ModelRef};
pub use resources::{DeviceKind, JobRoute, Resources};
pub use stages::*;
pub use values::*;
pub use verl::{Backend, RolloutEngine, VerlOverride, VerlSettings};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a spec was refused. `Malformed` is not JSON/TOML at all; `Invalid` names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("the spec is not well-formed: {0}")]
    Malformed(String),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl SpecError {
    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A valid experiment: a name, tags, a model and at least one stage whose inputs can exist.
#[derive(
    Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    pub name: ExperimentName,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// `tiny`, `tiny-base`, `smollm2-135m`, `path:<dir>` or `checkpoint:<run id>@<step>`.
    #[schema(value_type = String, example = "tiny")]
    pub model: ModelRef,
    /// Seeds every random choice of every stage (initialisation, data order, sampling): the same
    /// seed and spec give the same run on the same hardware.
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub stages: Stages,
}

/// The JSON Schema of a spec (`ExperimentSpec`) and of each named type in it, keyed by name and
/// referring to each other under `#/components/schemas/`: the OpenAPI document's spec schemas and
/// docs/reference/spec.md are made from it, so bounds and defaults are stated once, in the types.
pub fn json_schemas() -> serde_json::Map<String, Value> {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas/".into())
        .into_generator();
    let mut root = generator
        .into_root_schema_for::<ExperimentSpec>()
        .to_value();
    let mut schemas = match root
        .get_mut("components")
        .and_then(|c| c.get_mut("schemas"))
        .map(Value::take)
    {
        Some(Value::Object(schemas)) => schemas,
        _ => serde_json::Map::new(),
    };
    let root = root.as_object_mut().expect("a schema is an object");
    for key in ["$schema", "components", "title"] {
        root.remove(key);
    }
    schemas.insert("ExperimentSpec".into(), Value::Object(root.clone()));
    schemas
}

pub(crate) fn default_seed() -> u64 {
    1
}

/// The ordered stages: never empty, names unique, every `init_from` pointing at a checkpoint that
/// an earlier stage will save.
// The document's schema of a spec is `json_schemas()`'s; utoipa only needs the name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "Vec<StageSpec>", into = "Vec<StageSpec>")]
#[schema(value_type = Vec<Object>)]
pub struct Stages(Vec<StageSpec>);

impl schemars::JsonSchema for Stages {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Stages".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let stage = generator.subschema_for::<StageSpec>();
        schemars::json_schema!({
            "description": "The stages, run in order: at least one, names unique.",
            "type": "array",
            "items": stage,
            "minItems": 1
        })
    }
}

impl Stages {
    pub fn as_slice(&self) -> &[StageSpec] {
        &self.0
    }

    /// Checks the rules that span stages; the error names the offending field's path.
    fn check(stages: Vec<StageSpec>) -> Result<Self, SpecError> {
        if stages.is_empty() {
            return Err(SpecError::invalid(
                "stages",
                "an experiment needs at least one stage",
            ));
        }
        for (i, stage) in stages.iter().enumerate() {
            let earlier = &stages[..i];
            if earlier.iter().any(|s| s.name() == stage.name()) {
                return Err(SpecError::invalid(
                    format!("stages[{i}].name"),
                    format!("another stage is already named '{}'", stage.name()),
                ));
            }
            let resources = stage.resources();
            if resources.device == Some(DeviceKind::Cpu) && resources.min_gpu_memory_gb.is_some() {
                return Err(SpecError::invalid(
                    format!("stages[{i}].resources.min_gpu_memory_gb"),
                    "GPU memory needs a cuda device, and `device` is cpu",
                ));
            }
            if let StageSpec::Rl(rl) = stage
                && rl.clip_high.get() < rl.clip_low.get()
            {
                return Err(SpecError::invalid(
                    format!("stages[{i}].clip_high"),
                    "the upper clip bound must be at least the lower one",
                ));
            }
            if let StageSpec::Rl(rl) = stage
                && rl.temperature.get() <= 0.0
            {
                return Err(SpecError::invalid(
                    format!("stages[{i}].temperature"),
                    "RL samples its rollouts: the temperature must be above 0",
                ));
            }
            if let StageSpec::Rl(rl) = stage
                && rl.eval_every.is_some()
                && rl.eval_dataset.is_none()
            {
                return Err(SpecError::invalid(
                    format!("stages[{i}].eval_dataset"),
                    "eval_every needs an eval_dataset to evaluate on",
                ));
            }
            if let StageSpec::Rl(rl) = stage {
                check_verl(i, rl)?;
            }
            if let Some(init) = stage.init_from() {
                let Some(source) = earlier.iter().find(|s| *s.name() == init.stage) else {
                    return Err(SpecError::invalid(
                        format!("stages[{i}].init_from.stage"),
                        format!("no earlier stage is named '{}'", init.stage),
                    ));
                };
                if !source.saves_checkpoints() {
                    return Err(SpecError::invalid(
                        format!("stages[{i}].init_from.stage"),
                        format!(
                            "stage '{}' is an eval stage and saves no checkpoint",
                            init.stage
                        ),
                    ));
                }
                if let Some(step) = init.step {
                    source.will_have_checkpoint_at(step).map_err(|reason| {
                        SpecError::invalid(format!("stages[{i}].init_from.step"), reason)
                    })?;
                }
            }
        }
        Ok(Stages(stages))
    }
}

/// What a verl stage cannot ask for: a device of the bridge (the GPUs are the Ray cluster's),
/// dynamic sampling or a second, greedy validation pass (`main_ppo` has neither); and its
/// mini-batches count prompts, not samples.
fn check_verl(i: usize, rl: &RlStage) -> Result<(), SpecError> {
    let at = |field: &str| format!("stages[{i}].{field}");
    if rl.backend != Backend::Verl {
        return match rl.verl {
            Some(_) => Err(SpecError::invalid(
                at("verl"),
                "verl settings need backend = \"verl\"",
            )),
            None => Ok(()),
        };
    }
    if rl.resources.device_kind().is_some() {
        return Err(SpecError::invalid(
            at("resources"),
            "a verl stage runs on its Ray cluster's GPUs (verl.n_gpus_per_node, verl.nnodes); \
             pick the bridge with resources.labels",
        ));
    }
    if rl.dynamic_sampling {
        return Err(SpecError::invalid(
            at("dynamic_sampling"),
            "verl's main_ppo has no dynamic sampling: set dynamic_sampling = false",
        ));
    }
    if rl.eval_greedy {
        return Err(SpecError::invalid(
            at("eval_greedy"),
            "verl validates with one sampling setting: eval_greedy is for the tch backend",
        ));
    }
    if !rl
        .mini_batch_size
        .get()
        .is_multiple_of(u64::from(rl.group_size.get()))
    {
        return Err(SpecError::invalid(
            at("mini_batch_size"),
            format!(
                "verl updates on whole groups: mini_batch_size must be a multiple of group_size ({})",
                rl.group_size.get()
            ),
        ));
    }
    Ok(())
}

impl TryFrom<Vec<StageSpec>> for Stages {
    type Error = String;
    fn try_from(stages: Vec<StageSpec>) -> Result<Self, String> {
        Stages::check(stages).map_err(|e| e.to_string())
    }
}

impl From<Stages> for Vec<StageSpec> {
    fn from(stages: Stages) -> Self {
        stages.0
    }
}

/// The top level as first read, with stages kept raw so that each can be parsed with its own path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: ExperimentName,
    #[serde(default)]
    tags: Vec<Tag>,
    model: ModelRef,
    #[serde(default = "default_seed")]
    seed: u64,
    stages: Vec<Value>,
}

impl ExperimentSpec {
    pub fn from_json(bytes: &[u8]) -> Result<Self, SpecError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| SpecError::Malformed(e.to_string()))?;
        Self::from_value(value)
    }

    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let value: Value = toml::from_str(text).map_err(|e| SpecError::Malformed(e.to_string()))?;
        Self::from_value(value)
    }

    /// Parses an already-decoded document, naming the path of the first field that is wrong.
    pub fn from_value(value: Value) -> Result<Self, SpecError> {
        if !value.is_object() {
            return Err(SpecError::invalid("", "the spec must be an object"));
        }
        let raw: RawSpec = parse_at("", value)?;
        if raw.tags.len() > 32 {
            return Err(SpecError::invalid("tags", "at most 32 tags are allowed"));
        }
        let stages = raw
            .stages
            .into_iter()
            .enumerate()
            .map(|(i, v)| parse_stage(i, v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ExperimentSpec {
            name: raw.name,
            tags: raw.tags,
            model: raw.model,
            seed: raw.seed,
            stages: Stages::check(stages)?,
        })
    }
}

fn parse_stage(i: usize, value: Value) -> Result<StageSpec, SpecError> {
    let at = format!("stages[{i}]");
    let Value::Object(mut fields) = value else {
        return Err(SpecError::invalid(at, "a stage must be an object"));
    };
    let kind = match fields.remove("kind") {
        Some(Value::String(kind)) => kind,
        Some(_) => return Err(SpecError::invalid(format!("{at}.kind"), "must be a string")),
        None => {
            return Err(SpecError::invalid(
                format!("{at}.kind"),
                "missing field `kind`",
            ));
        }
    };
    let body = Value::Object(fields);
    match kind.as_str() {
        "sft" => parse_at(&at, body).map(StageSpec::Sft),
        "rl" => parse_at(&at, body).map(StageSpec::Rl),
        "eval" => parse_at(&at, body).map(StageSpec::Eval),
        other => Err(SpecError::invalid(
            format!("{at}.kind"),
            format!("unknown stage kind '{other}', expected one of: sft, rl, eval"),
        )),
    }
}

/// Deserialises `value`, reporting errors at `prefix` + the path serde was at.
fn parse_at<T: serde::de::DeserializeOwned>(prefix: &str, value: Value) -> Result<T, SpecError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let mut path = err.path().to_string();
        let reason = err.into_inner().to_string();
        // serde reports a missing field at its parent; name the field itself.
        if let Some(missing) = reason
            .strip_prefix("missing field `")
            .and_then(|r| r.strip_suffix('`'))
        {
            path = if path == "." {
                missing.to_owned()
            } else {
                format!("{path}.{missing}")
            };
        }
        let field = match (prefix.is_empty(), path.as_str()) {
            (_, ".") => prefix.to_owned(),
            (true, _) => path,
            (false, _) => format!("{prefix}.{path}"),
        };
        SpecError::Invalid { field, reason }
    })
}

#[cfg(test)]
mod tests;
