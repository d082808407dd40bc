//! The catalog of event types, as every face shows it.

use crate::admin::access::Principal;
use crate::admin::catalog::{catalog, EventTypeList};
use crate::admin::core::Admin;
use crate::admin::error::OpResult;

impl Admin {
    /// Every built-in event type with its schema and an example. Anyone
    /// signed in may read it: it names no site and holds no secret.
    pub async fn event_types(&self, _who: &Principal) -> OpResult<EventTypeList> {
        Ok(EventTypeList {
            event_types: catalog(),
        })
    }
}
