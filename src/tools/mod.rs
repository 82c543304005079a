//! The tools around the node: `ra demo`, `ra check`, `ra trace`, `ra bench`,
//! and the harness that starts `ra` processes for them and for the tests.

pub mod bench;
pub mod check;
pub mod demo;
pub mod process;
pub mod trace;
