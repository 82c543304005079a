//! `ra`: parse the command line, set up logging, run. Nothing else.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let result = match cli.command {
        None => run_node(&cli.node),
        Some(Command::Lock(args)) => ra::commands::lock_command::run(&args),
        Some(Command::Status(args)) => ra::commands::status::run_status(&args),
        Some(Command::Members(args)) => ra::commands::status::run_members(&args),
        Some(Command::Keygen) => ra::membership::keyfile::generate().map(|key| {
            println!("{key}");
            ExitCode::SUCCESS
        }),
        Some(Command::Demo(args)) => ra::tools::demo::run(&args),
        Some(Command::Check(args)) => ra::tools::check::run(&args),
        Some(Command::Trace(args)) => ra::tools::trace::run(&args),
        Some(Command::Bench(args)) => ra::tools::bench::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// clap's own exit is 2 for a usage error (0 for --help). `ra lock` promises
/// 125 for its own errors, bad arguments included: CMD's status is passed
/// through, so a 2 would read as CMD's.
fn usage_error(e: &clap::Error) -> ExitCode {
    let is_lock = std::env::args_os().nth(1).is_some_and(|a| a == "lock");
    if is_lock && e.use_stderr() {
        let _ = e.print();
        return ExitCode::from(ra::commands::exit::OWN_ERROR);
    }
    e.exit()
}

fn run_node(flags: &ra::config::NodeFlags) -> anyhow::Result<ExitCode> {
    let config = ra::config::resolve(flags)?;
    ra::runtime::log::init(config.log_format, config.log_level);
    ra::runtime::run_blocking(config)?;
    Ok(ExitCode::SUCCESS)
}
