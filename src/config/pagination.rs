//! `[source.pagination]`: one struct per kind, plus the stop conditions that
//! compose with every kind. A new kind is one variant here and one file in
//! `source/paginate.rs`'s match.

use serde::Deserialize;

use super::values::Location;

/// The keys that every kind accepts beside its own.
pub const COMMON_KEYS: &[&str] = &[
    "stop_on_status",
    "has_more",
    "total",
    "max_pages",
    "stop_on_empty",
    "stop_on_short",
];

/// The `[source.pagination]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaginationConfig {
    /// The kind and its own keys.
    pub kind: PaginationKind,
    /// A boolean location; `false` ends the walk.
    #[serde(default)]
    pub has_more: Option<Location>,
    /// A location holding the total number of records.
    #[serde(default)]
    pub total: Option<Location>,
    /// Pages per walk, at most.
    #[serde(default)]
    pub max_pages: Option<u64>,
    /// An empty page ends the walk (default true).
    #[serde(default)]
    pub stop_on_empty: Option<bool>,
    /// A page shorter than the page size ends the walk (default false, true for `offset`).
    #[serde(default)]
    pub stop_on_short: Option<bool>,
    /// Statuses that end the walk normally, with no record and no retry.
    #[serde(default)]
    pub stop_on_status: Vec<u16>,
}

impl PaginationConfig {
    /// The locations a response is read at, with their keys under
    /// `[source.pagination]`.
    pub fn locations(&self) -> Vec<(&'static str, &Location)> {
        let mut out = Vec::new();
        if let Some(t) = &self.total {
            out.push(("total", t));
        }
        if let Some(h) = &self.has_more {
            out.push(("has_more", h));
        }
        match &self.kind {
            PaginationKind::Cursor(c) => out.push(("cursor", &c.cursor)),
            PaginationKind::NextUrl(n) => out.push(("next", &n.next)),
            _ => {}
        }
        out
    }
}

impl Default for PaginationConfig {
    fn default() -> Self {
        Self {
            kind: PaginationKind::None(NoPagination {}),
            has_more: None,
            total: None,
            max_pages: None,
            stop_on_empty: None,
            stop_on_short: None,
            stop_on_status: Vec::new(),
        }
    }
}

/// The pagination kinds.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaginationKind {
    /// `?page=1,2,3…`
    PageNumber(PageNumber),
    /// `?offset=0,100,200…`
    Offset(Offset),
    /// Sends the cursor from the last response.
    Cursor(Cursor),
    /// Follows a URL given in the response.
    NextUrl(NextUrl),
    /// Follows RFC 8288 `Link: <…>; rel="next"`.
    LinkHeader(LinkHeader),
    /// One request.
    None(NoPagination),
}

impl PaginationKind {
    /// The name used in the file.
    pub fn name(&self) -> &'static str {
        match self {
            PaginationKind::PageNumber(_) => "page_number",
            PaginationKind::Offset(_) => "offset",
            PaginationKind::Cursor(_) => "cursor",
            PaginationKind::NextUrl(_) => "next_url",
            PaginationKind::LinkHeader(_) => "link_header",
            PaginationKind::None(_) => "none",
        }
    }
}

fn page() -> String {
    "page".into()
}
fn one() -> i64 {
    1
}
fn offset() -> String {
    "offset".into()
}
fn limit() -> String {
    "limit".into()
}
fn hundred() -> u64 {
    100
}
fn cursor() -> String {
    "cursor".into()
}
fn next() -> String {
    "next".into()
}

/// `kind = "page_number"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageNumber {
    /// Query parameter of the page number.
    #[serde(default = "page")]
    pub param: String,
    /// The first page's number.
    #[serde(default = "one")]
    pub start: i64,
    /// Query parameter of the page size.
    #[serde(default)]
    pub size_param: Option<String>,
    /// Records per page.
    #[serde(default)]
    pub size: Option<u64>,
}

/// `kind = "offset"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offset {
    /// Query parameter of the offset.
    #[serde(default = "offset")]
    pub offset_param: String,
    /// Query parameter of the limit.
    #[serde(default = "limit")]
    pub limit_param: String,
    /// Records per page.
    #[serde(default = "hundred")]
    pub limit: u64,
    /// The first offset.
    #[serde(default)]
    pub start: u64,
}

/// `kind = "cursor"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// Where the next cursor is.
    pub cursor: Location,
    /// Query parameter that carries it.
    #[serde(default = "cursor")]
    pub param: String,
}

/// `kind = "next_url"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextUrl {
    /// Where the next URL is.
    pub next: Location,
}

/// `kind = "link_header"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkHeader {
    /// The link relation to follow.
    #[serde(default = "next")]
    pub rel: String,
}

/// `kind = "none"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoPagination {}
