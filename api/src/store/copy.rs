//! Bulk writes with `COPY … FROM STDIN (FORMAT binary)`: rows go to the server as a stream of
//! fields already in PostgreSQL's binary form, so the server neither parses text nor unpacks
//! statement-sized arrays, and the client encodes the next chunk while the server stores the last.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// How many bytes are encoded before they are sent: large enough to amortise a message, small
/// enough that client and server work side by side.
const CHUNK: usize = 1 << 20;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The element type OID of `int4`, for arrays.
const INT4_OID: i32 = 23;

/// One field in binary COPY form: its length, then its bytes (or a length of -1 for NULL).
pub trait Field {
    fn write(&self, out: &mut Vec<u8>);
}

fn sized(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

impl Field for i32 {
    fn write(&self, out: &mut Vec<u8>) {
        sized(out, &self.to_be_bytes());
    }
}

impl Field for i64 {
    fn write(&self, out: &mut Vec<u8>) {
        sized(out, &self.to_be_bytes());
    }
}

impl Field for f64 {
    fn write(&self, out: &mut Vec<u8>) {
        sized(out, &self.to_bits().to_be_bytes());
    }
}

impl Field for bool {
    fn write(&self, out: &mut Vec<u8>) {
        sized(out, &[*self as u8]);
    }
}

impl Field for Uuid {
    fn write(&self, out: &mut Vec<u8>) {
        sized(out, self.as_bytes());
    }
}

impl Field for str {
    fn write(&self, out: &mut Vec<u8>) {
        sized(out, self.as_bytes());
    }
}

/// `bytea`: the bytes as they are.
impl Field for [u8] {
    fn write(&self, out: &mut Vec<u8>) {
        sized(out, self);
    }
}

impl Field for DateTime<Utc> {
    fn write(&self, out: &mut Vec<u8>) {
        sized(
            out,
            &(self.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes(),
        );
    }
}

impl<T: Field + ?Sized> Field for &T {
    fn write(&self, out: &mut Vec<u8>) {
        (**self).write(out)
    }
}

impl<T: Field> Field for Option<T> {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Some(value) => value.write(out),
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
}

/// A `jsonb` value from JSON text (its binary form is a version byte, then the text).
pub struct Jsonb<'a>(pub &'a [u8]);

impl Field for Jsonb<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.0.len() as i32 + 1).to_be_bytes());
        out.push(1);
        out.extend_from_slice(self.0);
    }
}

/// An `int4[]` of one dimension.
pub struct Int4Array<I>(pub I);

impl<I: Iterator<Item = i32> + Clone> Field for Int4Array<I> {
    fn write(&self, out: &mut Vec<u8>) {
        let count = self.0.clone().count() as i32;
        let mut body = Vec::with_capacity(20 + 8 * count as usize);
        let dimensions = (count > 0) as i32;
        for word in [dimensions, 0, INT4_OID] {
            body.extend_from_slice(&word.to_be_bytes());
        }
        if count > 0 {
            body.extend_from_slice(&count.to_be_bytes());
            body.extend_from_slice(&1i32.to_be_bytes()); // lower bound
            for value in self.0.clone() {
                value.write(&mut body);
            }
        }
        sized(out, &body);
    }
}

/// A `COPY table (columns) FROM STDIN (FORMAT binary)` in progress on a connection. Dropped
/// before `finish` has returned, it leaves the connection out of step with the server: only a
/// `LogTx`, which closes its connection unless it commits, may run one.
pub struct CopyIn<'c> {
    copy: sqlx::postgres::PgCopyIn<&'c mut PgConnection>,
    columns: usize,
    /// Fields written since the last row began.
    fields: usize,
    buffer: Vec<u8>,
}

impl<'c> CopyIn<'c> {
    /// Starts copying into `table`'s `columns`; every row must give them in this order.
    pub async fn start(
        conn: &'c mut PgConnection,
        table: &str,
        columns: &[&str],
    ) -> Result<CopyIn<'c>, sqlx::Error> {
        let statement = format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            columns.join(", ")
        );
        let copy = conn.copy_in_raw(&statement).await?;
        let mut buffer = b"PGCOPY\n\xff\r\n\0".to_vec();
        buffer.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buffer.extend_from_slice(&0i32.to_be_bytes()); // no header extension
        Ok(CopyIn {
            copy,
            columns: columns.len(),
            fields: columns.len(),
            buffer,
        })
    }

    /// Begins a row; its fields follow with `field`, exactly as many as the columns.
    pub async fn row(&mut self) -> Result<(), sqlx::Error> {
        self.check_width()?;
        if self.buffer.len() >= CHUNK {
            // The connection copies what it sends: the one buffer is reused for every chunk.
            self.copy.send(&self.buffer[..]).await?;
            self.buffer.clear();
        }
        self.buffer
            .extend_from_slice(&(self.columns as i16).to_be_bytes());
        self.fields = 0;
        Ok(())
    }

    pub fn field(&mut self, value: impl Field) -> &mut Self {
        value.write(&mut self.buffer);
        self.fields += 1;
        self
    }

    /// Sends what is left and ends the copy: the server's verdict on every row comes here.
    pub async fn finish(mut self) -> Result<u64, sqlx::Error> {
        self.check_width()?;
        self.buffer.extend_from_slice(&(-1i16).to_be_bytes());
        self.copy.send(self.buffer).await?;
        self.copy.finish().await
    }

    /// A row of the wrong width is the code's fault, never a message's: it is not a data error.
    fn check_width(&self) -> Result<(), sqlx::Error> {
        if self.fields == self.columns {
            return Ok(());
        }
        Err(sqlx::Error::Protocol(format!(
            "a COPY row gave {} fields for {} columns",
            self.fields, self.columns
        )))
    }
}
