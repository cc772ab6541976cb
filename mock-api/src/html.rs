//! Web pages for the `format = "html"` source and the seed's scraper:
//!
//! - `/html/page/{n}`: a well-formed page: `<title>Page n</title>`, an `<h1>`,
//!   three `<article>`s with a heading and links; with `?last=N`, a listing
//!   whose pages before N end with `<a rel="next" class="next">` to the next
//!   one (relative, carrying `last`), as paginated sites do;
//! - `/html/malformed`: no closing tags, a `<b>` across an `</h1>`, a table
//!   without rows' ends, bare `&`, as hand-written pages have;
//! - `/html/latin1`: windows-1252 bytes, declared only by `<meta charset>`;
//! - `/html/sjis`: Shift_JIS bytes, declared by `<meta http-equiv>`;
//! - `/html/missing`: a 404 page.

use std::collections::HashMap;

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

fn page(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response {
    let mut h = HeaderMap::new();
    h.insert("content-type", crate::header(content_type));
    (status, h, body).into_response()
}

/// `GET /html/page/{n}`.
pub(crate) async fn numbered(
    Path(n): Path<u64>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let last = q.get("last").and_then(|l| l.parse::<u64>().ok());
    let nav = match last {
        Some(last) if n < last => format!(
            "<nav><a href=\"/\">Home</a> <a class=\"next\" rel=\"next\" href=\"{}?last={last}\">Next &raquo;</a></nav>\n",
            n + 1
        ),
        _ => String::new(),
    };
    let articles: String = (1..=3)
        .map(|a| {
            format!(
                "<article id=\"a{n}-{a}\"><h2>Story {n}.{a}</h2><p>Text of story {a}.</p>\
                 <a href=\"/html/page/{n}#s{a}\">permalink</a> <a href=\"https://example.org/{n}/{a}\">source</a></article>\n"
            )
        })
        .collect();
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Page {n}</title></head>\n\
         <body><h1>Heading of page {n}</h1>\n{articles}{nav}</body></html>\n"
    );
    page(
        StatusCode::OK,
        "text/html; charset=utf-8",
        body.into_bytes(),
    )
}

/// `GET /html/malformed`.
pub(crate) async fn malformed() -> Response {
    let body = "<html><head><title>Broken &amp; unclosed</title>\n<body><h1>Heading <b>bold</h1>\n\
                <p>one<p>two & three<table><tr><td>cell<td>cell 2</table>\n\
                <article><h2>Only story<a href=\"/x\">link</article><div>trailing";
    page(StatusCode::OK, "text/html", body.as_bytes().to_vec())
}

/// `GET /html/latin1`: "Café crème — naïve" in windows-1252.
pub(crate) async fn latin1() -> Response {
    let mut body = b"<html><head><meta charset=\"windows-1252\"><title>".to_vec();
    body.extend_from_slice(b"Caf\xe9 cr\xe8me \x97 na\xefve");
    body.extend_from_slice(b"</title></head><body><h1>Fran\xe7ais</h1></body></html>");
    page(StatusCode::OK, "text/html", body)
}

/// `GET /html/sjis`: "日本語のページ" in Shift_JIS.
pub(crate) async fn sjis() -> Response {
    let mut body = b"<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=Shift_JIS\"><title>".to_vec();
    body.extend_from_slice(b"\x93\xfa\x96{\x8c\xea\x82\xcc\x83y\x81[\x83W");
    body.extend_from_slice(b"</title></head><body><h1>\x93\xfa\x96{</h1></body></html>");
    page(StatusCode::OK, "text/html", body)
}

/// `GET /html/missing`.
pub(crate) async fn missing() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "text/html",
        b"<html><title>404 Not Found</title><h1>Not Found</h1></html>".to_vec(),
    )
}
