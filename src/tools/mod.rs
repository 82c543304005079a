//! The tools around the node: `ra demo`, `ra check` (`check/`), `ra trace`
//! (`trace/`: parse, story, and the mermaid and text renderers), `ra bench`
//! (`bench/`: report, in-process cluster, membership timings, footprint,
//! floor), and the harness that starts `ra` processes for them and for the
//! tests (`process`).

pub mod bench;
pub mod check;
pub mod demo;
pub mod process;
pub mod trace;
