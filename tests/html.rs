//! Web pages as records (`format = "html"`) over a `lines` partition of
//! URLs, against real pages served by the mock: well-formed, malformed,
//! windows-1252 and Shift_JIS declared only in `<meta>`, and a 404 that is
//! recorded as a reject while the others land. A scrape SIGKILLed midway
//! and run again stores each page once. A listing walked by the `rel=next`
//! link in each page (`next = "html:…"`), killed midway and resumed
//! exactly.

use crate::common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

fn pipeline(dir: &Path, urls: &[String], html: &str, extra: &str, write_mode: &str) -> String {
    let list: String = urls.iter().map(|u| format!("{u}\n")).collect();
    write(dir, "urls.txt", &format!("# the pages\n\n{list}"));
    let text = format!(
        r#"[source]
kind = "http"
base_url = ""
path = "{{value}}"
format = "html"
concurrency = 2
on_error = "skip"
{extra}

[source.html]
{html}

[source.partition]
kind = "lines"
file = "urls.txt"

[source.retry]
max_attempts = 2

[sink]
kind = "sqlite"
path = "out.db"
table = "pages"
write = "{write_mode}"
primary_key = ["url"]
batch_size = 5
"#
    );
    write(dir, "p.toml", &text).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_every_kind_become_rows_and_a_404_a_reject() {
    let api = mock(1).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let url = |p: &str| format!("{}{p}", api.url());
    let urls: Vec<String> = [
        "/html/page/1",
        "/html/malformed",
        "/html/latin1",
        "/html/sjis",
        "/html/missing",
    ]
    .iter()
    .map(|p| url(p))
    .collect();
    let fields = r#"fields = { title = "title", heading = "h1", links = "a@href[]", first_story = "article h2" }"#;
    let p = pipeline(d, &urls, fields, "", "merge");
    let out = ingest(d, &api.url(), &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let mut got = rows(&d.join("out.db"), "pages", "url").await;
    for r in &mut got {
        let at = r
            .as_object_mut()
            .and_then(|m| m.remove("fetched_at"))
            .unwrap_or(Value::Null);
        assert!(
            at.as_str()
                .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()),
            "fetched_at {at}"
        );
    }
    let want = vec![
        json!({"url": url("/html/latin1"), "status": 200, "title": "Café crème — naïve", "heading": "Français", "links": "[]", "first_story": null}),
        json!({"url": url("/html/malformed"), "status": 200, "title": "Broken & unclosed", "heading": "Heading bold", "links": "[\"/x\",\"/x\"]", "first_story": "Only story link"}),
        json!({"url": url("/html/page/1"), "status": 200, "title": "Page 1", "heading": "Heading of page 1", "links": "[\"/html/page/1#s1\",\"https://example.org/1/1\",\"/html/page/1#s2\",\"https://example.org/1/2\",\"/html/page/1#s3\",\"https://example.org/1/3\"]", "first_story": "Story 1.1"}),
        json!({"url": url("/html/sjis"), "status": 200, "title": "日本語のページ", "heading": "日本", "links": "[]", "first_story": null}),
    ];
    assert_eq!(got, want);
    let rejects = rows(&d.join("out.db"), "_ingest_rejects", "id").await;
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0]["status"], 404);
    assert_eq!(rejects[0]["url"], url("/html/missing"));
    // the comment and the blank line of urls.txt are not pages
    assert_eq!(api.requests().len(), 5);
    assert!(
        api.requests().iter().all(|r| r
            .headers
            .iter()
            .any(|(k, v)| k == "accept" && v.starts_with("text/html"))),
        "pages are asked for as HTML"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_gives_one_record_per_element() {
    let api = mock(1).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let urls: Vec<String> = (1..=3)
        .map(|n| format!("{}/html/page/{n}", api.url()))
        .collect();
    let html = r#"each = "article"
fields = { id = "article@id", story = "h2", links = "a@href[]" }"#;
    let p = pipeline(d, &urls, html, "", "append");
    let out = ingest(d, &api.url(), &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let got = rows(&d.join("out.db"), "pages", "id").await;
    let ids: Vec<&str> = got.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            "a1-1", "a1-2", "a1-3", "a2-1", "a2-2", "a2-3", "a3-1", "a3-2", "a3-3"
        ]
    );
    assert_eq!(got[4]["story"], "Story 2.2");
    assert_eq!(
        got[4]["links"],
        "[\"/html/page/2#s2\",\"https://example.org/2/2\"]"
    );
    assert_eq!(got[4]["url"], format!("{}/html/page/2", api.url()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_killed_midway_stores_each_page_once() {
    let api = slow_mock(1, 40).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let urls: Vec<String> = (1..=80)
        .map(|n| format!("{}/html/page/{n}", api.url()))
        .collect();
    // append: a page stored twice would be two rows
    let p = pipeline(d, &urls, r#"fields = { title = "title" }"#, "", "append");
    let db = d.join("out.db");
    kill_when_committed(d, &api.url(), &p, &db, 10, "kill 1").await;
    kill_when_committed(d, &api.url(), &p, &db, 15, "kill 2").await;
    let out = ingest(d, &api.url(), &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let got = rows(&db, "pages", "rowid").await;
    let mut titles: Vec<String> = got
        .iter()
        .filter_map(|r| r["title"].as_str().map(str::to_string))
        .collect();
    assert_eq!(titles.len(), 80, "one row per page");
    titles.sort_by_key(|t| t.trim_start_matches("Page ").parse::<u32>().unwrap_or(0));
    let want: Vec<String> = (1..=80).map(|n| format!("Page {n}")).collect();
    assert_eq!(titles, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_mistakes_are_reported_before_any_request() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let bad = r#"each = "article["
fields = { title = "title" }"#;
    let p = pipeline(d, &["http://127.0.0.1:9/x".to_string()], bad, "", "merge");
    let out = ingest(d, "http://127.0.0.1:9", &["validate", &p]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("source.html.each: `article[` is not a CSS selector"),
        "{}",
        out.stderr
    );
    let named = r#"fields = { url = "a@href" }"#;
    let p = pipeline(d, &["http://127.0.0.1:9/x".to_string()], named, "", "merge");
    let out = ingest(d, "http://127.0.0.1:9", &["validate", &p]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("source.html.fields: url: `url` is set on every html record already"),
        "{}",
        out.stderr
    );
    // [source.html] without format = "html"
    let p = pipeline(
        d,
        &["http://127.0.0.1:9/x".to_string()],
        "fields = {}",
        "",
        "merge",
    )
    .to_string();
    let text = std::fs::read_to_string(&p)
        .unwrap_or_default()
        .replace("format = \"html\"\n", "");
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
    let out = ingest(d, "http://127.0.0.1:9", &["validate", &p]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("source.html: applies to `format = \"html\"`"),
        "{}",
        out.stderr
    );
}

/// A listing of pages `1..=last` walked by the link each page gives to the
/// next (`html:` at `next`), one record per story.
fn listing(dir: &Path, base: &str, last: u64, next: &str, write_mode: &str) -> String {
    let text = format!(
        r#"[source]
kind = "http"
base_url = "{base}"
path = "/html/page/1"
params = {{ last = "{last}" }}
format = "html"

[source.html]
each = "article"
fields = {{ id = "@id", story = "h2" }}

[source.pagination]
kind = "next_url"
next = "{next}"

[sink]
kind = "sqlite"
path = "out.db"
table = "stories"
write = "{write_mode}"
primary_key = ["id"]
batch_size = 3
"#
    );
    write(dir, "listing.toml", &text).display().to_string()
}

/// The story ids of pages `1..=last`, in order.
fn stories(last: u64) -> Vec<String> {
    (1..=last)
        .flat_map(|n| (1..=3).map(move |a| format!("a{n}-{a}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_is_walked_by_the_next_link_in_each_page() {
    let api = mock(1).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let p = listing(d, &api.url(), 5, "html:a[rel=next]@href", "merge");
    let out = ingest(d, &api.url(), &["run", &p, "--output", "json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let got = rows(&d.join("out.db"), "stories", "rowid").await;
    let ids: Vec<&str> = got.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, stories(5), "every story of the 5 pages, in order");
    assert_eq!(got[14]["story"], "Story 5.3");
    // each record names the page it came from: the relative links were
    // resolved against the page that gave them
    assert_eq!(
        got[3]["url"],
        format!("{}/html/page/2?last=5", api.url()),
        "{:?}",
        got[3]
    );
    let paths: Vec<String> = api.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths.len(), 5, "page 5 has no next link: {paths:?}");
    assert!(
        !out.stderr.contains("warning"),
        "the first page has the link: {}",
        out.stderr
    );
    // a selector that matches nothing on the first page ends the walk there,
    // and says so
    let p = listing(d, &api.url(), 5, "html:a.following@href", "merge");
    let out = ingest(d, &api.url(), &["run", &p, "--full-refresh"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("html:a.following@href"),
        "the missing link is named: {}",
        out.stderr
    );
    assert_eq!(rows(&d.join("out.db"), "stories", "rowid").await.len(), 3);
    // an `each` that matches nothing (the site's layout changed) says so
    let p = listing(d, &api.url(), 2, "html:a[rel=next]@href", "merge");
    let text = std::fs::read_to_string(&p)
        .unwrap_or_default()
        .replace("each = \"article\"", "each = \"section.story\"");
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
    let out = ingest(d, &api.url(), &["run", &p, "--full-refresh"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("the first page has no element that matches `section.story` (html.each)"),
        "{}",
        out.stderr
    );
    // the shipped example walks the same listing
    let text = std::fs::read_to_string(root().join("pipelines/listing.toml"))
        .unwrap_or_default()
        .replace("../data/listing.db", "example.db");
    let f = write(d, "example.toml", &text);
    let out = ingest(d, &api.url(), &["run", f.to_str().unwrap_or("")]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let got = rows(&d.join("example.db"), "stories", "rowid").await;
    let ids: Vec<&str> = got.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, stories(5), "pipelines/listing.toml");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_killed_midway_resumes_at_the_next_link_exactly() {
    let api = slow_mock(1, 30).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    // append: a story stored twice would be two rows
    let p = listing(d, &api.url(), 60, "html:a.next@href", "append");
    let db = d.join("out.db");
    kill_when_committed(d, &api.url(), &p, &db, 30, "kill 1").await;
    kill_when_committed(d, &api.url(), &p, &db, 45, "kill 2").await;
    let out = ingest(d, &api.url(), &["run", &p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("resuming the interrupted run"),
        "{}",
        out.stderr
    );
    let got = rows(&db, "stories", "rowid").await;
    let ids: Vec<&str> = got.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, stories(60), "each story once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_locations_are_checked_against_the_format() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let base = "http://127.0.0.1:9";
    // a selector that does not compile
    let p = listing(d, base, 5, "html:a!@href", "merge");
    let out = ingest(d, base, &["validate", &p]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("source.pagination.next: `html:a!@href`: `a!` is not a CSS selector"),
        "{}",
        out.stderr
    );
    // a body path and a total in a web page: both reported, in one pass
    let p = listing(d, base, 5, "links.next", "merge");
    let text = std::fs::read_to_string(&p).unwrap_or_default().replace(
        "kind = \"next_url\"",
        "kind = \"next_url\"\ntotal = \"meta.total\"",
    );
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
    let out = ingest(d, base, &["validate", &p]).await;
    assert_eq!(out.code, 2, "{out:?}");
    for key in ["source.pagination.next", "source.pagination.total"] {
        assert!(
            out.stderr.contains(&format!(
                "{key}: reads the JSON body, and a web page is not one: use `html:selector`"
            )),
            "{key}: {}",
            out.stderr
        );
    }
    // html: in a JSON source
    let p = listing(d, base, 5, "html:a.next@href", "merge");
    let text = std::fs::read_to_string(&p)
        .unwrap_or_default()
        .replace("format = \"html\"\n", "")
        .replace(
            "[source.html]\neach = \"article\"\nfields = { id = \"@id\", story = \"h2\" }\n",
            "",
        );
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
    let out = ingest(d, base, &["validate", &p]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(
            "source.pagination.next: reads a web page, and this source's format is not html"
        ),
        "{}",
        out.stderr
    );
}
