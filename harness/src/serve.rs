//! `harness serve`: a small read-only web server over the run store. `/` lists every run with
//! its verdict and findings, and every matrix; `/runs/<path>` serves a file of the store (a
//! folder shows its `report.html` or `matrix.html`, else a listing). Only GET and HEAD; paths
//! are decoded, must stay inside the store once symlinks are resolved (`..`, absolute paths and
//! links out of the store are refused), and each connection is served on its own short-lived
//! thread with read and write timeouts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

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
    let listener =
        TcpListener::bind(&args.addr).with_context(|| format!("listening on {}", args.addr))?;
    let local = listener.local_addr().context("the listening address")?;
    println!("harness: serving {} on http://{local}/", root.display());
    serve_on(listener, root)
}

/// Serves `root` on an already bound listener (tests bind port 0).
pub fn serve_on(listener: TcpListener, root: PathBuf) -> Result<()> {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let root = root.clone();
        // One thread per connection; each answers one request and closes.
        let _ = std::thread::Builder::new()
            .name("serve".into())
            .spawn(move || {
                let _ = handle(stream, &root);
            });
    }
    Ok(())
}

struct Response {
    status: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

fn text(status: &'static str, body: &str) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.as_bytes().to_vec(),
    }
}

fn handle(stream: TcpStream, root: &Path) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.by_ref().take(8192).read_line(&mut request_line)?;
    // Drain the headers (bounded).
    let mut header = String::new();
    for _ in 0..100 {
        header.clear();
        if reader.by_ref().take(8192).read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let response = match method {
        "GET" | "HEAD" => route(root, target),
        _ => text("405 Method Not Allowed", "only GET and HEAD\n"),
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
         X-Content-Type-Options: nosniff\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    )?;
    if method != "HEAD" {
        out.write_all(&response.body)?;
    }
    out.flush()
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

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{}</style></head><body><main><h1>{}</h1>{body}</main></body></html>\n",
        esc(title),
        results::report::CSS,
        esc(title)
    );
    Response {
        status: "200 OK",
        content_type: "text/html; charset=utf-8",
        body: html.into_bytes(),
    }
}

fn index(root: &Path) -> Response {
    let listed = results::store::list(root, 5);
    let mut body = format!(
        "<p class=\"sub\">{} runs and matrices in {}</p><table><tr><th>run</th><th>verdict</th>\
         <th>findings</th><th>files</th></tr>",
        listed.len(),
        esc(&root.display().to_string())
    );
    for l in &listed {
        let link = if l.kind == "matrix" {
            format!("/runs/{}/matrix.html", href(&l.rel))
        } else {
            format!("/runs/{}/report.html", href(&l.rel))
        };
        let name = if l.has_report {
            format!("<a href=\"{link}\">{}</a>", esc(&l.rel))
        } else {
            esc(&l.rel)
        };
        body.push_str(&format!(
            "<tr><td>{name}</td><td class=\"verdict-{v}\">{v}</td><td>{f}</td>\
             <td><a href=\"/runs/{r}/\">files</a></td></tr>",
            v = esc(&l.verdict),
            f = esc(&l.findings.join(", ")),
            r = href(&l.rel)
        ));
    }
    body.push_str("</table>");
    page("harness store", &body)
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
    let mut body = String::from("<p><a href=\"/\">all runs</a></p><ul>");
    for (n, is_dir) in names {
        let path = if rel.is_empty() {
            n.clone()
        } else {
            format!("{rel}/{n}")
        };
        body.push_str(&format!(
            "<li><a href=\"/runs/{}{}\">{}{}</a></li>",
            href(&path),
            if is_dir { "/" } else { "" },
            esc(&n),
            if is_dir { "/" } else { "" }
        ));
    }
    body.push_str("</ul>");
    page(&format!("/{rel}"), &body)
}

/// The response to a GET of `target` over the store `root` (canonical).
fn route(root: &Path, target: &str) -> Response {
    let path = target.split(['?', '#']).next().unwrap_or("");
    if path == "/" || path.is_empty() {
        return index(root);
    }
    let Some(rest) = path
        .strip_prefix("/runs/")
        .or_else(|| (path == "/runs").then_some(""))
    else {
        return text("404 Not Found", "not found\n");
    };
    let Some(file) = resolve(root, rest) else {
        return text("404 Not Found", "not found (or outside the store)\n");
    };
    if file.is_dir() {
        for page in ["report.html", "matrix.html"] {
            if path.ends_with('/') && file.join(page).is_file() && !rest.is_empty() {
                if let Ok(body) = std::fs::read(file.join(page)) {
                    return Response {
                        status: "200 OK",
                        content_type: "text/html; charset=utf-8",
                        body,
                    };
                }
            }
        }
        return listing(root, &file);
    }
    match std::fs::read(&file) {
        Ok(body) => Response {
            status: "200 OK",
            content_type: content_type(&file),
            body,
        },
        Err(_) => text("404 Not Found", "not readable\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_store_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        std::fs::create_dir_all(root.join("t/run1")).expect("mkdir");
        std::fs::write(root.join("t/run1/report.html"), "<p>hi</p>").expect("write");
        std::fs::write(dir.path().join("secret"), "no").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("t/escape"))
            .expect("symlink");
        let root = root.canonicalize().expect("canonical");
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
        assert_eq!(route(&root, "/runs/../../secret").status, "404 Not Found");
        assert_eq!(route(&root, "/runs/t/run1/report.html").body, b"<p>hi</p>");
        assert_eq!(route(&root, "/runs/t/run1/").body, b"<p>hi</p>");
        assert_eq!(route(&root, "/elsewhere").status, "404 Not Found");
    }
}
