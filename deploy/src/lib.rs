//! Private PostgreSQL and nats-server processes, so that `prl up` and the test harness need no
//! servers of their own: each runs as a child process on a free local port and dies with its parent.

pub mod nats;
pub mod postgres;
mod process;
mod secret;

pub use process::{die_with_parent, free_port};
pub use secret::{redacted, secret_file, write_private};

pub use nats::PrivateNats;
pub use postgres::PrivatePostgres;
