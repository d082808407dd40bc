//! Pages of a list: their size, as the delivery log and the webhook list
//! both take it.

use crate::admin::inputs::Num;
use crate::admin::validate::{Checks, Invalid, Rule};

/// A page: by default, and at most.
pub const PAGE_DEFAULT: i64 = 50;
pub const PAGE_MAX: i64 = 1_000;

/// The page size asked for (`limit`), checked into `c`; the default when
/// none was given.
pub(crate) fn page_size(c: &mut Checks, limit: Option<&Num>) -> Option<i64> {
    c.optional(limit, |l| {
        l.number("limit").and_then(|l| {
            if (1..=PAGE_MAX).contains(&l) {
                Ok(l)
            } else {
                Err(Invalid::new(
                    "limit",
                    Rule::OutOfRange,
                    format!("must be a whole number from 1 to {PAGE_MAX}"),
                ))
            }
        })
    })
    .map(|l| l.unwrap_or(PAGE_DEFAULT))
}

/// The refusal of a cursor that is not one this list gave.
pub(crate) fn bad_cursor() -> Invalid {
    Invalid::new(
        "cursor",
        Rule::Syntax,
        "not a cursor of this list; pass `next_cursor` of the previous page as it is",
    )
}
