//! A minimal XML writer for the descriptors: element and attribute names are literals of this
//! crate; every value and text is escaped (`& < > " '`), and a control character (C0, DEL, C1)
//! or a non-character (U+FFFE, U+FFFF) in a value is an error instead of output: XML 1.0 cannot
//! carry most of them, and none belongs in a VM name, a path or a MAC.
//!
//! The writer keeps the first error and reports it from [`Xml::finish`], so the code that
//! builds a document reads like the document.

use crate::Error;

/// Indenting XML writer; see the module docs.
#[derive(Debug)]
pub(crate) struct Xml {
    out: String,
    open: Vec<&'static str>,
    err: Option<Error>,
}

/// Appends `s` escaped for a text node or a quoted attribute value.
pub(crate) fn escape_into(out: &mut String, s: &str) -> Result<(), char> {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if is_forbidden(c) => return Err(c),
            c => out.push(c),
        }
    }
    Ok(())
}

/// Characters no descriptor value may hold.
pub(crate) fn is_forbidden(c: char) -> bool {
    c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}'
}

impl Xml {
    /// A new document; `declaration` writes `<?xml version="1.0" encoding="UTF-8"?>` first.
    pub(crate) fn new(declaration: bool) -> Self {
        let mut out = String::with_capacity(4096);
        if declaration {
            out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        }
        Xml {
            out,
            open: Vec::new(),
            err: None,
        }
    }

    fn indent(&mut self) {
        for _ in 0..self.open.len() {
            self.out.push_str("  ");
        }
    }

    fn value(&mut self, what: &str, v: &str) {
        let mut buf = String::with_capacity(v.len());
        match escape_into(&mut buf, v) {
            Ok(()) => self.out.push_str(&buf),
            Err(c) => {
                if self.err.is_none() {
                    self.err = Some(Error::Descriptor(format!(
                        "{what}: control character U+{:04X} in {v:?}",
                        c as u32
                    )));
                }
            }
        }
    }

    fn start_tag(&mut self, name: &'static str, attrs: &[(&'static str, &str)]) {
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            self.value(&format!("<{name} {k}>"), v);
            self.out.push('"');
        }
    }

    /// `<name attrs>`, then the children `body` writes, then `</name>`.
    pub(crate) fn el(
        &mut self,
        name: &'static str,
        attrs: &[(&'static str, &str)],
        body: impl FnOnce(&mut Self),
    ) {
        self.start_tag(name, attrs);
        self.out.push_str(">\n");
        self.open.push(name);
        body(self);
        self.open.pop();
        self.indent();
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    /// `<name attrs>text</name>`.
    pub(crate) fn leaf(&mut self, name: &'static str, attrs: &[(&'static str, &str)], text: &str) {
        self.start_tag(name, attrs);
        self.out.push('>');
        self.value(&format!("<{name}>"), text);
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    /// `<name attrs/>`.
    pub(crate) fn empty(&mut self, name: &'static str, attrs: &[(&'static str, &str)]) {
        self.start_tag(name, attrs);
        self.out.push_str("/>\n");
    }

    /// The document, or the first value that could not be written.
    pub(crate) fn finish(self) -> Result<String, Error> {
        match self.err {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_five_and_rejects_controls() {
        let mut x = Xml::new(false);
        x.el("a", &[("k", "x\"y'z")], |x| x.leaf("b", &[], "a&b<c>'\""));
        let s = x.finish().unwrap();
        assert_eq!(
            s,
            "<a k=\"x&quot;y&apos;z\">\n  <b>a&amp;b&lt;c&gt;&apos;&quot;</b>\n</a>\n"
        );
        for bad in [
            "a\nb",
            "a\u{0}",
            "tab\there",
            "del\u{7f}",
            "c1\u{85}",
            "\u{FFFF}",
        ] {
            let mut x = Xml::new(false);
            x.leaf("name", &[], bad);
            let e = x.finish().unwrap_err().to_string();
            assert!(e.contains("control character"), "{bad:?}: {e}");
        }
        // Non-ASCII text is fine.
        let mut x = Xml::new(true);
        x.empty("n", &[("v", "Zürich ☃")]);
        assert!(x.finish().unwrap().contains("Zürich ☃"));
    }
}
