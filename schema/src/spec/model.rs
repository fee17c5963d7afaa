//! Which model an experiment starts from: a built-in preset, a Hugging Face directory, or a
//! checkpoint a run recorded (in whatever store it lies).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The built-in model presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ModelPreset {
    /// A small Qwen3-style model trained from scratch on the built-in task.
    #[serde(rename = "tiny")]
    Tiny,
    /// The tiny architecture pretrained on sequential solutions of the built-in task (committed
    /// with prl), its vocabulary holding the six tags untrained: the demo's base model.
    #[serde(rename = "tiny-base")]
    TinyBase,
    /// SmolLM2-135M-Instruct, converted once from its GGUF release.
    #[serde(rename = "smollm2-135m")]
    Smollm2_135m,
}

/// `tiny`, `tiny-base`, `smollm2-135m`, `path:<dir>` for any HF Llama/Qwen directory on the
/// daemons' hosts, or `checkpoint:<run id>@<step>` for a checkpoint a run recorded (resolved when
/// the spec is accepted; daemons fetch it from the artifact store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ModelRef {
    Preset(ModelPreset),
    Path(String),
    Checkpoint { run: uuid::Uuid, step: u64 },
}

impl TryFrom<String> for ModelRef {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "tiny" => Ok(ModelRef::Preset(ModelPreset::Tiny)),
            "tiny-base" => Ok(ModelRef::Preset(ModelPreset::TinyBase)),
            "smollm2-135m" => Ok(ModelRef::Preset(ModelPreset::Smollm2_135m)),
            other => {
                if let Some(checkpoint) = other.strip_prefix("checkpoint:") {
                    return checkpoint
                        .split_once('@')
                        .and_then(|(run, step)| Some((run.parse().ok()?, step.parse().ok()?)))
                        .map(|(run, step)| ModelRef::Checkpoint { run, step })
                        .ok_or_else(|| format!("{other:?} is not checkpoint:<run id>@<step>"));
                }
                match other.strip_prefix("path:") {
                    Some(dir) if !dir.trim().is_empty() => Ok(ModelRef::Path(dir.to_owned())),
                    Some(_) => Err("`path:` must be followed by a directory".into()),
                    None => Err(format!(
                        "unknown model {other:?}: expected a preset (tiny, tiny-base, \
                         smollm2-135m), path:<dir> or checkpoint:<run id>@<step>"
                    )),
                }
            }
        }
    }
}

impl schemars::JsonSchema for ModelRef {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ModelRef".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(tiny|tiny-base|smollm2-135m|path:.+|checkpoint:[0-9a-fA-F-]{36}@[0-9]+)$",
            "examples": ["tiny-base", "smollm2-135m", "path:/models/Qwen3-0.6B",
                         "checkpoint:0192f0c4-5b1e-7c3a-9d2e-3f4a5b6c7d8e@200"]
        })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Preset(ModelPreset::Tiny) => f.write_str("tiny"),
            ModelRef::Preset(ModelPreset::TinyBase) => f.write_str("tiny-base"),
            ModelRef::Preset(ModelPreset::Smollm2_135m) => f.write_str("smollm2-135m"),
            ModelRef::Path(dir) => write!(f, "path:{dir}"),
            ModelRef::Checkpoint { run, step } => write!(f, "checkpoint:{run}@{step}"),
        }
    }
}

impl From<ModelRef> for String {
    fn from(model: ModelRef) -> String {
        model.to_string()
    }
}
