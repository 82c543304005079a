//! `ra trace`.

use std::process::ExitCode;

pub fn run(_args: &crate::cli::TraceArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ra trace` is not available yet")
}
