use clap::Parser;

#[tokio::main]
async fn main() {
    prl_api::telemetry::init_logging();
    let cli = prl_cli::Cli::parse();
    if let Err(e) = prl_cli::run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
