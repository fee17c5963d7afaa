//! Which model an experiment starts from: a built-in preset or a Hugging Face directory.

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

/// `tiny`, `tiny-base`, `smollm2-135m`, or `path:<dir>` for any HF Llama/Qwen directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ModelRef {
    Preset(ModelPreset),
    Path(String),
}

impl TryFrom<String> for ModelRef {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "tiny" => Ok(ModelRef::Preset(ModelPreset::Tiny)),
            "tiny-base" => Ok(ModelRef::Preset(ModelPreset::TinyBase)),
            "smollm2-135m" => Ok(ModelRef::Preset(ModelPreset::Smollm2_135m)),
            other => match other.strip_prefix("path:") {
                Some(dir) if !dir.trim().is_empty() => Ok(ModelRef::Path(dir.to_owned())),
                Some(_) => Err("`path:` must be followed by a directory".into()),
                None => Err(format!(
                    "unknown model {other:?}: expected a preset (tiny, tiny-base, smollm2-135m) or path:<dir>"
                )),
            },
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
            "pattern": "^(tiny|tiny-base|smollm2-135m|path:.+)$",
            "examples": ["tiny-base", "smollm2-135m", "path:/models/Qwen3-0.6B"]
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
        }
    }
}

impl From<ModelRef> for String {
    fn from(model: ModelRef) -> String {
        model.to_string()
    }
}
