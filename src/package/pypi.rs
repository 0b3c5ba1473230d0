//! PyPI's Simple repository API: the proxy's URL layout under a pypi repository, project
//! names (PEP 503), which form a client asks for (PEP 691 `Accept`), and reading an index
//! page in either form (PEP 503 HTML, PEP 691 JSON) and writing it in either, keeping the
//! attributes of PEP 592 (yanked), 658 and 714 (core metadata) and `requires-python`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::Format;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::path::RepoPath;

pub struct Pypi;

impl Format for Pypi {
    /// The Simple API's pages; everything else (the files) is immutable.
    fn is_index(&self, path: &str) -> bool {
        path == "simple" || path.starts_with("simple/")
    }
}

/// PEP 691's JSON form.
pub const JSON: &str = "application/vnd.pypi.simple.v1+json";
/// PEP 691's name for the HTML form.
pub const HTML: &str = "application/vnd.pypi.simple.v1+html";
/// The HTML form as PEP 503 clients know it.
pub const TEXT_HTML: &str = "text/html";
/// What the proxy asks an upstream for: JSON where it has it (it carries more), else HTML.
pub const UPSTREAM_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1";

/// Where a request under a pypi repository goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `simple/`: the list of projects.
    Index,
    /// `simple/{project}/`, the name already normalised.
    Project(String),
    /// A Simple API URL that is not in its canonical form: answered with a redirect to this
    /// location, relative to the request's URL.
    Redirect(String),
    /// `files/{sha256|-}/{path}`: a file a page links to, at `path` under `files_url`, with
    /// the sha256 the page gave for it (`-`: none).
    File {
        sha256: Option<Sha256Digest>,
        path: RepoPath,
    },
}

/// The route of `tail` (the raw request path after the repository name).
pub fn route(tail: &str) -> Result<Route> {
    let tail = tail.trim_start_matches('/');
    if tail == "simple" {
        return Ok(Route::Redirect("simple/".into()));
    }
    if let Some(rest) = tail.strip_prefix("simple/") {
        if rest.is_empty() {
            return Ok(Route::Index);
        }
        let (raw, slash) = match rest.strip_suffix('/') {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let name = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| Error::BadPath("project name is not valid UTF-8".into()))?;
        if !is_valid_name(&name) {
            return Err(Error::BadPath(format!(
                "{name:?} is not a valid project name (PEP 508: letters, digits, '.', '_', '-')"
            )));
        }
        let normal = normalize(&name);
        return Ok(match (slash, normal == name) {
            (true, true) => Route::Project(normal),
            (true, false) => Route::Redirect(format!("../{normal}/")),
            (false, _) => Route::Redirect(format!("{normal}/")),
        });
    }
    if tail.starts_with("files/") {
        let path = RepoPath::parse(tail)?;
        let mut segments = path.segments().skip(1);
        let hash = segments.next().unwrap_or_default();
        let sha256 = match hash {
            "-" => None,
            h => Some(Sha256Digest::from_hex(h).map_err(|_| {
                Error::BadPath(format!("{h:?} is not a sha256 (64 hex digits) or '-'"))
            })?),
        };
        let rest: Vec<&str> = segments.collect();
        if rest.is_empty() {
            return Err(Error::BadPath("no file after the hash".into()));
        }
        return Ok(Route::File {
            sha256,
            path: path.tail(2).expect("checked above"),
        });
    }
    Err(Error::NotFound)
}

/// PEP 503's normal form: runs of `-`, `_` and `.` become one `-`, letters lower case.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_run = false;
        }
    }
    out
}

/// A name PEP 508 allows: ASCII letters and digits, with `.`, `_` and `-` inside.
pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 200
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// The form of a Simple API answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Json,
    /// HTML, labelled with PEP 691's media type.
    Html,
    /// HTML, labelled `text/html` (PEP 503 clients, browsers).
    TextHtml,
}

impl Form {
    pub fn content_type(self) -> &'static str {
        match self {
            Form::Json => JSON,
            Form::Html => HTML,
            Form::TextHtml => "text/html; charset=utf-8",
        }
    }

    /// The form of an upstream page: JSON when its `Content-Type` says so, or when a server
    /// that labels everything alike sent a JSON object; else HTML.
    pub fn of_page(content_type: Option<&str>, body: &[u8]) -> Form {
        let json_type = content_type.is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
        let json_body = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if json_type || json_body {
            Form::Json
        } else {
            Form::Html
        }
    }
}

/// The form to answer with: `?format=` when it names one, else the client's `Accept` (the
/// highest quality wins, JSON on a tie), else `text/html`. Nothing acceptable also gets HTML,
/// which PEP 691 allows in place of a 406.
pub fn negotiate(accept: Option<&str>, format: Option<&str>) -> Form {
    let exact = |t: &str| match t {
        JSON => Some(Form::Json),
        HTML => Some(Form::Html),
        TEXT_HTML => Some(Form::TextHtml),
        _ => None,
    };
    if let Some(f) = format.and_then(|f| exact(f.trim())) {
        return f;
    }
    let Some(accept) = accept else {
        return Form::TextHtml;
    };
    // (quality, specificity, preference) of each form; the best triple wins.
    let mut best: Option<((u16, u8, u8), Form)> = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .filter_map(|q| q.trim().parse::<f32>().ok())
            .next()
            .unwrap_or(1.0);
        let q = (q.clamp(0.0, 1.0) * 1000.0) as u16;
        if q == 0 {
            continue;
        }
        let candidates: &[(Form, u8)] = match media.as_str() {
            m if exact(m).is_some() => &[],
            "*/*" => &[(Form::TextHtml, 0)],
            "text/*" => &[(Form::TextHtml, 0)],
            "application/*" => &[(Form::Json, 0)],
            _ => continue,
        };
        let chosen: Vec<(Form, u8)> = match exact(&media) {
            Some(f) => vec![(f, 1)],
            None => candidates.to_vec(),
        };
        for (form, specific) in chosen {
            let preference = match form {
                Form::Json => 2,
                Form::Html => 1,
                Form::TextHtml => 0,
            };
            let score = (q, specific, preference);
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, form));
            }
        }
    }
    best.map_or(Form::TextHtml, |(_, f)| f)
}

/// One distribution file a project page lists.
#[derive(Debug, Clone, PartialEq)]
pub struct DistFile {
    pub filename: String,
    /// Absolute (resolved against the page's URL) until links are rewritten.
    pub url: String,
    /// Algorithm → lower-case hex.
    pub hashes: BTreeMap<String, String>,
    pub requires_python: Option<String>,
    /// `Some(reason)` when yanked (PEP 592); the reason may be empty.
    pub yanked: Option<String>,
    /// PEP 658/714: `true`, or the hashes of the `.metadata` file.
    pub core_metadata: Option<Value>,
    /// Other keys of a JSON upstream's file (`size`, `upload-time`, ...), kept as they were.
    pub extra: Map<String, Value>,
}

/// A project page.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectPage {
    pub name: String,
    pub files: Vec<DistFile>,
    /// Other top-level keys of a JSON upstream (`versions`, ...), kept as they were.
    pub extra: Map<String, Value>,
    /// The API version the upstream declared (1.0 for HTML without one).
    pub api_version: String,
}

/// A Simple API page as read from a repository, before it is written in a client's form.
#[derive(Debug, Clone, PartialEq)]
pub enum Page {
    /// The project list: names as the repository gave them.
    Index(Vec<String>),
    Project(ProjectPage),
}

impl Page {
    pub fn render(&self, form: Form) -> Vec<u8> {
        match self {
            Page::Index(names) => render_index(names, form),
            Page::Project(p) => render_project(p, form),
        }
    }
}

/// One project list of several, in order: each project once (by normalised name), under the
/// name the first list gave it.
pub fn merge_indexes(lists: Vec<Vec<String>>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for name in lists.into_iter().flatten() {
        if seen.insert(normalize(&name)) {
            out.push(name);
        }
    }
    out
}

/// One project page of several, in order: every file name once, as the first page that
/// lists it has it. The API version is the lowest any page declared; PEP 700's `versions`
/// is kept (as a union) only where every page has it.
pub fn merge_projects(name: &str, pages: Vec<ProjectPage>) -> ProjectPage {
    let api_version = pages
        .iter()
        .map(|p| p.api_version.clone())
        .min_by(|a, b| version_order(a).cmp(&version_order(b)))
        .unwrap_or_else(|| "1.0".into());
    let all_have_versions = pages.iter().all(|p| p.extra.contains_key("versions"));
    let mut versions: Vec<Value> = Vec::new();
    let mut extra = Map::new();
    let mut seen = std::collections::HashSet::new();
    let mut files = Vec::new();
    for (i, page) in pages.into_iter().enumerate() {
        if let Some(Value::Array(vs)) = page.extra.get("versions") {
            for v in vs {
                if !versions.contains(v) {
                    versions.push(v.clone());
                }
            }
        }
        if i == 0 {
            extra = page.extra;
        }
        for f in page.files {
            if seen.insert(f.filename.clone()) {
                files.push(f);
            }
        }
    }
    extra.remove("versions");
    if all_have_versions && version_order(&api_version) >= (1, 1) {
        extra.insert("versions".into(), Value::Array(versions));
    }
    ProjectPage {
        name: name.to_string(),
        files,
        extra,
        api_version,
    }
}

/// `1.1` as `(1, 1)`, for comparing declared API versions; unreadable parts are 0.
fn version_order(v: &str) -> (u32, u32) {
    let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Reads an upstream project page. Relative file URLs are resolved against `page_url`.
pub fn read_project(
    body: &[u8],
    form: Form,
    name: &str,
    page_url: &reqwest::Url,
) -> Result<ProjectPage> {
    let resolve = |href: &str| -> String {
        page_url
            .join(href)
            .map(|u| u.to_string())
            .unwrap_or_else(|_| href.to_string())
    };
    match form {
        Form::Json => {
            let mut doc: Map<String, Value> = serde_json::from_slice(body)
                .map_err(|e| bad_page(format!("project page is not JSON: {e}")))?;
            let api_version = api_version(&doc);
            let files = match doc.remove("files") {
                Some(Value::Array(files)) => files,
                _ => return Err(bad_page("project page has no files list".into())),
            };
            let files = files
                .into_iter()
                .filter_map(|f| match f {
                    Value::Object(f) => json_file(f, &resolve),
                    _ => None,
                })
                .collect();
            doc.remove("meta");
            let name = match doc.remove("name") {
                Some(Value::String(n)) => n,
                _ => name.to_string(),
            };
            Ok(ProjectPage {
                name,
                files,
                extra: doc,
                api_version,
            })
        }
        Form::Html | Form::TextHtml => {
            let text = String::from_utf8_lossy(body);
            let files = anchors(&text)
                .into_iter()
                .filter_map(|a| html_file(a, &resolve))
                .collect();
            Ok(ProjectPage {
                name: name.to_string(),
                files,
                extra: Map::new(),
                api_version: html_api_version(&text),
            })
        }
    }
}

fn bad_page(msg: String) -> Error {
    Error::UpstreamUnreachable(format!("upstream index: {msg}"))
}

fn api_version(doc: &Map<String, Value>) -> String {
    doc.get("meta")
        .and_then(|m| m.get("api-version"))
        .and_then(Value::as_str)
        .unwrap_or("1.0")
        .to_string()
}

fn html_api_version(text: &str) -> String {
    let marker = "pypi:repository-version";
    text.find(marker)
        .and_then(|at| {
            let rest: String = text[at..].chars().take(200).collect();
            let v = rest.split("content=").nth(1)?;
            let v = v.trim_start_matches(['"', '\'']);
            let end = v.find(['"', '\'', ' ', '>'])?;
            Some(v[..end].to_string())
        })
        .unwrap_or_else(|| "1.0".into())
}

fn json_file(mut f: Map<String, Value>, resolve: &dyn Fn(&str) -> String) -> Option<DistFile> {
    let filename = f.remove("filename")?.as_str()?.to_string();
    let url = resolve(f.remove("url")?.as_str()?);
    let hashes = match f.remove("hashes") {
        Some(Value::Object(h)) => h
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_str()?.to_ascii_lowercase())))
            .collect(),
        _ => BTreeMap::new(),
    };
    let requires_python = match f.remove("requires-python") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let yanked = match f.remove("yanked") {
        Some(Value::Bool(true)) => Some(String::new()),
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let core = f.remove("core-metadata");
    let dist_info = f.remove("dist-info-metadata");
    let core_metadata = core
        .or(dist_info)
        .filter(|v| !matches!(v, Value::Bool(false) | Value::Null));
    Some(DistFile {
        filename,
        url,
        hashes,
        requires_python,
        yanked,
        core_metadata,
        extra: f,
    })
}

fn html_file(a: Anchor, resolve: &dyn Fn(&str) -> String) -> Option<DistFile> {
    let href = a.attr("href")?;
    let (url, fragment) = match href.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (href, None),
    };
    let mut hashes = BTreeMap::new();
    if let Some((algo, hex)) = fragment.and_then(|f| f.split_once('=')) {
        hashes.insert(algo.to_ascii_lowercase(), hex.to_ascii_lowercase());
    }
    let core_metadata = a
        .attr("data-core-metadata")
        .or(a.attr("data-dist-info-metadata"))
        .and_then(|v| match v.split_once('=') {
            Some((algo, hex)) => {
                Some(json!({ algo.to_ascii_lowercase(): hex.to_ascii_lowercase() }))
            }
            None if v == "false" => None,
            None => Some(Value::Bool(true)),
        });
    let filename = a.text.trim();
    let filename = if filename.is_empty() {
        url.rsplit('/').next().unwrap_or(url)
    } else {
        filename
    };
    Some(DistFile {
        filename: filename.to_string(),
        url: resolve(url),
        hashes,
        requires_python: a.attr("data-requires-python").map(str::to_string),
        yanked: a.attr("data-yanked").map(str::to_string),
        core_metadata,
        extra: Map::new(),
    })
}

/// Writes a project page in `form`. File URLs are written as they are (already rewritten).
pub fn render_project(page: &ProjectPage, form: Form) -> Vec<u8> {
    match form {
        Form::Json => {
            let files: Vec<Value> = page
                .files
                .iter()
                .map(|f| {
                    let mut o = f.extra.clone();
                    o.insert("filename".into(), json!(f.filename));
                    o.insert("url".into(), json!(f.url));
                    o.insert("hashes".into(), json!(f.hashes));
                    if let Some(r) = &f.requires_python {
                        o.insert("requires-python".into(), json!(r));
                    }
                    match &f.yanked {
                        Some(r) if r.is_empty() => o.insert("yanked".into(), json!(true)),
                        Some(r) => o.insert("yanked".into(), json!(r)),
                        None => o.insert("yanked".into(), json!(false)),
                    };
                    if let Some(m) = &f.core_metadata {
                        o.insert("core-metadata".into(), m.clone());
                        o.insert("dist-info-metadata".into(), m.clone());
                    }
                    Value::Object(o)
                })
                .collect();
            let mut doc = page.extra.clone();
            doc.insert("meta".into(), json!({ "api-version": page.api_version }));
            doc.insert("name".into(), json!(page.name));
            doc.insert("files".into(), Value::Array(files));
            serde_json::to_vec(&doc).expect("a JSON value serialises")
        }
        Form::Html | Form::TextHtml => {
            let mut out = html_head(&page.api_version, &format!("Links for {}", page.name));
            for f in &page.files {
                out.push_str("<a href=\"");
                out.push_str(&escape(&f.url));
                if let Some((algo, hex)) = preferred_hash(&f.hashes) {
                    out.push_str(&format!("#{}={}", escape(algo), escape(hex)));
                }
                out.push('"');
                if let Some(r) = &f.requires_python {
                    out.push_str(&format!(" data-requires-python=\"{}\"", escape(r)));
                }
                if let Some(r) = &f.yanked {
                    out.push_str(&format!(" data-yanked=\"{}\"", escape(r)));
                }
                if let Some(m) = &f.core_metadata {
                    let v = match m {
                        Value::Object(h) => h
                            .iter()
                            .find(|(k, _)| k.as_str() == "sha256")
                            .or_else(|| h.iter().next())
                            .and_then(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
                            .unwrap_or_else(|| "true".into()),
                        _ => "true".into(),
                    };
                    let v = escape(&v);
                    out.push_str(&format!(
                        " data-core-metadata=\"{v}\" data-dist-info-metadata=\"{v}\""
                    ));
                }
                out.push('>');
                out.push_str(&escape(&f.filename));
                out.push_str("</a><br>\n");
            }
            out.push_str("</body>\n</html>\n");
            out.into_bytes()
        }
    }
}

/// The hash a link's fragment carries: sha256 when listed, else the first.
pub fn preferred_hash(hashes: &BTreeMap<String, String>) -> Option<(&str, &str)> {
    hashes
        .get_key_value("sha256")
        .or_else(|| hashes.iter().next())
        .map(|(k, v)| (k.as_str(), v.as_str()))
}

fn html_head(api_version: &str, title: &str) -> String {
    let title = escape(title);
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta name=\"pypi:repository-version\" content=\"{}\">\n<title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n",
        escape(api_version)
    )
}

/// Reads the project names of an upstream's root page.
pub fn read_index(body: &[u8], form: Form) -> Result<Vec<String>> {
    match form {
        Form::Json => {
            let doc: Value = serde_json::from_slice(body)
                .map_err(|e| bad_page(format!("project list is not JSON: {e}")))?;
            let projects = doc
                .get("projects")
                .and_then(Value::as_array)
                .ok_or_else(|| bad_page("project list has no projects".into()))?;
            Ok(projects
                .iter()
                .filter_map(|p| p.get("name")?.as_str().map(str::to_string))
                .collect())
        }
        Form::Html | Form::TextHtml => Ok(anchors(&String::from_utf8_lossy(body))
            .into_iter()
            .map(|a| a.text.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect()),
    }
}

/// Writes the root page: each project links to its normalised page, relative to this one.
pub fn render_index(names: &[String], form: Form) -> Vec<u8> {
    match form {
        Form::Json => {
            let projects: Vec<Value> = names.iter().map(|n| json!({ "name": n })).collect();
            serde_json::to_vec(&json!({ "meta": { "api-version": "1.0" }, "projects": projects }))
                .expect("a JSON value serialises")
        }
        Form::Html | Form::TextHtml => {
            let mut out = html_head("1.0", "Simple index");
            for n in names {
                out.push_str(&format!(
                    "<a href=\"{}/\">{}</a><br>\n",
                    escape(&normalize(n)),
                    escape(n)
                ));
            }
            out.push_str("</body>\n</html>\n");
            out.into_bytes()
        }
    }
}

/// One `<a ...>text</a>` of a page, attributes and text unescaped.
#[derive(Debug)]
struct Anchor {
    attrs: Vec<(String, String)>,
    text: String,
}

impl Anchor {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The anchors of an HTML page. Simple API pages are flat lists of links, so a scanner that
/// knows tags, quoted attributes and entities reads them; it never fails, it skips.
fn anchors(html: &str) -> Vec<Anchor> {
    let lower = html.to_ascii_lowercase();
    let bytes = html.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(found) = lower[at..].find("<a") {
        let start = at + found + 2;
        at = start;
        match bytes.get(start) {
            Some(c) if c.is_ascii_whitespace() || *c == b'>' => {}
            _ => continue,
        }
        let mut attrs = Vec::new();
        let mut i = start;
        loop {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= bytes.len() {
                return out;
            }
            if bytes[i] == b'>' {
                i += 1;
                break;
            }
            if bytes[i] == b'/' {
                i += 1;
                continue;
            }
            let name_start = i;
            while i < bytes.len()
                && !bytes[i].is_ascii_whitespace()
                && !matches!(bytes[i], b'=' | b'>' | b'/')
            {
                i += 1;
            }
            let name = lower[name_start..i].to_string();
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let mut value = String::new();
            if i < bytes.len() && bytes[i] == b'=' {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                if i < bytes.len() && matches!(bytes[i], b'"' | b'\'') {
                    let quote = bytes[i];
                    let v_start = i + 1;
                    let Some(len) = bytes[v_start..].iter().position(|c| *c == quote) else {
                        return out;
                    };
                    value = unescape(&html[v_start..v_start + len]);
                    i = v_start + len + 1;
                } else {
                    let v_start = i;
                    while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' {
                        i += 1;
                    }
                    value = unescape(&html[v_start..i]);
                }
            }
            attrs.push((name, value));
        }
        let text_end = lower[i..].find("</a").map_or(html.len(), |n| i + n);
        out.push(Anchor {
            attrs,
            text: unescape(&strip_tags(&html[i..text_end])),
        });
        at = text_end;
    }
    out
}

fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Replaces HTML character references (named ones a Simple page uses, and numeric ones).
fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|n| *n <= 10).and_then(|semi| {
            let entity = &rest[1..semi];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                    .ok()
                    .and_then(char::from_u32),
                e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
                _ => None,
            };
            c.map(|c| (c, semi + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes text for an HTML attribute value or element content.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    #[test]
    fn names_normalise_as_pep_503_says() {
        assert_eq!(normalize("Foo.Bar__baz-.Qux"), "foo-bar-baz-qux");
        assert_eq!(normalize("requests"), "requests");
        assert!(is_valid_name("zope.interface"));
        assert!(!is_valid_name("-lead"));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name(""));
    }

    #[test]
    fn routes_send_non_canonical_names_to_the_canonical_page() {
        assert_eq!(route("simple/").unwrap(), Route::Index);
        assert_eq!(route("simple").unwrap(), Route::Redirect("simple/".into()));
        assert_eq!(
            route("simple/demo-pkg/").unwrap(),
            Route::Project("demo-pkg".into())
        );
        assert_eq!(
            route("simple/Demo_Pkg/").unwrap(),
            Route::Redirect("../demo-pkg/".into())
        );
        assert_eq!(
            route("simple/Demo_Pkg").unwrap(),
            Route::Redirect("demo-pkg/".into())
        );
        assert!(matches!(route("simple/a%2Fb/"), Err(Error::BadPath(_))));
        assert!(matches!(route("other"), Err(Error::NotFound)));
        let hex = "ab".repeat(32);
        match route(&format!("files/{hex}/packages/x/demo-1.0.tar.gz")).unwrap() {
            Route::File { sha256, path } => {
                assert_eq!(sha256.unwrap().to_string(), format!("sha256:{hex}"));
                assert_eq!(path.as_str(), "packages/x/demo-1.0.tar.gz");
            }
            r => panic!("{r:?}"),
        }
        assert!(matches!(
            route("files/-/demo.whl").unwrap(),
            Route::File { sha256: None, .. }
        ));
        assert!(route("files/nothex/demo.whl").is_err());
        assert!(route("files/-/").is_err());
        assert!(route("files/-/../x").is_err());
    }

    #[test]
    fn accept_picks_the_highest_quality_form() {
        let pip = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";
        assert_eq!(negotiate(Some(pip), None), Form::Json);
        assert_eq!(negotiate(None, None), Form::TextHtml);
        assert_eq!(negotiate(Some("*/*"), None), Form::TextHtml);
        assert_eq!(negotiate(Some("text/html"), None), Form::TextHtml);
        assert_eq!(
            negotiate(Some("application/vnd.pypi.simple.v1+html"), None),
            Form::Html
        );
        assert_eq!(
            negotiate(Some("application/vnd.pypi.simple.v1+json;q=0, */*"), None),
            Form::TextHtml
        );
        assert_eq!(negotiate(Some("image/png"), None), Form::TextHtml);
        assert_eq!(negotiate(Some("text/html"), Some(JSON)), Form::Json);
    }

    const PAGE: &str = r#"<!DOCTYPE html><html><body><h1>Links for demo</h1>
<a href="../../packages/demo-1.0-py3-none-any.whl#sha256=ABCD" data-requires-python="&gt;=3.8" data-dist-info-metadata="sha256=ef01">demo-1.0-py3-none-any.whl</a><br>
<A HREF='https://files.example/demo-0.9.tar.gz' data-yanked="broken &amp; bad">demo-0.9.tar.gz</A>
<a href="/x/demo-0.8.zip" data-yanked>demo-0.8.zip</a>
</body></html>"#;

    fn sample_page() -> ProjectPage {
        read_project(
            PAGE.as_bytes(),
            Form::Html,
            "demo",
            &url("http://up.example/simple/demo/"),
        )
        .unwrap()
    }

    #[test]
    fn merged_pages_keep_the_first_file_of_each_name() {
        let first = sample_page();
        let mut second = sample_page();
        second.files[0].url = "http://other.example/demo-1.0-py3-none-any.whl".into();
        second.files[1].filename = "demo-2.0.tar.gz".into();
        second.api_version = "1.1".into();
        second.extra.insert("versions".into(), json!(["2.0"]));
        let merged = merge_projects("demo", vec![first.clone(), second]);
        let names: Vec<&str> = merged.files.iter().map(|f| f.filename.as_str()).collect();
        assert_eq!(
            names,
            [
                "demo-1.0-py3-none-any.whl",
                "demo-0.9.tar.gz",
                "demo-0.8.zip",
                "demo-2.0.tar.gz"
            ]
        );
        assert_eq!(merged.files[0].url, first.files[0].url);
        // One page declared 1.0: the merged page is 1.0, without PEP 700's versions.
        assert_eq!(merged.api_version, "1.0");
        assert!(!merged.extra.contains_key("versions"));

        let lists = vec![
            vec!["Demo_Pkg".to_string(), "b".into()],
            vec!["demo-pkg".into(), "c".into()],
        ];
        assert_eq!(merge_indexes(lists), ["Demo_Pkg", "b", "c"]);
    }

    #[test]
    fn html_pages_are_read_with_every_attribute() {
        let page = sample_page();
        assert_eq!(page.files.len(), 3);
        let f = &page.files[0];
        assert_eq!(f.filename, "demo-1.0-py3-none-any.whl");
        assert_eq!(
            f.url,
            "http://up.example/packages/demo-1.0-py3-none-any.whl"
        );
        assert_eq!(f.hashes["sha256"], "abcd");
        assert_eq!(f.requires_python.as_deref(), Some(">=3.8"));
        assert_eq!(f.core_metadata, Some(json!({"sha256": "ef01"})));
        assert_eq!(f.yanked, None);
        assert_eq!(page.files[1].yanked.as_deref(), Some("broken & bad"));
        assert_eq!(page.files[1].url, "https://files.example/demo-0.9.tar.gz");
        assert_eq!(page.files[2].yanked.as_deref(), Some(""));
        assert_eq!(page.files[2].url, "http://up.example/x/demo-0.8.zip");
    }

    #[test]
    fn either_form_reads_back_what_the_other_wrote() {
        let page = sample_page();
        let base = url("http://proxy.example/simple/demo/");
        for form in [Form::Json, Form::Html] {
            let written = render_project(&page, form);
            let back = read_project(&written, form, "demo", &base).unwrap();
            assert_eq!(back.files, page.files, "{form:?}");
        }
        let json: Value = serde_json::from_slice(&render_project(&page, Form::Json)).unwrap();
        assert_eq!(json["meta"]["api-version"], "1.0");
        assert_eq!(json["files"][0]["requires-python"], ">=3.8");
        assert_eq!(json["files"][1]["yanked"], "broken & bad");
        assert_eq!(json["files"][2]["yanked"], true);
        assert_eq!(json["files"][0]["yanked"], false);
    }

    #[test]
    fn json_pages_keep_the_keys_they_carry() {
        let doc = json!({
            "meta": {"api-version": "1.1"},
            "name": "demo",
            "versions": ["1.0"],
            "files": [{
                "filename": "demo-1.0.tar.gz", "url": "demo-1.0.tar.gz",
                "hashes": {"sha256": "AA"}, "size": 12, "core-metadata": false
            }]
        });
        let page = read_project(
            &serde_json::to_vec(&doc).unwrap(),
            Form::Json,
            "demo",
            &url("http://up.example/simple/demo/"),
        )
        .unwrap();
        assert_eq!(page.api_version, "1.1");
        assert_eq!(
            page.files[0].url,
            "http://up.example/simple/demo/demo-1.0.tar.gz"
        );
        assert_eq!(page.files[0].core_metadata, None);
        let out: Value = serde_json::from_slice(&render_project(&page, Form::Json)).unwrap();
        assert_eq!(out["versions"], json!(["1.0"]));
        assert_eq!(out["files"][0]["size"], 12);
        assert_eq!(out["files"][0]["hashes"]["sha256"], "aa");
        assert!(read_project(b"{}", Form::Json, "demo", &url("http://x/")).is_err());
    }

    #[test]
    fn the_root_page_lists_normalised_links() {
        let names = read_index(
            b"<html><a href=\"/simple/Demo_Pkg/\">Demo_Pkg</a><a href='other/'>other</a></html>",
            Form::Html,
        )
        .unwrap();
        assert_eq!(names, ["Demo_Pkg", "other"]);
        let html = String::from_utf8(render_index(&names, Form::Html)).unwrap();
        assert!(
            html.contains("<a href=\"demo-pkg/\">Demo_Pkg</a>"),
            "{html}"
        );
        let json: Value = serde_json::from_slice(&render_index(&names, Form::Json)).unwrap();
        assert_eq!(json["projects"][1]["name"], "other");
        assert_eq!(
            read_index(&render_index(&names, Form::Json), Form::Json).unwrap(),
            names
        );
    }

    #[test]
    fn entities_and_odd_markup_do_not_break_the_scanner() {
        assert_eq!(unescape("a&amp;b&#60;&#x3e;&bogus;&"), "a&b<>&bogus;&");
        assert_eq!(escape("<\"&'>"), "&lt;&quot;&amp;&#39;&gt;");
        let a = anchors("<abbr>x</abbr><a\nhref=x.whl\n>x.whl</a><a href=\"unterminated");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].attr("href"), Some("x.whl"));
        let page = format!(
            "<meta name=\"pypi:repository-version\" content=\"1.1\">{}<a href=\"é.whl\">é</a>",
            "é".repeat(150)
        );
        assert_eq!(html_api_version(&page), "1.1");
        assert_eq!(
            html_api_version(&format!("pypi:repository-version{}", "é".repeat(150))),
            "1.0"
        );
    }
}
