//! FHIRPath parser: tokens to an AST, by precedence climbing over the
//! operator table of <http://hl7.org/fhirpath/N1/#operator-precedence>.

use super::FhirPathError;
use super::lexer::{Spanned, Token};

/// A compiled FHIRPath expression node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// `{}`, or a branch proven empty when specialized for a resource type.
    Empty,
    /// The input focus: the context at the top level, `$this` inside `where()` etc.
    This,
    /// `%resource`, `%context`, `%rootResource`: the resource being evaluated.
    Root,
    Bool(bool),
    /// String literal, or a `%ucum`-like constant.
    Str(String),
    /// Number text as written (`1.50` keeps its precision; may start with `-`).
    Number(String),
    DateTime(String),
    /// `focus.name`: child element, including the `name[x]` choice element.
    Child { focus: Box<Node>, name: String },
    /// An identifier starting with an upper-case letter at the head of a path
    /// (`Patient.name`): filters the input focus by type (FHIRPath §4.1).
    TypeFilter { focus: Box<Node>, type_name: String },
    Index { focus: Box<Node>, index: Box<Node> },
    Call { focus: Box<Node>, func: Func, args: Vec<Node> },
    /// `is T`, `as T`, `is(T)`, `as(T)`, `ofType(T)`.
    Type { focus: Box<Node>, op: TypeOp, type_name: String },
    Binary { op: BinOp, left: Box<Node>, right: Box<Node> },
    Union(Vec<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypeOp {
    Is,
    /// `as`: in FHIR search expressions applied to collections, so it filters
    /// like `ofType` instead of failing on more than one item.
    As,
    OfType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Eq,
    NotEq,
    Equiv,
    NotEquiv,
    Lt,
    Gt,
    Le,
    Ge,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

/// The functions of the subset. Each takes the listed number of arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Where,
    Select,
    Exists,
    All,
    Empty,
    Not,
    First,
    Last,
    Tail,
    Skip,
    Take,
    Count,
    Resolve,
    Extension,
    HasValue,
    StartsWith,
    EndsWith,
    Contains,
    Trace,
}

impl Func {
    fn from_name(name: &str) -> Option<(Func, usize, usize)> {
        Some(match name {
            "where" => (Func::Where, 1, 1),
            "select" => (Func::Select, 1, 1),
            "exists" => (Func::Exists, 0, 1),
            "all" => (Func::All, 1, 1),
            "empty" => (Func::Empty, 0, 0),
            "not" => (Func::Not, 0, 0),
            "first" => (Func::First, 0, 0),
            "last" => (Func::Last, 0, 0),
            "tail" => (Func::Tail, 0, 0),
            "skip" => (Func::Skip, 1, 1),
            "take" => (Func::Take, 1, 1),
            "count" => (Func::Count, 0, 0),
            "resolve" => (Func::Resolve, 0, 0),
            "extension" => (Func::Extension, 1, 1),
            "hasValue" => (Func::HasValue, 0, 0),
            "startsWith" => (Func::StartsWith, 1, 1),
            "endsWith" => (Func::EndsWith, 1, 1),
            "contains" => (Func::Contains, 1, 1),
            "trace" => (Func::Trace, 1, 2),
            _ => return None,
        })
    }
}

pub(crate) fn parse(tokens: &[Spanned], text_len: usize) -> Result<Node, FhirPathError> {
    let mut parser = Parser { tokens, pos: 0, end: text_len, depth: 0 };
    if tokens.is_empty() {
        return Err(FhirPathError::at(0, "empty expression"));
    }
    let node = parser.expression(0)?;
    if parser.pos < tokens.len() {
        return Err(FhirPathError::at(parser.offset(), "unexpected text after the expression"));
    }
    Ok(node)
}

struct Parser<'t> {
    tokens: &'t [Spanned],
    pos: usize,
    end: usize,
    /// Nesting of sub-expressions, bounded so hostile input cannot exhaust the stack.
    depth: usize,
}

/// Deepest AST accepted (parentheses, arguments, operators and path steps
/// all nest): evaluation and drop recurse over the tree.
const MAX_DEPTH: usize = 128;

/// Binding power of infix operators (higher binds tighter).
fn infix_power(token: &Token) -> Option<u8> {
    Some(match token {
        Token::Ident(word) => match word.as_str() {
            "implies" => 1,
            "or" | "xor" => 2,
            "and" => 3,
            "in" | "contains" => 4,
            "is" | "as" => 8,
            "div" | "mod" => 10,
            _ => return None,
        },
        Token::Eq | Token::NotEq | Token::Equiv | Token::NotEquiv => 5,
        Token::Lt | Token::Gt | Token::Le | Token::Ge => 6,
        Token::Pipe => 7,
        Token::Plus | Token::Minus | Token::Amp => 9,
        Token::Star | Token::Slash => 10,
        _ => return None,
    })
}

impl<'t> Parser<'t> {
    fn peek(&self) -> Option<&'t Token> {
        self.tokens.get(self.pos).map(|s| &s.token)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |s| s.at)
    }

    fn next(&mut self) -> Option<&'t Token> {
        let token = self.tokens.get(self.pos).map(|s| &s.token);
        self.pos += 1;
        token
    }

    fn expect(&mut self, want: &Token, what: &str) -> Result<(), FhirPathError> {
        if self.peek() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(FhirPathError::at(self.offset(), format!("expected {what}")))
        }
    }

    /// Counts one more level of AST nesting.
    fn deeper(&mut self) -> Result<(), FhirPathError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FhirPathError::at(self.offset(), "expression nested too deeply"));
        }
        Ok(())
    }

    fn expression(&mut self, min_power: u8) -> Result<Node, FhirPathError> {
        let depth = self.depth;
        let result = self.deeper().and_then(|()| self.expression_inner(min_power));
        self.depth = depth;
        result
    }

    fn expression_inner(&mut self, min_power: u8) -> Result<Node, FhirPathError> {
        let mut left = self.unary()?;
        while let Some(token) = self.peek() {
            let Some(power) = infix_power(token) else { break };
            if power < min_power {
                break;
            }
            let at = self.offset();
            self.pos += 1;
            // Each operator nests the left operand one level deeper (flat unions do not).
            if !(matches!(token, Token::Pipe) && matches!(left, Node::Union(_))) {
                self.deeper()?;
            }
            let op = match token {
                Token::Ident(word) if word == "is" || word == "as" => {
                    let type_name = self.type_specifier()?;
                    let op = if word == "is" { TypeOp::Is } else { TypeOp::As };
                    left = Node::Type { focus: Box::new(left), op, type_name };
                    continue;
                }
                Token::Pipe => {
                    let right = self.expression(power + 1)?;
                    left = match left {
                        Node::Union(mut parts) => {
                            parts.push(right);
                            Node::Union(parts)
                        }
                        other => Node::Union(vec![other, right]),
                    };
                    continue;
                }
                Token::Eq => BinOp::Eq,
                Token::NotEq => BinOp::NotEq,
                Token::Equiv => BinOp::Equiv,
                Token::NotEquiv => BinOp::NotEquiv,
                Token::Lt => BinOp::Lt,
                Token::Gt => BinOp::Gt,
                Token::Le => BinOp::Le,
                Token::Ge => BinOp::Ge,
                Token::Ident(word) => match word.as_str() {
                    "and" => BinOp::And,
                    "or" => BinOp::Or,
                    "xor" => BinOp::Xor,
                    "implies" => BinOp::Implies,
                    "in" => BinOp::In,
                    "contains" => BinOp::Contains,
                    _ => return Err(FhirPathError::at(at, format!("operator {word} is not supported"))),
                },
                _ => return Err(FhirPathError::at(at, "arithmetic operators are not supported")),
            };
            let right = self.expression(power + 1)?;
            left = Node::Binary { op, left: Box::new(left), right: Box::new(right) };
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Node, FhirPathError> {
        match self.peek() {
            Some(Token::Minus) => {
                let at = self.offset();
                self.pos += 1;
                match self.next() {
                    Some(Token::Number(n)) => self.postfix(Node::Number(format!("-{n}"))),
                    _ => Err(FhirPathError::at(at, "unary minus is supported on number literals only")),
                }
            }
            Some(Token::Plus) => {
                self.pos += 1;
                let depth = self.depth;
                let result = self.deeper().and_then(|()| self.unary());
                self.depth = depth;
                result
            }
            _ => {
                let term = self.term()?;
                self.postfix(term)
            }
        }
    }

    fn term(&mut self) -> Result<Node, FhirPathError> {
        let at = self.offset();
        let Some(token) = self.next() else {
            return Err(FhirPathError::at(at, "unexpected end of expression"));
        };
        Ok(match token {
            Token::LParen => {
                let inner = self.expression(0)?;
                self.expect(&Token::RParen, "')'")?;
                inner
            }
            Token::LBrace => {
                self.expect(&Token::RBrace, "'}'")?;
                Node::Empty
            }
            Token::Str(s) => {
                if matches!(self.peek(), Some(Token::Str(_))) {
                    return Err(FhirPathError::at(at, "two adjacent strings"));
                }
                Node::Str(s.clone())
            }
            Token::Number(n) => {
                if matches!(self.peek(), Some(Token::Str(_))) {
                    return Err(FhirPathError::at(at, "quantity literals are not supported"));
                }
                Node::Number(n.clone())
            }
            Token::DateTime(d) => Node::DateTime(d.clone()),
            Token::Env(name) => match name.as_str() {
                "resource" | "context" | "rootResource" => Node::Root,
                "ucum" => Node::Str("http://unitsofmeasure.org".into()),
                "sct" => Node::Str("http://snomed.info/sct".into()),
                "loinc" => Node::Str("http://loinc.org".into()),
                other => return Err(FhirPathError::at(at, format!("unknown environment variable %{other}"))),
            },
            Token::Dollar(name) => match name.as_str() {
                "this" => Node::This,
                other => return Err(FhirPathError::at(at, format!("${other} is not supported"))),
            },
            Token::Delimited(name) => Node::Child { focus: Box::new(Node::This), name: name.clone() },
            Token::Ident(name) => match name.as_str() {
                "true" => Node::Bool(true),
                "false" => Node::Bool(false),
                _ if self.peek() == Some(&Token::LParen) => self.call(Node::This, name, at)?,
                _ if name.starts_with(|c: char| c.is_ascii_uppercase()) => {
                    Node::TypeFilter { focus: Box::new(Node::This), type_name: name.clone() }
                }
                _ => Node::Child { focus: Box::new(Node::This), name: name.clone() },
            },
            _ => return Err(FhirPathError::at(at, "expected a term")),
        })
    }

    fn postfix(&mut self, node: Node) -> Result<Node, FhirPathError> {
        let depth = self.depth;
        let result = self.postfix_steps(node);
        self.depth = depth;
        result
    }

    /// Path steps and indexers; each nests the node one level deeper.
    fn postfix_steps(&mut self, mut node: Node) -> Result<Node, FhirPathError> {
        loop {
            if matches!(self.peek(), Some(Token::Dot | Token::LBracket)) {
                self.deeper()?;
            }
            match self.peek() {
                Some(Token::Dot) => {
                    self.pos += 1;
                    let at = self.offset();
                    node = match self.next() {
                        Some(Token::Ident(name)) if self.peek() == Some(&Token::LParen) => self.call(node, name, at)?,
                        Some(Token::Ident(name) | Token::Delimited(name)) => {
                            Node::Child { focus: Box::new(node), name: name.clone() }
                        }
                        _ => return Err(FhirPathError::at(at, "expected a name after '.'")),
                    };
                }
                Some(Token::LBracket) => {
                    self.pos += 1;
                    let index = self.expression(0)?;
                    self.expect(&Token::RBracket, "']'")?;
                    node = Node::Index { focus: Box::new(node), index: Box::new(index) };
                }
                _ => return Ok(node),
            }
        }
    }

    /// Parses `name(args)` applied to `focus`; the `(` is the next token.
    fn call(&mut self, focus: Node, name: &str, at: usize) -> Result<Node, FhirPathError> {
        self.expect(&Token::LParen, "'('")?;
        let type_op = match name {
            "is" => Some(TypeOp::Is),
            "as" => Some(TypeOp::As),
            "ofType" => Some(TypeOp::OfType),
            _ => None,
        };
        if let Some(op) = type_op {
            let type_name = self.type_specifier()?;
            self.expect(&Token::RParen, "')'")?;
            return Ok(Node::Type { focus: Box::new(focus), op, type_name });
        }
        let (func, min, max) = Func::from_name(name)
            .ok_or_else(|| FhirPathError::at(at, format!("function {name}() is not supported")))?;
        let mut args = Vec::new();
        if self.peek() != Some(&Token::RParen) {
            loop {
                args.push(self.expression(0)?);
                if self.peek() == Some(&Token::Comma) {
                    self.pos += 1;
                } else {
                    break;
                }
            }
        }
        self.expect(&Token::RParen, "')'")?;
        if args.len() < min || args.len() > max {
            return Err(FhirPathError::at(at, format!("{name}() takes {min}..{max} arguments, got {}", args.len())));
        }
        Ok(Node::Call { focus: Box::new(focus), func, args })
    }

    /// A type specifier: `Quantity`, `FHIR.Quantity`, `System.String`, `` `dateTime` ``.
    /// The `FHIR.`/`System.` namespace is dropped; types compare without case.
    fn type_specifier(&mut self) -> Result<String, FhirPathError> {
        let at = self.offset();
        let mut name = match self.next() {
            Some(Token::Ident(n) | Token::Delimited(n)) => n.clone(),
            _ => return Err(FhirPathError::at(at, "expected a type name")),
        };
        if (name == "FHIR" || name == "System") && self.peek() == Some(&Token::Dot) {
            self.pos += 1;
            name = match self.next() {
                Some(Token::Ident(n) | Token::Delimited(n)) => n.clone(),
                _ => return Err(FhirPathError::at(at, "expected a type name")),
            };
        }
        Ok(name)
    }
}
