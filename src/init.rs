//! `ingest init URL`: from one response, guess where the records are and
//! how the API pages, and write a commented pipeline file. The guesses are
//! the conventions dlt's `rest_api` paginators and Airbyte's low-code
//! connectors look for: a `Link: <…>; rel="next"` header; a `next` URL in the
//! body; a cursor in the body or a header; Stripe's `has_more`; page or
//! offset parameters in the URL, with a total from `X-Total-Count` or the
//! body. What it cannot know (a cursor's query parameter) it says in a
//! comment beside the guess. A web page gets a scrape instead: one record
//! per repeated item (or for the page), and the link to the next page.

use serde_json::Value;
use url::Url;

/// How the API pages, as guessed.
#[derive(Debug, Clone, PartialEq)]
pub enum Guess {
    /// `Link` header with `rel="next"`.
    LinkHeader,
    /// A next-page URL at this path of the body.
    NextUrl(String),
    /// A cursor (`header:Name` or a body path) sent back as `param`.
    Cursor {
        /// Where the cursor is.
        cursor: String,
        /// The query parameter that carries it (a guess).
        param: String,
        /// A `has_more` flag, for Stripe-style walks.
        has_more: Option<String>,
    },
    /// Page numbers in `param`, the size in `size` (a param and its value).
    PageNumber {
        /// The page parameter.
        param: String,
        /// The size parameter and value.
        size: Option<(String, u64)>,
        /// Where the total is.
        total: Option<String>,
    },
    /// Offsets in `param`, the limit in `limit`.
    Offset {
        /// The offset parameter.
        param: String,
        /// The limit parameter and value.
        limit: Option<(String, u64)>,
        /// Where the total is.
        total: Option<String>,
    },
    /// One request is all.
    None,
}

/// What one response says about its API.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    /// Dotted path of the record array ("" when the body is the array).
    pub records: String,
    /// Records on the page.
    pub count: usize,
    /// The pagination.
    pub pagination: Guess,
    /// Query parameters that stay on every request.
    pub params: Vec<(String, String)>,
}

const RECORD_KEYS: &[&str] = &[
    "data", "results", "items", "records", "members", "entries", "rows", "list",
];
const NEXT_KEYS: &[&str] = &[
    "next",
    "next_url",
    "nextUrl",
    "next_page_url",
    "nextPageUrl",
    "next_link",
];
const CURSOR_KEYS: &[&str] = &[
    "next_cursor",
    "nextCursor",
    "cursor",
    "next_page_token",
    "nextPageToken",
    "endCursor",
    "after",
];
const TOTAL_KEYS: &[&str] = &[
    "total",
    "total_count",
    "totalCount",
    "count",
    "total_results",
];
const NESTS: &[&str] = &[
    "",
    "meta",
    "links",
    "pagination",
    "paging",
    "response_metadata",
    "page_info",
    "pageInfo",
];
const PAGE_PARAMS: &[&str] = &["page", "_page", "p", "pageNumber", "page_number"];
const OFFSET_PARAMS: &[&str] = &["offset", "_offset", "skip", "start"];
const SIZE_PARAMS: &[&str] = &[
    "limit",
    "_limit",
    "per_page",
    "page_size",
    "pageSize",
    "size",
    "count",
];

/// Guess from a URL, the response's headers (names lower-cased) and body.
pub fn detect(url: &Url, headers: &[(String, String)], body: &Value) -> Detected {
    let (records, count) = records(body);
    let query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let (pagination, used) = guess(&query, headers, body);
    let params = query
        .into_iter()
        .filter(|(k, _)| !used.contains(k))
        .collect();
    Detected {
        records,
        count,
        pagination,
        params,
    }
}

/// The pagination, and the query parameters it takes over.
fn guess(
    query: &[(String, String)],
    headers: &[(String, String)],
    body: &Value,
) -> (Guess, Vec<String>) {
    // with a total, page numbers or offsets from the URL are fetched
    // concurrently: better than following links one by one
    let followed = followed(headers, body);
    let header = |name: &str| headers.iter().find(|(k, _)| k == name);
    let find = |names: &[&str]| {
        query
            .iter()
            .find(|(k, _)| names.contains(&k.as_str()))
            .cloned()
    };
    let size = find(SIZE_PARAMS).and_then(|(k, v)| Some((k, v.parse::<u64>().ok()?)));
    let total = match header("x-total-count") {
        Some(_) => Some("header:X-Total-Count".to_string()),
        None => at(body, TOTAL_KEYS, Value::is_u64),
    };
    if let Some(g) =
        followed.filter(|_| total.is_none() || find(PAGE_PARAMS).or(find(OFFSET_PARAMS)).is_none())
    {
        return (g, Vec::new());
    }
    let mut used: Vec<String> = size.iter().map(|(k, _)| k.clone()).collect();
    if let Some((param, _)) = find(PAGE_PARAMS) {
        used.push(param.clone());
        let g = Guess::PageNumber { param, size, total };
        return (g, used);
    }
    if let Some((param, _)) = find(OFFSET_PARAMS) {
        used.push(param.clone());
        let g = Guess::Offset {
            param,
            limit: size,
            total,
        };
        return (g, used);
    }
    (Guess::None, Vec::new())
}

/// A walk the response itself leads: a Link header, a next URL, a cursor
/// (in a header or the body), or Stripe's `has_more`.
fn followed(headers: &[(String, String)], body: &Value) -> Option<Guess> {
    let url_like = |v: &Value| {
        v.as_str()
            .is_some_and(|s| s.starts_with("http") || s.starts_with('/'))
    };
    let text = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty());
    let link = headers.iter().find(|(k, _)| k == "link");
    if link.is_some_and(|(_, l)| l.contains("rel=\"next\"")) {
        return Some(Guess::LinkHeader);
    }
    if let Some(path) = at(body, NEXT_KEYS, url_like) {
        return Some(Guess::NextUrl(path));
    }
    if let Some((name, _)) = headers.iter().find(|(k, _)| k.contains("cursor")) {
        let cursor = format!("header:{}", header_case(name));
        return Some(Guess::Cursor {
            cursor,
            param: "cursor".into(),
            has_more: None,
        });
    }
    if let Some(path) = at(body, CURSOR_KEYS, text) {
        let last = path.rsplit('.').next().unwrap_or("");
        let param = match last {
            l if l.to_ascii_lowercase().contains("token") => "page_token",
            "endCursor" | "after" => "after",
            _ => "cursor",
        };
        return Some(Guess::Cursor {
            cursor: path,
            param: param.into(),
            has_more: None,
        });
    }
    body.get("has_more")
        .filter(|v| v.is_boolean())
        .map(|_| Guess::Cursor {
            cursor: "last_record:id".into(),
            param: "starting_after".into(),
            has_more: Some("has_more".into()),
        })
}

/// `X-Next-Cursor` for `x-next-cursor`.
fn header_case(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The first of `keys` at the top of the body or under a usual nest,
/// whose value passes `ok`: its dotted path.
fn at(body: &Value, keys: &[&str], ok: impl Fn(&Value) -> bool) -> Option<String> {
    for nest in NESTS {
        let here = if nest.is_empty() {
            Some(body)
        } else {
            body.get(*nest)
        };
        let Some(Value::Object(m)) = here else {
            continue;
        };
        for k in keys {
            if m.get(*k).is_some_and(&ok) {
                return Some(if nest.is_empty() {
                    (*k).to_string()
                } else {
                    format!("{nest}.{k}")
                });
            }
        }
    }
    None
}

/// Where the records are: the body itself, a usual key, or the largest
/// array of objects one or two levels down.
fn records(body: &Value) -> (String, usize) {
    let objects = |v: &Value| match v {
        Value::Array(a) if a.iter().all(Value::is_object) => Some(a.len()),
        _ => None,
    };
    if let Some(n) = objects(body) {
        return (String::new(), n);
    }
    let Value::Object(m) = body else {
        return (String::new(), 0);
    };
    for k in RECORD_KEYS {
        if let Some(n) = m.get(*k).and_then(objects) {
            return ((*k).to_string(), n);
        }
    }
    let mut best: Option<(String, usize)> = None;
    for (k, v) in m {
        let found = match v {
            Value::Object(inner) => inner
                .iter()
                .find_map(|(k2, v2)| objects(v2).map(|n| (format!("{k}.{k2}"), n))),
            other => objects(other).map(|n| (k.clone(), n)),
        };
        if let Some((path, n)) = found
            && best.as_ref().is_none_or(|(_, b)| n > *b)
        {
            best = Some((path, n));
        }
    }
    best.unwrap_or_default()
}

/// A TOML string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The file's head and the start of `[source]`: the URL's origin, path and
/// query parameters, `extra` lines after them.
fn head(url: &Url, name: &str, from: &str, extra: &str, params: &[(String, String)]) -> String {
    let base = format!(
        "{}://{}",
        url.scheme(),
        url.host_str().unwrap_or("localhost")
    ) + &url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let mut out = format!(
        "# Written by `ingest init {url}` from {from},\n\
         # then `ingest validate` and `ingest preview` this file.\n\
         name = {}\n\n[source]\nkind = \"http\"\nbase_url = {}\npath = {}\n{extra}",
        q(name),
        q(&base),
        q(url.path())
    );
    if !params.is_empty() {
        let ps: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{} = {}", q(k), q(v)))
            .collect();
        out.push_str(&format!("params = {{ {} }}\n", ps.join(", ")));
    }
    out
}

/// The pipeline file for a detected API, with comments on each guess.
pub fn render(url: &Url, d: &Detected, name: &str) -> String {
    let mut out = head(url, name, "one response: check the guesses", "", &d.params);
    out.push_str(&format!(
        "# {} records on the first page{}\nrecords = {}\n",
        d.count,
        if d.records.is_empty() {
            ", which is the array itself"
        } else {
            ""
        },
        q(&d.records)
    ));
    out.push_str(
        "# [source.auth] kind = \"bearer\", token = \"${env:API_TOKEN}\" if the API wants one\n\n",
    );
    out.push_str(&pagination(&d.pagination));
    out.push_str(&format!(
        "\n[sink]\nkind = \"sqlite\"\npath = {}                 # beside this file\ntable = {}\nwrite = \"append\"                 # \"merge\" with primary_key = [\"id\"] to upsert\n",
        q(&format!("{name}.db")),
        q(name)
    ));
    out
}

/// The `[source.pagination]` table of a guess.
fn pagination(g: &Guess) -> String {
    let mut s = String::from("[source.pagination]\n");
    match g {
        Guess::LinkHeader => s.push_str("# the response had a Link header with rel=\"next\"\nkind = \"link_header\"\nrel = \"next\"\n"),
        Guess::NextUrl(p) => s.push_str(&format!("# the body had the next page's URL at `{p}`\nkind = \"next_url\"\nnext = {}\n", q(p))),
        Guess::Cursor { cursor, param, has_more } => {
            s.push_str(&format!("# a cursor at `{cursor}`; check that the API takes it back as `{param}`\nkind = \"cursor\"\ncursor = {}\nparam = {}\n", q(cursor), q(param)));
            if let Some(h) = has_more {
                s.push_str(&format!("has_more = {}\n", q(h)));
            }
        }
        Guess::PageNumber { param, size, total } => {
            s.push_str(&format!("# page numbers in `{param}` (from the URL)\nkind = \"page_number\"\nparam = {}\n", q(param)));
            if let Some((k, v)) = size {
                s.push_str(&format!("size_param = {}\nsize = {v}\n", q(k)));
            }
            total_line(&mut s, total.as_deref());
        }
        Guess::Offset { param, limit, total } => {
            s.push_str(&format!("# offsets in `{param}` (from the URL)\nkind = \"offset\"\noffset_param = {}\n", q(param)));
            if let Some((k, v)) = limit {
                s.push_str(&format!("limit_param = {}\nlimit = {v}\n", q(k)));
            }
            total_line(&mut s, total.as_deref());
        }
        Guess::None => s.push_str("# no next link, cursor, page or offset parameter was found: one request\nkind = \"none\"\n"),
    }
    s
}

fn total_line(s: &mut String, total: Option<&str>) {
    match total {
        Some(t) => s.push_str(&format!(
            "total = {}                # pages are fetched concurrently\n",
            q(t)
        )),
        None => s.push_str("# no total found: the walk ends at the first short page\n"),
    }
}

/// What one web page says about a scrape of it (`ingest init` on HTML).
#[derive(Debug, Clone, PartialEq)]
pub struct PageGuess {
    /// A repeated element to take one record from each, when one repeats.
    pub each: Option<String>,
    /// Field name → selector, in order.
    pub fields: Vec<(String, String)>,
    /// How many records the page gives.
    pub count: usize,
    /// The `html:` location of the link to the next page, when there is one.
    pub next: Option<String>,
    /// Query parameters that stay on every request.
    pub params: Vec<(String, String)>,
}

/// Elements that hold one item each on listing pages, most specific first.
const ITEMS: &[&str] = &[
    "article",
    "li.product",
    "div.product",
    "tr.item",
    ".post",
    ".item",
];
/// Links to the next page, most explicit first.
const NEXT_LINKS: &[&str] = &["a[rel=next]", "link[rel=next]", "a.next", "li.next a"];

/// Guess a scrape from a page: one record per repeated item (else one for
/// the page), its heading and link, and the link to the next page.
pub fn detect_page(url: &Url, html: &str) -> PageGuess {
    use scraper::{Html, Selector};
    let doc = Html::parse_document(html);
    let count = |sel: &str| Selector::parse(sel).map_or(0, |s| doc.select(&s).count());
    let within = |each: &str, sel: &str| count(&format!("{each} {sel}")) > 0;
    let each = ITEMS.iter().find(|s| count(s) >= 2).map(|s| s.to_string());
    let mut fields = Vec::new();
    match &each {
        Some(e) => {
            if let Some(h) = ["h1", "h2", "h3", "h4"].iter().find(|h| within(e, h)) {
                fields.push(("title".to_string(), h.to_string()));
            }
            if within(e, "a[href]") {
                fields.push(("link".to_string(), "a@href".to_string()));
            }
        }
        None => {
            fields.push(("title".to_string(), "title".to_string()));
            if count("h1") > 0 {
                fields.push(("heading".to_string(), "h1".to_string()));
            }
            fields.push(("links".to_string(), "a@href[]".to_string()));
        }
    }
    let next = NEXT_LINKS
        .iter()
        .find(|s| count(s) > 0)
        .map(|s| format!("html:{s}@href"));
    PageGuess {
        count: each.as_deref().map_or(1, count),
        each,
        fields,
        next,
        params: url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    }
}

/// The pipeline file for a scrape of a page, with comments on each guess.
pub fn render_page(url: &Url, g: &PageGuess, name: &str) -> String {
    let mut out = head(
        url,
        name,
        "one web page: check the selectors",
        "format = \"html\"\n",
        &g.params,
    );
    out.push_str(
        "rate_limit = \"2/s\"              # be gentle with a web site\n\n[source.html]\n",
    );
    match &g.each {
        Some(e) => out.push_str(&format!(
            "# {} `{e}` elements on the page: one record each\neach = {}\n",
            g.count,
            q(e)
        )),
        None => out.push_str("# no repeated item was found: one record for the page\n"),
    }
    let fields: Vec<String> = g
        .fields
        .iter()
        .map(|(k, v)| format!("{k} = {}", q(v)))
        .collect();
    out.push_str(&format!(
        "fields = {{ {} }}\n\n[source.pagination]\n",
        fields.join(", ")
    ));
    match &g.next {
        Some(n) => out.push_str(&format!(
            "# the page links to the next one: the walk follows it until a page has none\nkind = \"next_url\"\nnext = {}\n",
            q(n)
        )),
        None => out.push_str("# no link to a next page was found: one request\nkind = \"none\"\n"),
    }
    out.push_str(&format!(
        "\n[sink]\nkind = \"sqlite\"\npath = {}                 # beside this file\ntable = {}\nwrite = \"append\"                 # \"merge\" with a primary_key to upsert\n",
        q(&format!("{name}.db")),
        q(name)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn each_style_is_recognised() {
        let h = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let d = detect(
            &url("http://x/posts?_page=1&_limit=10"),
            &h("x-total-count", "99"),
            &json!([{"id": 1}]),
        );
        assert_eq!(
            d.pagination,
            Guess::PageNumber {
                param: "_page".into(),
                size: Some(("_limit".into(), 10)),
                total: Some("header:X-Total-Count".into())
            }
        );
        assert!(d.params.is_empty());
        let d = detect(
            &url("http://x/o?offset=0&limit=20&q=a"),
            &[],
            &json!({"data": [{"id": 1}], "meta": {"total": 40}}),
        );
        assert_eq!(d.records, "data");
        assert_eq!(
            d.pagination,
            Guess::Offset {
                param: "offset".into(),
                limit: Some(("limit".into(), 20)),
                total: Some("meta.total".into())
            }
        );
        assert_eq!(d.params, vec![("q".to_string(), "a".to_string())]);
        let d = detect(
            &url("http://x/s"),
            &[],
            &json!({"members": [{"id": 1}], "response_metadata": {"next_cursor": "abc"}}),
        );
        assert_eq!(
            d.pagination,
            Guess::Cursor {
                cursor: "response_metadata.next_cursor".into(),
                param: "cursor".into(),
                has_more: None
            }
        );
    }

    #[test]
    fn links_next_urls_and_cursors_are_recognised() {
        let h = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let d = detect(
            &url("http://x/g"),
            &h("link", "<http://x/g?page=2>; rel=\"next\""),
            &json!([{"id": 1}]),
        );
        assert_eq!(d.pagination, Guess::LinkHeader);
        let d = detect(
            &url("http://x/n"),
            &[],
            &json!({"results": [{"id": 1}], "next": "http://x/n?page=2"}),
        );
        assert_eq!(d.pagination, Guess::NextUrl("next".into()));
        let d = detect(
            &url("http://x/st"),
            &[],
            &json!({"data": [{"id": 1}], "has_more": true}),
        );
        assert!(matches!(
            d.pagination,
            Guess::Cursor {
                has_more: Some(_),
                ..
            }
        ));
        let d = detect(
            &url("http://x/h"),
            &h("x-next-cursor", "c2"),
            &json!([{"id": 1}]),
        );
        assert_eq!(
            d.pagination,
            Guess::Cursor {
                cursor: "header:X-Next-Cursor".into(),
                param: "cursor".into(),
                has_more: None
            }
        );
        let d = detect(
            &url("http://x/all"),
            &[],
            &json!({"wrapper": {"things": [{"a": 1}, {"a": 2}]}}),
        );
        assert_eq!(
            (d.records.as_str(), d.count, d.pagination),
            ("wrapper.things", 2, Guess::None)
        );
    }

    #[test]
    fn pages_give_items_their_fields_and_the_next_link() {
        let url = Url::parse("http://h.test/blog?page=1").unwrap_or_else(|e| panic!("{e}"));
        let html = r#"<html><head><title>Blog</title><link rel="next" href="?page=2"></head>
            <body><div class="post"><h3>One</h3><a href="/1">more</a></div>
            <div class="post"><h3>Two</h3><a href="/2">more</a></div></body></html>"#;
        let g = detect_page(&url, html);
        assert_eq!(g.each.as_deref(), Some(".post"));
        assert_eq!(g.count, 2);
        assert_eq!(
            g.fields,
            vec![
                ("title".into(), "h3".into()),
                ("link".into(), "a@href".into())
            ]
        );
        assert_eq!(g.next.as_deref(), Some("html:link[rel=next]@href"));
        assert_eq!(g.params, vec![("page".to_string(), "1".to_string())]);
        let single = detect_page(&url, "<title>T</title><h1>H</h1><p>no items</p>");
        assert_eq!((single.each, single.count, single.next), (None, 1, None));
    }
}
