//! Tokens of FHIRPath text (<http://hl7.org/fhirpath/N1/#grammar>), the subset
//! the parser understands: identifiers (plain and `backtick`-delimited),
//! string/number/boolean/date literals, `%` and `$` variables, and operators.

use super::FhirPathError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Token {
    Ident(String),
    /// A `backtick`-delimited identifier: never a keyword, never a type filter.
    Delimited(String),
    Str(String),
    /// Number text as written, so decimals keep their precision.
    Number(String),
    /// `@2024-01-01`, `@T10:00` (text without the `@`).
    DateTime(String),
    /// `%resource`, `%'vs-name'`.
    Env(String),
    /// `$this`, `$index`, `$total`.
    Dollar(String),
    Dot,
    Comma,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Pipe,
    Eq,
    NotEq,
    Equiv,
    NotEquiv,
    Lt,
    Gt,
    Le,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Amp,
}

/// A token and the byte offset where it starts (for error messages).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spanned {
    pub(crate) token: Token,
    pub(crate) at: usize,
}

pub(crate) fn tokenize(text: &str) -> Result<Vec<Spanned>, FhirPathError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let simple = match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                // Line comment.
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = text[i + 2..].find("*/").ok_or_else(|| FhirPathError::at(start, "unterminated comment"))?;
                i += end + 4;
                continue;
            }
            b'.' => Some((Token::Dot, 1)),
            b',' => Some((Token::Comma, 1)),
            b'(' => Some((Token::LParen, 1)),
            b')' => Some((Token::RParen, 1)),
            b'[' => Some((Token::LBracket, 1)),
            b']' => Some((Token::RBracket, 1)),
            b'{' => Some((Token::LBrace, 1)),
            b'}' => Some((Token::RBrace, 1)),
            b'|' => Some((Token::Pipe, 1)),
            b'=' => Some((Token::Eq, 1)),
            b'~' => Some((Token::Equiv, 1)),
            b'+' => Some((Token::Plus, 1)),
            b'-' => Some((Token::Minus, 1)),
            b'*' => Some((Token::Star, 1)),
            b'/' => Some((Token::Slash, 1)),
            b'&' => Some((Token::Amp, 1)),
            b'!' if bytes.get(i + 1) == Some(&b'=') => Some((Token::NotEq, 2)),
            b'!' if bytes.get(i + 1) == Some(&b'~') => Some((Token::NotEquiv, 2)),
            b'<' if bytes.get(i + 1) == Some(&b'=') => Some((Token::Le, 2)),
            b'>' if bytes.get(i + 1) == Some(&b'=') => Some((Token::Ge, 2)),
            b'<' => Some((Token::Lt, 1)),
            b'>' => Some((Token::Gt, 1)),
            _ => None,
        };
        if let Some((token, len)) = simple {
            out.push(Spanned { token, at: start });
            i += len;
            continue;
        }
        let token = match c {
            b'\'' => {
                let (s, next) = quoted(text, i, b'\'')?;
                i = next;
                Token::Str(s)
            }
            b'`' => {
                let (s, next) = quoted(text, i, b'`')?;
                i = next;
                Token::Delimited(s)
            }
            b'%' => {
                i += 1;
                match bytes.get(i) {
                    Some(b'\'') => {
                        let (s, next) = quoted(text, i, b'\'')?;
                        i = next;
                        Token::Env(s)
                    }
                    Some(b'`') => {
                        let (s, next) = quoted(text, i, b'`')?;
                        i = next;
                        Token::Env(s)
                    }
                    _ => {
                        let end = ident_end(bytes, i);
                        if end == i {
                            return Err(FhirPathError::at(start, "expected a name after %"));
                        }
                        let name = text[i..end].to_string();
                        i = end;
                        Token::Env(name)
                    }
                }
            }
            b'$' => {
                let end = ident_end(bytes, i + 1);
                let name = text[i + 1..end].to_string();
                i = end;
                Token::Dollar(name)
            }
            b'@' => {
                let mut end = i + 1;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric() || matches!(bytes[end], b'-' | b':' | b'.' | b'+'))
                {
                    end += 1;
                }
                let s = text[i + 1..end].to_string();
                i = end;
                Token::DateTime(s)
            }
            b'0'..=b'9' => {
                let mut end = i;
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
                // A decimal point only when a digit follows: `1.first()` is not a decimal.
                if end + 1 < bytes.len() && bytes[end] == b'.' && bytes[end + 1].is_ascii_digit() {
                    end += 1;
                    while end < bytes.len() && bytes[end].is_ascii_digit() {
                        end += 1;
                    }
                }
                let s = text[i..end].to_string();
                i = end;
                Token::Number(s)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = ident_end(bytes, i);
                let s = text[i..end].to_string();
                i = end;
                Token::Ident(s)
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(FhirPathError::at(start, format!("unexpected character {ch:?}")));
            }
        };
        out.push(Spanned { token, at: start });
    }
    Ok(out)
}

fn ident_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
        i += 1;
    }
    i
}

/// Reads a quoted string starting at `start` (the opening quote), handling the
/// FHIRPath escapes (`\'`, `\"`, `` \` ``, `\\`, `\/`, `\f`, `\n`, `\r`, `\t`, `\uXXXX`).
fn quoted(text: &str, start: usize, quote: u8) -> Result<(String, usize), FhirPathError> {
    let mut out = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((off, ch)) = chars.next() {
        if ch as u32 == u32::from(quote) {
            return Ok((out, start + 1 + off + 1));
        }
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        let Some((_, esc)) = chars.next() else { break };
        match esc {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'f' => out.push('\u{c}'),
            'u' => {
                let mut code = 0u32;
                for _ in 0..4 {
                    let digit = chars
                        .next()
                        .and_then(|(_, d)| d.to_digit(16))
                        .ok_or_else(|| FhirPathError::at(start, "bad \\u escape"))?;
                    code = code * 16 + digit;
                }
                out.push(char::from_u32(code).ok_or_else(|| FhirPathError::at(start, "bad \\u escape"))?);
            }
            other => out.push(other),
        }
    }
    Err(FhirPathError::at(start, "unterminated string"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Token> {
        tokenize(text).unwrap().into_iter().map(|s| s.token).collect()
    }

    #[test]
    fn tokenizes_search_expressions() {
        assert_eq!(
            kinds("Patient.name.where(use='official') | x[0] != 1.5"),
            vec![
                Token::Ident("Patient".into()),
                Token::Dot,
                Token::Ident("name".into()),
                Token::Dot,
                Token::Ident("where".into()),
                Token::LParen,
                Token::Ident("use".into()),
                Token::Eq,
                Token::Str("official".into()),
                Token::RParen,
                Token::Pipe,
                Token::Ident("x".into()),
                Token::LBracket,
                Token::Number("0".into()),
                Token::RBracket,
                Token::NotEq,
                Token::Number("1.5".into()),
            ]
        );
        assert_eq!(kinds("%resource.`div`"), vec![Token::Env("resource".into()), Token::Dot, Token::Delimited("div".into())]);
        assert_eq!(kinds(r"'it\'s \u00e9'"), vec![Token::Str("it's é".into())]);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(tokenize("'open").is_err());
        assert!(tokenize("a # b").is_err());
        assert!(tokenize("/* x").is_err());
        assert!(tokenize("'\\u12").is_err());
        assert!(tokenize("%").is_err());
    }
}
