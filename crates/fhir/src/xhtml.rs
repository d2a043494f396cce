//! Text in XHTML and HTML: a resource's narrative (`text.div`) and the few
//! pages Hearth renders (the authorization forms, the migration reports).

/// Escapes `text` for element content and quoted attribute values: `&`,
/// `<`, `>`, `"` and `'` become character references; everything else is
/// kept as it is.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn markup_characters_become_references_and_nothing_else_changes() {
        assert_eq!(escape(r#"<a href="x">Zoë & 'Françoise'</a>"#), "&lt;a href=&quot;x&quot;&gt;Zoë &amp; &#39;Françoise&#39;&lt;/a&gt;");
        assert_eq!(escape("plain text"), "plain text");
        assert_eq!(escape("&amp;"), "&amp;amp;", "escaped once more, never decoded");
    }
}
