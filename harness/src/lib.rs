//! The harness as a library of stages; `main.rs` only maps the command line onto them.
//!
//! Data moves one way (ARCHITECTURE.md): a [`pipeline::BuildOpts`] (architecture, lock
//! configuration, which kernel) → [`pipeline::prepare`] → [`pipeline::Built`] →
//! [`run::plan`] → [`run::GuestPlan`] → [`run::boot`] → [`run::Logs`] → one judge
//! ([`verdict`], [`control`] or [`bench`]) → one record of the run.

pub mod ab;
pub mod accel;
pub mod arch;
pub mod base;
pub mod bench;
pub mod build;
pub mod cmd;
pub mod config;
pub mod config_stamp;
pub mod control;
pub mod cross;
pub mod failure;
pub mod guest;
pub mod heartbeat;
pub mod ktap;
pub mod layout;
pub mod mail;
pub mod pipeline;
pub mod probe_memo;
pub mod run;
pub mod series;
pub mod suite;
pub mod toolchain;
pub mod verdict;
