//! A small, fast XML writer for the reports: elements, attributes and
//! escaped text, indented by two spaces, straight into the output.
//!
//! A report of 100,000 instances is nine million lines of XML; a general
//! event writer (quick-xml's, which this replaced) made several small
//! writes and an escaped copy per element. This one checks each value
//! against a byte table and copies it whole when, as nearly always, it
//! needs no escaping. The layout is the one quick-xml's indenting writer
//! made, byte for byte: an element's text sits between its tags, and an
//! element with children has each on its own line.
//!
//! Every value is escaped: `&`, `<`, `>`, `'` and `"` as entities; a
//! carriage return as `&#13;` (and, in an attribute, tab and newline too),
//! so that parsers keep it; characters XML 1.0 cannot carry at all (C0
//! controls other than tab, newline and carriage return, U+FFFE, U+FFFF)
//! as U+FFFD.

use std::io::{self, Write};

/// A newline and enough indentation for any depth the reports reach;
/// deeper levels are written in several pieces.
const NEWLINE_INDENT: &[u8] = b"\n                                                                ";

/// Which bytes of a value need a closer look: those escaped, and 0xEF,
/// which starts U+FFFE and U+FFFF.
const fn needs_escape(attribute: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    if !attribute {
        t[b'\t' as usize] = false;
        t[b'\n' as usize] = false;
    }
    t[b'&' as usize] = true;
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t[b'\'' as usize] = true;
    t[b'"' as usize] = true;
    t[0xEF] = true;
    t
}

const TEXT: [bool; 256] = needs_escape(false);
const ATTRIBUTE: [bool; 256] = needs_escape(true);

/// Writes `s` escaped by `table` (see the module's notes).
fn write_escaped(out: &mut impl Write, s: &str, table: &[bool; 256]) -> io::Result<()> {
    let bytes = s.as_bytes();
    let mut from = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !table[b as usize] {
            i += 1;
            continue;
        }
        let (escape, len): (&[u8], usize) = match b {
            b'&' => (b"&amp;", 1),
            b'<' => (b"&lt;", 1),
            b'>' => (b"&gt;", 1),
            b'\'' => (b"&apos;", 1),
            b'"' => (b"&quot;", 1),
            b'\r' => (b"&#13;", 1),
            b'\n' => (b"&#10;", 1),
            b'\t' => (b"&#9;", 1),
            0xEF if matches!(bytes.get(i + 1..i + 3), Some([0xBF, 0xBE | 0xBF])) => {
                ("\u{FFFD}".as_bytes(), 3)
            }
            0xEF => {
                i += 1;
                continue;
            }
            _ => ("\u{FFFD}".as_bytes(), 1),
        };
        out.write_all(&bytes[from..i])?;
        out.write_all(escape)?;
        i += len;
        from = i;
    }
    out.write_all(&bytes[from..])
}

/// An XML document being written. Elements are opened and closed by the
/// caller, in order; [`XmlWriter::finish`] ends the document.
pub struct XmlWriter<W: Write> {
    out: W,
    depth: usize,
    /// Whether the next tag starts a new line: not right after text, so
    /// that `<a>text</a>` stays on one line.
    line_break: bool,
}

impl<W: Write> XmlWriter<W> {
    /// Starts a document with its XML declaration.
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(br#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
        Ok(XmlWriter {
            out,
            depth: 0,
            line_break: true,
        })
    }

    fn indent(&mut self) -> io::Result<()> {
        if !self.line_break {
            return Ok(());
        }
        let most = NEWLINE_INDENT.len() - 1;
        let mut spaces = 2 * self.depth;
        let n = spaces.min(most);
        self.out.write_all(&NEWLINE_INDENT[..1 + n])?;
        spaces -= n;
        while spaces > 0 {
            let n = spaces.min(most);
            self.out.write_all(&NEWLINE_INDENT[1..1 + n])?;
            spaces -= n;
        }
        Ok(())
    }

    fn tag(&mut self, name: &str, attrs: &[(&str, &str)], end: &[u8]) -> io::Result<()> {
        self.indent()?;
        self.out.write_all(b"<")?;
        self.out.write_all(name.as_bytes())?;
        for (key, value) in attrs {
            self.out.write_all(b" ")?;
            self.out.write_all(key.as_bytes())?;
            self.out.write_all(b"=\"")?;
            write_escaped(&mut self.out, value, &ATTRIBUTE)?;
            self.out.write_all(b"\"")?;
        }
        self.out.write_all(end)?;
        self.line_break = true;
        Ok(())
    }

    /// `<name a="v">`: its content follows.
    pub fn open(&mut self, name: &str, attrs: &[(&str, &str)]) -> io::Result<()> {
        self.tag(name, attrs, b">")?;
        self.depth += 1;
        Ok(())
    }

    /// `</name>`, closing what [`XmlWriter::open`] opened.
    pub fn close(&mut self, name: &str) -> io::Result<()> {
        self.depth = self.depth.saturating_sub(1);
        self.indent()?;
        self.out.write_all(b"</")?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(b">")?;
        self.line_break = true;
        Ok(())
    }

    /// `<name a="v"/>`.
    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) -> io::Result<()> {
        self.tag(name, attrs, b"/>")
    }

    /// Escaped text, inside the element last opened.
    pub fn text(&mut self, s: &str) -> io::Result<()> {
        write_escaped(&mut self.out, s, &TEXT)?;
        self.line_break = false;
        Ok(())
    }

    /// `<name>value</name>`.
    pub fn el(&mut self, name: &str, value: &str) -> io::Result<()> {
        self.open(name, &[])?;
        self.text(value)?;
        self.close(name)
    }

    /// `<name>value</name>`, or nothing.
    pub fn opt(&mut self, name: &str, value: Option<&str>) -> io::Result<()> {
        match value {
            Some(v) => self.el(name, v),
            None => Ok(()),
        }
    }

    /// `<outer><inner>v</inner>...</outer>`.
    pub fn list(&mut self, outer: &str, inner: &str, values: &[String]) -> io::Result<()> {
        self.open(outer, &[])?;
        for v in values {
            self.el(inner, v)?;
        }
        self.close(outer)
    }

    /// Ends the document with a newline; returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(b"\n")?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> String {
        let mut x = XmlWriter::new(Vec::new()).unwrap();
        x.el("v", s).unwrap();
        let out = String::from_utf8(x.out).unwrap();
        out.strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
            .unwrap()
            .to_owned()
    }

    #[test]
    fn text_is_escaped_and_carriage_returns_survive() {
        assert_eq!(text("a<b&c]]>"), "<v>a&lt;b&amp;c]]&gt;</v>");
        assert_eq!(text("'\"\t\n"), "<v>&apos;&quot;\t\n</v>");
        assert_eq!(text("a\r\nb\r"), "<v>a&#13;\nb&#13;</v>");
        assert_eq!(text("\r"), "<v>&#13;</v>");
        assert_eq!(text(""), "<v></v>");
        assert_eq!(
            text("x\u{1}y\u{FFFF}z\u{FFFE}"),
            "<v>x\u{FFFD}y\u{FFFD}z\u{FFFD}</v>"
        );
        // Other characters that start with 0xEF are left whole.
        assert_eq!(
            text("\u{FFFD}\u{F8FF}\u{FEFF}"),
            "<v>\u{FFFD}\u{F8FF}\u{FEFF}</v>"
        );
    }

    /// What an independent parser (quick-xml's reader) reads back.
    fn read_back(doc: &[u8]) -> (String, String) {
        use quick_xml::events::Event;
        let mut reader = quick_xml::Reader::from_reader(doc);
        let (mut attr, mut text) = (String::new(), String::new());
        let mut inside = false;
        let mut buf = Vec::new();
        loop {
            match reader.read_event_into(&mut buf).unwrap() {
                Event::Start(e) => {
                    inside = true;
                    for a in e.attributes() {
                        attr = a
                            .unwrap()
                            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .unwrap()
                            .into_owned();
                    }
                }
                Event::End(_) => inside = false,
                Event::Text(t) if inside => text.push_str(&t.decode().unwrap()),
                Event::GeneralRef(r) if inside => match r.resolve_char_ref().unwrap() {
                    Some(c) => text.push(c),
                    None => text.push_str(
                        quick_xml::escape::resolve_predefined_entity(&r.decode().unwrap()).unwrap(),
                    ),
                },
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        (attr, text)
    }

    #[test]
    fn a_parser_reads_back_every_value() {
        let values = [
            "plain",
            "",
            "<script>alert('x') & \"y\"</script>",
            "line\r\nnext\ttab",
            "=HYPERLINK(\"http://x\")",
            "é € \u{1F600} \u{FEFF} \u{FFFD}",
            "]]> <![CDATA[ --> &amp;",
        ];
        for v in values {
            let mut x = XmlWriter::new(Vec::new()).unwrap();
            x.open("v", &[("a", v)]).unwrap();
            x.text(v).unwrap();
            x.close("v").unwrap();
            let doc = x.finish().unwrap();
            assert_eq!(read_back(&doc), (v.to_owned(), v.to_owned()), "{v:?}");
        }
        // What XML cannot carry comes back as U+FFFD, the rest intact.
        let mut x = XmlWriter::new(Vec::new()).unwrap();
        x.el("v", "a\u{0}b\u{1B}c\u{FFFE}d").unwrap();
        let doc = x.finish().unwrap();
        assert_eq!(read_back(&doc).1, "a\u{FFFD}b\u{FFFD}c\u{FFFD}d");
    }

    #[test]
    fn attribute_values_keep_their_whitespace() {
        let mut x = XmlWriter::new(Vec::new()).unwrap();
        x.empty("v", &[("a", "1\t2\n3\r<\"'&>\u{0}")]).unwrap();
        let out = String::from_utf8(x.finish().unwrap()).unwrap();
        assert_eq!(
            out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <v a=\"1&#9;2&#10;3&#13;&lt;&quot;&apos;&amp;&gt;\u{FFFD}\"/>\n"
        );
    }

    #[test]
    fn children_are_indented_by_depth_and_text_stays_inline() {
        let mut x = XmlWriter::new(Vec::new()).unwrap();
        x.open("a", &[("k", "v")]).unwrap();
        x.el("b", "t").unwrap();
        x.open("c", &[]).unwrap();
        x.close("c").unwrap();
        x.list("d", "e", &["1".to_owned()]).unwrap();
        x.close("a").unwrap();
        let out = String::from_utf8(x.finish().unwrap()).unwrap();
        assert_eq!(
            out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <a k=\"v\">\n  <b>t</b>\n  <c>\n  </c>\n  <d>\n    <e>1</e>\n  </d>\n</a>\n"
        );
    }

    #[test]
    fn indentation_deeper_than_the_prepared_spaces_is_whole() {
        let mut x = XmlWriter::new(Vec::new()).unwrap();
        for _ in 0..40 {
            x.open("a", &[]).unwrap();
        }
        x.el("b", "").unwrap();
        let out = String::from_utf8(x.out).unwrap();
        let last = out.lines().last().unwrap();
        assert_eq!(last, format!("{}<b></b>", " ".repeat(80)));
    }
}
