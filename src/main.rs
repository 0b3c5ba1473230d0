//! The `artifactapi` binary: parse the command line, set up logging, run the command, and turn
//! its outcome into an exit code, printing the error and its causes.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use artifactapi::cli::{Cli, ColorChoice, Command, GlobalArgs, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs its work; offline commands only say what went wrong unless asked.
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    init_logging(&cli.global, default_level);
    match artifactapi::commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", artifactapi::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(global: &GlobalArgs, default_level: &str) {
    let level = match (global.quiet, global.verbose) {
        (true, _) => "warn",
        (false, 0) => default_level,
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},hyper=warn,reqwest=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(match global.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => std::io::stderr().is_terminal(),
        })
        .with_writer(std::io::stderr);
    match global.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
