//! `ingest init URL [-o FILE]`: one request, then a commented pipeline file
//! with the records path and pagination detected (`crate::init`), checked
//! by the same loader as `validate` before it is written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error;
use crate::config::{self, LoadOptions};

/// A name for the pipeline and its table: the file's stem, else the URL's
/// last path segment, in letters, digits and `_`.
fn name_for(url: &url::Url, output: Option<&Path>) -> String {
    let raw = output
        .and_then(|o| o.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .or_else(|| {
            url.path_segments()
                .and_then(|mut s| s.rfind(|p| !p.is_empty()).map(String::from))
        })
        .unwrap_or_default();
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert_str(0, "api_");
    }
    name.truncate(40);
    name
}

/// What the one request gave.
enum Body {
    /// A JSON API's page.
    Json(serde_json::Value),
    /// A web page, decoded.
    Page(String),
}

/// The one request: headers (names lower-cased) and the body.
async fn fetch(url: &url::Url) -> anyhow::Result<(Vec<(String, String)>, Body)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("ingest/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let resp = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("GET {url}: {}", e.without_url()))?;
    let status = resp.status();
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let body = resp
        .bytes()
        .await
        .map_err(|e| anyhow::anyhow!("GET {url}: {}", e.without_url()))?;
    if !status.is_success() {
        anyhow::bail!("GET {url}: HTTP {status}; expected 200 with a JSON body or a web page");
    }
    let ctype = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map_or("", |(_, v)| v.as_str());
    if ctype.contains("html") {
        let text = crate::source::formats::decode_html(&body, ctype);
        return Ok((headers.clone(), Body::Page(text)));
    }
    let json = serde_json::from_slice(&body).map_err(|e| {
        anyhow::anyhow!(
            "GET {url}: the response is not JSON ({e}), nor a web page by its content type ({ctype}); `ingest init` reads JSON APIs and web pages"
        )
    })?;
    Ok((headers, Body::Json(json)))
}

pub(super) async fn init(url: &str, output: Option<PathBuf>, force: bool) -> anyhow::Result<i32> {
    let url = match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u,
        _ => {
            error(
                None,
                &format!(
                    "`{url}` is not an http(s) URL, like https://api.example.com/v1/items?page=1"
                ),
            );
            return Ok(2);
        }
    };
    let name = name_for(&url, output.as_deref());
    let path = output.unwrap_or_else(|| PathBuf::from(format!("{name}.toml")));
    if path.exists() && !force {
        error(
            None,
            &format!("{} exists; pass --force to replace it", path.display()),
        );
        return Ok(2);
    }
    let (headers, body) = fetch(&url).await?;
    let body = match body {
        Body::Json(b) => b,
        Body::Page(html) => return page(&url, &html, &name, &path),
    };
    let found = crate::init::detect(&url, &headers, &body);
    let text = crate::init::render(&url, &found, &name);
    write_checked(&path, &text)?;
    say!(
        "wrote {}: {} records at `{}`, {} pagination; next: ingest preview {}",
        path.display(),
        found.count,
        if found.records.is_empty() {
            "(the body)"
        } else {
            &found.records
        },
        kind_name(&found.pagination),
        path.display()
    );
    Ok(0)
}

/// A web page: a scrape of it.
fn page(url: &url::Url, html: &str, name: &str, path: &Path) -> anyhow::Result<i32> {
    let found = crate::init::detect_page(url, html);
    let text = crate::init::render_page(url, &found, name);
    write_checked(path, &text)?;
    say!(
        "wrote {}: a web page, {} record(s){}, {}; next: ingest preview {}",
        path.display(),
        found.count,
        found
            .each
            .as_deref()
            .map(|e| format!(" (one per `{e}`)"))
            .unwrap_or_default(),
        match &found.next {
            Some(n) => format!("next_url pagination by `{n}`"),
            None => "no pagination".to_string(),
        },
        path.display()
    );
    Ok(0)
}

/// Write the file, once the loader `validate` uses accepts it.
fn write_checked(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Err(e) = config::load_str(text, path, &LoadOptions::default()) {
        anyhow::bail!(
            "the file ingest init made does not validate, which is a bug; please report it:\n{e}\n{text}"
        );
    }
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn kind_name(g: &crate::init::Guess) -> &'static str {
    use crate::init::Guess;
    match g {
        Guess::LinkHeader => "link_header",
        Guess::NextUrl(_) => "next_url",
        Guess::Cursor { .. } => "cursor",
        Guess::PageNumber { .. } => "page_number",
        Guess::Offset { .. } => "offset",
        Guess::None => "no",
    }
}
