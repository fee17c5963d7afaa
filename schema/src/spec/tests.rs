use super::*;
use serde_json::json;

fn valid() -> Value {
    json!({
        "name": "parallel-r1 unseen s2",
        "tags": ["demo", "tiny"],
        "model": "tiny",
        "stages": [
            {"kind": "sft", "name": "cold-start", "dataset": "builtin:easy", "learning_rate": 1e-3,
             "attention": "unseen", "max_steps": 200, "checkpoint_every": 100},
            {"kind": "rl", "name": "rl", "dataset": "builtin:hard", "reward": "s2", "learning_rate": 1e-5,
             "steps": 50, "clip_high": 0.28, "init_from": {"stage": "cold-start", "step": 100}},
            {"kind": "eval", "name": "test", "dataset": "builtin:easy-test", "k": 4}
        ]
    })
}

fn field_of(value: Value) -> String {
    match ExperimentSpec::from_value(value) {
        Err(SpecError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid spec, got {other:?}"),
    }
}

#[test]
fn a_valid_spec_round_trips_through_json() {
    let spec = ExperimentSpec::from_value(valid()).unwrap();
    assert_eq!(spec.stages.as_slice().len(), 3);
    let again: ExperimentSpec =
        serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
    assert_eq!(spec, again);
}

#[test]
fn a_toml_spec_parses_like_json() {
    let text = r#"
        name = "sft only"
        model = "path:/models/qwen3"
        [[stages]]
        kind = "sft"
        name = "sft"
        dataset = "builtin:easy"
        learning_rate = 0.001
    "#;
    let spec = ExperimentSpec::from_toml(text).unwrap();
    assert_eq!(spec.model, ModelRef::Path("/models/qwen3".into()));
}

#[test]
fn each_kind_of_bad_field_is_named_by_its_path() {
    let mut v = valid();
    v["stages"][0]["learning_rate"] = json!(-1.0);
    assert_eq!(field_of(v), "stages[0].learning_rate");

    let mut v = valid();
    v["stages"][1]["group_size"] = json!(1);
    assert_eq!(field_of(v), "stages[1].group_size");

    let mut v = valid();
    v["stages"][2]["k"] = json!(0);
    assert_eq!(field_of(v), "stages[2].k");

    let mut v = valid();
    v["stages"][2]["bogus"] = json!(true);
    assert_eq!(field_of(v), "stages[2].bogus");

    let mut v = valid();
    v["stages"][0]["batch_size"] = json!("many");
    assert_eq!(field_of(v), "stages[0].batch_size");

    let mut v = valid();
    v["stages"] = json!([]);
    assert_eq!(field_of(v), "stages");

    let mut v = valid();
    v["unknown"] = json!(1);
    assert_eq!(field_of(v), "unknown");

    let mut v = valid();
    v["model"] = json!("gpt-5");
    assert_eq!(field_of(v), "model");

    let mut v = valid();
    v["stages"][1]
        .as_object_mut()
        .unwrap()
        .remove("learning_rate");
    assert_eq!(field_of(v), "stages[1].learning_rate");

    let mut v = valid();
    v["stages"][1]["kind"] = json!("ppo");
    assert_eq!(field_of(v), "stages[1].kind");
}

#[test]
fn an_input_checkpoint_that_cannot_exist_is_refused() {
    let mut v = valid();
    v["stages"][1]["init_from"] = json!({"stage": "test"});
    assert_eq!(field_of(v), "stages[1].init_from.stage");

    let mut v = valid();
    v["stages"][1]["init_from"] = json!({"stage": "cold-start", "step": 150});
    assert_eq!(field_of(v), "stages[1].init_from.step");

    let mut v = valid();
    v["stages"][1]["init_from"] = json!({"stage": "cold-start", "step": 300});
    assert_eq!(field_of(v), "stages[1].init_from.step");

    let mut v = valid();
    v["stages"][0]["init_from"] = json!({"stage": "rl"});
    assert_eq!(field_of(v), "stages[0].init_from.stage");
}

#[test]
fn clip_high_below_clip_low_is_refused() {
    let mut v = valid();
    v["stages"][1]["clip_high"] = json!(0.1);
    assert_eq!(field_of(v), "stages[1].clip_high");
}

#[test]
fn malformed_json_is_not_an_invalid_field() {
    assert!(matches!(
        ExperimentSpec::from_json(b"{\"name\":"),
        Err(SpecError::Malformed(_))
    ));
}

#[test]
fn periodic_evaluation_needs_a_dataset() {
    let mut spec = valid();
    spec["stages"][1]["eval_every"] = json!(5);
    assert_eq!(field_of(spec.clone()), "stages[1].eval_dataset");
    spec["stages"][1]["eval_dataset"] = json!("builtin:easy-test");
    assert!(ExperimentSpec::from_value(spec).is_ok());
}

#[test]
fn precision_defaults_to_float32_and_names_a_bad_value() {
    let spec = ExperimentSpec::from_value(valid()).unwrap();
    let StageSpec::Sft(sft) = &spec.stages.as_slice()[0] else {
        panic!("the first stage is SFT")
    };
    assert_eq!(sft.precision, Precision::Fp32);
    let mut bf16 = valid();
    bf16["stages"][1]["precision"] = json!("bf16");
    let spec = ExperimentSpec::from_value(bf16).unwrap();
    let StageSpec::Rl(rl) = &spec.stages.as_slice()[1] else {
        panic!("the second stage is RL")
    };
    assert_eq!(rl.precision, Precision::Bf16);
    let mut fp16 = valid();
    fp16["stages"][2]["precision"] = json!("fp16");
    assert_eq!(field_of(fp16), "stages[2].precision");
}

#[test]
fn dataset_references_are_checked_when_the_spec_is_read() {
    for (dataset, why) in [
        ("builtin:eazy", "unknown built-in dataset \"eazy\""),
        (
            "builtin:pretrain-test",
            "unknown built-in dataset \"pretrain-test\"",
        ),
        ("jsonl:", "`jsonl:` must be followed by a path"),
        ("registered:", "registered:<name>[:<split>]"),
        ("registered:a:b:c", "registered:<name>[:<split>]"),
        ("hf:gsm8k", "a dataset is builtin:<name>, jsonl:<path>"),
    ] {
        let mut v = valid();
        v["stages"][2]["dataset"] = json!(dataset);
        match ExperimentSpec::from_value(v) {
            Err(SpecError::Invalid { field, reason }) => {
                assert_eq!(field, "stages[2].dataset");
                assert!(reason.contains(why), "{dataset}: {reason}");
            }
            other => panic!("{dataset}: expected an invalid spec, got {other:?}"),
        }
    }
    for dataset in [
        "builtin:mixed-test:sequential",
        "builtin:pretrain",
        "jsonl:data/x.jsonl:sequential",
        "verl:/d/test.parquet",
        "registered:gsm8k:test:sequential",
    ] {
        let mut v = valid();
        v["stages"][2]["dataset"] = json!(dataset);
        assert!(ExperimentSpec::from_value(v).is_ok(), "{dataset}");
    }
}

#[test]
fn a_checkpoint_model_names_a_run_and_a_step() {
    let run = uuid::Uuid::now_v7();
    let model: ModelRef = serde_json::from_value(json!(format!("checkpoint:{run}@40"))).unwrap();
    assert_eq!(model, ModelRef::Checkpoint { run, step: 40 });
    assert_eq!(model.to_string(), format!("checkpoint:{run}@40"));
    for bad in [
        "checkpoint:".to_owned(),
        format!("checkpoint:{run}"),
        format!("checkpoint:{run}@"),
        format!("checkpoint:{run}@-1"),
        "checkpoint:not-a-run@3".to_owned(),
    ] {
        let refused = serde_json::from_value::<ModelRef>(json!(bad)).unwrap_err();
        assert!(
            refused.to_string().contains("checkpoint:<run id>@<step>"),
            "{refused}"
        );
    }
}

#[test]
fn verl_stages_say_what_main_ppo_cannot_do() {
    let spec = |extra: serde_json::Value| {
        let mut stage = serde_json::json!({
            "kind": "rl", "name": "rl", "backend": "verl", "dataset": "builtin:easy",
            "reward": "s2", "learning_rate": 1e-6, "steps": 10, "dynamic_sampling": false,
            "group_size": 8, "mini_batch_size": 64
        });
        for (k, v) in extra.as_object().unwrap() {
            stage[k] = v.clone();
        }
        ExperimentSpec::from_value(
            serde_json::json!({"name": "v", "model": "path:/m", "stages": [stage]}),
        )
    };
    let ok = spec(
        serde_json::json!({"verl": {"n_gpus_per_node": 4, "overrides": ["trainer.save_freq=5"]}}),
    )
    .unwrap();
    let StageSpec::Rl(rl) = &ok.stages.as_slice()[0] else {
        unreachable!()
    };
    assert_eq!(rl.verl.as_ref().unwrap().n_gpus_per_node.get(), 4);
    assert_eq!(rl.verl.as_ref().unwrap().nnodes.get(), 1);
    for (extra, field) in [
        (
            serde_json::json!({"dynamic_sampling": true}),
            "stages[0].dynamic_sampling",
        ),
        (
            serde_json::json!({"eval_greedy": true}),
            "stages[0].eval_greedy",
        ),
        (
            serde_json::json!({"mini_batch_size": 12}),
            "stages[0].mini_batch_size",
        ),
        (
            serde_json::json!({"resources": {"device": "cuda"}}),
            "stages[0].resources",
        ),
        (
            serde_json::json!({"backend": "tch", "verl": {}}),
            "stages[0].verl",
        ),
        (
            serde_json::json!({"verl": {"overrides": ["no equals sign"]}}),
            "stages[0].verl.overrides[0]",
        ),
    ] {
        match spec(extra.clone()) {
            Err(SpecError::Invalid { field: f, .. }) => assert_eq!(f, field, "{extra}"),
            other => panic!("{extra}: {other:?}"),
        }
    }
}
