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
            let (sel, attr, all) = split_field(spec);
            if attr.is_some_and(str::is_empty) {
                return Err((
                    key,
                    format!("`{spec}`: write the attribute after `@`, like `a@href`"),
                ));
            }
            fields.push(Field {
                name: name.clone(),
                selector: match sel {
                    "" => None,
                    sel => Some(selector(sel).map_err(|m| (key, m))?),
                },
                attr: attr.map(str::to_string),
                all,
            });
        }
        Ok(Self { each, fields })
    }

    /// The records of one page: one per `each` element (or one for the
    /// page), each with `url`, `status` and `fetched_at` first.
    pub fn records(&self, html: &str, url: &str, status: u16, fetched_at: &str) -> Vec<Value> {
        let doc = Html::parse_document(html);
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
        match &self.each {
            Some(each) => doc.select(each).map(one).collect(),
            None => vec![one(doc.root_element())],
        }
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

/// The records of a streamed NDJSON (or, with `csv`, CSV) body, `page`
/// at a time, after the first `skip`: `emit` gets each page and says
/// whether to go on. Returns the records the body held (skipped included).
pub fn stream(
    reader: impl std::io::Read,
    csv: bool,
    skip: u64,
    page: usize,
    mut emit: impl FnMut(Vec<Value>) -> bool,
) -> Result<u64, String> {
    let mut p = Pager {
        n: 0,
        skip,
        page,
        out: Vec::with_capacity(page),
        emit: &mut emit,
    };
    if csv {
        let mut r = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
        let names: Vec<String> = r
            .headers()
            .map_err(|e| format!("the CSV body has no header row: {e}"))?
            .iter()
            .map(str::to_string)
            .collect();
        let mut row = csv::StringRecord::new();
        while r
            .read_record(&mut row)
            .map_err(|e| format!("the CSV body does not parse: {e}"))?
        {
            let v = Value::Object(
                names
                    .iter()
                    .zip(row.iter())
                    .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
                    .collect(),
            );
            if !p.push(v) {
                return Ok(p.n);
            }
        }
    } else {
        let mut r = std::io::BufReader::with_capacity(256 * 1024, reader);
        let mut line = Vec::new();
        loop {
            line.clear();
            let got = std::io::BufRead::read_until(&mut r, b'\n', &mut line)
                .map_err(|e| format!("the body was cut short: {e}"))?;
            if got == 0 {
                break;
            }
            let text = std::str::from_utf8(&line)
                .map_err(|e| format!("record {} of the NDJSON body is not UTF-8: {e}", p.n + 1))?
                .trim();
            if text.is_empty() {
                continue;
            }
            let v = super::json::parse(text).map_err(|e| {
                format!("record {} of the NDJSON body does not parse: {e}", p.n + 1)
            })?;
            if !p.push(v) {
                return Ok(p.n);
            }
        }
    }
    if !p.out.is_empty() {
        (p.emit)(std::mem::take(&mut p.out));
    }
    Ok(p.n)
}

/// Pages of a streamed body: records counted, the first `skip` dropped.
struct Pager<'a, F> {
    n: u64,
    skip: u64,
    page: usize,
    out: Vec<Value>,
    emit: &'a mut F,
}

impl<F: FnMut(Vec<Value>) -> bool> Pager<'_, F> {
    /// Take a record; false once the receiver stopped listening.
    fn push(&mut self, v: Value) -> bool {
        self.n += 1;
        if self.n > self.skip {
            self.out.push(v);
        }
        self.out.len() < self.page || (self.emit)(std::mem::take(&mut self.out))
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
        let got = x.records(page, "http://h/p", 200, "t");
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
}
