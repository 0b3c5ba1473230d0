//! `artifactapi flush`: remove cached content of one remote or all, by class.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use super::output::human_size;
use super::{CommandError, open_engine};
use crate::cli::{FlushArgs, FlushType, GlobalArgs};
use crate::repo::flush::FlushScope;

pub async fn run(global: &GlobalArgs, args: &FlushArgs) -> Result<ExitCode, CommandError> {
    let engine = open_engine(global).await?;
    if args.remote.is_none() && !args.yes && std::io::stdin().is_terminal() {
        let count = engine.remotes().count();
        eprint!("Flush every remote repository ({count})? [y/N] ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing flushed");
            return Ok(ExitCode::FAILURE);
        }
    }
    let scope = match args.kind {
        FlushType::All => FlushScope::All,
        FlushType::Index => FlushScope::Index,
        FlushType::Files => FlushScope::Files,
    };
    let report = engine
        .flush(args.remote.as_deref(), scope, args.unused_for)
        .await?;
    println!(
        "flushed {} objects ({}) and {} records from {}",
        report.objects,
        human_size(report.bytes),
        report.metadata,
        if report.remotes.is_empty() {
            "no repositories".to_string()
        } else {
            report.remotes.join(", ")
        }
    );
    Ok(ExitCode::SUCCESS)
}
