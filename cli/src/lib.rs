//! The `prl` command line: the local stack, the API server, and a client of the REST API.

pub mod client;
pub mod dataset;
pub mod findings;
mod follow;
pub mod import;
pub mod psql;
pub mod results;
mod stack_file;
pub mod suite;
mod up;
mod watch;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use client::Client;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "prl", version, about = "Parallel-R1 experiment platform")]
pub struct Cli {
    /// The API to talk to; defaults to the local stack's.
    #[arg(long, global = true, env = "PRL_API_URL")]
    api_url: Option<String>,
    /// Bearer token for writes; defaults to the local stack's.
    #[arg(long, global = true, env = "PRL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The local stack's directory.
    #[arg(long, global = true, env = "PRL_HOME", default_value = ".prl")]
    home: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the local stack: PostgreSQL and NATS (private ones unless DATABASE_URL and NATS_URL
    /// are set), the API and a trainer daemon. Ctrl-C stops it all.
    Up(up::UpArgs),
    /// Run the API server alone, configured by PRL_* variables (docs/reference/settings.md).
    Serve,
    /// Submit an experiment spec (.json or .toml).
    Submit {
        file: PathBuf,
        /// Follow the experiment until it ends; exits non-zero unless it completed.
        #[arg(long)]
        watch: bool,
    },
    /// List experiments, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Follow an experiment with a progress bar per stage until it ends; exits non-zero unless
    /// it completed.
    Watch { id: uuid::Uuid },
    /// Cancel an experiment.
    Cancel {
        id: uuid::Uuid,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Run a suite of experiments (a directory with suite.toml) once per seed, print each seed's
    /// comparison table and the paper's findings judged across the seeds.
    Suite {
        dir: PathBuf,
        /// Seeds to run (repeatable); the suite's own when absent.
        #[arg(long = "seed")]
        seeds: Vec<u64>,
        /// Experiments run at a time: at most as many as trainer daemons take jobs.
        #[arg(long, default_value_t = 1)]
        parallel: usize,
    },
    /// Print the comparison table of experiments, shaped like the paper's main table.
    Results {
        #[arg(required = true)]
        ids: Vec<uuid::Uuid>,
    },
    /// Evaluate a checkpoint of a run (its newest unless --step) on a dataset.
    Evaluate {
        run: uuid::Uuid,
        #[arg(long)]
        dataset: String,
        #[arg(long, default_value_t = 1)]
        k: u32,
        #[arg(long)]
        step: Option<u64>,
        #[arg(long)]
        max_prompts: Option<u32>,
        /// 0 decodes greedily.
        #[arg(long)]
        temperature: Option<f64>,
        /// Follow the evaluation until it ends; exits non-zero unless it completed.
        #[arg(long)]
        watch: bool,
    },
    /// Record a verl run from the files it writes, while it writes them: rollout and validation
    /// dumps (`{step}.jsonl`) and the `file` logger's JSONL. Started again with the same name,
    /// it resumes where the log says it stopped. With a command after `--`, it runs it, follows
    /// until it exits, marks the run finished or failed, and exits with its status.
    Follow {
        /// The experiment's name; with `--key`, what finds the run again after a restart.
        #[arg(long)]
        name: String,
        /// `trainer.rollout_data_dir`.
        #[arg(long)]
        rollouts: Option<PathBuf>,
        /// `trainer.validation_data_dir`.
        #[arg(long)]
        validation: Option<PathBuf>,
        /// The `file` logger's JSONL.
        #[arg(long)]
        metrics: Option<PathBuf>,
        /// TRL's `<output_dir>/completions` (GRPO with `log_completions=True`).
        #[arg(long)]
        trl: Option<PathBuf>,
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Names the run across restarts (default `follow:<name>`).
        #[arg(long)]
        key: Option<String>,
        /// How often the files are read, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        poll_ms: u64,
        /// Record what the files hold now, then stop.
        #[arg(long)]
        once: bool,
        /// Mark the run finished when stopping (when no command is watched).
        #[arg(long)]
        finish: bool,
        /// The training command to run and watch.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Import a run of the reference code from its dumps: a folder of rollout `{step}.jsonl`
    /// files and/or a folder of validation dumps, or a verl parquet dataset whose answers are
    /// parallel-format solutions (analysed as step 0). All or nothing; twice records once.
    Import {
        /// The experiment's name (the method, in comparisons).
        #[arg(long)]
        name: String,
        #[arg(long)]
        rollouts: Option<PathBuf>,
        #[arg(long)]
        validation: Option<PathBuf>,
        #[arg(long)]
        dataset: Option<PathBuf>,
        /// The benchmark of validation lines without a `data_source`.
        #[arg(long)]
        benchmark: Option<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Register dataset files under a name (`registered:<name>[:<split>]` in specs), or list them.
    Dataset {
        #[command(subcommand)]
        command: DatasetCommand,
    },
    /// List the trainer daemons heard from in the last day: host, device, labels, job, last seen.
    Workers,
    /// List worker messages the ingester parked, or publish one again for it to try anew.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
    /// Print events of the log.
    Events {
        /// Start after this position.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Keep waiting for new events.
        #[arg(long)]
        follow: bool,
    },
    /// Print the running local stack's addresses and token as shell exports (PRL_API_URL,
    /// PRL_TOKEN, DATABASE_URL, NATS_URL), for tools outside prl: `eval "$(prl env)"`.
    Env,
    /// Rebuild every projection from the event log (uses DATABASE_URL or the local stack's).
    Replay,
    /// Open psql on prl's database (its read replica PRL_ANALYTICS_DATABASE_URL, else DATABASE_URL
    /// or the local stack's), logged in as the read-only analyst role; arguments after `--` go to
    /// psql, e.g. `prl psql -- -c 'TABLE main_table'`.
    Psql {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// Each parked message: id, when, subject, size, why, and how often it was re-driven.
    List,
    /// Publish a parked message again on its subject; if it still cannot be written it is
    /// parked again, as a new dead letter.
    Redrive { id: uuid::Uuid },
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Read and check every row of each split's file (.jsonl or verl .parquet), then register
    /// them with their row counts and sha256; a changed file becomes a new version.
    Register {
        name: String,
        /// SPLIT=FILE, e.g. --split train=data/train.jsonl --split test=data/test.parquet
        #[arg(long = "split", required = true, value_parser = dataset::split_argument)]
        splits: Vec<(String, PathBuf)>,
        /// Where the data came from.
        #[arg(long, default_value = "")]
        source: String,
        /// Upload the files into the artifact store (the API checks them), so that daemons on
        /// any host fetch them; without it, every daemon must see them at their paths here.
        #[arg(long)]
        upload: bool,
    },
    /// The registered datasets, newest version of each.
    List,
}

pub async fn run(cli: Cli) -> Result<()> {
    let stack = stack_file::StackFile::read(&cli.home);
    let client = || {
        Client::new(
            cli.api_url
                .clone()
                .or_else(|| stack.as_ref().map(|s| s.api_url.clone())),
            cli.token
                .clone()
                .or_else(|| stack.as_ref().map(|s| s.token.clone())),
        )
    };
    match cli.command {
        Command::Up(args) => up::run(args, &cli.home).await,
        Command::Serve => serve().await,
        Command::Submit { file, watch } => {
            let client = client();
            let id = client.submit_file(&file).await?;
            println!("submitted experiment {id}");
            if watch {
                watch::until_completed(&client, id).await?;
            }
            Ok(())
        }
        Command::List {
            status,
            tag,
            name,
            limit,
        } => client().print_list(status, tag, name, limit).await,
        Command::Watch { id } => watch::until_completed(&client(), id).await,
        Command::Cancel { id, reason } => {
            let status = client().cancel(id, reason).await?;
            println!("experiment {id} is {status}");
            Ok(())
        }
        Command::Suite {
            dir,
            seeds,
            parallel,
        } => suite::Suite::read(&dir)?
            .run(&client(), &seeds, parallel)
            .await
            .map(drop),
        Command::Results { ids } => {
            results::print_table(&client().results(&ids).await?);
            Ok(())
        }
        Command::Evaluate {
            run,
            dataset,
            k,
            step,
            max_prompts,
            temperature,
            watch,
        } => {
            let client = client();
            let mut request = serde_json::json!({ "dataset": dataset, "k": k, "step": step });
            if let Some(n) = max_prompts {
                request["max_prompts"] = n.into();
            }
            if let Some(t) = temperature {
                request["temperature"] = t.into();
            }
            let id = client.evaluate(run, &request).await?;
            println!("submitted experiment {id}");
            if watch {
                watch::until_completed(&client, id).await?;
                results::print_table(&client.results(&[id]).await?);
            }
            Ok(())
        }
        Command::Events { after, follow } => client().print_events(after, follow).await,
        Command::Follow {
            name,
            rollouts,
            validation,
            metrics,
            trl,
            tags,
            key,
            poll_ms,
            once,
            finish,
            command,
        } => {
            if rollouts.is_none() && validation.is_none() && metrics.is_none() && trl.is_none() {
                anyhow::bail!(
                    "name what to follow: --rollouts, --validation, --metrics and/or --trl"
                );
            }
            let args = follow::Follow {
                name,
                tags,
                key,
                rollouts,
                validation,
                metrics,
                trl,
                poll: std::time::Duration::from_millis(poll_ms.max(10)),
                once,
                finish,
                command,
            };
            follow::run(&client(), args).await
        }
        Command::Import {
            name,
            rollouts,
            validation,
            dataset,
            benchmark,
            tags,
        } => {
            let sources = import::Sources {
                rollouts,
                validation,
                dataset,
            };
            let request = import::request(name, sources, benchmark, tags)?;
            let imported = client().import(&request).await?;
            if imported.already_imported {
                println!("already imported as experiment {}", imported.experiment_id);
            } else {
                println!(
                    "imported experiment {} (run {}): {} steps, {} trajectories, {} evaluations",
                    imported.experiment_id,
                    imported.run_id,
                    imported.steps,
                    imported.trajectories,
                    imported.evaluations
                );
            }
            Ok(())
        }
        Command::Workers => {
            let workers = client().workers().await?;
            if workers.is_empty() {
                println!("no daemon has announced itself");
            }
            for w in workers {
                let info = &w.info;
                let memory = info
                    .gpu_memory_gb
                    .map(|m| format!(" {m:.0} GB"))
                    .unwrap_or_default();
                let labels: Vec<String> = info
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let kinds: Vec<&str> = info.kinds.iter().map(|k| k.as_str()).collect();
                let job = match &info.job {
                    Some(j) => format!("run {} attempt {}", j.run_id, j.attempt),
                    None => "idle".into(),
                };
                println!(
                    "{}  {}  {}  {}{memory}  [{}]  {}  {job}  seen {:.0} s ago",
                    info.worker_id,
                    w.status,
                    info.host,
                    info.device,
                    labels.join(" "),
                    kinds.join(","),
                    w.seconds_since_seen
                );
            }
            Ok(())
        }
        Command::DeadLetters { command } => match command {
            DeadLetterCommand::List => {
                let letters = client().dead_letters().await?;
                if letters.is_empty() {
                    println!("no parked messages");
                }
                for d in letters {
                    println!(
                        "{}  {}  {}  {} bytes  re-driven {}x\n    {}",
                        d.id,
                        d.recorded_at.format("%Y-%m-%d %H:%M:%S"),
                        d.subject,
                        d.bytes,
                        d.redrives,
                        d.reason
                    );
                }
                Ok(())
            }
            DeadLetterCommand::Redrive { id } => {
                let d = client().redrive(id).await?;
                println!("re-drove {id} on {} ({} times now)", d.subject, d.redrives);
                Ok(())
            }
        },
        Command::Dataset { command } => match command {
            DatasetCommand::Register {
                name,
                splits,
                source,
                upload,
            } => {
                let client = client();
                let upload = upload.then_some(&client);
                let registration = dataset::registration(name, &splits, source, upload).await?;
                let view = client.register_dataset(&registration).await?;
                println!("dataset {} version {}:", view.name, view.version);
                for split in view.splits.iter() {
                    println!(
                        "  {}: {} rows, {} ({})",
                        split.name, split.rows, split.uri, split.sha256
                    );
                }
                Ok(())
            }
            DatasetCommand::List => {
                for view in client().datasets().await? {
                    let splits: Vec<String> = view
                        .splits
                        .iter()
                        .map(|s| format!("{} ({} rows)", s.name, s.rows))
                        .collect();
                    println!("{} v{}: {}", view.name, view.version, splits.join(", "));
                }
                Ok(())
            }
        },
        Command::Psql { args } => {
            // Analytics sessions go to the read replica where there is one.
            let url = match std::env::var("PRL_ANALYTICS_DATABASE_URL") {
                Ok(replica) => replica,
                Err(_) => database_url(stack.as_ref())?,
            };
            // The stack's analyst password, unless the URL names another database.
            let password = stack
                .as_ref()
                .filter(|s| s.database_url == url)
                .and_then(|s| s.analyst_password.as_deref());
            let status = psql::command(&url, password, &args)?.status().context(
                "running psql (install the PostgreSQL client, e.g. apt install postgresql-client)",
            )?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Command::Env => {
            let stack =
                stack.context("no local stack is running here (start one with `prl up`)")?;
            print!("{}", stack.exports());
            Ok(())
        }
        Command::Replay => {
            let url = database_url(stack.as_ref())?;
            let pool = sqlx::PgPool::connect(&url)
                .await
                .context("connecting to the database")?;
            let applied = prl_api::projections::replay::replay(&pool).await?;
            println!("rebuilt the projections from {applied} events");
            Ok(())
        }
    }
}

/// DATABASE_URL, else the running local stack's database.
fn database_url(stack: Option<&stack_file::StackFile>) -> Result<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .or_else(|| stack.map(|s| s.database_url.clone()))
        .context("no database: set DATABASE_URL or start the local stack with `prl up`")
}

async fn serve() -> Result<()> {
    let settings = prl_api::settings::Settings::load().context("reading the settings")?;
    let app = prl_api::startup::Application::build(settings).await?;
    tracing::info!("the API listens on port {}", app.port());
    let stop = tokio_util::sync::CancellationToken::new();
    prl_bus::signals::cancel_on_signal(stop.clone());
    app.run_until(stop).await
}
