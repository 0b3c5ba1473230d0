//! `artifactapi validate-config`: every problem in each file as `file:line:col: severity:
//! message`, exit 0 when all are valid, 1 when any has an error (2 is clap's usage error).

use std::process::ExitCode;

use crate::cli::{GlobalArgs, ValidateConfigArgs};
use crate::config::{Severity, validate_str};

pub fn run(global: &GlobalArgs, args: &ValidateConfigArgs) -> ExitCode {
    let files = if args.files.is_empty() {
        vec![global.config.clone()]
    } else {
        args.files.clone()
    };
    let mut errors = 0usize;
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                println!("{}:1:1: error: cannot read: {e}", file.display());
                errors += 1;
                continue;
            }
        };
        for d in validate_str(&text) {
            let severity = match d.severity {
                Severity::Error => {
                    errors += 1;
                    "error"
                }
                Severity::Warning => "warning",
            };
            print!(
                "{}:{}:{}: {severity}: {}",
                file.display(),
                d.line,
                d.column,
                d.message
            );
            match d.hint {
                Some(h) => println!(" (hint: {h})"),
                None => println!(),
            }
        }
    }
    if errors == 0 {
        if !global.quiet {
            eprintln!("{} file(s) valid", files.len());
        }
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
