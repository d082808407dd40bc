//! The operations, one file per subject: `sites`, `webhooks`, `triggers`,
//! `deliveries`, `status`, `test_send`, `event_types`. Each is a method of
//! [`crate::admin::core::Admin`] taking the caller and a typed input, and
//! answers with the body both the API and the CLI's `--json` send (a list
//! under its resource's name, `{"webhooks": [...]}`; docs/api.md#names) or
//! an [`crate::admin::error::OpError`]. `site_id` is a site's domain, as
//! receivers and Plausible's own API call it, `plausible_site_id` its
//! number. Nothing here prints or knows HTTP.
//!
//! This file only gathers them: the files import each other one way
//! (`webhook_view` at the bottom, `webhooks` over `triggers`), never this one.

mod deliveries;
mod event_types;
mod page;
mod portal;
mod preview;
mod signing_keys;
mod sites;
mod status;
mod test_send;
mod triggers;
mod webhook_view;
mod webhooks;

pub use deliveries::*;
pub use page::{PAGE_DEFAULT, PAGE_MAX};
pub use portal::*;
pub use preview::*;
pub use signing_keys::*;
pub use sites::*;
pub use status::*;
pub use test_send::*;
pub use triggers::*;
pub use webhook_view::*;
pub use webhooks::*;
