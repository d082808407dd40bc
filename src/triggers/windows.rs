//! The windows of spike and drop triggers without one of their own. Both
//! `mod.rs` (a trigger's window) and the source check (which asks the
//! history question over them) read these, and `mod.rs` reads the source:
//! apart from both, neither imports the other for them.

/// Spike: 5 minutes, as Plausible's spike notification.
pub const DEFAULT_SPIKE_WINDOW_SECS: i64 = 300;
/// Drop: 12 hours, as Plausible's drop notification.
pub const DEFAULT_DROP_WINDOW_SECS: i64 = 43_200;
