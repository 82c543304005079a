//! `ra demo`.

use std::process::ExitCode;

pub fn run(_args: &crate::cli::DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ra demo` is not available yet")
}
