//! The tools around the node: `ra demo`, `ra check`, `ra trace`, `ra bench`.

pub mod bench;
pub mod check;
pub mod demo;
pub mod time;
pub mod trace;
