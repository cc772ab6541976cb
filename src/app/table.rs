//! One table renderer for the commands that print rows (`show`, `runs`):
//! cells padded to their column's display width (emoji and CJK take two
//! columns), cut with `…` past a limit, joined by ` | `, a rule under the
//! header.

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// A cell's text on one line, cut to `max` display columns.
pub fn cell(text: &str, max: usize) -> String {
    let s = text.replace(['\n', '\t', '\r'], " ");
    if s.width() <= max {
        return s;
    }
    let mut cut = String::new();
    for ch in s.chars() {
        if cut.width() + ch.width().unwrap_or(0) > max.saturating_sub(1) {
            break;
        }
        cut.push(ch);
    }
    format!("{cut}…")
}

/// A JSON value as a cell's text: strings as they are, null as nothing.
pub fn value(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The lines of a table: the header, a rule, the rows.
pub fn render(header: &[String], rows: &[Vec<String>]) -> Vec<String> {
    let widths: Vec<usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.width())
                .chain([h.width()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(c.width()))))
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_string()
    };
    let rule = widths
        .iter()
        .map(|w| "-".repeat(*w))
        .collect::<Vec<_>>()
        .join("-+-");
    let mut out = vec![line(header), rule];
    out.extend(rows.iter().map(|r| line(r)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_by_display_width_and_cuts_long_cells() {
        let h = vec!["id".to_string(), "title".to_string()];
        let rows = vec![
            vec!["1".to_string(), cell("🎉 party", 28)],
            vec!["22".to_string(), cell(&"x".repeat(40), 10)],
        ];
        let lines = render(&h, &rows);
        assert_eq!(lines[0], "id | title");
        assert_eq!(lines[1], "---+-----------");
        assert_eq!(lines[2], "1  | 🎉 party");
        assert_eq!(lines[3], format!("22 | {}…", "x".repeat(9)));
    }
}
