//! `prl up`: the whole stack on one machine. Without DATABASE_URL and NATS_URL it starts a private
//! PostgreSQL cluster and nats-server under `.prl/` (data survives restarts), then the API and the
//! trainer daemons, which it restarts when they die. Ctrl-C stops everything in reverse order.

use super::client::Client;
use super::stack_file::StackFile;
use anyhow::{Context, Result};
use figment::providers::Serialized;
use prl_api::settings::Settings;
use prl_api::startup::Application;
use prl_local_stack::{PrivateNats, PrivatePostgres, redacted, secret_file};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct UpArgs {
    /// Once the stack is up, run a suite of experiments (a directory with suite.toml, such as
    /// deploy/suite/tiny) and print its comparison table.
    #[arg(long, value_name = "SUITE_DIR")]
    demo: Option<PathBuf>,
    /// Stop the stack when the demo suite has ended.
    #[arg(long, requires = "demo")]
    exit_after_demo: bool,
    /// Seeds of the demo suite (repeatable); the suite's own when absent.
    #[arg(long = "seed", requires = "demo")]
    seeds: Vec<u64>,
    /// Trainer daemons to start; the cores are shared out among them (libtorch threads), and the
    /// demo runs as many experiments at a time. 0 starts none (daemons of one's own take jobs).
    #[arg(long, default_value_t = 1)]
    trainers: usize,
    /// The API's port.
    #[arg(long, default_value_t = 8080)]
    port: u16,
}

pub async fn run(args: UpArgs, home: &Path) -> Result<()> {
    if args.demo.is_some() && args.trainers == 0 {
        anyhow::bail!("--demo needs at least one trainer daemon (--trainers 1 or more)");
    }
    // Read before anything starts, so that a bad suite is reported at once.
    let suite = args
        .demo
        .as_deref()
        .map(super::suite::Suite::read)
        .transpose()?;
    std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    let home = home.canonicalize()?;
    let (postgres, database_url) = match std::env::var("DATABASE_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let pg =
                PrivatePostgres::start(&home.join("postgres")).context("starting PostgreSQL")?;
            create_database(&pg.url("postgres"), "prl").await?;
            let url = pg.url("prl");
            println!(
                "PostgreSQL  {}  (data in {}; password in {})",
                redacted(&url),
                home.join("postgres").display(),
                home.join("postgres.password").display()
            );
            (Some(pg), url)
        }
    };
    let (nats, nats_url) = match std::env::var("NATS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = PrivateNats::start(&home.join("nats")).context("starting nats-server")?;
            let url = server.url();
            println!(
                "NATS        {}  (password in {})",
                redacted(&url),
                home.join("nats.password").display()
            );
            (Some(server), url)
        }
    };
    let (token, _) = secret_file(&home.join("token"))?;
    // The daemons it starts share one data directory, and the API and they one artifact store:
    // the configured one (`PRL_STORE__URL`), else a directory beside theirs.
    let trainer_dir = home.join("trainer");
    std::fs::create_dir_all(trainer_dir.join("store"))?;
    let local_store = format!(
        "file://{}",
        trainer_dir.canonicalize()?.join("store").display()
    );
    let settings: Settings = Settings::figment()
        .merge(Serialized::default("database.url", &database_url))
        .merge(Serialized::default("nats.url", &nats_url))
        .merge(Serialized::default("auth.token", &token))
        .merge(Serialized::default("http.port", args.port))
        // The daemons it starts run here, in the same directory.
        .merge(Serialized::default("files.shared_with_daemons", true))
        .merge(Serialized::default(
            "files.artifact_dir",
            home.join("artifacts"),
        ))
        .join(Serialized::default("store.url", &local_store))
        .extract()
        .context("reading the settings")?;
    let namespace = settings.nats.namespace.clone();
    let store_url = settings.store.url.clone().unwrap_or(local_store);
    let app = Application::build(settings).await?;
    // The analyst logs in with a password of its own, which `prl psql` reads from the stack file.
    // On a server of one's own the administrator gives it one.
    let analyst_password = match &postgres {
        Some(_) => {
            let (password, _) = secret_file(&home.join("analyst.password"))?;
            super::psql::set_analyst_password(&database_url, &password).await?;
            Some(password)
        }
        None => None,
    };
    let api_url = format!("http://127.0.0.1:{}", app.port());
    StackFile {
        api_url: api_url.clone(),
        token: token.clone(),
        database_url,
        nats_url: nats_url.clone(),
        analyst_password,
    }
    .write(&home)?;
    let trainers = args.trainers;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / trainers.max(1)).max(1);
    // The daemons share one data directory: checkpoints are per run, so any of them resumes any
    // run's job.
    let start = move || start_daemon(&nats_url, &namespace, &trainer_dir, &store_url, threads);
    let daemons = (0..trainers).map(|_| start()).collect::<Result<Vec<_>>>()?;
    println!("web UI      {api_url}/");
    println!("API         {api_url}/api/v1  (docs at {api_url}/api/docs/)");
    println!("token       in {}", home.join("token").display());
    println!("Ctrl-C stops the stack.");

    let stop = CancellationToken::new();
    prl_bus::signals::cancel_on_signal(stop.clone());
    if let Some(suite) = suite {
        let client = Client::new(Some(api_url), Some(token));
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = suite.run(&client, &args.seeds, trainers).await.map(drop) {
                eprintln!("the demo failed: {e:#}");
            }
            if args.exit_after_demo {
                stop.cancel();
            }
        });
    }
    // Polled here, on the main thread, which outlives every daemon it starts (they die with the
    // thread that started them).
    let serve = async {
        let served = app.run_until(stop.clone()).await;
        stop.cancel();
        served
    };
    let (served, mut daemons) = tokio::join!(serve, supervise(daemons, start, stop.clone()));
    served?;

    println!("stopping");
    stop_daemons(&mut daemons);
    if let Some(mut server) = nats {
        server.stop()?;
    }
    if let Some(mut pg) = postgres {
        pg.stop()?;
    }
    StackFile::remove(&home);
    Ok(())
}

/// How long daemons get to stop on their own. A step of a large job can take longer; its job
/// is then killed and resumes from its last checkpoint at the next start, as after `kill -9`.
const GRACEFUL_STOP: Duration = Duration::from_secs(20);

fn stop_daemons(daemons: &mut [Child]) {
    for daemon in daemons.iter() {
        // SAFETY: signalling our own child by pid. SIGINT is the daemon's graceful stop.
        unsafe { libc::kill(daemon.id() as i32, libc::SIGINT) };
    }
    let deadline = Instant::now() + GRACEFUL_STOP;
    for daemon in daemons.iter_mut() {
        while matches!(daemon.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if matches!(daemon.try_wait(), Ok(None)) {
            eprintln!(
                "trainer (pid {}) still busy after {} s: killing it",
                daemon.id(),
                GRACEFUL_STOP.as_secs()
            );
            let _ = daemon.kill();
        }
        let _ = daemon.wait();
    }
}

async fn create_database(admin_url: &str, name: &str) -> Result<()> {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin_url)
        .await
        .context("connecting to PostgreSQL")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        // The name is a constant of ours, not user input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}

/// Keeps the trainer daemons running until `stop`: one that exits (a crash, `kill -9`, the OOM
/// killer) is reaped and started again, after a pause that doubles, up to a minute, while it keeps
/// dying within a minute of its start. Returns the running daemons.
async fn supervise(
    daemons: Vec<Child>,
    start: impl Fn() -> Result<Child>,
    stop: CancellationToken,
) -> Vec<Child> {
    struct Slot {
        child: Option<Child>,
        started: Instant,
        pause: Duration,
        restart_at: Instant,
    }
    let now = Instant::now();
    let mut slots: Vec<Slot> = daemons
        .into_iter()
        .map(|child| Slot {
            child: Some(child),
            started: now,
            pause: Duration::from_secs(1),
            restart_at: now,
        })
        .collect();
    while !prl_api::messaging::pause(&stop, Duration::from_millis(500)).await {
        for (n, slot) in slots.iter_mut().enumerate() {
            if let Some(child) = &mut slot.child {
                let Ok(Some(status)) = child.try_wait() else {
                    continue;
                };
                slot.child = None;
                let ran = slot.started.elapsed();
                slot.pause = if ran < Duration::from_secs(60) {
                    (slot.pause * 2).min(Duration::from_secs(60))
                } else {
                    Duration::from_secs(1)
                };
                slot.restart_at = Instant::now() + slot.pause;
                eprintln!(
                    "trainer {n} exited ({status}) after {:.0} s; starting it again in {} s",
                    ran.as_secs_f64(),
                    slot.pause.as_secs()
                );
            } else if Instant::now() >= slot.restart_at {
                match start() {
                    Ok(child) => {
                        eprintln!("trainer {n} started again (pid {})", child.id());
                        slot.child = Some(child);
                        slot.started = Instant::now();
                    }
                    Err(e) => {
                        eprintln!("starting trainer {n} again: {e:#}");
                        slot.restart_at = Instant::now() + slot.pause;
                    }
                }
            }
        }
    }
    slots.into_iter().filter_map(|slot| slot.child).collect()
}

/// Starts `prl-trainer` from beside this binary.
fn start_daemon(
    nats_url: &str,
    namespace: &str,
    data_dir: &Path,
    store_url: &str,
    threads: usize,
) -> Result<Child> {
    let exe = std::env::current_exe()?;
    let binary: PathBuf = exe.with_file_name("prl-trainer");
    let mut cmd = Command::new(&binary);
    cmd.env("NATS_URL", nats_url)
        .env("PRL_NATS__NAMESPACE", namespace)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--store", store_url])
        .arg("--threads")
        .arg(threads.to_string());
    prl_local_stack::die_with_parent(&mut cmd, libc::SIGINT);
    cmd.spawn().with_context(|| {
        format!(
            "starting the trainer daemon {} (build it with `cargo build -p prl-trainer`)",
            binary.display()
        )
    })
}
