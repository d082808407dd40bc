//! What operators use: edge validation (`validate`), the operations over the
//! database (`ops`, shared by the CLI and the HTTP API) and the CLI (`cli`).

pub mod cli;
pub mod ops;
pub mod validate;
