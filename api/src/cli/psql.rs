//! `prl psql`: psql on prl's database, logged in as the read-only analyst role, for SQL over the
//! analytics views (docs/analytics.md).

use anyhow::{Context, Result};
use std::process::Command;

/// The role analytics sessions log in as; created by the migrations with SELECT only.
pub const ANALYST_ROLE: &str = "prl_analyst";

/// psql connected to `database_url`'s database as the analyst; `args` go to psql as they are
/// (`-c`, `-f`, `--csv`, ...). A password for the analyst comes from PGPASSWORD or ~/.pgpass.
pub fn command(database_url: &str, args: &[String]) -> Result<Command> {
    let mut url = url::Url::parse(database_url).context("the database URL is not a URL")?;
    url.set_username(ANALYST_ROLE)
        .and_then(|()| url.set_password(None))
        .ok()
        .context("the database URL cannot name a user")?;
    let mut psql = Command::new("psql");
    psql.arg(url.as_str())
        .args(args)
        .env("PGAPPNAME", "prl psql");
    Ok(psql)
}
