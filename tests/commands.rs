//! The read-only commands: `validate` checks files without the network,
//! `preview` fetches one page and writes nothing, `show` prints the table.

use crate::common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_names_each_file_and_sends_nothing() {
    let api = mock(10).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let posts = root().join("pipelines/posts.toml");
    let comments = root().join("pipelines/comments.toml");
    let out = ingest(
        dir.path(),
        &api.url(),
        &[
            "validate",
            posts.to_str().unwrap_or(""),
            comments.to_str().unwrap_or(""),
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    // relative sink paths resolve against the pipeline file's directory
    let db = std::fs::canonicalize(root())
        .unwrap_or_else(|e| panic!("{e}"))
        .join("data/posts.db");
    let posts_line = format!(
        "(pipeline `posts`: page_number pagination, 2 transform(s), merge into {}:posts)",
        db.display()
    );
    let comments_line = format!(
        "(pipeline `comments`: none pagination, 1 transform(s), merge into {}:comments)",
        db.display()
    );
    assert!(out.stdout.contains(&posts_line), "{}", out.stdout);
    assert!(out.stdout.contains(&comments_line), "{}", out.stdout);
    assert!(api.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_fetches_one_page_and_writes_nothing() {
    let api = mock(250).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("never.db");
    let posts = root().join("pipelines/posts.toml");
    let set = format!("sink.path={}", db.display());
    let out = ingest(
        dir.path(),
        &api.url(),
        &[
            "preview",
            posts.to_str().unwrap_or(""),
            "--set",
            &set,
            "--limit",
            "2",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].contains("/posts?_page=1&_limit=100")
            && lines[0].contains("(100 records on the first page, 100 after transforms)"),
        "{}",
        out.stdout
    );
    // two records, after the rename transform
    let first: serde_json::Value = serde_json::from_str(lines[1]).unwrap_or_default();
    let post = api.dataset().post(1);
    assert_eq!(first["user_id"], post["userId"]);
    assert_eq!(first["title"], post["title"]);
    assert!(first.get("userId").is_none());
    assert_eq!(lines[3], "columns:");
    assert_eq!(
        &lines[4..9],
        [
            "  id integer",
            "  user_id integer",
            "  title text",
            "  body text",
            "  updated_at timestamp"
        ]
    );
    assert_eq!(api.requests().len(), 1);
    assert!(!db.exists(), "preview wrote a database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_prints_count_and_rows() {
    let api = mock(12).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(
        dir.path(),
        "p.toml",
        "[source]\nkind = \"http\"\nbase_url = \"${API_BASE}\"\npath = \"/posts\"\n\
         [sink]\nkind = \"sqlite\"\npath = \"s.db\"\ntable = \"posts\"\n",
    );
    let p = p.to_str().unwrap_or("");
    let before = ingest(dir.path(), &api.url(), &["show", p]).await;
    assert_eq!(before.code, 1, "{before:?}");
    assert!(
        before
            .stderr
            .contains("s.db: no database yet; `ingest run` creates it"),
        "{}",
        before.stderr
    );
    let out = ingest(dir.path(), &api.url(), &["run", p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let text = ingest(dir.path(), &api.url(), &["show", p, "--limit", "2"]).await;
    assert_eq!(text.code, 0, "{text:?}");
    // the database's path, absolute: resolved against the pipeline file's directory
    let db = std::fs::canonicalize(dir.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .join("s.db");
    let head = format!(
        "p: 12 rows in {} (table posts)\nuserId | id | title",
        db.display()
    );
    assert!(text.stdout.starts_with(&head), "{}", text.stdout);
    let json = ingest(
        dir.path(),
        &api.url(),
        &["show", p, "--output", "json", "--limit", "3"],
    )
    .await;
    let peek: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap_or_default();
    assert_eq!(peek["count"], 12);
    let data = api.dataset();
    assert_eq!(
        peek["rows"],
        serde_json::json!([data.post(1), data.post(2), data.post(3)])
    );
}

/// `ingest completions SHELL` prints a script that names every command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_for_each_shell() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for shell in ["bash", "zsh", "fish"] {
        let out = ingest(dir.path(), "http://127.0.0.1:9", &["completions", shell]).await;
        assert_eq!(out.code, 0, "{shell}: {out:?}");
        for command in [
            "run",
            "validate",
            "preview",
            "state",
            "runs",
            "show",
            "completions",
        ] {
            assert!(out.stdout.contains(command), "{shell}: no `{command}`");
        }
    }
    let out = ingest(dir.path(), "http://127.0.0.1:9", &["completions", "tcsh"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    // the bash script loads in bash and registers a completion for `ingest`
    let out = ingest(dir.path(), "http://127.0.0.1:9", &["completions", "bash"]).await;
    let script = write(dir.path(), "ingest.bash", &out.stdout);
    let loaded = std::process::Command::new("bash")
        .args([
            "--norc",
            "-c",
            &format!("source {} && complete -p ingest", script.display()),
        ])
        .output()
        .unwrap_or_else(|e| panic!("bash: {e}"));
    let said = String::from_utf8_lossy(&loaded.stdout);
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    assert!(
        said.contains("complete") && said.trim_end().ends_with(" ingest"),
        "{said}"
    );
}

/// `ingest man` prints a man page that documents every command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn man_page_names_every_command() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = ingest(dir.path(), "http://127.0.0.1:9", &["man"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(".TH ingest 1"), "{}", out.stdout);
    for command in [
        "run",
        "validate",
        "preview",
        "state",
        "runs",
        "show",
        "rejects",
        "status",
        "completions",
        "man",
    ] {
        let entry = format!("ingest\\-{command}(1)");
        assert!(
            out.stdout.contains(&entry),
            "no {entry} in:\n{}",
            out.stdout
        );
    }
}

/// `ingest rejects` lists what the sink refused and why, newest first, as a
/// table or as JSON lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_lists_what_was_refused_and_why() {
    let api = mock(12).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(
        dir.path(),
        "p.toml",
        "[source]\nkind = \"http\"\nbase_url = \"${API_BASE}\"\npath = \"/posts\"\n\
         [sink]\nkind = \"sqlite\"\npath = \"r.db\"\ntable = \"posts\"\n\
         [sink.columns]\nid = \"integer\"\ntitle = \"integer\"\n",
    );
    let p = p.to_str().unwrap_or("");
    let none = ingest(dir.path(), &api.url(), &["rejects", p]).await;
    assert_eq!(none.code, 1, "no database yet: {none:?}");
    let out = ingest(dir.path(), &api.url(), &["run", p]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let text = ingest(dir.path(), &api.url(), &["rejects", p, "--limit", "3"]).await;
    assert_eq!(text.code, 0, "{text:?}");
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        5,
        "header, rule and 3 rejects: {}",
        text.stdout
    );
    assert!(lines[0].starts_with("when"), "{}", text.stdout);
    assert!(
        lines[2].contains("column `title` (integer):") && lines[2].contains("does not convert"),
        "{}",
        text.stdout
    );
    let json = ingest(dir.path(), &api.url(), &["rejects", p, "--output", "json"]).await;
    let all: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(all.len(), 12, "{}", json.stdout);
    // newest first: the last post's record comes first
    let first: serde_json::Value =
        serde_json::from_str(all[0]["record"].as_str().unwrap_or("")).unwrap_or_default();
    assert_eq!(first["id"], 12, "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_pipelines_last_run_and_fails_on_a_failed_one() {
    let api = mock(30).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap_or_else(|e| panic!("{e}"));
    let good = "[source]\nkind = \"http\"\nbase_url = \"${API_BASE}\"\npath = \"/posts\"\n\
        [source.pagination]\nkind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = 10\n\
        [sink]\nkind = \"sqlite\"\npath = \"out.db\"\ntable = \"posts\"\n";
    write(&dir.path().join("pipelines"), "a_good.toml", good);
    write(
        &dir.path().join("pipelines"),
        "b_never.toml",
        &good.replace("out.db", "never.db"),
    );
    write(
        &dir.path().join("pipelines"),
        "c_bad.toml",
        &good
            .replace("/posts", "/nowhere")
            .replace("out.db", "bad.db"),
    );
    // a database that cannot be reached does not hide the others
    write(
        &dir.path().join("pipelines"),
        "d_down.toml",
        &good.replace(
            "kind = \"sqlite\"\npath = \"out.db\"",
            "kind = \"postgres\"\nurl = \"postgres://nobody@127.0.0.1:9/db\"",
        ),
    );
    let run = |f: &'static str| {
        let dir = dir.path().to_path_buf();
        let api = api.url();
        async move { ingest(&dir, &api, &["run", &format!("pipelines/{f}"), "-q"]).await }
    };
    assert_eq!(run("a_good.toml").await.code, 0);
    assert_eq!(run("c_bad.toml").await.code, 1);
    // no files named: the pipelines/ folder, in order
    let out = ingest(dir.path(), &api.url(), &["status"]).await;
    assert_eq!(out.code, 1, "a failed last run fails status: {out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("pipeline") && lines[0].contains("last run"),
        "{}",
        out.stdout
    );
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(name))
            .copied()
            .unwrap_or("")
    };
    assert!(
        row("a_good").contains("| done ") && row("a_good").contains("| 30 "),
        "{}",
        out.stdout
    );
    assert!(row("b_never").contains("never run"), "{}", out.stdout);
    assert!(
        row("c_bad").contains("| failed ") && row("c_bad").contains("404"),
        "{}",
        out.stdout
    );
    assert!(
        row("d_down").contains("| unknown ") && row("d_down").contains("cannot connect"),
        "{}",
        out.stdout
    );
    // one file, as JSON: the good one alone exits 0
    let out = ingest(
        dir.path(),
        &api.url(),
        &["status", "pipelines/a_good.toml", "--output", "json"],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap_or_default();
    assert_eq!(v["last"]["status"], "done");
    assert_eq!(v["last"]["records"], 30);
}

/// The metric `name` of pipeline `p` in a Prometheus text file, parsed by a
/// Prometheus text parser.
fn metric(text: &str, name: &str, p: &str) -> Option<f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("{e}: {text}"));
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get("pipeline") == Some(p))
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// `--metrics FILE`: each run's figures for node_exporter, a failed run
/// included, the last success kept across a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_for_the_textfile_collector() {
    let api = mock(25).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let good = "name = \"posts\"\n[source]\nkind = \"http\"\nbase_url = \"${API_BASE}\"\npath = \"/posts\"\n\
        [source.pagination]\nkind = \"page_number\"\nparam = \"_page\"\nsize_param = \"_limit\"\nsize = 10\ntotal = \"header:X-Total-Count\"\n\
        [sink]\nkind = \"sqlite\"\npath = \"out.db\"\ntable = \"posts\"\nwrite = \"merge\"\nprimary_key = [\"id\"]\n";
    let p = write(dir.path(), "p.toml", good);
    let m = dir.path().join("ingest.prom");
    let args = [
        "run",
        p.to_str().unwrap_or(""),
        "--metrics",
        m.to_str().unwrap_or(""),
        "-q",
    ];
    let out = ingest(dir.path(), &api.url(), &args).await;
    assert_eq!(out.code, 0, "{out:?}");
    let text = std::fs::read_to_string(&m).unwrap_or_else(|e| panic!("{e}"));
    let get = |text: &str, name: &str| metric(text, name, "posts");
    assert_eq!(get(&text, "ingest_run_records"), Some(25.0), "{text}");
    assert_eq!(get(&text, "ingest_run_pages"), Some(3.0), "{text}");
    assert_eq!(get(&text, "ingest_run_requests"), Some(3.0), "{text}");
    assert_eq!(get(&text, "ingest_run_exit_code"), Some(0.0), "{text}");
    assert_eq!(get(&text, "ingest_run_success"), Some(1.0), "{text}");
    assert!(
        get(&text, "ingest_run_duration_seconds").is_some_and(|s| s > 0.0),
        "{text}"
    );
    let first = get(&text, "ingest_last_success_timestamp_seconds").unwrap_or(0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    assert!((now - first).abs() < 120.0, "{first} vs now {now}");
    // the API goes away: a failed run, the earlier success kept
    let bad = write(dir.path(), "p.toml", &good.replace("/posts", "/gone"));
    let args = [
        "run",
        bad.to_str().unwrap_or(""),
        "--metrics",
        m.to_str().unwrap_or(""),
        "-q",
    ];
    let out = ingest(dir.path(), &api.url(), &args).await;
    assert_eq!(out.code, 1, "{out:?}");
    let text = std::fs::read_to_string(&m).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(&text, "ingest_run_exit_code"), Some(1.0), "{text}");
    assert_eq!(get(&text, "ingest_run_success"), Some(0.0), "{text}");
    assert_eq!(get(&text, "ingest_run_records"), Some(0.0), "{text}");
    assert_eq!(
        get(&text, "ingest_last_success_timestamp_seconds"),
        Some(first),
        "{text}"
    );
    // no temporary file is left beside it
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `--color`, `NO_COLOR`, and `--log-format json` for every line on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_colour_and_json_logs() {
    let api = mock(5).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = write(
        dir.path(),
        "p.toml",
        "name = \"gone\"\n[source]\nkind = \"http\"\nbase_url = \"${API_BASE}\"\npath = \"/gone\"\n\
         [sink]\nkind = \"sqlite\"\npath = \"out.db\"\ntable = \"t\"\n",
    );
    let p = p.to_str().unwrap_or("");
    let red = "\x1b[1;31mingest: error:\x1b[0m gone: ";
    let always = ingest(dir.path(), &api.url(), &["--color", "always", "run", p]).await;
    assert_eq!(always.code, 1, "{always:?}");
    assert!(always.stderr.contains(red), "{:?}", always.stderr);
    // NO_COLOR wins over auto; never is never
    for (args, env) in [
        (vec!["run", p], vec![("NO_COLOR", "1")]),
        (vec!["--color", "never", "run", p], vec![]),
    ] {
        let out = ingest_env(dir.path(), &api.url(), &args, &env).await;
        assert!(!out.stderr.contains('\x1b'), "{args:?}: {:?}", out.stderr);
        assert!(
            out.stderr.contains("ingest: error: gone: "),
            "{}",
            out.stderr
        );
    }
    // json: every line parses, the final error included, and the events of
    // the run carry the pipeline
    let out = ingest(dir.path(), &api.url(), &["--log-format", "json", "run", p]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let lines: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let last = lines.last().cloned().unwrap_or_default();
    assert_eq!(last["level"], "ERROR", "{last}");
    assert_eq!(last["fields"]["pipeline"], "gone", "{last}");
    assert!(
        last["fields"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("404"),
        "{last}"
    );
    let events: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l.get("span").is_some()).collect();
    assert!(!events.is_empty(), "{}", out.stderr);
    assert!(
        events.iter().all(|e| e["span"]["pipeline"] == "gone"),
        "{}",
        out.stderr
    );
}

/// `validate --no-env` lints a file whose secrets are not in the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_without_the_environment() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = "[source]\nkind = \"http\"\nbase_url = \"${env:INGEST_TEST_NOT_SET_BASE}\"\npath = \"/posts\"\n\
        [source.auth]\nkind = \"bearer\"\ntoken = \"${env:INGEST_TEST_NOT_SET_TOKEN}\"\n\
        [sink]\nkind = \"postgres\"\nurl = \"${env:INGEST_TEST_NOT_SET_DB}\"\ntable = \"t\"\n";
    let p = write(dir.path(), "p.toml", text);
    let p = p.to_str().unwrap_or("");
    let plain = ingest(dir.path(), "http://127.0.0.1:9", &["validate", p]).await;
    assert_eq!(plain.code, 2, "{plain:?}");
    assert!(
        plain.stderr.contains("INGEST_TEST_NOT_SET_TOKEN"),
        "{}",
        plain.stderr
    );
    let lint = ingest(
        dir.path(),
        "http://127.0.0.1:9",
        &["validate", "--no-env", p],
    )
    .await;
    assert_eq!(lint.code, 0, "{lint:?}");
    // a real mistake is still one
    let bad = write(
        dir.path(),
        "bad.toml",
        &text.replace("table = \"t\"", "table = \"t\"\nwrite = \"upsert\""),
    );
    let lint = ingest(
        dir.path(),
        "http://127.0.0.1:9",
        &["validate", "--no-env", bad.to_str().unwrap_or("")],
    )
    .await;
    assert_eq!(lint.code, 2, "{lint:?}");
    assert!(lint.stderr.contains("sink.write"), "{}", lint.stderr);
}
