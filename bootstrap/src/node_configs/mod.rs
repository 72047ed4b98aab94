//! Day two: changes of lab.toml reaching the running Talos nodes. [`applied`] knows what each
//! node was last given and what lab.toml renders for it now; [`diff`] shows the difference by
//! document and field, secrets masked; [`rollout`] previews it (Talos's dry run) and applies it
//! node by node; [`kubernetes`] is `upgrade kubernetes`, the same rollout with the skew rules
//! checked first and the new release set in lab.toml.

pub mod applied;
pub mod diff;
pub mod kubernetes;
pub mod rollout;
