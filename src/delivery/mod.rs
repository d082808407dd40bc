//! Sending one event: the HTTPS client and its address guard, the envelope and
//! signatures, the retry policy, and the worker that ties them together for
//! one delivery, and the pipeline's settings from the config (`pipeline`);
//! what counts as this host's failure rather than the receiver's (`local`);
//! the owners' emails when a webhook is disabled (`mailer`).
//! (A webhook's limits are applied when its rows are claimed:
//! `queue::admission`.)

pub mod chat;
pub mod client;
pub mod envelope;
pub mod es_json;
pub mod guard;
pub mod local;
pub mod mailer;
pub mod pipeline;
pub mod retry;
pub mod signing;
pub mod worker;
