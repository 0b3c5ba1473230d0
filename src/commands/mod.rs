//! One thin module per subcommand, each a function over the core. `run` dispatches and turns
//! the outcome into an exit code.

mod assets;
mod fetch;
mod flush;
mod ls;
mod output;
mod serve;
mod transfer;
mod validate;
mod warm;

use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::config;
use crate::metrics::Metrics;
use crate::repo::Engine;

/// Any failure a command reports; printed with its causes by `main`.
pub type CommandError = Box<dyn std::error::Error + Send + Sync>;

pub fn run(cli: Cli) -> Result<ExitCode, CommandError> {
    // Commands that need no runtime.
    match &cli.command {
        Command::ValidateConfig(args) => return Ok(validate::run(&cli.global, args)),
        Command::GenerateAssets(args) => return assets::run(args),
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match &cli.command {
            Command::Serve(args) => serve::run(&cli.global, args).await,
            Command::Fetch(args) => fetch::run(&cli.global, args).await,
            Command::Flush(args) => flush::run(&cli.global, args).await,
            Command::Warm(args) => warm::run(&cli.global, args).await,
            Command::Ls(args) => ls::run(&cli.global, args).await,
            Command::ValidateConfig(_) | Command::GenerateAssets(_) => unreachable!(),
        }
    })
}

/// Loads the config and opens the engine on its data, as `serve` would.
async fn open_engine(global: &GlobalArgs) -> Result<Arc<Engine>, CommandError> {
    let config = config::load_file(&global.config)?;
    Ok(Arc::new(
        Engine::open(config, Arc::new(Metrics::new())).await?,
    ))
}
