//! `artifactapi ls`: the cached objects, as a table or JSON.

use std::process::ExitCode;

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use super::output::{human_duration, human_size};
use super::{CommandError, open_engine};
use crate::cli::{ClassFilter, GlobalArgs, LsArgs, SortKey};
use crate::package::CacheClass;

#[derive(Serialize)]
struct Row {
    key: String,
    remote: String,
    path: String,
    class: CacheClass,
    size: u64,
    sha256: String,
    fetched_at_ms: u64,
    expires_at_ms: Option<u64>,
    age_ms: u64,
    ttl_left_ms: Option<u64>,
    /// When it was last read: as seen by a running server, else the file's access time, else
    /// when it was fetched.
    read_at_ms: u64,
}

/// One repository in `ls --summary`.
#[derive(Serialize)]
struct Summary {
    repository: String,
    kind: &'static str,
    objects: u64,
    bytes: u64,
    /// `cache.max_size` (remote repositories; `None`: only `storage.max_size` applies).
    limit: Option<u64>,
}

pub async fn run(global: &GlobalArgs, args: &LsArgs) -> Result<ExitCode, CommandError> {
    let engine = open_engine(global).await?;
    let prefix = match (&args.remote, &args.prefix) {
        (Some(r), Some(p)) => format!("{r}/{}", p.trim_start_matches('/')),
        (Some(r), None) => format!("{r}/"),
        (None, Some(p)) => p.clone(),
        (None, None) => String::new(),
    };
    // Listing walks whole directories; the rest of the prefix filters the keys.
    let dir = match prefix.rfind('/') {
        Some(i) => &prefix[..=i],
        None => "",
    };
    let now = crate::now_ms();
    let mut rows: Vec<Row> = engine
        .cache
        .meta
        .list(dir)
        .await?
        .into_iter()
        .filter(|e| e.key.starts_with(&prefix))
        .filter(|e| match args.class {
            None => true,
            Some(ClassFilter::Index) => e.meta.class == CacheClass::Index,
            Some(ClassFilter::File) => e.meta.class == CacheClass::File,
        })
        .map(|e| {
            let (remote, path) = e.key.split_once('/').unwrap_or((&e.key, ""));
            Row {
                remote: remote.to_string(),
                path: path.to_string(),
                class: e.meta.class,
                size: e.meta.size,
                sha256: e.meta.sha256.hex(),
                fetched_at_ms: e.meta.fetched_at_ms,
                expires_at_ms: e.meta.expires_at_ms,
                age_ms: now.saturating_sub(e.meta.fetched_at_ms),
                ttl_left_ms: e.meta.expires_at_ms.map(|t| t.saturating_sub(now)),
                read_at_ms: engine.cache.last_read_ms(&e.key, &e.meta),
                key: e.key,
            }
        })
        .collect();
    match args.sort {
        SortKey::Path => rows.sort_by(|a, b| a.key.cmp(&b.key)),
        SortKey::Size => rows.sort_by(|a, b| b.size.cmp(&a.size).then(a.key.cmp(&b.key))),
        SortKey::Age => rows.sort_by(|a, b| b.age_ms.cmp(&a.age_ms).then(a.key.cmp(&b.key))),
        SortKey::Read => {
            rows.sort_by(|a, b| a.read_at_ms.cmp(&b.read_at_ms).then(a.key.cmp(&b.key)))
        }
    }
    if args.summary {
        return summary(&engine, &rows, args.json);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "remote",
        "path",
        "class",
        "size",
        "age",
        "last read",
        "ttl left",
    ]);
    for r in &rows {
        table.add_row(vec![
            Cell::new(&r.remote),
            Cell::new(&r.path),
            Cell::new(r.class.as_str()),
            Cell::new(human_size(r.size)).set_alignment(CellAlignment::Right),
            Cell::new(human_duration(r.age_ms)).set_alignment(CellAlignment::Right),
            Cell::new(format!(
                "{} ago",
                human_duration(now.saturating_sub(r.read_at_ms))
            ))
            .set_alignment(CellAlignment::Right),
            Cell::new(match r.ttl_left_ms {
                None => "forever".to_string(),
                Some(0) => "expired".to_string(),
                Some(ms) => human_duration(ms),
            })
            .set_alignment(CellAlignment::Right),
        ]);
    }
    let total: u64 = rows.iter().map(|r| r.size).sum();
    table.add_row(vec![
        Cell::new("total"),
        Cell::new(format!("{} objects", rows.len())),
        Cell::new(""),
        Cell::new(human_size(total)).set_alignment(CellAlignment::Right),
        Cell::new(""),
        Cell::new(""),
        Cell::new(""),
    ]);
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// `ls --summary`: objects and bytes per repository, with its limit, like `du`.
fn summary(
    engine: &crate::repo::Engine,
    rows: &[Row],
    json: bool,
) -> Result<ExitCode, CommandError> {
    let mut by_repo: std::collections::BTreeMap<&str, Summary> = Default::default();
    for r in rows {
        let s = by_repo.entry(&r.remote).or_insert_with(|| {
            let (kind, limit) = match engine.repo(&r.remote) {
                Ok(crate::repo::Repo::Remote(remote)) => {
                    ("remote", remote.config().cache.max_size.map(|b| b.0))
                }
                Ok(crate::repo::Repo::Local(_)) => ("local", None),
                _ => ("unknown", None),
            };
            Summary {
                repository: r.remote.clone(),
                kind,
                objects: 0,
                bytes: 0,
                limit,
            }
        });
        s.objects += 1;
        s.bytes += r.size;
    }
    let total_limit = engine.config.limits.max_size;
    if json {
        let body = serde_json::json!({
            "repositories": by_repo.values().collect::<Vec<_>>(),
            "max_size": total_limit,
        });
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec!["repository", "kind", "objects", "used", "limit"]);
    let limit_text = |l: Option<u64>| l.map_or_else(|| "-".to_string(), human_size);
    for s in by_repo.values() {
        table.add_row(vec![
            Cell::new(&s.repository),
            Cell::new(s.kind),
            Cell::new(s.objects).set_alignment(CellAlignment::Right),
            Cell::new(human_size(s.bytes)).set_alignment(CellAlignment::Right),
            Cell::new(limit_text(s.limit)).set_alignment(CellAlignment::Right),
        ]);
    }
    let remote_bytes: u64 = by_repo
        .values()
        .filter(|s| s.kind == "remote")
        .map(|s| s.bytes)
        .sum();
    table.add_row(vec![
        Cell::new("cached remote content"),
        Cell::new(""),
        Cell::new(""),
        Cell::new(human_size(remote_bytes)).set_alignment(CellAlignment::Right),
        Cell::new(limit_text(total_limit)).set_alignment(CellAlignment::Right),
    ]);
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}
