//! The hidden `generate-assets` command: shell completions and man pages from the clap
//! definition, so the committed files can never drift from the CLI (a test compares them).

use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

use super::CommandError;
use crate::cli::{Cli, GenerateAssetsArgs};

pub fn run(args: &GenerateAssetsArgs) -> Result<ExitCode, CommandError> {
    write_completions(&args.completions)?;
    write_man_pages(&args.man)?;
    Ok(ExitCode::SUCCESS)
}

pub fn write_completions(dir: &Path) -> Result<(), CommandError> {
    std::fs::create_dir_all(dir)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = Cli::command();
        clap_complete::generate_to(shell, &mut cmd, "artifactapi", dir)?;
    }
    Ok(())
}

pub fn write_man_pages(dir: &Path) -> Result<(), CommandError> {
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    std::fs::write(dir.join("artifactapi.1"), buf)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("artifactapi-{}", sub.get_name());
        let sub = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("artifactapi {}", sub.get_name()));
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub).render(&mut buf)?;
        std::fs::write(dir.join(format!("{name}.1")), buf)?;
    }
    Ok(())
}
