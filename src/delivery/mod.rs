//! Sending one event: the HTTPS client and its address guard, the envelope and
//! signatures, the retry policy, the per-webhook limits, and the worker that
//! ties them together for one delivery.

pub mod client;
pub mod envelope;
pub mod guard;
pub mod limits;
pub mod retry;
pub mod signing;
pub mod worker;
