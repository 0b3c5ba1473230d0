//! One thin module per subcommand, each a function over the core. `run` dispatches and turns
//! the outcome into an exit code.

mod serve;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Any failure a command reports; printed with its causes by `main`.
pub type CommandError = Box<dyn std::error::Error + Send + Sync>;

pub fn run(cli: Cli) -> Result<ExitCode, CommandError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match &cli.command {
            Command::Serve(args) => serve::run(&cli.global, args).await,
        }
    })
}
