//! The review of the patient-matching grey zone: an analyst's decisions on
//! the pairs [`crate::matching`] lists for review, kept in the project as
//! `review.toml` beside `migration.toml` (versioned with it, read by every
//! run).
//!
//! A pair is named by the source table and key of both records (or the
//! record and the id of the Patient already in Hearth), never by its place
//! in a list, so a decision survives reruns, a re-export in another order
//! and new records. Its short id (`hearth migrate review` prints it) is a
//! hash of those keys.
//!
//! - `merge`: the next run merges the pair exactly as an automatic merge
//!   (the later record into the earlier, or the source record into the
//!   Hearth patient), recorded with who decided, when and why;
//! - `separate`: the pair is two patients: the `possible-duplicate`
//!   warning gives way to a note naming the decision, and a record held
//!   against a Hearth patient is released (it loads as a new patient). A
//!   `separate` decision also stops an automatic merge of the pair.
//!
//! A decision whose pair a run no longer finds (a record left the export,
//! or the pair no longer scores as a possible match) is reported as stale
//! in `reports/dry-run.json` and by `hearth migrate review`; it is never
//! applied to another pair.

use crate::matching::{Other, Pair};
use crate::project::ProjectError;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The file name of the decisions inside the project folder.
pub const REVIEW_FILE: &str = "review.toml";

/// What was decided about a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The same patient: merged.
    Merge,
    /// Two patients: kept apart.
    Separate,
}

impl Verdict {
    /// `merge` or `separate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Merge => "merge",
            Verdict::Separate => "separate",
        }
    }
}

/// One side of a pair: a source record (table and key), or a Patient in
/// Hearth (its id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// A record of the export.
    Source {
        /// Its table.
        table: String,
        /// Its key.
        key: String,
    },
    /// A Patient already in Hearth.
    Hearth(String),
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Side::Source { table, key } => write!(f, "{table} [{key}]"),
            Side::Hearth(id) => write!(f, "Patient/{id} in Hearth"),
        }
    }
}

impl Side {
    fn to_toml(&self) -> String {
        let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
        match self {
            Side::Source { table, key } => format!("{{ table = {}, key = {} }}", quote(table), quote(key)),
            Side::Hearth(id) => format!("{{ hearth = {} }}", quote(&format!("Patient/{id}"))),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Side::Source { table, key } => json!({ "table": table, "key": key }),
            Side::Hearth(id) => json!({ "hearth": format!("Patient/{id}") }),
        }
    }
}

/// The stable name of a pair: its two sides, in a canonical order (a source
/// record before a Hearth patient; two source records by table and key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PairKey {
    /// The first side (always a source record).
    pub a: Side,
    /// The second side.
    pub b: Side,
}

impl PairKey {
    /// The key of two sides, whichever order they come in.
    pub fn new(x: Side, y: Side) -> Self {
        if x <= y { Self { a: x, b: y } } else { Self { a: y, b: x } }
    }

    /// The key of a merge or review of [`crate::matching`].
    pub fn of(pair: &Pair) -> Self {
        let record = Side::Source { table: pair.record.table.clone(), key: pair.record.key.clone() };
        let other = match &pair.other {
            Other::Source(r) => Side::Source { table: r.table.clone(), key: r.key.clone() },
            Other::Hearth(id) => Side::Hearth(id.clone()),
        };
        Self::new(record, other)
    }

    /// The key of two source records.
    pub fn of_refs(x: &crate::matching::RecordRef, y: &crate::matching::RecordRef) -> Self {
        Self::new(
            Side::Source { table: x.table.clone(), key: x.key.clone() },
            Side::Source { table: y.table.clone(), key: y.key.clone() },
        )
    }

    /// The short id: the first 10 hex digits of the SHA-256 of both sides.
    pub fn id(&self) -> String {
        let mut hash = Sha256::new();
        for side in [&self.a, &self.b] {
            match side {
                Side::Source { table, key } => {
                    hash.update(b"source\0");
                    hash.update(table.as_bytes());
                    hash.update([0u8]);
                    hash.update(key.as_bytes());
                }
                Side::Hearth(id) => {
                    hash.update(b"hearth\0");
                    hash.update(id.as_bytes());
                }
            }
            hash.update([0u8]);
        }
        hash.finalize().iter().take(5).map(|b| format!("{b:02x}")).collect()
    }

    /// Whether the pair is a source record and a Hearth patient.
    pub fn with_hearth(&self) -> bool {
        matches!(self.b, Side::Hearth(_))
    }
}

impl std::fmt::Display for PairKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} and {}", self.a, self.b)
    }
}

/// A decision about one pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The pair.
    pub pair: PairKey,
    /// Merge or keep apart.
    pub verdict: Verdict,
    /// Who decided.
    pub by: String,
    /// When (an instant, as recorded).
    pub at: String,
    /// Why, in the analyst's words.
    pub note: Option<String>,
    /// The line of the decision in `review.toml` (0 when not read from it).
    pub line: usize,
}

impl Decision {
    /// `merge by NAME on AT (review.toml:LINE): NOTE`
    pub fn summary(&self) -> String {
        let mut s = format!("{} decided by {} at {}", self.verdict.as_str(), self.by, self.at);
        if self.line > 0 {
            s.push_str(&format!(" ({REVIEW_FILE}:{})", self.line));
        }
        if let Some(note) = &self.note {
            s.push_str(&format!(": {note}"));
        }
        s
    }

    /// The report's entry.
    pub fn to_json(&self) -> Value {
        json!({
            "pair": self.pair.id(),
            "decision": self.verdict.as_str(),
            "by": self.by,
            "at": self.at,
            "note": self.note,
            "file": REVIEW_FILE,
            "line": self.line,
        })
    }
}

/// Every decision of a project (`review.toml`), by pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decisions {
    /// The file (empty when the project was not read from a folder).
    pub file: PathBuf,
    /// The decisions, in the file's order.
    pub list: Vec<Decision>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDecl {
    #[serde(default)]
    pair: Vec<toml::Spanned<PairDecl>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PairDecl {
    /// Written for the reader; recomputed from the sides.
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<String>,
    record: SideDecl,
    with: SideDecl,
    decision: Verdict,
    by: String,
    at: String,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SideDecl {
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    hearth: Option<String>,
}

impl SideDecl {
    fn side(&self) -> Result<Side, String> {
        match (&self.table, &self.key, &self.hearth) {
            (Some(table), Some(key), None) => Ok(Side::Source { table: table.clone(), key: key.clone() }),
            (None, None, Some(h)) => match h.strip_prefix("Patient/") {
                Some(id) if !id.is_empty() => Ok(Side::Hearth(id.to_owned())),
                _ => Err(format!("hearth = {h:?}: expected Patient/<id>")),
            },
            _ => Err("expected { table = ..., key = ... } or { hearth = \"Patient/<id>\" }".into()),
        }
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Decisions {
    /// Reads `DIR/review.toml` (none: no decisions).
    pub fn load(dir: &Path) -> Result<Self, ProjectError> {
        let file = dir.join(REVIEW_FILE);
        match std::fs::read_to_string(&file) {
            Ok(text) => Self::parse(&text, &file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self { file, list: Vec::new() }),
            Err(e) => Err(ProjectError {
                file,
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }

    /// Parses decisions; `file` names them in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ProjectError> {
        let error = |offset: usize, field: &str, message: String| ProjectError {
            file: file.to_path_buf(),
            line: line_at(text, offset),
            column: 1,
            field: field.to_owned(),
            message,
        };
        let decl: FileDecl = toml::from_str(text)
            .map_err(|e| error(e.span().map_or(0, |s| s.start), "pair", e.message().trim().to_owned()))?;
        let mut list: Vec<Decision> = Vec::new();
        for (i, entry) in decl.pair.into_iter().enumerate() {
            let offset = entry.span().start;
            let field = format!("pair[{i}]");
            let p = entry.into_inner();
            let record = p.record.side().map_err(|m| error(offset, &format!("{field}.record"), m))?;
            let with = p.with.side().map_err(|m| error(offset, &format!("{field}.with"), m))?;
            if matches!(record, Side::Hearth(_)) {
                return Err(error(offset, &format!("{field}.record"), "the record is a source record".into()));
            }
            if record == with {
                return Err(error(offset, &field, "a record paired with itself".into()));
            }
            if p.by.trim().is_empty() {
                return Err(error(offset, &format!("{field}.by"), "who decided is required".into()));
            }
            let pair = PairKey::new(record, with);
            if let Some(first) = list.iter().find(|d| d.pair == pair) {
                return Err(error(
                    offset,
                    &field,
                    format!("a second decision about pair {} (the first is at line {})", pair.id(), first.line),
                ));
            }
            list.push(Decision {
                pair,
                verdict: p.decision,
                by: p.by,
                at: p.at,
                note: p.note.filter(|n| !n.trim().is_empty()),
                line: line_at(text, offset),
            });
        }
        Ok(Self { file: file.to_path_buf(), list })
    }

    /// The decision about `pair`.
    pub fn get(&self, pair: &PairKey) -> Option<&Decision> {
        self.list.iter().find(|d| d.pair == *pair)
    }

    /// Records `decision`, replacing any earlier one about its pair.
    pub fn set(&mut self, decision: Decision) {
        match self.list.iter_mut().find(|d| d.pair == decision.pair) {
            Some(d) => *d = decision,
            None => self.list.push(decision),
        }
    }

    /// Removes the decision whose pair id starts with `id`; returns it.
    pub fn remove(&mut self, id: &str) -> Option<Decision> {
        let at = self.list.iter().position(|d| d.pair.id().starts_with(id))?;
        Some(self.list.remove(at))
    }

    /// The file's text: a header, then one `[[pair]]` per decision, in
    /// pair order (a stable text for version control).
    pub fn to_toml(&self) -> String {
        let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let mut out = String::from(
            "# Decisions on the patient pairs listed for review (hearth migrate review).\n\
             # Each pair is named by the source table and key of both records, or by the\n\
             # record and a Patient already in Hearth. decision = \"merge\" merges the pair as\n\
             # an automatic merge would; \"separate\" keeps the two patients apart.\n\
             # The next `hearth migrate run` applies them.\n",
        );
        let mut list: Vec<&Decision> = self.list.iter().collect();
        list.sort_by(|x, y| x.pair.cmp(&y.pair));
        for d in list {
            out.push_str(&format!(
                "\n[[pair]]\nid = {}\nrecord = {}\nwith = {}\ndecision = {}\nby = {}\nat = {}\n",
                quote(&d.pair.id()),
                d.pair.a.to_toml(),
                d.pair.b.to_toml(),
                quote(d.verdict.as_str()),
                quote(&d.by),
                quote(&d.at)
            ));
            if let Some(note) = &d.note {
                out.push_str(&format!("note = {}\n", quote(note)));
            }
        }
        out
    }

    /// Writes the file (then reads it back, so each decision has its line).
    pub fn save(&mut self) -> Result<(), ProjectError> {
        let text = self.to_toml();
        std::fs::write(&self.file, &text).map_err(|e| ProjectError {
            file: self.file.clone(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot write: {e}"),
        })?;
        *self = Self::parse(&text, &self.file)?;
        Ok(())
    }
}

/// What a run did with the decisions: besides those applied to a merge or
/// a review of the run, the Hearth decisions about records already stored
/// (applied by an earlier load) and whether the run matched against Hearth
/// at all (without a store, a decision about a Hearth patient is not
/// checked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewState {
    /// The project's decisions.
    pub decisions: Decisions,
    /// Whether the run matched against Hearth's patients.
    pub hearth_checked: bool,
    /// Hearth decisions about source patients already stored as loaded.
    pub loaded: BTreeSet<PairKey>,
}

impl ReviewState {
    /// The state of a run under `decisions`, before matching against Hearth.
    pub fn new(decisions: &Decisions) -> Self {
        Self { decisions: decisions.clone(), hearth_checked: false, loaded: BTreeSet::new() }
    }
}

/// How a decision of `review.toml` stands after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Applied to a pair of this run.
    Applied,
    /// About a record already loaded (applied by an earlier load).
    Loaded,
    /// About a Hearth patient, and the run did not match against Hearth.
    Unchecked,
    /// Its pair was not found.
    Stale,
}

impl Standing {
    /// `applied`, `loaded`, `unchecked`, `stale`.
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Applied => "applied",
            Standing::Loaded => "applied by an earlier load",
            Standing::Unchecked => "not checked (no store)",
            Standing::Stale => "stale",
        }
    }
}

impl crate::dryrun::DryRun {
    /// Every decision of the project with how it stands after this run.
    pub fn decision_standing(&self) -> Vec<(&Decision, Standing)> {
        let decided: BTreeSet<PairKey> = self
            .merges
            .iter()
            .chain(&self.reviews)
            .filter(|p| p.decided.is_some())
            .map(PairKey::of)
            .collect();
        self.review
            .decisions
            .list
            .iter()
            .map(|d| {
                let standing = if decided.contains(&d.pair) {
                    Standing::Applied
                } else if self.review.loaded.contains(&d.pair) {
                    Standing::Loaded
                } else if d.pair.with_hearth() && !self.review.hearth_checked {
                    Standing::Unchecked
                } else {
                    Standing::Stale
                };
                (d, standing)
            })
            .collect()
    }

    /// The report's `review` section: pairs pending, decided, and the
    /// decisions that did not apply (stale: their pair is gone).
    pub fn review_json(&self) -> Value {
        let pending = self.reviews.iter().filter(|p| p.decided.is_none()).count();
        let separate = self.reviews.iter().filter(|p| p.decided.is_some()).count();
        let merged = self.merges.iter().filter(|p| p.decided.is_some()).count();
        let standing = self.decision_standing();
        let list = |want: Standing| -> Vec<Value> {
            standing
                .iter()
                .filter(|(_, s)| *s == want)
                .map(|(d, _)| {
                    let mut v = d.to_json();
                    v["record"] = d.pair.a.to_json();
                    v["with"] = d.pair.b.to_json();
                    v
                })
                .collect()
        };
        json!({
            "file": REVIEW_FILE,
            "pending": pending,
            "decided": { "merge": merged, "separate": separate },
            "stale": list(Standing::Stale),
            "unchecked": list(Standing::Unchecked),
            "loaded_earlier": list(Standing::Loaded),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(table: &str, key: &str) -> Side {
        Side::Source { table: table.into(), key: key.into() }
    }

    #[test]
    fn a_pair_is_named_by_its_sides_in_any_order() {
        let x = PairKey::new(source("patients", "P00052"), source("patients", "P00001"));
        let y = PairKey::new(source("patients", "P00001"), source("patients", "P00052"));
        assert_eq!(x, y);
        assert_eq!(x.id(), y.id());
        assert_eq!(x.id().len(), 10);
        let h = PairKey::new(Side::Hearth("abc".into()), source("patients", "Q1"));
        assert_eq!(h.a, source("patients", "Q1"), "the source record first");
        assert!(h.with_hearth());
        assert_ne!(h.id(), x.id());
    }

    #[test]
    fn decisions_round_trip_through_the_file_with_their_lines() {
        let mut decisions = Decisions { file: PathBuf::from("review.toml"), list: Vec::new() };
        decisions.set(Decision {
            pair: PairKey::new(source("patients", "P00052"), source("patients", "P00001")),
            verdict: Verdict::Merge,
            by: "A. Analyst".into(),
            at: "2026-11-30T10:00:00Z".into(),
            note: Some("birth date \"typed\" wrong".into()),
            line: 0,
        });
        decisions.set(Decision {
            pair: PairKey::new(source("patients", "Q2"), Side::Hearth("abc".into())),
            verdict: Verdict::Separate,
            by: "B".into(),
            at: "2026-11-30T10:01:00Z".into(),
            note: None,
            line: 0,
        });
        let text = decisions.to_toml();
        let back = Decisions::parse(&text, Path::new("review.toml")).expect("parses");
        assert_eq!(back.list.len(), 2);
        for d in &decisions.list {
            let b = back.get(&d.pair).expect("kept");
            assert_eq!((b.verdict, &b.by, &b.at, &b.note), (d.verdict, &d.by, &d.at, &d.note));
            assert!(b.line > 0 && text.lines().nth(b.line - 1) == Some("[[pair]]"), "line {}", b.line);
        }
        assert_eq!(back.to_toml(), text, "stable text");
        // A second decision replaces the first.
        let mut again = back.clone();
        let mut d = again.list[0].clone();
        d.verdict = Verdict::Separate;
        again.set(d);
        assert_eq!(again.list.len(), 2);
        let id = again.list[0].pair.id();
        assert!(again.remove(&id[..6]).is_some() && again.list.len() == 1);
    }

    #[test]
    fn a_bad_file_names_its_line_and_field() {
        let text = "[[pair]]\nrecord = { table = \"patients\", key = \"P1\" }\nwith = { table = \"patients\", key = \"P2\" }\ndecision = \"maybe\"\nby = \"A\"\nat = \"now\"\n";
        let e = Decisions::parse(text, Path::new("review.toml")).expect_err("bad verdict");
        assert!(e.line >= 1 && e.message.contains("maybe"), "{e}");
        let text = text.replace("\"maybe\"", "\"merge\"").replace("{ table = \"patients\", key = \"P2\" }", "{ hearth = \"x\" }");
        let e = Decisions::parse(&text, Path::new("review.toml")).expect_err("bad side");
        assert!(e.field.contains("with") && e.message.contains("Patient/"), "{e}");
        let twice = format!("{0}\n{0}", text.replace("{ hearth = \"x\" }", "{ table = \"patients\", key = \"P2\" }"));
        let e = Decisions::parse(&twice, Path::new("review.toml")).expect_err("twice");
        assert!(e.message.contains("second decision") && e.line == 8, "{e}");
    }
}
