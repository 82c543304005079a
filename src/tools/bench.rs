//! `ra bench`.

use std::process::ExitCode;

pub fn run(_args: &crate::cli::BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ra bench` is not available yet")
}
