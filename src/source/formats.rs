//! Response bodies that are not one JSON document (`[source] format`):
//! NDJSON and CSV bodies are read as streams of records ([`stream`], for
//! `streamed.rs`), and HTML pages become records of fields taken by CSS
//! selectors (the `scraper` crate, over
//! html5ever, which repairs malformed markup the way browsers do). A page's
//! charset comes from its `Content-Type`, else from a `<meta>` in its first
//! 1024 bytes (the HTML standard's prescan), else UTF-8; `encoding_rs`
//! decodes it, byte order marks first.

use scraper::{ElementRef, Html, Selector};
use serde_json::{Map, Value};

use crate::config::Problems;
use crate::config::source::HtmlConfig;
use crate::config::values::Location;

/// How far into a page its `<meta charset>` is looked for.
const PRESCAN: usize = 1024;

/// One field of `[source.html] fields`.
#[derive(Debug)]
struct Field {
    name: String,
    /// `None`: the element itself (`@id`, or an empty selector).
    selector: Option<Selector>,
    attr: Option<String>,
    all: bool,
}

/// `[source.html]`, compiled.
#[derive(Debug)]
pub struct Extract {
    each: Option<Selector>,
    fields: Vec<Field>,
    /// The pagination's `html:` locations, each named by its spec and
    /// read once per page, in the whole page.
    picks: Vec<Field>,
}

/// A field's selector, its attribute and whether it takes every match:
/// `a@href[]` → (`a`, `href`, true).
fn split_field(spec: &str) -> (&str, Option<&str>, bool) {
    let (spec, all) = match spec.trim().strip_suffix("[]") {
        Some(s) => (s, true),
        None => (spec.trim(), false),
    };
    // an attribute is after the last `@` that is not inside brackets
    match spec.rfind('@') {
        Some(i) if !spec[i..].contains(']') => (spec[..i].trim(), Some(spec[i + 1..].trim()), all),
        _ => (spec, None, all),
    }
}

fn selector(text: &str) -> Result<Selector, String> {
    Selector::parse(text).map_err(|e| format!("`{text}` is not a CSS selector: {e}"))
}

/// One value of a page by its spec (`sel`, `sel@attr`, `@attr`, `sel[]`).
fn field(name: &str, spec: &str) -> Result<Field, String> {
    let (sel, attr, all) = split_field(spec);
    if attr.is_some_and(str::is_empty) {
        return Err(format!(
            "`{spec}`: write the attribute after `@`, like `a@href`"
        ));
    }
    Ok(Field {
        name: name.to_string(),
        selector: match sel {
            "" => None,
            sel => Some(selector(sel)?),
        },
        attr: attr.map(str::to_string),
        all,
    })
}

/// The loader's check of an `html:` location: its spec is a selector.
impl Problems for Location {
    fn problems(&self) -> Vec<(&'static str, String)> {
        let Location::Html(spec) = self else {
            return Vec::new();
        };
        let problem = match split_field(spec).0 {
            "" => "write a CSS selector after `html:`, like `html:a[rel=next]@href`".to_string(),
            _ => match field(spec, spec) {
                Ok(_) => return Vec::new(),
                Err(m) => m,
            },
        };
        vec![("", format!("`{self}`: {problem}"))]
    }
}

impl Extract {
    /// Compile `[source.html]`; errors name the key, for the loader.
    pub fn new(cfg: &HtmlConfig) -> Result<Self, (String, String)> {
        let each = match &cfg.each {
            Some(e) => Some(selector(e).map_err(|m| ("each".to_string(), m))?),
            None => None,
        };
        let mut fields = Vec::new();
        for (name, spec) in &cfg.fields {
            let key = format!("fields.{name}");
            if matches!(name.as_str(), "url" | "status" | "fetched_at") {
                return Err((
                    key,
                    format!(
                        "`{name}` is set on every html record already; name the field otherwise"
                    ),
                ));
            }
            fields.push(field(name, spec).map_err(|m| (key, m))?);
        }
        Ok(Self {
            each,
            fields,
            picks: Vec::new(),
        })
    }

    /// Also read these `html:` location specs in every page ([`Self::page`]).
    pub fn with_picks<'a>(
        mut self,
        specs: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, String> {
        for spec in specs {
            self.picks.push(field(spec, spec)?);
        }
        Ok(self)
    }

    /// The records of one page: one per `each` element (or one for the
    /// page), each with `url`, `status` and `fetched_at` first; and the
    /// values of the `html:` locations in it by spec (the document is
    /// parsed once for both).
    pub fn page(
        &self,
        html: &str,
        url: &str,
        status: u16,
        fetched_at: &str,
    ) -> (Vec<Value>, Map<String, Value>) {
        let doc = Html::parse_document(html);
        // a selector that matches nothing is absent, not null
        let picked = self
            .picks
            .iter()
            .map(|p| (p.name.clone(), p.take(doc.root_element())))
            .filter(|(_, v)| !v.is_null())
            .collect();
        let base = |m: &mut Map<String, Value>| {
            m.insert("url".into(), Value::String(url.to_string()));
            m.insert("status".into(), Value::from(status));
            m.insert("fetched_at".into(), Value::String(fetched_at.to_string()));
        };
        let one = |scope: ElementRef<'_>| {
            let mut m = Map::new();
            base(&mut m);
            for f in &self.fields {
                m.insert(f.name.clone(), f.take(scope));
            }
            Value::Object(m)
        };
        let records = match &self.each {
            Some(each) => doc.select(each).map(one).collect(),
            None => vec![one(doc.root_element())],
        };
        (records, picked)
    }
}

impl Field {
    fn value(&self, el: ElementRef<'_>) -> Option<Value> {
        match &self.attr {
            Some(a) => el
                .value()
                .attr(a)
                .map(|v| Value::String(v.trim().to_string())),
            None => {
                let text: Vec<&str> = el.text().flat_map(str::split_whitespace).collect();
                Some(Value::String(text.join(" ")))
            }
        }
    }

    /// The field in `scope`: the element itself when it matches (an
    /// `each` element's own `article@id`), then its descendants.
    fn take(&self, scope: ElementRef<'_>) -> Value {
        let matches: Box<dyn Iterator<Item = ElementRef<'_>>> = match &self.selector {
            None => Box::new(std::iter::once(scope)),
            Some(sel) => Box::new(
                std::iter::once(scope)
                    .filter(|el| sel.matches(el))
                    .chain(scope.select(sel)),
            ),
        };
        let mut found = matches.filter_map(|el| self.value(el));
        if self.all {
            Value::Array(found.collect())
        } else {
            found.next().unwrap_or(Value::Null)
        }
    }
}

/// The loader's check: the selectors compile and the names are free.
impl Problems for HtmlConfig {
    fn problems(&self) -> Vec<(&'static str, String)> {
        match Extract::new(self) {
            Ok(_) => Vec::new(),
            Err((k, m)) if k == "each" => vec![("each", m)],
            Err((k, m)) => vec![(
                "fields",
                format!("{}: {m}", k.trim_start_matches("fields.")),
            )],
        }
    }
}

/// The page's text: decoded from the charset its `Content-Type` or an early
/// `<meta>` declares (a byte order mark wins over both), UTF-8 otherwise.
pub fn decode_html(bytes: &[u8], content_type: &str) -> String {
    let declared =
        charset_param(content_type).or_else(|| meta_charset(&bytes[..bytes.len().min(PRESCAN)]));
    let encoding = declared
        .and_then(|l| encoding_rs::Encoding::for_label(l.as_bytes()))
        .unwrap_or(encoding_rs::UTF_8);
    let (text, _, _) = encoding.decode(bytes);
    text.into_owned()
}

fn charset_param(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("charset")).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// `<meta charset="x">` or `<meta http-equiv="Content-Type" content="text/html; charset=x">`.
fn meta_charset(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("<meta") {
        rest = &rest[i + 5..];
        let tag = &rest[..rest.find('>').unwrap_or(rest.len())];
        if let Some(j) = tag.find("charset") {
            let v = tag[j + 7..].trim_start().strip_prefix('=')?.trim_start();
            let v = v.trim_start_matches(['"', '\'']);
            let end = v
                .find(|c: char| c == '"' || c == '\'' || c == ';' || c == '/' || c.is_whitespace())
                .unwrap_or(v.len());
            if end > 0 {
                return Some(v[..end].to_string());
            }
        }
    }
    None
}

/// The UTF-8 byte order mark, which Windows tools and Excel's "CSV UTF-8"
/// write first.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The reader past a leading byte order mark, so that it becomes part of
/// neither the first record nor the first column's name.
pub fn without_bom<R: std::io::Read>(mut reader: R) -> std::io::Result<impl std::io::Read> {
    use std::io::Read;
    let mut head = Vec::with_capacity(BOM.len());
    (&mut reader)
        .take(BOM.len() as u64)
        .read_to_end(&mut head)?;
    if head == BOM {
        head.clear();
    }
    Ok(std::io::Cursor::new(head).chain(reader))
}

/// Lines longer than this are refused (a binary file, or no newlines).
const MAX_LINE: u64 = 64 * 1024 * 1024;

/// Whether a record reader goes on after a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next record.
    Go,
    /// Stop reading (the receiver went away, or the caller failed).
    Stop,
}

/// How a stream of records is written.
#[derive(Debug, Clone)]
pub enum Layout {
    /// One JSON value per line; blank lines are skipped.
    Ndjson,
    /// CSV with this delimiter; `names` when the header row was read
    /// already (a file resumed past it), else the stream's first row.
    Csv {
        /// The field separator.
        delimiter: u8,
        /// The field names, when the stream starts after the header row.
        names: Option<Vec<String>>,
    },
}

/// Read the records of an NDJSON or CSV stream, the one reader of the files
/// source and of streamed HTTP bodies. `each` gets every record (or why it
/// does not parse), the byte where it starts and the byte where the next
/// one starts, both counted from the reader's start. An error is the stream
/// itself failing: I/O, a line over 64 MiB, no header row.
pub fn read_records(
    reader: impl std::io::Read,
    layout: Layout,
    mut each: impl FnMut(Result<Value, String>, u64, u64) -> Flow,
) -> Result<(), String> {
    match layout {
        Layout::Ndjson => read_ndjson(reader, &mut each),
        Layout::Csv { delimiter, names } => read_csv(reader, delimiter, names, &mut each),
    }
}

fn read_ndjson(
    reader: impl std::io::Read,
    each: &mut impl FnMut(Result<Value, String>, u64, u64) -> Flow,
) -> Result<(), String> {
    use std::io::{BufRead, Read};
    let mut r = std::io::BufReader::with_capacity(256 * 1024, reader);
    let (mut line, mut at) = (Vec::new(), 0u64);
    loop {
        line.clear();
        let n = (&mut r)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("cannot read at byte {at}: {e}"))? as u64;
        if n == 0 {
            return Ok(());
        }
        if n > MAX_LINE {
            return Err(format!("the line at byte {at} is longer than 64 MiB"));
        }
        let start = at;
        at += n;
        let record = match std::str::from_utf8(&line) {
            Ok(t) if t.trim().is_empty() => continue,
            Ok(t) => super::json::parse(t.trim()).map_err(|e| e.to_string()),
            Err(e) => Err(format!("not UTF-8 ({e})")),
        };
        if each(record, start, at) == Flow::Stop {
            return Ok(());
        }
    }
}

/// The header row of a CSV stream.
pub fn csv_names(reader: impl std::io::Read, delimiter: u8) -> Result<Vec<String>, String> {
    let mut r = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(reader);
    let names = r
        .headers()
        .map_err(|e| format!("cannot read the header row: {e}"))?;
    Ok(unique_names(names))
}

/// A header row's names as record keys that keep every column: an empty
/// name becomes `column_N` (its position from 1), and a repeated one gets
/// `_2`, `_3`, … so that no column overwrites another.
fn unique_names(header: &csv::StringRecord) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    header
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let name = match name.trim() {
                "" => format!("column_{}", i + 1),
                _ => name.to_string(),
            };
            let mut unique = name.clone();
            let mut n = 1;
            while !seen.insert(unique.clone()) {
                n += 1;
                unique = format!("{name}_{n}");
            }
            unique
        })
        .collect()
}

/// One CSV row as a record; a row with more non-empty fields than the
/// header names does not parse (its extra values would have no name).
fn csv_record(names: &[String], row: &csv::StringRecord) -> Result<Value, String> {
    if let Some(extra) = row.iter().skip(names.len()).position(|v| !v.is_empty()) {
        return Err(format!(
            "the row has a value in field {} and the header names {} fields",
            names.len() + extra + 1,
            names.len()
        ));
    }
    Ok(Value::Object(
        names
            .iter()
            .zip(row.iter())
            .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
            .collect(),
    ))
}

fn read_csv(
    reader: impl std::io::Read,
    delimiter: u8,
    names: Option<Vec<String>>,
    each: &mut impl FnMut(Result<Value, String>, u64, u64) -> Flow,
) -> Result<(), String> {
    let mut r = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(names.is_none())
        .from_reader(reader);
    let names = match names {
        Some(n) => n,
        None => unique_names(
            r.headers()
                .map_err(|e| format!("cannot read the header row: {e}"))?,
        ),
    };
    let mut row = csv::StringRecord::new();
    loop {
        let start = r.position().byte();
        let record = match r.read_record(&mut row) {
            Ok(false) => return Ok(()),
            Ok(true) => csv_record(&names, &row),
            Err(e) if e.is_io_error() => return Err(format!("cannot read at byte {start}: {e}")),
            Err(e) => Err(e.to_string()),
        };
        if each(record, start, r.position().byte()) == Flow::Stop {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_split_into_selector_attribute_and_all() {
        assert_eq!(split_field("title"), ("title", None, false));
        assert_eq!(split_field("a@href[]"), ("a", Some("href"), true));
        assert_eq!(
            split_field("img.hero@src"),
            ("img.hero", Some("src"), false)
        );
        assert_eq!(
            split_field("a[href^='mailto:x@y']"),
            ("a[href^='mailto:x@y']", None, false)
        );
        assert_eq!(split_field("@id"), ("", Some("id"), false));
    }

    #[test]
    fn charsets_come_from_the_header_then_the_meta() {
        let latin1 = b"<html><head><meta charset=\"windows-1252\"><title>caf\xe9</title>";
        assert!(decode_html(latin1, "text/html").contains("café"));
        let sjis = b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=Shift_JIS\"><p>\x93\xfa\x96\x7b</p>";
        assert!(decode_html(sjis, "text/html").contains("日本"));
        // the header wins over the meta
        assert!(
            decode_html(
                "<meta charset=\"windows-1252\">é".as_bytes(),
                "text/html; charset=utf-8"
            )
            .contains('é')
        );
    }

    #[test]
    fn pages_give_records_of_their_fields() {
        let cfg = HtmlConfig {
            each: Some("article".into()),
            fields: [
                ("h".to_string(), "h2".to_string()),
                ("links".to_string(), "a@href[]".to_string()),
            ]
            .into_iter()
            .collect(),
        };
        let x = Extract::new(&cfg).unwrap_or_else(|e| panic!("{e:?}"));
        let page = "<article><h2> One\n two </h2><a href=/a>x</a><a href=/b>y</a></article><article><p>no heading";
        let got = x.page(page, "http://h/p", 200, "t").0;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["h"], "One two");
        assert_eq!(got[0]["links"], serde_json::json!(["/a", "/b"]));
        assert_eq!(got[1]["h"], Value::Null);
        assert_eq!(got[1]["url"], "http://h/p");
        assert!(
            Extract::new(&HtmlConfig {
                each: Some("a[".into()),
                fields: indexmap::IndexMap::new()
            })
            .is_err()
        );
    }

    #[test]
    fn csv_columns_keep_every_value_and_extra_values_do_not_parse() {
        let text = "id,name,name,,note\n1,a,b,c,d\n2,e,f,g,h,\n3,i,j,k,l,stray\n4,m\n";
        let mut got = Vec::new();
        let layout = Layout::Csv {
            delimiter: b',',
            names: None,
        };
        let read = read_records(text.as_bytes(), layout, |r, _, _| {
            got.push(r);
            Flow::Go
        });
        assert_eq!(read, Ok(()));
        let row = |id: &str, n: &str, n2: &str, c4: &str, note: &str| {
            Ok(serde_json::json!({"id": id, "name": n, "name_2": n2, "column_4": c4, "note": note}))
        };
        assert_eq!(got[0], row("1", "a", "b", "c", "d"));
        assert_eq!(
            got[1],
            row("2", "e", "f", "g", "h"),
            "a trailing empty field is no value"
        );
        assert_eq!(
            got[2],
            Err("the row has a value in field 6 and the header names 5 fields".to_string())
        );
        assert_eq!(got[3], Ok(serde_json::json!({"id": "4", "name": "m"})));
    }
}
