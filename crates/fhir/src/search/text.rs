//! Full-text search: `_text` searches a resource's narrative (`text.div`, the
//! XHTML reduced to its text) and `_content` all of its text (every string
//! value, narrative included), <http://hl7.org/fhir/R4/search.html#_text>.
//!
//! Words are made here, once, for every store: a word is a run of letters and
//! digits, lower-cased and without accents (the same folding as the default
//! string search, [`super::normalize_string`]). [`TextIndex::of`] turns a
//! resource into its words when a version is prepared; the stores keep them
//! (SQLite in an FTS5 table, PostgreSQL as tsvectors, the memory store as
//! they are) and [`parse_query`] turns a search value into [`TextPhrase`]s
//! made of the same words, so all stores compare identical tokens.
//!
//! Query syntax (a small part of what the spec suggests, after OData's
//! `$search`): words separated by spaces must all occur, anywhere; a quoted
//! `"several words"` must occur in that order, adjacent; a trailing `*`
//! (`diab*`, `"heart att"*`) makes the last word a prefix; `OR` between words
//! gives alternatives, like a comma does (search.html#combining); `AND` is
//! allowed and changes nothing. Matching ignores case and accents.
//!
//! Limits, the same on every store: a field keeps its first [`MAX_WORDS`]
//! words, and a word its first [`MAX_WORD_BYTES`] bytes (so are query words).
//! Not content: base64 `data`, `resourceType`, and the URIs and stamps listed
//! in [`NOT_CONTENT`] (logical ids, code systems, extension URLs, references, profiles,
//! `meta.versionId`, `meta.lastUpdated`).

use super::normalize_string;
use super::query::{TextField, TextPhrase};
use serde_json::Value;
use unicode_normalization::char::is_combining_mark;

/// Words kept per field of a resource; PostgreSQL positions stop at 16,383.
pub const MAX_WORDS: usize = 16_383;
/// Bytes kept of a word (cut at a character boundary), in documents and queries.
pub const MAX_WORD_BYTES: usize = 40;

/// The full text of one resource version: its words per field, each field
/// a single space-separated string of normalized words in document order
/// (empty when the field has no words).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextIndex {
    /// The narrative, `text.div`, without markup.
    pub narrative: String,
    /// Every string of the resource, in document order, the narrative
    /// where `text` stands.
    pub content: String,
}

impl TextIndex {
    /// The words of `resource`.
    pub fn of(resource: &Value) -> TextIndex {
        let Some(object) = resource.as_object() else { return TextIndex::default() };
        let mut narrative = Words::default();
        if let Some(div) = object.get("text").and_then(|t| t.get("div")).and_then(Value::as_str) {
            xhtml_words(div, &mut narrative);
        }
        let mut content = Words::default();
        for (key, value) in object {
            match key.as_str() {
                "text" if value.is_object() => content.append(&narrative),
                _ => content_words(key, value, &mut content),
            }
            if content.full() {
                break;
            }
        }
        TextIndex { narrative: narrative.text, content: content.text }
    }

    /// The words of one field.
    pub fn field(&self, field: TextField) -> &str {
        match field {
            TextField::Narrative => &self.narrative,
            TextField::Content => &self.content,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.narrative.is_empty() && self.content.is_empty()
    }
}

/// Space-separated words being collected, at most [`MAX_WORDS`].
#[derive(Default)]
struct Words {
    text: String,
    count: usize,
}

impl Words {
    fn full(&self) -> bool {
        self.count >= MAX_WORDS
    }

    /// Adds the words of `text` (any text: it is normalized here). A word
    /// is first taken as a run of letters, digits and combining marks, then
    /// normalized (ASCII just lower-cased), then split again where
    /// normalization left something other than letters and digits.
    fn push_text(&mut self, text: &str) {
        let mut start: Option<usize> = None;
        let mut ascii = true;
        for (i, c) in text.char_indices() {
            let in_word =
                if c.is_ascii() { c.is_ascii_alphanumeric() } else { c.is_alphanumeric() || is_combining_mark(c) };
            if in_word {
                if start.is_none() {
                    start = Some(i);
                    ascii = true;
                }
                ascii &= c.is_ascii();
            } else if let Some(s) = start.take() {
                self.push_raw_word(&text[s..i], ascii);
                if self.full() {
                    return;
                }
            }
        }
        if let Some(s) = start {
            self.push_raw_word(&text[s..], ascii);
        }
    }

    fn push_raw_word(&mut self, word: &str, ascii: bool) {
        if !ascii {
            self.push_normalized(&normalize_string(word));
            return;
        }
        if self.full() {
            return;
        }
        if !self.text.is_empty() {
            self.text.push(' ');
        }
        let at = self.text.len();
        self.text.push_str(&word[..word.len().min(MAX_WORD_BYTES)]);
        self.text[at..].make_ascii_lowercase();
        self.count += 1;
    }

    /// Adds the words of `text`, which is already normalized.
    fn push_normalized(&mut self, text: &str) {
        let mut in_word = false;
        let mut word_start = 0;
        for c in text.chars() {
            if c.is_alphanumeric() {
                if !in_word {
                    if self.full() {
                        return;
                    }
                    if !self.text.is_empty() {
                        self.text.push(' ');
                    }
                    word_start = self.text.len();
                    self.count += 1;
                    in_word = true;
                }
                if self.text.len() - word_start + c.len_utf8() <= MAX_WORD_BYTES {
                    self.text.push(c);
                }
            } else {
                in_word = false;
            }
        }
    }

    /// Adds words collected elsewhere.
    fn append(&mut self, other: &Words) {
        if other.count == 0 || self.full() {
            return;
        }
        if self.count + other.count <= MAX_WORDS {
            if !self.text.is_empty() {
                self.text.push(' ');
            }
            self.text.push_str(&other.text);
            self.count += other.count;
        } else {
            self.push_normalized(&other.text);
        }
    }
}

/// The words of a search value, as a document's are made (for tests and
/// callers that need them; [`parse_query`] uses the same rules).
pub fn words(text: &str) -> Vec<String> {
    let mut collected = Words::default();
    collected.push_text(text);
    if collected.text.is_empty() { Vec::new() } else { collected.text.split(' ').map(str::to_string).collect() }
}

/// Strings that are not content: base64 `data` (attachments, Binary,
/// signatures) and the machine-facing identifiers of code systems,
/// extensions, references, profiles and version stamps, whose words (`http`,
/// `org`, `patient`...) would only make every resource match everything and
/// the index bigger. They have search parameters of their own. So has the
/// logical `id` (`_id`; an element's `id` is an internal link): a word that
/// no other resource has, it cost the index one term per resource (a
/// migration's load spent about a tenth of its full-text time on them).
const NOT_CONTENT: [&str; 9] =
    ["data", "resourceType", "id", "system", "url", "reference", "profile", "versionId", "lastUpdated"];

/// Adds the strings of `value` (found under `key`) to the content words.
fn content_words(key: &str, value: &Value, out: &mut Words) {
    match value {
        Value::String(text) => {
            if key == "div" && text.starts_with('<') {
                xhtml_words(text, out);
            } else if !NOT_CONTENT.contains(&key) {
                out.push_text(text);
            }
        }
        Value::Array(items) => {
            for item in items {
                content_words(key, item, out);
                if out.full() {
                    return;
                }
            }
        }
        Value::Object(object) => {
            for (key, value) in object {
                content_words(key, value, out);
                if out.full() {
                    return;
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Inline XHTML elements: their tags do not separate words (`<b>Dia</b>betes`).
const INLINE: [&str; 21] = [
    "a", "abbr", "acronym", "b", "bdo", "big", "cite", "code", "dfn", "em", "font", "i", "kbd", "q", "samp", "small",
    "span", "strong", "sub", "sup", "u",
];

/// Adds the words of a narrative's XHTML: the text without tags or comments,
/// with character references decoded. Other tags separate words.
fn xhtml_words(xhtml: &str, out: &mut Words) {
    let mut text = String::with_capacity(xhtml.len());
    let mut rest = xhtml;
    while let Some(i) = rest.find(['<', '&']) {
        text.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            text.push(' ');
        } else if rest.starts_with('<') {
            let end = rest.find('>').map_or(rest.len(), |e| e + 1);
            let name = rest[1..end]
                .trim_start_matches('/')
                .split(|c: char| c.is_whitespace() || c == '/' || c == '>')
                .next()
                .unwrap_or("");
            if !INLINE.iter().any(|tag| tag.eq_ignore_ascii_case(name)) {
                text.push(' ');
            }
            rest = &rest[end..];
        } else {
            // A character reference, `&name;`, `&#NN;` or `&#xHH;`.
            let end = rest.get(1..12).and_then(|s| s.find(';')).map(|e| e + 1);
            match end.and_then(|e| entity(&rest[1..e]).map(|c| (e, c))) {
                Some((e, c)) => {
                    text.push(c);
                    rest = &rest[e + 1..];
                }
                None => {
                    text.push(' ');
                    rest = &rest[1..];
                }
            }
        }
    }
    text.push_str(rest);
    out.push_text(&text);
}

/// The character an XML character reference (without `&` and `;`) stands for.
fn entity(name: &str) -> Option<char> {
    let code = if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
        u32::from_str_radix(hex, 16).ok()?
    } else if let Some(decimal) = name.strip_prefix('#') {
        decimal.parse().ok()?
    } else {
        return Some(match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            // Any other named reference (`&nbsp;`...) separates words.
            _ => ' ',
        });
    };
    char::from_u32(code)
}

/// Parses a `_text` / `_content` value (one comma-separated part, already
/// unescaped) into alternatives (`OR`), each a list of phrases that must all
/// occur. `None` when it has no words.
pub fn parse_query(value: &str) -> Option<Vec<Vec<TextPhrase>>> {
    let mut alternatives: Vec<Vec<TextPhrase>> = vec![Vec::new()];
    let mut rest = value.trim_start();
    while !rest.is_empty() {
        let (chunk, quoted, after) = if let Some(inner) = rest.strip_prefix('"') {
            let end = inner.find('"').unwrap_or(inner.len());
            (&inner[..end], true, inner.get(end + 1..).unwrap_or(""))
        } else {
            let end = rest.find(|c: char| c.is_whitespace() || c == '"').unwrap_or(rest.len());
            (&rest[..end], false, &rest[end..])
        };
        rest = after;
        let mut prefix = false;
        if quoted {
            if let Some(after_star) = rest.strip_prefix('*') {
                prefix = true;
                rest = after_star;
            }
        } else {
            match chunk {
                "OR" => {
                    alternatives.push(Vec::new());
                    rest = rest.trim_start();
                    continue;
                }
                "AND" => {
                    rest = rest.trim_start();
                    continue;
                }
                _ => prefix = chunk.ends_with('*'),
            }
        }
        let words = words(chunk);
        if !words.is_empty()
            && let Some(current) = alternatives.last_mut()
        {
            current.push(TextPhrase { words, prefix });
        }
        rest = rest.trim_start();
    }
    alternatives.retain(|a| !a.is_empty());
    if alternatives.is_empty() { None } else { Some(alternatives) }
}

/// Whether `phrases` all occur in the words of a field (the memory store's
/// evaluation; the SQL stores ask their full-text index the same question).
pub fn matches(field_words: &str, phrases: &[TextPhrase]) -> bool {
    if field_words.is_empty() {
        return false;
    }
    let words: Vec<&str> = field_words.split(' ').collect();
    phrases.iter().all(|phrase| phrase_occurs(&words, phrase))
}

fn phrase_occurs(words: &[&str], phrase: &TextPhrase) -> bool {
    let n = phrase.words.len();
    if n == 0 {
        return true;
    }
    words.windows(n).any(|window| {
        window.iter().zip(&phrase.words).enumerate().all(|(i, (word, wanted))| {
            if phrase.prefix && i + 1 == n { word.starts_with(wanted.as_str()) } else { word == wanted }
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn phrase(words: &[&str], prefix: bool) -> TextPhrase {
        TextPhrase { words: words.iter().map(|w| w.to_string()).collect(), prefix }
    }

    #[test]
    fn words_fold_case_and_accents_and_split_on_punctuation() {
        assert_eq!(words("Ñúñez O'Brien, type-2 DIABETES!"), ["nunez", "o", "brien", "type", "2", "diabetes"]);
        assert_eq!(words("  ...  "), Vec::<String>::new());
        assert_eq!(words("Zoë 北京市"), ["zoe", "北京市"]);
    }

    #[test]
    fn long_words_are_cut_at_a_character_boundary() {
        let long = "é".repeat(30);
        let cut = words(&long);
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0], "e".repeat(30));
        let long = "ß".repeat(30);
        assert_eq!(words(&long)[0].len(), MAX_WORD_BYTES);
    }

    #[test]
    fn narrative_is_the_div_without_markup() {
        let patient = json!({
            "resourceType": "Patient",
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Peter <b>Chal</b>mers</p><p>Born&#160;1974 &amp; &eacute;t&#xE9;<br/>next</p><!-- hidden --></div>"},
            "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
            "gender": "male"
        });
        let index = TextIndex::of(&patient);
        assert_eq!(index.narrative, "peter chalmers born 1974 te next");
        assert_eq!(index.content, "peter chalmers born 1974 te next chalmers peter james male");
    }

    #[test]
    fn content_is_every_string_but_data_ids_uris_and_stamps() {
        let doc = json!({
            "resourceType": "DocumentReference",
            "id": "d1",
            "identifier": [{"id": "e7", "system": "urn:x", "value": "MRN-77"}],
            "status": "current",
            "content": [{"attachment": {"contentType": "text/plain", "data": "SGVsbG8gd29ybGQ=", "title": "Discharge summary"}}],
            "contained": [{"resourceType": "Patient", "text": {"div": "<div>Inner <i>note</i></div>"}}],
            "extension": [{"url": "http://example.org/x", "valueInteger": 3, "valueBoolean": true}],
            "subject": {"reference": "Patient/p1", "display": "Ann Lee"},
            "meta": {"versionId": "2", "lastUpdated": "2024-01-01T00:00:00Z", "profile": ["http://p.org/x"], "tag": [{"system": "http://t.org", "code": "vip"}]},
            "type": {"coding": [{"system": "http://loinc.org", "code": "18842-5", "display": "Discharge"}]}
        });
        let index = TextIndex::of(&doc);
        assert_eq!(index.narrative, "");
        // Neither the logical id (`_id` searches it) nor an element's `id`.
        assert_eq!(index.content, "mrn 77 current text plain discharge summary inner note ann lee vip 18842 5 discharge");
    }

    #[test]
    fn fields_keep_at_most_max_words() {
        let many = "word ".repeat(MAX_WORDS + 10);
        let index =
            TextIndex::of(&json!({"resourceType": "Basic", "text": {"div": format!("<div>{many}</div>")}, "id": "x"}));
        assert_eq!(index.narrative.split(' ').count(), MAX_WORDS);
        assert_eq!(index.content.split(' ').count(), MAX_WORDS);
    }

    #[test]
    fn queries_are_words_phrases_prefixes_and_alternatives() {
        assert_eq!(
            parse_query("Heart  attack"),
            Some(vec![vec![phrase(&["heart"], false), phrase(&["attack"], false)]])
        );
        assert_eq!(
            parse_query("\"Heart Attack\" diab*"),
            Some(vec![vec![phrase(&["heart", "attack"], false), phrase(&["diab"], true)]])
        );
        assert_eq!(parse_query("\"heart att\"*"), Some(vec![vec![phrase(&["heart", "att"], true)]]));
        assert_eq!(parse_query("o'brien"), Some(vec![vec![phrase(&["o", "brien"], false)]]));
        assert_eq!(
            parse_query("asthma OR copd AND flu"),
            Some(vec![vec![phrase(&["asthma"], false)], vec![phrase(&["copd"], false), phrase(&["flu"], false)]])
        );
        assert_eq!(parse_query("or"), Some(vec![vec![phrase(&["or"], false)]]));
        assert_eq!(parse_query("\"unclosed phrase"), Some(vec![vec![phrase(&["unclosed", "phrase"], false)]]));
        assert_eq!(parse_query("  -- !! "), None);
        assert_eq!(parse_query("OR"), None);
        assert_eq!(parse_query(""), None);
    }

    #[test]
    fn matching_needs_every_phrase_in_order() {
        let field = "patient has type 2 diabetes and heart disease";
        assert!(matches(field, &[phrase(&["diabetes"], false)]));
        assert!(matches(field, &[phrase(&["heart"], false), phrase(&["type"], false)]));
        assert!(matches(field, &[phrase(&["type", "2", "diabetes"], false)]));
        assert!(!matches(field, &[phrase(&["2", "type"], false)]));
        assert!(!matches(field, &[phrase(&["diab"], false)]));
        assert!(matches(field, &[phrase(&["diab"], true)]));
        assert!(matches(field, &[phrase(&["heart", "dis"], true)]));
        assert!(!matches(field, &[phrase(&["heart", "dis"], false)]));
        assert!(!matches(field, &[phrase(&["diabetes"], false), phrase(&["asthma"], false)]));
        assert!(!matches("", &[phrase(&["a"], false)]));
    }
}
