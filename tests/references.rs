//! The pages of docs/reference/ are generated from the code: the spec types' JSON Schema (bounds,
//! defaults and doc comments), `Settings` with its defaults, and the clap definitions of `prl` and
//! `prl-trainer`; so is web/openapi.json, the API's OpenAPI document that the web UI's types are
//! generated from. This test fails when a committed file differs from what the code generates
//! now; run it with `PRL_WRITE_REFERENCES=1` to rewrite them.

use clap::CommandFactory;
use serde_json::{Map, Value};
use std::fmt::Write;
use std::path::PathBuf;

const GENERATED: &str = "<!-- Generated from the code by tests/references.rs: do not edit. \
Rewrite with `PRL_WRITE_REFERENCES=1 cargo test -p prl-integration-tests --test references`. -->\n\n";

#[test]
fn the_generated_references_are_current() {
    let pages = [
        ("docs/reference/spec.md", spec_page()),
        ("docs/reference/settings.md", settings_page()),
        ("docs/reference/cli.md", cli_page()),
        ("docs/reference/prl-trainer.md", trainer_page()),
        // The web UI's types are generated from it when the UI is built (web/package.json).
        ("web/openapi.json", openapi_document()),
    ];
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let write = std::env::var_os("PRL_WRITE_REFERENCES").is_some();
    let mut stale = vec![];
    for (name, text) in pages {
        let path = root.join(name);
        if write {
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "{} no longer match the code: run \
         PRL_WRITE_REFERENCES=1 cargo test -p prl-integration-tests --test references, and \
         commit them",
        stale.join(", ")
    );
}

fn openapi_document() -> String {
    let mut text = serde_json::to_string_pretty(prl_api::routes::openapi::document_json()).unwrap();
    text.push('\n');
    text
}

// ---- the spec ----

fn spec_page() -> String {
    let schemas = prl_schema::spec::json_schemas();
    let mut page = String::from(GENERATED);
    page.push_str(
        "# The experiment spec\n\n\
         A spec is JSON or TOML (`prl submit FILE`, `POST /api/v1/experiments`). Unknown fields are \
         errors, so a typo never falls back to a default; a refused spec answers 422 with the \
         field's path (`stages[1].group_size`) and the reason. Each stage starts from the final \
         checkpoint of the stage before it (the first from `model`), unless `init_from` names an \
         earlier stage and step. Examples: `deploy/suite/`.\n\n",
    );
    page.push_str("## Experiment\n\n");
    page.push_str(&fields_table(&schemas["ExperimentSpec"], &schemas));
    for stage in schemas["StageSpec"]["oneOf"].as_array().unwrap() {
        let kind = stage["properties"]["kind"]["const"].as_str().unwrap();
        write!(page, "\n## `kind = \"{kind}\"`\n\n").unwrap();
        if let Some(text) = stage["description"].as_str() {
            write!(page, "{}\n\n", one_line(text)).unwrap();
        }
        page.push_str(&fields_table(stage, &schemas));
    }
    page.push_str("\n## `init_from`\n\n");
    page.push_str(&fields_table(&schemas["InitFrom"], &schemas));
    page.push_str("\n## `resources`\n\n");
    page.push_str(&fields_table(&schemas["Resources"], &schemas));
    page.push_str(
        "\n## `verl`\n\nAn RL stage with `backend = \"verl\"` runs as a verl job on a Ray \
         cluster ([verl](../verl.md)); this table says what prl's own fields do not.\n\n",
    );
    page.push_str(&fields_table(&schemas["VerlSettings"], &schemas));
    write!(
        page,
        "\n## Datasets\n\n\
         A `dataset` is one of:\n\n\
         - `builtin:<name>`, the built-in task's generated problems: {};\n\
         - `jsonl:<path>` or `verl:<path>`, a JSONL or verl-style parquet file on the daemon \
         (a relative path resolves against the daemon's working directory);\n\
         - `registered:<name>[:<split>]`, files registered with `prl dataset register` (split \
         `train` when left out), checked and pinned when the experiment is accepted.\n\n\
         Any of them followed by `:sequential` uses the step-by-step prompt instead of the \
         parallel one (the baselines). Formats, the answer convention and the tag grammar: \
         [your own data](../own-data.md).\n\n\
         ## Models\n\n\
         `model` is a preset (`tiny`, `tiny-base`, `smollm2-135m`), `path:<dir>`, a Hugging \
         Face directory on the daemon, or `checkpoint:<run id>@<step>`, a checkpoint a run \
         recorded: [your own model](../own-model.md).\n",
        prl_schema::datasets::BUILTIN_NAMES
    )
    .unwrap();
    page.push_str("\n## Values\n");
    for (name, schema) in &schemas {
        let variants = variants(schema);
        if variants.is_empty() {
            continue;
        }
        write!(page, "\n### {name}\n\n").unwrap();
        if let Some(text) = schema["description"].as_str() {
            write!(page, "{}\n\n", one_line(text)).unwrap();
        }
        for (value, text) in variants {
            match text {
                Some(text) => writeln!(page, "- `{value}`: {}", one_line(&text)).unwrap(),
                None => writeln!(page, "- `{value}`").unwrap(),
            }
        }
    }
    page
}

/// A Markdown table of an object schema's properties.
fn fields_table(schema: &Value, schemas: &Map<String, Value>) -> String {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut table = String::from("| field | type | default | meaning |\n|---|---|---|---|\n");
    let properties = schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    // A stage's `kind` is its section's title.
    for (name, property) in properties.iter().filter(|(name, _)| *name != "kind") {
        let default = if required.contains(&name.as_str()) {
            "required".to_owned()
        } else {
            match property.get("default") {
                Some(value) => format!("`{value}`"),
                None => "unset".to_owned(),
            }
        };
        let meaning = property["description"]
            .as_str()
            .map(one_line)
            .unwrap_or_default();
        writeln!(
            table,
            "| `{name}` | {} | {default} | {} |",
            type_of(property, schemas).replace('|', "\\|"),
            meaning.replace('|', "\\|")
        )
        .unwrap();
    }
    table
}

/// A property's type in words, with its bounds.
fn type_of(schema: &Value, schemas: &Map<String, Value>) -> String {
    if let Some(name) = schema["$ref"].as_str().and_then(|r| r.rsplit('/').next()) {
        let values = variants(&schemas[name]);
        if values.is_empty() {
            return format!("`{name}`");
        }
        let values: Vec<String> = values.iter().map(|(v, _)| format!("`{v}`")).collect();
        return format!("one of {}", values.join(", "));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = schema[key].as_array() {
            let named: Vec<String> = options
                .iter()
                .filter(|o| o["type"] != "null")
                .map(|o| type_of(o, schemas))
                .collect();
            return named.join(" or ");
        }
    }
    let kind = match &schema["type"] {
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("any")
            .to_owned(),
        Value::String(kind) => kind.clone(),
        _ => "any".to_owned(),
    };
    let mut text = if kind == "array" {
        format!("list of {}", type_of(&schema["items"], schemas))
    } else {
        kind
    };
    let bounds: Vec<String> = [
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
        ("minItems", "items ≥"),
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
    ]
    .into_iter()
    .filter_map(|(key, sign)| schema.get(key).map(|v| format!("{sign} {v}")))
    .collect();
    if !bounds.is_empty() {
        write!(text, ", {}", bounds.join(", ")).unwrap();
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        write!(text, ", matching `{pattern}`").unwrap();
    }
    if let Some(examples) = schema["examples"].as_array() {
        let examples: Vec<String> = examples.iter().map(|e| format!("`{e}`")).collect();
        write!(text, " (e.g. {})", examples.join(", ")).unwrap();
    }
    text
}

/// The values of an enumeration schema, with their descriptions.
fn variants(schema: &Value) -> Vec<(String, Option<String>)> {
    if let Some(values) = schema["enum"].as_array() {
        return values
            .iter()
            .filter_map(|v| Some((v.as_str()?.to_owned(), None)))
            .collect();
    }
    let Some(options) = schema["oneOf"].as_array() else {
        return vec![];
    };
    let consts: Vec<_> = options
        .iter()
        .filter_map(|o| {
            let value = o["const"]
                .as_str()
                .or_else(|| o["enum"].as_array()?.first()?.as_str())?;
            Some((
                value.to_owned(),
                o["description"].as_str().map(str::to_owned),
            ))
        })
        .collect();
    if consts.len() == options.len() {
        consts
    } else {
        vec![]
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---- the settings ----

fn settings_page() -> String {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<prl_api::settings::Settings>()
        .to_value();
    let defaults = prl_api::settings::Settings::defaults();
    // The web UI's default directory is the checkout's, wherever that is.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let checkout = format!("{}/api/../", root.display());
    let mut page = String::from(GENERATED);
    page.push_str(
        "# `prl serve` settings\n\n\
         Settings come in layers: the defaults below, then a TOML file named by `PRL_CONFIG` \
         (sections as below: `[http]`, `host = \"0.0.0.0\"`), then environment variables \
         `PRL_<SECTION>__<KEY>` (`PRL_HTTP__PORT=9000`). `DATABASE_URL` and `NATS_URL` are \
         read as well. `prl up` sets all of them for its private servers.\n",
    );
    for (section, reference) in schema["properties"].as_object().unwrap() {
        let name = reference["$ref"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap();
        let section_schema = &schema["$defs"][name];
        write!(page, "\n## `[{section}]`\n\n").unwrap();
        page.push_str("| key | environment | type | default | meaning |\n|---|---|---|---|---|\n");
        for (key, property) in section_schema["properties"].as_object().unwrap() {
            let optional = !section_schema["required"]
                .as_array()
                .is_some_and(|r| r.iter().any(|k| k == key));
            let default = match &defaults[section][key] {
                Value::Null if optional => "none".to_owned(),
                Value::Null => "required".to_owned(),
                Value::String(text) if text.starts_with(&checkout) => {
                    format!("`{}` in the checkout", &text[checkout.len()..])
                }
                value => format!("`{value}`"),
            };
            writeln!(
                page,
                "| `{key}` | `PRL_{}__{}` | {} | {default} | {} |",
                section.to_uppercase(),
                key.to_uppercase(),
                type_of(property, &Map::new()).replace('|', "\\|"),
                property["description"]
                    .as_str()
                    .map(one_line)
                    .unwrap_or_default()
            )
            .unwrap();
        }
    }
    page
}

// ---- the CLI ----

fn cli_page() -> String {
    let mut page = String::from(GENERATED);
    page.push_str("# The `prl` command\n");
    let mut command = prl_cli::Cli::command();
    command.build();
    describe(&mut page, &command, "prl");
    page
}

fn trainer_page() -> String {
    let mut page = String::from(GENERATED);
    page.push_str(
        "# The `prl-trainer` daemon\n\n\
         See [GPUs and several daemons](../gpus-and-daemons.md) for how to run several.\n",
    );
    let mut command = prl_trainer::cli::Args::command();
    command.build();
    describe(&mut page, &command, "prl-trainer");
    page
}

fn describe(page: &mut String, command: &clap::Command, path: &str) {
    // Environment values would make the page depend on where it is generated.
    let mut command = command
        .clone()
        .bin_name(path)
        .mut_args(|arg| arg.hide_env_values(true));
    let help = command.render_long_help().to_string();
    write!(page, "\n## `{path}`\n\n```text\n{}\n```\n", help.trim_end()).unwrap();
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        describe(page, sub, &format!("{path} {}", sub.get_name()));
    }
}
