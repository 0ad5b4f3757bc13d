//! `harness serve`: a read-only web server over the run store, on axum (tokio). `/` lists every
//! run (date, test, verdict coloured, seed, key settings, findings; `?verdict=invalid` keeps
//! one verdict) and every matrix; `/runs/<path>` serves a file of the store through
//! tower-http's `ServeFile` (ranges, HEAD, conditional requests), a folder as its
//! `report.html` or `matrix.html`, else a listing. Only GET and HEAD; paths are
//! percent-decoded and must stay inside the store once symlinks are resolved (`..`, absolute
//! paths and links out of the store are refused); at most [`MAX_CONCURRENT`] requests are
//! served at once (tower's `ConcurrencyLimitLayer`), each within [`REQUEST_TIMEOUT`]. Pages
//! are rendered by minijinja with HTML auto-escaping.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Router;
use clap::Args;
use minijinja::{context, Environment};
use serde::Deserialize;
use tower::ServiceExt;

/// Requests served at once; more wait for a slot.
pub const MAX_CONCURRENT: usize = 32;
/// How long one request may take before the server gives up on it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How deep below the store root runs are looked for.
pub const LIST_DEPTH: usize = 5;

/// Flags of `harness serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The run store to serve.
    #[arg(long, default_value = "store")]
    pub store: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
}

/// Serves `store` on `addr` until the process ends.
pub fn serve(args: &ServeArgs) -> Result<()> {
    let root = args
        .store
        .canonicalize()
        .with_context(|| format!("the store {} does not exist", args.store.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.addr)
            .await
            .with_context(|| format!("listening on {}", args.addr))?;
        let local = listener.local_addr().context("the listening address")?;
        println!("harness: serving {} on http://{local}/", root.display());
        axum::serve(listener, router(root))
            .await
            .context("serving the store")
    })
}

/// The server's routes over `root` (canonical): the index, and everything else as a path of
/// the store.
pub fn router(root: PathBuf) -> Router {
    let state = Arc::new(root);
    Router::new()
        .route("/", axum::routing::get(index))
        .fallback(files)
        .with_state(state)
        .layer(axum::middleware::map_response(nosniff))
        .layer(tower::limit::ConcurrencyLimitLayer::new(MAX_CONCURRENT))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
}

async fn nosniff(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Decodes `%XX` escapes; None for a malformed escape or a NUL.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

/// The file of the store a URL path names, or None when it is not inside the store: only
/// normal components, and the resolved path (symlinks followed) must stay under `root`
/// (itself canonical).
pub fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(url_path)?;
    let rel = Path::new(decoded.trim_start_matches('/'));
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    let full = root.join(rel).canonicalize().ok()?;
    full.starts_with(root).then_some(full)
}

/// The content type of a store file: text for logs and histories so a browser shows them.
fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "json" => "application/json",
        "md" | "log" | "jsonl" | "properties" | "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "xml" => "application/xml",
        _ => "application/octet-stream",
    }
}

/// Percent-encodes a relative path for a link (each component, keeping `/`).
fn href(rel: &str) -> String {
    let mut out = String::new();
    for b in rel.bytes() {
        if b.is_ascii_alphanumeric() || b"-_./~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>{{ css }}
.verdict-valid{background:#dafbe1;color:#116329;font-weight:600}
.verdict-invalid{background:#ffebe9;color:#a40e26;font-weight:600}
.verdict-unknown{background:#fff8c5;color:#7d4e00;font-weight:600}
.verdict-unchecked{background:#eaeef2;color:#57606a}
.verdict-matrix{background:#ddf4ff;color:#0550ae}
nav.filter a{margin-right:.8em}
nav.filter a.on{font-weight:700;text-decoration:none}
</style></head><body><main><h1>{{ title }}</h1>
{% if runs is defined %}
<p class="sub">{{ runs|length }} of {{ total }} runs and matrices in {{ root }}</p>
<nav class="filter">show:
{% for f in filters %}<a href="/{% if f != "all" %}?verdict={{ f }}{% endif %}"{% if f == current %} class="on"{% endif %}>{{ f }}</a>{% endfor %}
</nav>
<table><tr><th>date</th><th>test</th><th>verdict</th><th>seed</th><th>settings</th><th>findings</th><th>files</th></tr>
{% for r in runs %}<tr><td>{% if r.link %}<a href="{{ r.link|safe }}">{{ r.date }}</a>{% else %}{{ r.date }}{% endif %}</td>
<td>{{ r.test }}</td><td class="verdict-{{ r.verdict }}">{{ r.verdict }}</td><td>{{ r.seed }}</td>
<td>{{ r.settings }}</td><td>{{ r.findings }}</td><td><a href="/runs/{{ r.href|safe }}/">files</a></td></tr>
{% endfor %}</table>
{% else %}
<p><a href="/">all runs</a></p><ul>
{% for e in entries %}<li><a href="/runs/{{ e.href|safe }}">{{ e.name }}</a></li>
{% endfor %}</ul>
{% endif %}
</main></body></html>
"#;

/// Renders [`PAGE`]; links (`href`, `link`) are marked safe because [`href`] leaves nothing
/// in them but `[A-Za-z0-9-_./~%]`.
fn render(ctx: minijinja::Value) -> Response {
    let mut env = Environment::new();
    // The `.html` name turns on HTML auto-escaping of every value.
    let html = env
        .add_template("page.html", PAGE)
        .and_then(|()| env.get_template("page.html"))
        .and_then(|t| t.render(ctx));
    match html {
        Ok(h) => Html(h).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the page: {e}\n"),
        )
            .into_response(),
    }
}

/// One row of the index.
#[derive(serde::Serialize)]
struct IndexRow {
    date: String,
    test: String,
    verdict: String,
    seed: String,
    settings: String,
    findings: String,
    link: Option<String>,
    href: String,
}

/// The settings a reader compares runs by, from a run's `test.json`.
fn key_settings(test: &serde_json::Value) -> String {
    let spec = &test["spec"];
    if spec.is_null() {
        return String::new();
    }
    let mut out = Vec::new();
    let words = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    if let Some(n) = spec["nodes"].as_u64() {
        out.push(format!("{n} nodes"));
    }
    if let Some(a) = spec["client"]["acks"].as_str() {
        out.push(format!("acks={a}"));
    }
    if let Some(m) = spec["broker"]["min.insync.replicas"].as_str() {
        out.push(format!("min.insync={m}"));
    }
    let release = test["kafka_release"]
        .as_str()
        .or_else(|| spec["broker"]["kafka.release"].as_str());
    if let Some(r) = release {
        out.push(format!("release {r}"));
    }
    let nemesis = words(&spec["nemesis"]);
    out.push(format!(
        "nemesis {}",
        if nemesis.is_empty() {
            "none".to_string()
        } else {
            nemesis.join(",")
        }
    ));
    let bugs = words(&spec["bugs"]);
    if !bugs.is_empty() {
        out.push(format!("bugs {}", bugs.join(",")));
    }
    if let Some(t) = spec["time-limit"].as_u64() {
        out.push(format!("{t} s"));
    }
    out.join(", ")
}

#[derive(Deserialize)]
struct Filter {
    verdict: Option<String>,
}

async fn index(State(root): State<Arc<PathBuf>>, Query(filter): Query<Filter>) -> Response {
    let root2 = root.clone();
    let listed = tokio::task::spawn_blocking(move || index_rows(&root2))
        .await
        .unwrap_or_default();
    let total = listed.len();
    let current = filter.verdict.unwrap_or_else(|| "all".into());
    let runs: Vec<IndexRow> = listed
        .into_iter()
        .filter(|r| current == "all" || r.verdict == current)
        .collect();
    render(context! {
        title => "harness store",
        css => minijinja::Value::from_safe_string(results::report::CSS.to_string()),
        root => root.display().to_string(),
        total => total,
        current => current,
        filters => vec!["all", "valid", "invalid", "unknown", "unchecked", "matrix"],
        runs => minijinja::Value::from(minijinja::value::Serde(&runs)),
    })
}

/// Every run and matrix of the store with what its `test.json` says.
fn index_rows(root: &Path) -> Vec<IndexRow> {
    results::store::list(root, LIST_DEPTH)
        .into_iter()
        .map(|l| {
            let dir = root.join(&l.rel);
            let test = std::fs::read_to_string(dir.join("test.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .unwrap_or(serde_json::Value::Null);
            let (parent, stamp) = match l.rel.rsplit_once('/') {
                Some((p, s)) => (p.to_string(), s.to_string()),
                None => (String::new(), l.rel.clone()),
            };
            let page = if l.kind == "matrix" {
                "matrix.html"
            } else {
                "report.html"
            };
            IndexRow {
                date: stamp,
                test: test["spec"]["name"].as_str().map_or(parent, str::to_string),
                verdict: l.verdict.clone(),
                seed: test["seed"]
                    .as_u64()
                    .map_or_else(String::new, |s| s.to_string()),
                settings: key_settings(&test),
                findings: l.findings.join(", "),
                link: l
                    .has_report
                    .then(|| format!("/runs/{}/{page}", href(&l.rel))),
                href: href(&l.rel),
            }
        })
        .collect()
}

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("{what}\n")).into_response()
}

/// Everything but the index: `/runs/<path>` of the store, GET or HEAD only.
async fn files(State(root): State<Arc<PathBuf>>, req: Request) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "only GET and HEAD\n",
        )
            .into_response();
    }
    let path = req.uri().path().to_string();
    let Some(rest) = path
        .strip_prefix("/runs/")
        .or_else(|| (path == "/runs").then_some(""))
    else {
        return not_found("not found");
    };
    let Some(file) = resolve(&root, rest) else {
        return not_found("not found (or outside the store)");
    };
    if file.is_dir() {
        if path.ends_with('/') && !rest.is_empty() {
            for page in ["report.html", "matrix.html"] {
                if file.join(page).is_file() {
                    return serve_file(file.join(page), req).await;
                }
            }
        }
        return listing(&root, &file);
    }
    serve_file(file, req).await
}

/// A file through tower-http's `ServeFile`, with our content type.
async fn serve_file(file: PathBuf, req: Request) -> Response {
    let kind = content_type(&file);
    match tower_http::services::ServeFile::new(&file)
        .oneshot(req)
        .await
    {
        Ok(r) => {
            let mut r = r.map(Body::new);
            if r.status().is_success() {
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
            }
            r
        }
        Err(_) => not_found("not readable"),
    }
}

#[derive(serde::Serialize)]
struct Entry {
    name: String,
    href: String,
}

fn listing(root: &Path, dir: &Path) -> Response {
    let rel = dir
        .strip_prefix(root)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut names: Vec<(String, bool)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let is_dir = e.path().is_dir();
                    (e.file_name().to_string_lossy().into_owned(), is_dir)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let entries: Vec<Entry> = names
        .into_iter()
        .map(|(n, is_dir)| {
            let path = if rel.is_empty() {
                n.clone()
            } else {
                format!("{rel}/{n}")
            };
            let slash = if is_dir { "/" } else { "" };
            Entry {
                name: format!("{n}{slash}"),
                href: format!("{}{slash}", href(&path)),
            }
        })
        .collect();
    render(context! {
        title => format!("/{rel}"),
        css => minijinja::Value::from_safe_string(results::report::CSS.to_string()),
        entries => minijinja::Value::from(minijinja::value::Serde(&entries)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A store with one run (a report, a test.json) and a link out of it; the root canonical.
    fn store() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        std::fs::create_dir_all(root.join("t/run1")).expect("mkdir");
        std::fs::write(root.join("t/run1/report.html"), "<p>hi</p>").expect("write");
        std::fs::write(
            root.join("t/run1/test.json"),
            r#"{"seed": 42, "spec": {"name": "t<b>", "nodes": 3, "nemesis": ["kill"],
                "client": {"acks": "all"}, "broker": {"min.insync.replicas": "2"},
                "bugs": ["ack-before-isr"]}}"#,
        )
        .expect("write");
        std::fs::write(
            root.join("t/run1/results.json"),
            r#"{"valid": false, "invalidating": ["lost-write"],
                "anomalies": {"lost-write": {"count": 2}}}"#,
        )
        .expect("write");
        std::fs::create_dir_all(root.join("u/run2")).expect("mkdir");
        std::fs::write(root.join("u/run2/results.json"), r#"{"valid": true}"#).expect("write");
        std::fs::write(dir.path().join("secret"), "no").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("t/escape"))
            .expect("symlink");
        let root = root.canonicalize().expect("canonical");
        (dir, root)
    }

    /// One request through the router: status and body.
    async fn get(root: &Path, method: &str, target: &str) -> (StatusCode, Vec<u8>) {
        let req = Request::builder()
            .method(method)
            .uri(target)
            .body(Body::empty())
            .expect("request");
        let r = router(root.to_path_buf())
            .oneshot(req)
            .await
            .expect("infallible");
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, body.to_vec())
    }

    #[test]
    fn paths_outside_the_store_are_refused() {
        let (_dir, root) = store();
        assert!(resolve(&root, "t/run1/report.html").is_some());
        assert!(resolve(&root, "t/run1/../run1/report.html").is_none());
        assert!(resolve(&root, "../secret").is_none());
        assert!(resolve(&root, "%2e%2e/secret").is_none());
        assert!(
            resolve(&root, "t/escape").is_none(),
            "a link out of the store"
        );
        assert!(resolve(&root, "/etc/passwd").is_none());
        assert!(resolve(&root, "t/%00").is_none());
        assert!(resolve(&root, "%zz").is_none());
    }

    #[tokio::test]
    async fn the_axum_routes_refuse_paths_outside_the_store() {
        let (_dir, root) = store();
        for bad in [
            "/runs/../../secret",
            "/runs/%2e%2e/secret",
            "/runs/t/escape",
            "/runs//etc/passwd",
            "/runs/t/%00",
            "/elsewhere",
        ] {
            let (status, body) = get(&root, "GET", bad).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
            assert_ne!(body, b"no", "{bad} leaked the secret");
        }
        assert_eq!(
            get(&root, "GET", "/runs/t/run1/report.html").await,
            (StatusCode::OK, b"<p>hi</p>".to_vec())
        );
        assert_eq!(
            get(&root, "GET", "/runs/t/run1/").await,
            (StatusCode::OK, b"<p>hi</p>".to_vec())
        );
        let (status, _) = get(&root, "POST", "/runs/t/run1/report.html").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, body) = get(&root, "HEAD", "/runs/t/run1/report.html").await;
        assert_eq!((status, body.len()), (StatusCode::OK, 0));
        let (status, body) = get(&root, "GET", "/runs/t/run1").await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("href=\"/runs/t/run1/test.json\""), "{body}");
    }

    #[tokio::test]
    async fn the_index_lists_runs_with_settings_and_filters_by_verdict() {
        let (_dir, root) = store();
        let (status, body) = get(&root, "GET", "/").await;
        let page = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::OK);
        assert!(
            page.contains("class=\"verdict-invalid\">invalid<"),
            "{page}"
        );
        assert!(page.contains("class=\"verdict-valid\">valid<"), "{page}");
        assert!(page.contains("<td>42</td>"), "the seed: {page}");
        assert!(
            page.contains("3 nodes, acks=all, min.insync=2, nemesis kill, bugs ack-before-isr"),
            "{page}"
        );
        assert!(
            page.contains("lost-write: 2") || page.contains("lost-write (2)"),
            "{page}"
        );
        assert!(
            page.contains("t&lt;b&gt;"),
            "the test name is escaped: {page}"
        );
        let (_, body) = get(&root, "GET", "/?verdict=invalid").await;
        let page = String::from_utf8_lossy(&body);
        assert!(page.contains("verdict-invalid\">invalid<"));
        assert!(!page.contains("verdict-valid\">valid<"), "{page}");
    }

    #[test]
    fn a_raw_traversal_over_tcp_is_refused() {
        let (_dir, root) = store();
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        rt.spawn(async move { axum::serve(listener, router(root)).await });
        let ask = |target: &str| {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            write!(
                s,
                "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).expect("read");
            out
        };
        let bad = ask("/runs/../../secret");
        assert!(bad.starts_with("HTTP/1.1 404"), "{bad}");
        assert!(!bad.ends_with("\r\n\r\nno"), "{bad}");
        let good = ask("/runs/t/run1/report.html");
        assert!(good.starts_with("HTTP/1.1 200"), "{good}");
        assert!(good.contains("x-content-type-options: nosniff"), "{good}");
        assert!(good.ends_with("<p>hi</p>"), "{good}");
    }
}
