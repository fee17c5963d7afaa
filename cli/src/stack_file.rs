//! `.prl/stack.json`: where a running local stack can be reached, so other `prl` commands find it.

use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Serialize, Deserialize)]
pub struct StackFile {
    pub api_url: String,
    pub token: String,
    pub database_url: String,
    pub nats_url: String,
    /// The analyst role's password, where the stack's PostgreSQL is its own.
    #[serde(default)]
    pub analyst_password: Option<String>,
}

impl StackFile {
    const NAME: &str = "stack.json";

    pub fn read(home: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(home.join(Self::NAME)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write(&self, home: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        prl_local_stack::write_private(&home.join(Self::NAME), text.as_bytes())
    }

    /// `export NAME='value'` lines for a POSIX shell.
    pub fn exports(&self) -> String {
        [
            ("PRL_API_URL", &self.api_url),
            ("PRL_TOKEN", &self.token),
            ("DATABASE_URL", &self.database_url),
            ("NATS_URL", &self.nats_url),
        ]
        .iter()
        .map(|(name, value)| format!("export {name}='{}'\n", value.replace('\'', r"'\''")))
        .collect()
    }

    pub fn remove(home: &Path) {
        let _ = std::fs::remove_file(home.join(Self::NAME));
    }
}
