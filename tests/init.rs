//! `ingest init URL`: one request to each pagination style of the mock, a
//! pipeline file that validates, and a run of it that lands every post; on
//! a web page, a scrape that follows the page's next link.

use crate::common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_detects_each_style_and_the_file_runs_exactly() {
    let api = mock(57).await;
    let want: Vec<serde_json::Value> = api.dataset().all_posts().collect();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let styles = [
        (
            "page_number",
            "/posts?_page=1&_limit=10",
            "page_number pagination",
        ),
        (
            "offset",
            "/offset/posts?offset=0&limit=20",
            "offset pagination",
        ),
        (
            "cursor_stripe",
            "/stripe/posts?limit=10",
            "cursor pagination",
        ),
        ("cursor_slack", "/slack/posts?limit=15", "cursor pagination"),
        (
            "cursor_header",
            "/hcursor/posts?limit=12",
            "cursor pagination",
        ),
        (
            "link_header",
            "/github/posts?per_page=30",
            "link_header pagination",
        ),
        ("next_url", "/next/posts?limit=10", "next_url pagination"),
    ];
    for (name, path, kind) in styles {
        let file = dir.path().join(format!("{name}.toml"));
        let url = format!("{}{path}", api.url());
        let out = ingest(
            dir.path(),
            &api.url(),
            &["init", &url, "-o", file.to_str().unwrap_or("")],
        )
        .await;
        assert_eq!(out.code, 0, "{name}: {out:?}");
        assert!(out.stdout.contains(kind), "{name}: {}", out.stdout);
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(text.starts_with("# Written by `ingest init"), "{text}");
        let f = file.to_str().unwrap_or("");
        let ok = ingest(dir.path(), &api.url(), &["validate", f]).await;
        assert_eq!(ok.code, 0, "{name}: {ok:?}\n{text}");
        let run = ingest(dir.path(), &api.url(), &["run", f, "-q"]).await;
        assert_eq!(run.code, 0, "{name}: {run:?}\n{text}");
        let got = rows(&dir.path().join(format!("{name}.db")), name, "id, rowid").await;
        assert_eq!(got, want, "{name}:\n{text}");
    }
    // a second init does not overwrite without --force; a bad URL is exit 2
    let file = dir.path().join("page_number.toml");
    let url = format!("{}/posts?_page=1", api.url());
    let again = ingest(
        dir.path(),
        &api.url(),
        &["init", &url, "-o", file.to_str().unwrap_or("")],
    )
    .await;
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    let bad = ingest(dir.path(), &api.url(), &["init", "ftp://x/y"]).await;
    assert_eq!(bad.code, 2, "{bad:?}");
    let gone = ingest(
        dir.path(),
        &api.url(),
        &["init", &format!("{}/nowhere", api.url())],
    )
    .await;
    assert_eq!(gone.code, 1, "{gone:?}");
    assert!(gone.stderr.contains("404"), "{}", gone.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_on_a_web_page_writes_a_scrape_that_follows_the_next_link() {
    let api = mock(1).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let url = format!("{}/html/page/1?last=4", api.url());
    let out = ingest(d, &api.url(), &["init", &url, "-o", "stories.toml"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("one per `article`")
            && out
                .stdout
                .contains("next_url pagination by `html:a[rel=next]@href`"),
        "{}",
        out.stdout
    );
    let text = std::fs::read_to_string(d.join("stories.toml")).unwrap_or_default();
    assert!(text.contains("format = \"html\""), "{text}");
    let run = ingest(d, &api.url(), &["run", "stories.toml", "-q"]).await;
    assert_eq!(run.code, 0, "{run:?}\n{text}");
    let got = rows(&d.join("stories.db"), "stories", "rowid").await;
    let titles: Vec<&str> = got.iter().filter_map(|r| r["title"].as_str()).collect();
    let want: Vec<String> = (1..=4)
        .flat_map(|n| (1..=3).map(move |a| format!("Story {n}.{a}")))
        .collect();
    assert_eq!(titles, want, "every story of the 4 pages\n{text}");
    assert_eq!(got[0]["link"], "/html/page/1#s1");
    // a page with no repeated item: one record for the page, no pagination
    let out = ingest(
        d,
        &api.url(),
        &[
            "init",
            &format!("{}/html/malformed", api.url()),
            "-o",
            "one.toml",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("1 record(s), no pagination"),
        "{}",
        out.stdout
    );
    let run = ingest(d, &api.url(), &["run", "one.toml", "-q"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let got = rows(&d.join("one.db"), "one", "rowid").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["title"], "Broken & unclosed");
}
