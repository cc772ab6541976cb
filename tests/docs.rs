//! The documents a newcomer reads: every relative link in the README and
//! docs/ leads to a file in the repository, and the README gives the two
//! commands.

use crate::common;

fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_leads_to_a_file() {
    let root = common::root();
    let mut docs = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs"))
        .unwrap_or_else(|e| panic!("docs/: {e}"))
        .flatten()
    {
        docs.push(e.path());
    }
    let mut checked = 0;
    for doc in &docs {
        let text =
            std::fs::read_to_string(doc).unwrap_or_else(|e| panic!("{}: {e}", doc.display()));
        assert!(
            !text.contains("../shared"),
            "{} points outside the repository",
            doc.display()
        );
        for link in links(&text) {
            if link.starts_with("http") || link.starts_with('#') {
                continue;
            }
            let path = link.split('#').next().unwrap_or("");
            let target = doc.parent().unwrap_or(&root).join(path);
            assert!(target.exists(), "{}: broken link {link}", doc.display());
            checked += 1;
        }
    }
    assert!(checked >= 1, "no relative link checked");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap_or_default();
    assert!(readme.contains("make demo") && readme.contains("make test"));
}
