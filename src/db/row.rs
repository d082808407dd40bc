//! Reading rows without panicking. A value the daemon's type cannot hold
//! (a time out of range, a NULL another writer left) is an error naming
//! its column, so a service sets that one row aside and goes on with the
//! rest; and columns are found by name, so a statement's SELECT list and
//! the code reading it cannot drift apart unnoticed.

use anyhow::Context as _;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Column, Row};

/// A column of a row that cannot be read.
#[derive(Debug)]
pub struct Unreadable {
    pub column: String,
    pub cause: String,
    pub is_time: bool,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "column {} cannot be read ({})", self.column, self.cause)?;
        if self.is_time {
            f.write_str(": it must be a time between the years 1 and 9999, not infinity")?;
        }
        Ok(())
    }
}
impl std::error::Error for Unreadable {}

/// Column `i` of `r`, or which column could not be read and why.
pub fn col<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> Result<T, Unreadable> {
    r.try_get(i).map_err(|e| {
        let c = &r.columns()[i];
        Unreadable {
            column: c.name().to_string(),
            cause: std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string()),
            is_time: matches!(*c.type_(), Type::TIMESTAMPTZ | Type::TIMESTAMP),
        }
    })
}

/// Where column `name` is among a statement's columns, looked up once per
/// statement so each row is read by index ([`col`]). Err names the column:
/// the statement lacks one its reader expects, a bug rather than a bad row.
pub fn position(columns: &[Column], name: &str) -> anyhow::Result<usize> {
    columns
        .iter()
        .position(|c| c.name() == name)
        .with_context(|| format!("no column {name}"))
}
