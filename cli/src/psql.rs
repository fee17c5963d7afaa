//! `prl psql`: psql on prl's database, logged in as the read-only analyst role, for SQL over the
//! analytics views (docs/analytics.md).

use anyhow::{Context, Result};
use std::process::Command;

/// The role analytics sessions log in as; created by the migrations with SELECT only.
pub const ANALYST_ROLE: &str = "prl_analyst";

/// psql connected to `database_url`'s database as the analyst; `args` go to psql as they are
/// (`-c`, `-f`, `--csv`, ...). The analyst's password is `password` (the local stack's), else
/// PGPASSWORD or ~/.pgpass.
pub fn command(database_url: &str, password: Option<&str>, args: &[String]) -> Result<Command> {
    let mut url = url::Url::parse(database_url).context("the database URL is not a URL")?;
    url.set_username(ANALYST_ROLE)
        .and_then(|()| url.set_password(None))
        .ok()
        .context("the database URL cannot name a user")?;
    let mut psql = Command::new("psql");
    psql.arg(url.as_str())
        .args(args)
        .env("PGAPPNAME", "prl psql");
    if let Some(password) = password {
        // In the environment, which other users cannot read, rather than on the command line.
        psql.env("PGPASSWORD", password);
    }
    Ok(psql)
}

/// Gives the analyst role (made by the migrations) `password`, as a user of `database_url` that
/// may alter roles.
pub async fn set_analyst_password(database_url: &str, password: &str) -> Result<()> {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(database_url)
        .await
        .context("connecting to PostgreSQL")?;
    // ALTER ROLE takes no parameters; the literal is quoted.
    let literal = password.replace('\'', "''");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER ROLE {ANALYST_ROLE} PASSWORD '{literal}'"
    )))
    .execute(&mut conn)
    .await
    .context("setting the analyst's password")?;
    Ok(())
}
