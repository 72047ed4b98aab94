//! Checks every daemon must pass, called from each crate's `tests/` with its binary and example.

pub mod config_check;
pub mod lifecycle;
pub mod systemd_env;
