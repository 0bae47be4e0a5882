//! Process and system figures: the [`sampler`] that turns a `sysinfo` reading into one `metrics`
//! event per interval, and the [`prometheus`] text rendering of everything `/stats` knows.

pub mod prometheus;
pub mod sampler;

pub use sampler::{Sample, Sampler};
