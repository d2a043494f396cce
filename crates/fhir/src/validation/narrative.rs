//! Checks of `Narrative.div`, the `xhtml` primitive (<http://hl7.org/fhir/R4/narrative.html#xhtml>):
//! a `<div>` in the XHTML namespace (txt-1's basic rules, txt-2's non-empty content).
//!
//! This is a cheap lexical scan, not an XML parser: it catches the common defects (not a div,
//! missing namespace, scripts and other forbidden elements, no content) without the cost of
//! building a tree in the write path.

use super::primitive::Finding;

/// The XHTML namespace declaration the root `<div>` carries, in either quote style.
const XMLNS_DOUBLE_QUOTED: &str = "xmlns=\"http://www.w3.org/1999/xhtml\"";
const XMLNS_SINGLE_QUOTED: &str = "xmlns='http://www.w3.org/1999/xhtml'";

/// Elements narrative.html forbids: "SHALL NOT contain a head, a body, external stylesheet
/// references, scripts, forms, base/link/xlink, frames, iframes and objects".
const FORBIDDEN: &[&str] = &["head", "body", "script", "form", "base", "link", "frame", "frameset", "iframe", "object", "embed", "applet"];

pub(crate) fn check_div(s: &str) -> Finding {
    let Some(rest) = s.trim_start().strip_prefix("<div") else {
        return Finding::Invalid("the narrative must be an XHTML <div> element");
    };
    let Some(end_of_tag) = rest.find('>') else {
        return Finding::Invalid("the narrative's <div> tag is not closed");
    };
    if !rest.starts_with([' ', '\t', '\r', '\n', '>', '/']) {
        return Finding::Invalid("the narrative must be an XHTML <div> element");
    }
    let root_tag = &rest[..end_of_tag];
    if !(root_tag.contains(XMLNS_DOUBLE_QUOTED) || root_tag.contains(XMLNS_SINGLE_QUOTED)) {
        return Finding::Invalid("the narrative's <div> must declare the XHTML namespace");
    }
    if !s.trim_end().ends_with("</div>") {
        return Finding::Invalid("the narrative must end with </div>");
    }
    scan_content(s)
}

/// txt-1 (forbidden elements) and txt-2 (some non-whitespace content or an image).
fn scan_content(s: &str) -> Finding {
    let bytes = s.as_bytes();
    let mut has_content = false;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'<' {
            let name_start = i + 1 + usize::from(bytes.get(i + 1) == Some(&b'/'));
            let name_len = bytes[name_start.min(bytes.len())..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b':' || **b == b'-')
                .count();
            let name = &s[name_start.min(s.len())..(name_start + name_len).min(s.len())];
            let local = name.rsplit(':').next().unwrap_or(name);
            if FORBIDDEN.iter().any(|f| f.eq_ignore_ascii_case(local)) {
                return Finding::Invalid("the narrative contains an element that narrative.html forbids (script, form, head, body, frame, object...)");
            }
            if local.eq_ignore_ascii_case("img") {
                has_content = true;
            }
            match s[i..].find('>') {
                Some(close) => i += close + 1,
                None => return Finding::Invalid("the narrative has an unclosed tag"),
            }
        } else {
            if !bytes[i].is_ascii_whitespace() {
                has_content = true;
            }
            i += 1;
        }
    }
    if has_content { Finding::Ok } else { Finding::Invalid("the narrative must have some non-whitespace content (txt-2)") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_narrative() {
        assert_eq!(check_div("<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Hi</p></div>"), Finding::Ok);
        assert_eq!(check_div("<div xmlns=\"http://www.w3.org/1999/xhtml\"><img src=\"#a\"/></div>"), Finding::Ok);
    }

    #[test]
    fn rejects_bad_narrative() {
        for bad in [
            "<p xmlns=\"http://www.w3.org/1999/xhtml\">x</p>",
            "<div>no namespace</div>",
            "<divx xmlns=\"http://www.w3.org/1999/xhtml\">x</divx>",
            "<div xmlns=\"http://www.w3.org/1999/xhtml\"><script>x</script></div>",
            "<div xmlns=\"http://www.w3.org/1999/xhtml\">  <p> </p> </div>",
            "<div xmlns=\"http://www.w3.org/1999/xhtml\">x",
        ] {
            assert!(matches!(check_div(bad), Finding::Invalid(_)), "{bad}");
        }
    }
}
