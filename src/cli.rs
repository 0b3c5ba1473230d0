//! The command line, as clap derive types. Parsing only; `commands` does the work.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "artifactapi",
    version,
    about = "A caching artifact proxy for container registries, rpm, Alpine, PyPI and npm mirrors and generic downloads",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "ARTIFACTAPI_CONFIG",
        default_value = "remotes.yaml"
    )]
    pub config: PathBuf,
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less output: warnings and errors only, no progress bars.
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// When to use colours and progress bars.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Only when writing to a terminal.
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP proxy.
    Serve(ServeArgs),
    /// Fetch one file (or a docker image) through the cache.
    Fetch(FetchArgs),
    /// Remove cached content.
    Flush(FlushArgs),
    /// Pre-seed the cache from paths, images, rpm repodata, APKINDEX or GitHub releases.
    Warm(WarmArgs),
    /// List cached objects.
    Ls(LsArgs),
    /// Check configuration files and report every problem as file:line:col.
    ValidateConfig(ValidateConfigArgs),
    /// Write shell completions and man pages (for packaging; see README).
    #[command(hide = true)]
    GenerateAssets(GenerateAssetsArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides server.listen; default 127.0.0.1:8000).
    #[arg(long, env = "ARTIFACTAPI_LISTEN")]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Repository name.
    pub remote: String,
    /// Path in the repository, or for docker remotes NAME:TAG or NAME@DIGEST.
    pub path: String,
    /// Where to write the file (`-` for stdout); for docker, a directory for manifests and
    /// blobs. Without it, the content is only cached.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Docker: only this platform of a multi-platform image (os/arch[/variant]).
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlushType {
    All,
    Index,
    Files,
}

#[derive(Debug, Args)]
pub struct FlushArgs {
    /// Only this repository (default: every remote repository).
    #[arg(long)]
    pub remote: Option<String>,
    /// What to remove.
    #[arg(long = "type", value_enum, default_value_t = FlushType::All)]
    pub kind: FlushType,
    /// Only objects not read for this long (`30d`, `12h`).
    #[arg(long, value_parser = crate::config::parse_duration)]
    pub unused_for: Option<std::time::Duration>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct WarmArgs {
    /// Repository name.
    pub remote: String,
    /// Paths to fetch.
    pub paths: Vec<String>,
    /// Read more paths from this file (one per line; `#` comments).
    #[arg(long)]
    pub from_file: Option<PathBuf>,
    /// Parallel downloads.
    #[arg(long, short = 'j', default_value_t = 4)]
    pub jobs: usize,
    /// Docker: an image NAME:TAG (manifest, every platform, all blobs). Repeatable.
    #[arg(long)]
    pub image: Vec<String>,
    /// Docker: only this platform (os/arch[/variant]).
    #[arg(long)]
    pub platform: Option<String>,
    /// rpm: a repository directory (holding repodata/); fetches every allowed package.
    #[arg(long)]
    pub repodata: Vec<String>,
    /// alpine: a directory holding APKINDEX.tar.gz; fetches every allowed package.
    #[arg(long)]
    pub apkindex: Vec<String>,
    /// generic: OWNER/REPO whose release assets to fetch (through the GitHub REST API).
    #[arg(long)]
    pub github_releases: Vec<String>,
    /// With --github-releases: only assets whose name matches this regex.
    #[arg(long)]
    pub pattern: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClassFilter {
    Index,
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SortKey {
    Path,
    Size,
    Age,
    /// Least recently read first: what eviction would take next.
    Read,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only this repository.
    pub remote: Option<String>,
    /// Only paths starting with this prefix (within the repository).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only this cache class.
    #[arg(long, value_enum)]
    pub class: Option<ClassFilter>,
    /// Sort order.
    #[arg(long, value_enum, default_value_t = SortKey::Path)]
    pub sort: SortKey,
    /// JSON output for scripts.
    #[arg(long)]
    pub json: bool,
    /// Per repository: objects, bytes used and the limit, instead of one row per object.
    #[arg(long)]
    pub summary: bool,
}

#[derive(Debug, Args)]
pub struct ValidateConfigArgs {
    /// Files to check (default: the configured file).
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GenerateAssetsArgs {
    /// Directory for completions (bash, zsh, fish).
    #[arg(long, default_value = "completions")]
    pub completions: PathBuf,
    /// Directory for man pages.
    #[arg(long, default_value = "man")]
    pub man: PathBuf,
}
