//! Patient matching: duplicates within the source and against the patients
//! already in Hearth.
//!
//! Two Patient resources are compared field by field (family and given
//! names, birth date, sex, address, phone, strong identifiers). Each field
//! agrees, is similar (a typo, a nickname, a transposed date), disagrees, or
//! is missing on one side, and contributes a Fellegi–Sunter weight:
//! `log2(m/u)` when it agrees, `log2((1-m)/(1-u))` when it disagrees, a
//! partial weight in between when it is similar (Winkler's adjustment:
//! `agree - (agree - disagree) * (1 - s) * 4.5` for a similarity `s`), zero
//! when missing. The sum is the score:
//!
//! - a **deterministic** rule first: the same value of a strong identifier
//!   (an SSN, the MRN of the same system) is a match when the birth date
//!   and the family or given name agree or are close (otherwise the pair is
//!   reviewed: a mistyped or reused number);
//! - score ≥ `upper`: the same patient (merged), unless the given name, the
//!   sex or the birth date plainly disagrees (twins, a parent and a child of
//!   the same name): such a pair is only ever reviewed;
//! - `lower` ≤ score < `upper`: listed for human review, never merged;
//! - below `lower`: different patients.
//!
//! Records are compared within blocks (same birth date; same family-name
//! Soundex, given-name initial and birth year; same family and given-name
//! Soundex, birth month and day; same phone; same strong identifier), so the
//! work grows with the records, not with their square.

use crate::convert::resource_id;
use crate::convert::{Finding, Severity};
use crate::dryrun::{Disposition, DryRun, Issue};
use crate::project::{FieldWeightDecl, Project};
use crate::source::Provenance;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Default score at or above which a pair is merged.
pub const DEFAULT_UPPER: f64 = 28.0;
/// Default score at or above which a pair is listed for review.
pub const DEFAULT_LOWER: f64 = 14.0;
/// Default strong identifier systems (a URI, or a mapped identifier's name).
pub const DEFAULT_IDENTIFIERS: &[&str] = &["mrn", "ssn", "http://hl7.org/fhir/sid/us-ssn"];
/// A blocking value shared by more records than this (a placeholder phone
/// such as 000-000-0000) is not used to form pairs.
const MAX_BLOCK: usize = 1000;
/// Winkler's scale of partial agreement.
const WINKLER: f64 = 4.5;
/// Below this Jaro–Winkler similarity two names disagree.
const SIMILAR: f64 = 0.85;

/// A compared field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// Family name.
    Family,
    /// First given name.
    Given,
    /// Birth date.
    BirthDate,
    /// Administrative sex.
    Sex,
    /// Address line and postal code.
    Address,
    /// Phone number.
    Phone,
    /// Strong identifiers.
    Identifier,
}

impl Field {
    /// Every field, in report order.
    pub const ALL: [Field; 7] =
        [Field::Family, Field::Given, Field::BirthDate, Field::Sex, Field::Address, Field::Phone, Field::Identifier];

    /// The field's name in `[matching.weights]` and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Family => "family",
            Field::Given => "given",
            Field::BirthDate => "birth_date",
            Field::Sex => "sex",
            Field::Address => "address",
            Field::Phone => "phone",
            Field::Identifier => "identifier",
        }
    }

    /// Default `(m, u)`.
    fn default_mu(self) -> (f64, f64) {
        match self {
            Field::Family => (0.95, 0.01),
            Field::Given => (0.9, 0.01),
            Field::BirthDate => (0.97, 0.0002),
            Field::Sex => (0.98, 0.5),
            Field::Address => (0.7, 0.001),
            Field::Phone => (0.6, 0.001),
            Field::Identifier => (0.5, 0.000_001),
        }
    }
}

/// Agreement weights of one field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weight {
    /// Added when the field agrees.
    pub agree: f64,
    /// Added when it disagrees (negative).
    pub disagree: f64,
}

impl Weight {
    /// From Fellegi–Sunter probabilities.
    pub fn from_mu(m: f64, u: f64) -> Self {
        Self { agree: (m / u).log2(), disagree: ((1.0 - m) / (1.0 - u)).log2() }
    }

    /// The weight of a partial agreement of similarity `s` (0 to 1).
    fn partial(&self, s: f64) -> f64 {
        (self.agree - (self.agree - self.disagree) * (1.0 - s) * WINKLER).max(self.disagree)
    }
}

/// Matching settings (`[matching]` with its defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Merge at or above.
    pub upper: f64,
    /// Review at or above (below `upper`).
    pub lower: f64,
    /// Strong identifier systems.
    pub identifiers: Vec<String>,
    /// Weights by field.
    pub weights: BTreeMap<Field, Weight>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            upper: DEFAULT_UPPER,
            lower: DEFAULT_LOWER,
            identifiers: DEFAULT_IDENTIFIERS.iter().map(|s| s.to_string()).collect(),
            weights: Field::ALL
                .iter()
                .map(|f| {
                    let (m, u) = f.default_mu();
                    (*f, Weight::from_mu(m, u))
                })
                .collect(),
        }
    }
}

impl Config {
    /// The project's `[matching]` section over the defaults.
    pub fn of(project: &Project) -> Self {
        let decl = &project.matching;
        let mut config = Config::default();
        if let Some(v) = &decl.upper {
            config.upper = *v.get_ref();
        }
        if let Some(v) = &decl.lower {
            config.lower = *v.get_ref();
        }
        if let Some(list) = &decl.identifiers {
            config.identifiers = list.clone();
        }
        let w = &decl.weights;
        let given: [(Field, &Option<toml::Spanned<FieldWeightDecl>>); 7] = [
            (Field::Family, &w.family),
            (Field::Given, &w.given),
            (Field::BirthDate, &w.birth_date),
            (Field::Sex, &w.sex),
            (Field::Address, &w.address),
            (Field::Phone, &w.phone),
            (Field::Identifier, &w.identifier),
        ];
        for (field, decl) in given {
            if let Some(d) = decl {
                config.weights.insert(field, Weight::from_mu(d.get_ref().m, d.get_ref().u));
            }
        }
        config
    }

    fn weight(&self, field: Field) -> Weight {
        self.weights.get(&field).copied().unwrap_or_else(|| {
            let (m, u) = field.default_mu();
            Weight::from_mu(m, u)
        })
    }

    fn strong(&self, system: &str) -> bool {
        self.identifiers
            .iter()
            .any(|e| system == e || system.strip_suffix(e.as_str()).is_some_and(|p| p.ends_with(':')))
    }
}

/// What one field comparison found.
#[derive(Debug, Clone, PartialEq)]
pub enum Level {
    /// The same value.
    Agree,
    /// Close: why (`typo`, `nickname`, `day and month transposed`...).
    Similar(&'static str),
    /// Different values.
    Disagree,
    /// Absent on one side or both.
    Missing,
}

/// One field of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The field.
    pub field: Field,
    /// What was found.
    pub level: Level,
    /// Its weight.
    pub weight: f64,
}

/// What a pair of records is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The same patient.
    Match,
    /// Perhaps: a human decides.
    Review,
    /// Different patients.
    Distinct,
}

/// The comparison of two records.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// The sum of the weights.
    pub total: f64,
    /// Field by field.
    pub fields: Vec<Comparison>,
    /// Set when a strong identifier agrees.
    pub deterministic: bool,
    /// The verdict under the thresholds.
    pub verdict: Verdict,
}

impl Score {
    fn names(&self, pick: impl Fn(&Level) -> bool) -> Vec<String> {
        self.fields
            .iter()
            .filter(|c| pick(&c.level))
            .map(|c| match &c.level {
                Level::Similar(why) => format!("{} ({why})", c.field.as_str()),
                _ => c.field.as_str().to_owned(),
            })
            .collect()
    }
    /// Fields that agree.
    pub fn agreed(&self) -> Vec<String> {
        self.names(|l| *l == Level::Agree)
    }
    /// Fields that are close, with why.
    pub fn similar(&self) -> Vec<String> {
        self.names(|l| matches!(l, Level::Similar(_)))
    }
    /// Fields that disagree.
    pub fn disagreed(&self) -> Vec<String> {
        self.names(|l| *l == Level::Disagree)
    }
    fn level(&self, field: Field) -> Option<&Level> {
        self.fields.iter().find(|c| c.field == field).map(|c| &c.level)
    }
    /// `score 41.3; agreed: ...; similar: ...; disagreed: ...`
    pub fn summary(&self) -> String {
        let mut s = format!("score {:.1}", self.total);
        if self.deterministic {
            s.push_str(", same strong identifier");
        }
        for (what, list) in [("agreed", self.agreed()), ("similar", self.similar()), ("disagreed", self.disagreed())] {
            if !list.is_empty() {
                s.push_str(&format!("; {what}: {}", list.join(", ")));
            }
        }
        s
    }
}

/// The compared values of a Patient, normalised.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    family: String,
    given: String,
    birth: String,
    sex: String,
    address: String,
    postal: String,
    phone: String,
    identifiers: Vec<(String, String)>,
}

impl Features {
    /// The features of a Patient resource; `config` says which identifier
    /// systems are strong.
    pub fn of(patient: &Value, config: &Config) -> Self {
        let name = &patient["name"][0];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let address = &patient["address"][0];
        let line: Vec<String> =
            address["line"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect();
        let phone = patient["telecom"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["system"] == "phone")
            .map(|t| text(&t["value"]))
            .unwrap_or_default();
        let identifiers = patient["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| Some((i["system"].as_str()?.to_owned(), i["value"].as_str()?.trim().to_owned())))
            .filter(|(s, v)| config.strong(s) && !v.is_empty())
            .collect();
        let sex = text(&patient["gender"]);
        Self {
            family: name_key(&text(&name["family"])),
            given: name_key(&text(&name["given"][0])),
            birth: text(&patient["birthDate"]),
            sex: if sex == "male" || sex == "female" { sex } else { String::new() },
            address: normalise_address(&line.join(" ")),
            postal: text(&address["postalCode"]).chars().filter(char::is_ascii_alphanumeric).take(5).collect(),
            phone: phone_digits(&phone),
            identifiers,
        }
    }

    /// The keys of the blocks the record is in.
    pub fn blocks(&self) -> Vec<String> {
        let mut keys = Vec::new();
        if !self.birth.is_empty() {
            keys.push(format!("b:{}", self.birth));
        }
        if !self.family.is_empty() && self.birth.len() >= 4 {
            // A birth date with its day and month transposed or mistyped.
            let initial = self.given.chars().next().unwrap_or('-');
            keys.push(format!("n:{}:{initial}:{}", soundex(&self.family), &self.birth[..4]));
        }
        if !self.family.is_empty() && !self.given.is_empty() && self.birth.len() == 10 {
            // A birth year mistyped.
            keys.push(format!("y:{}:{}:{}", soundex(&self.family), soundex(&self.given), &self.birth[5..]));
        }
        if self.phone.len() >= 7 {
            keys.push(format!("p:{}", self.phone));
        }
        for (s, v) in &self.identifiers {
            keys.push(format!("i:{s}|{v}"));
        }
        keys
    }
}

/// Lower case, accents folded, letters and digits only.
fn name_key(s: &str) -> String {
    fold(s).chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

/// Lower case with Latin accents folded to their base letters; other
/// characters kept.
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        let base = match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' => "a",
            'æ' => "ae",
            'ç' | 'č' | 'ć' => "c",
            'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' | 'ě' => "e",
            'ì' | 'í' | 'î' | 'ï' | 'ī' => "i",
            'ñ' | 'ń' => "n",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' => "o",
            'œ' => "oe",
            'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' => "u",
            'ý' | 'ÿ' => "y",
            'ß' => "ss",
            'š' | 'ś' => "s",
            'ž' | 'ź' | 'ż' => "z",
            'ł' => "l",
            'ř' => "r",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(base);
    }
    out
}

/// An address line in one spelling: lower case, no punctuation, the usual
/// abbreviations (St, Ave, Apt, N...) written out.
pub fn normalise_address(line: &str) -> String {
    let folded = fold(line);
    let cleaned: String = folded.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { ' ' }).collect();
    cleaned
        .split_whitespace()
        .map(|w| match w {
            "st" | "str" => "street",
            "ave" | "av" => "avenue",
            "dr" => "drive",
            "ln" => "lane",
            "rd" => "road",
            "blvd" => "boulevard",
            "ct" => "court",
            "pl" => "place",
            "hwy" => "highway",
            "pkwy" => "parkway",
            "cir" => "circle",
            "n" => "north",
            "s" => "south",
            "e" => "east",
            "w" => "west",
            "apt" | "unit" | "ste" | "suite" => "unit",
            w => w,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The digits of a phone number, the last ten (a leading country code 1
/// dropped).
pub fn phone_digits(phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    if digits.len() > 10 { digits[digits.len() - 10..].to_owned() } else { digits }
}

/// American Soundex of an ASCII name key.
pub fn soundex(name: &str) -> String {
    let code = |c: char| match c {
        'b' | 'f' | 'p' | 'v' => '1',
        'c' | 'g' | 'j' | 'k' | 'q' | 's' | 'x' | 'z' => '2',
        'd' | 't' => '3',
        'l' => '4',
        'm' | 'n' => '5',
        'r' => '6',
        'h' | 'w' => '-',
        _ => '0',
    };
    let mut chars = name.chars().filter(char::is_ascii_alphabetic);
    let Some(first) = chars.next() else { return String::new() };
    let mut out = String::from(first.to_ascii_uppercase());
    let mut last = code(first);
    for c in chars {
        let d = code(c);
        if d == '-' {
            continue;
        }
        if d != '0' && d != last {
            out.push(d);
            if out.len() == 4 {
                break;
            }
        }
        last = d;
    }
    while out.len() < 4 {
        out.push('0');
    }
    out
}

/// Groups of given names that are the same name (English diminutives).
const NICKNAMES: &[&[&str]] = &[
    &["william", "bill", "billy", "will", "willy", "liam"],
    &["robert", "bob", "bobby", "rob", "robbie", "bert"],
    &["richard", "rick", "ricky", "dick", "rich"],
    &["james", "jim", "jimmy", "jamie"],
    &["john", "jack", "johnny", "jon"],
    &["jonathan", "jon", "jonny"],
    &["michael", "mike", "mikey", "mick"],
    &["thomas", "tom", "tommy"],
    &["daniel", "dan", "danny"],
    &["david", "dave", "davey"],
    &["joseph", "joe", "joey"],
    &["jose", "pepe"],
    &["charles", "charlie", "chuck", "chas"],
    &["christopher", "chris", "kit"],
    &["anthony", "tony"],
    &["edward", "ed", "eddie", "ted", "ned"],
    &["andrew", "andy", "drew"],
    &["steven", "stephen", "steve"],
    &["matthew", "matt"],
    &["nicholas", "nick", "nicky"],
    &["alexander", "alex", "sandy"],
    &["samuel", "sam", "sammy"],
    &["benjamin", "ben", "benny"],
    &["timothy", "tim", "timmy"],
    &["kenneth", "ken", "kenny"],
    &["ronald", "ron", "ronnie"],
    &["donald", "don", "donnie"],
    &["gerald", "gerry", "jerry"],
    &["lawrence", "larry"],
    &["raymond", "ray"],
    &["gregory", "greg"],
    &["jeffrey", "geoffrey", "jeff"],
    &["peter", "pete"],
    &["frederick", "fred", "freddie"],
    &["francis", "frank", "frankie"],
    &["henry", "hank", "harry"],
    &["albert", "al", "bert"],
    &["patrick", "pat", "paddy"],
    &["elizabeth", "liz", "lizzie", "beth", "betty", "eliza", "betsy"],
    &["katherine", "catherine", "kathryn", "kate", "katie", "kathy", "cathy", "kat"],
    &["margaret", "maggie", "meg", "peggy", "marge"],
    &["jennifer", "jen", "jenny"],
    &["jessica", "jess", "jessie"],
    &["rebecca", "becky", "becca"],
    &["victoria", "vicky", "tori"],
    &["susan", "sue", "susie"],
    &["patricia", "pat", "patty", "trish"],
    &["deborah", "debra", "debbie", "deb"],
    &["barbara", "barb", "babs"],
    &["dorothy", "dot", "dottie"],
    &["sarah", "sara", "sally"],
    &["ann", "anne", "anna", "annie", "nancy"],
    &["karen", "karin", "caren"],
    &["emily", "em", "emmy"],
    &["olivia", "liv", "livvy"],
    &["hannah", "hanna"],
    &["sofia", "sophia", "sophie"],
    &["francoise", "francois", "fran"],
    &["zoe", "zoey"],
];

fn nicknames(a: &str, b: &str) -> bool {
    NICKNAMES.iter().any(|group| group.contains(&a) && group.contains(&b))
}

fn compare_names(a: &str, b: &str, given: bool) -> (Level, f64) {
    if a.is_empty() || b.is_empty() {
        return (Level::Missing, 0.0);
    }
    if a == b {
        return (Level::Agree, 1.0);
    }
    if given && nicknames(a, b) {
        return (Level::Similar("nickname"), 0.95);
    }
    if given && (a.len() == 1 || b.len() == 1) && a.chars().next() == b.chars().next() {
        return (Level::Similar("initial"), 0.9);
    }
    if !given && a.len().min(b.len()) >= 3 && (a.contains(b) || b.contains(a)) {
        return (Level::Similar("part of a compound name"), 0.93);
    }
    let jw = strsim::jaro_winkler(a, b);
    if jw >= SIMILAR { (Level::Similar("typo"), jw) } else { (Level::Disagree, 0.0) }
}

fn compare_dates(a: &str, b: &str) -> (Level, f64) {
    if a.is_empty() || b.is_empty() {
        return (Level::Missing, 0.0);
    }
    if a == b {
        return (Level::Agree, 1.0);
    }
    if a.len() == 10 && b.len() == 10 {
        let (ay, am, ad) = (&a[..4], &a[5..7], &a[8..10]);
        let (by, bm, bd) = (&b[..4], &b[5..7], &b[8..10]);
        if ay == by && am == bd && ad == bm {
            return (Level::Similar("day and month transposed"), 0.93);
        }
        if a.chars().zip(b.chars()).filter(|(x, y)| x != y).count() == 1 {
            // Weaker than a transposition: some forty dates are one digit
            // away from any date, one is its transposition.
            return (Level::Similar("one digit off"), 0.88);
        }
    }
    (Level::Disagree, 0.0)
}

/// Compares two records.
pub fn compare(a: &Features, b: &Features, config: &Config) -> Score {
    let mut fields = Vec::with_capacity(Field::ALL.len());
    let mut push = |field: Field, (level, s): (Level, f64)| {
        let w = config.weight(field);
        let weight = match level {
            Level::Agree => w.agree,
            Level::Disagree => w.disagree,
            Level::Missing => 0.0,
            Level::Similar(_) => w.partial(s),
        };
        fields.push(Comparison { field, level, weight });
    };
    push(Field::Family, compare_names(&a.family, &b.family, false));
    push(Field::Given, compare_names(&a.given, &b.given, true));
    push(Field::BirthDate, compare_dates(&a.birth, &b.birth));
    let exact = |x: &str, y: &str| {
        if x.is_empty() || y.is_empty() {
            (Level::Missing, 0.0)
        } else if x == y {
            (Level::Agree, 1.0)
        } else {
            (Level::Disagree, 0.0)
        }
    };
    push(Field::Sex, exact(&a.sex, &b.sex));
    let address = if a.address.is_empty() || b.address.is_empty() {
        (Level::Missing, 0.0)
    } else if a.address == b.address && (a.postal.is_empty() || b.postal.is_empty() || a.postal == b.postal) {
        (Level::Agree, 1.0)
    } else {
        let jw = strsim::jaro_winkler(&a.address, &b.address);
        if jw >= 0.92 && (a.postal == b.postal || a.postal.is_empty() || b.postal.is_empty()) {
            (Level::Similar("typo"), jw)
        } else if !a.postal.is_empty() && a.postal == b.postal {
            (Level::Similar("same postal code"), 0.85)
        } else {
            (Level::Disagree, 0.0)
        }
    };
    push(Field::Address, address);
    push(Field::Phone, exact(&a.phone, &b.phone));
    let shared: Vec<&(String, String)> =
        a.identifiers.iter().filter(|(s, _)| b.identifiers.iter().any(|(t, _)| t == s)).collect();
    let identifier = if shared.is_empty() {
        (Level::Missing, 0.0)
    } else if shared.iter().any(|id| b.identifiers.contains(id)) {
        (Level::Agree, 1.0)
    } else {
        (Level::Disagree, 0.0)
    };
    push(Field::Identifier, identifier);
    let total = fields.iter().map(|c| c.weight).sum();
    let mut score = Score { total, fields, deterministic: false, verdict: Verdict::Distinct };
    score.deterministic = score.level(Field::Identifier) == Some(&Level::Agree);
    let veto = [Field::Given, Field::Sex, Field::BirthDate].iter().any(|f| score.level(*f) == Some(&Level::Disagree));
    // A shared strong identifier confirms a person whose birth date and one
    // of whose names are the same or close; otherwise the number was
    // mistyped or reused, and a human looks.
    let close = |f: Field| matches!(score.level(f), Some(Level::Agree | Level::Similar(_)));
    let confirmed = close(Field::BirthDate) && (close(Field::Family) || close(Field::Given));
    score.verdict = if score.deterministic {
        if confirmed { Verdict::Match } else { Verdict::Review }
    } else if score.total >= config.upper && !veto {
        Verdict::Match
    } else if score.total >= config.lower {
        Verdict::Review
    } else {
        Verdict::Distinct
    };
    score
}

/// Every pair of records (by index, first < second) sharing a block.
pub fn candidate_pairs(records: &[Features]) -> Vec<(usize, usize)> {
    let mut blocks: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, f) in records.iter().enumerate() {
        for key in f.blocks() {
            blocks.entry(key).or_default().push(i);
        }
    }
    let mut pairs: BTreeSet<(usize, usize)> = BTreeSet::new();
    for members in blocks.values().filter(|m| m.len() > 1 && m.len() <= MAX_BLOCK) {
        for (n, &i) in members.iter().enumerate() {
            for &j in &members[n + 1..] {
                if i != j {
                    pairs.insert((i.min(j), i.max(j)));
                }
            }
        }
    }
    pairs.into_iter().collect()
}

/// The verdict on every candidate pair that is not `Distinct`.
pub fn find(records: &[Features], config: &Config) -> Vec<(usize, usize, Score)> {
    candidate_pairs(records)
        .into_iter()
        .filter_map(|(i, j)| {
            let score = compare(&records[i], &records[j], config);
            (score.verdict != Verdict::Distinct).then_some((i, j, score))
        })
        .collect()
}

/// A source record in a merge or review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef {
    /// The table.
    pub table: String,
    /// File and line.
    pub provenance: Provenance,
    /// The record's key.
    pub key: String,
}

impl std::fmt::Display for RecordRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}]", self.provenance, self.key)
    }
}

impl RecordRef {
    fn to_json(&self) -> Value {
        let (file, line) = match &self.provenance {
            Provenance::FileLine { file, line } => (json!(file), json!(line)),
            Provenance::TableKey { table, .. } => (json!(table), Value::Null),
        };
        json!({ "table": self.table, "file": file, "line": line, "key": self.key })
    }
}

/// The other side of a pair: a source record, or a patient already in Hearth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Other {
    /// A record of the same export.
    Source(RecordRef),
    /// A Patient in Hearth, by id.
    Hearth(String),
}

impl std::fmt::Display for Other {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Other::Source(r) => write!(f, "{r}"),
            Other::Hearth(id) => write!(f, "Patient/{id} in Hearth"),
        }
    }
}

/// A merge (the record folded into the other) or a pair for review.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The merged record (a merge), or the later record (a review).
    pub record: RecordRef,
    /// The survivor (a merge) or the other record (a review).
    pub other: Other,
    /// The comparison.
    pub score: Score,
    /// The analyst's decision that made it (`None`: the matching's own
    /// verdict; a review without one is pending).
    pub decided: Option<crate::review::Decision>,
    /// The two Patient resources compared (the record's, the other's), for
    /// the reviewer; never written to a report.
    pub patients: Box<[Value; 2]>,
}

impl Pair {
    /// The report's entry: both sides, the score and its fields, the
    /// pair's id and the decision (`null`: automatic for a merge, pending
    /// for a review).
    pub fn to_json(&self, other_key: &str) -> Value {
        let other = match &self.other {
            Other::Source(r) => r.to_json(),
            Other::Hearth(id) => json!({ "hearth": format!("Patient/{id}") }),
        };
        json!({
            "pair": crate::review::PairKey::of(self).id(),
            "record": self.record.to_json(),
            other_key: other,
            "score": (self.score.total * 10.0).round() / 10.0,
            "deterministic": self.score.deterministic,
            "agreed": self.score.agreed(),
            "similar": self.score.similar(),
            "disagreed": self.score.disagreed(),
            "decision": self.decided.as_ref().map(crate::review::Decision::to_json),
        })
    }

    /// The compared fields of both patients as a reviewer reads them, with
    /// what the comparison found: `(field, record's value, other's value,
    /// level)`.
    pub fn side_by_side(&self, config: &Config) -> Vec<(Field, String, String, String)> {
        let (a, b) = (shown(&self.patients[0], config), shown(&self.patients[1], config));
        Field::ALL
            .iter()
            .map(|f| {
                let level = match self.score.level(*f) {
                    Some(Level::Agree) => "agrees".to_owned(),
                    Some(Level::Similar(why)) => format!("similar ({why})"),
                    Some(Level::Disagree) => "disagrees".to_owned(),
                    Some(Level::Missing) | None => "missing".to_owned(),
                };
                let get = |list: &[(Field, String)]| {
                    list.iter().find(|(g, _)| g == f).map(|(_, v)| v.clone()).unwrap_or_default()
                };
                (*f, get(&a), get(&b), level)
            })
            .collect()
    }
}

/// The compared fields of a Patient as written (not normalised): family
/// and given names, birth date, sex, the first address, phones, strong
/// identifiers.
pub fn shown(patient: &Value, config: &Config) -> Vec<(Field, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let name = &patient["name"][0];
    let given: Vec<String> = name["given"].as_array().into_iter().flatten().map(text).collect();
    let address = &patient["address"][0];
    let mut place: Vec<String> = address["line"].as_array().into_iter().flatten().map(text).collect();
    for part in ["city", "state", "postalCode"] {
        if let Some(v) = address[part].as_str() {
            place.push(v.to_owned());
        }
    }
    let phones: Vec<String> = patient["telecom"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["system"] == "phone")
        .map(|t| text(&t["value"]))
        .collect();
    let ids: Vec<String> = patient["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["system"].as_str().is_some_and(|s| config.strong(s)))
        .map(|i| format!("{} {}", text(&i["system"]).rsplit(':').next().unwrap_or_default(), text(&i["value"])))
        .collect();
    vec![
        (Field::Family, text(&name["family"])),
        (Field::Given, given.join(" ")),
        (Field::BirthDate, text(&patient["birthDate"])),
        (Field::Sex, text(&patient["gender"])),
        (Field::Address, place.join(", ")),
        (Field::Phone, phones.join(", ")),
        (Field::Identifier, ids.join(", ")),
    ]
}

/// Adds to `survivor` (a Patient) what `duplicate` holds and it lacks:
/// identifiers (marked `use = old`, so the duplicate's legacy key and record
/// number still find the patient), phone numbers and e-mail addresses not
/// already there, and an address, birth date, sex or name when it has none.
/// Nothing of the survivor is overwritten.
pub fn enrich(survivor: &mut Value, duplicate: &Value) -> bool {
    let Some(target) = survivor.as_object_mut() else { return false };
    let mut changed = false;
    for id in duplicate["identifier"].as_array().into_iter().flatten() {
        let list = target.entry("identifier").or_insert_with(|| json!([]));
        let Some(list) = list.as_array_mut() else { continue };
        let present = list.iter().any(|i| i["system"] == id["system"] && i["value"] == id["value"]);
        if !present {
            let mut id = id.clone();
            id["use"] = json!("old");
            list.push(id);
            changed = true;
        }
    }
    for t in duplicate["telecom"].as_array().into_iter().flatten() {
        let list = target.entry("telecom").or_insert_with(|| json!([]));
        let Some(list) = list.as_array_mut() else { continue };
        let digits = |v: &Value| phone_digits(v.as_str().unwrap_or_default());
        let present = list.iter().any(|u| {
            u["system"] == t["system"]
                && (u["value"] == t["value"] || (t["system"] == "phone" && digits(&u["value"]) == digits(&t["value"])))
        });
        if !present {
            list.push(t.clone());
            changed = true;
        }
    }
    for element in ["address", "birthDate", "gender", "name"] {
        if !target.contains_key(element)
            && let Some(v) = duplicate.get(element)
        {
            target.insert(element.to_owned(), v.clone());
            changed = true;
        }
    }
    changed
}

/// Where the references to merged records point now: `Patient/<id of the
/// merged record>` to `Patient/<id of the survivor>` (in the export, or
/// already in Hearth).
pub fn redirects(run: &DryRun) -> HashMap<String, String> {
    run.merges
        .iter()
        .map(|m| {
            let to = match &m.other {
                Other::Source(r) => resource_id(&r.table, &r.key, ""),
                Other::Hearth(id) => id.clone(),
            };
            (format!("Patient/{}", resource_id(&m.record.table, &m.record.key, "")), format!("Patient/{to}"))
        })
        .collect()
}

/// Replaces every reference `from` (`Patient/<id>`) in `value` by `to`;
/// returns the JSON path of the first replaced (the element name).
pub fn redirect(value: &mut Value, from: &str, to: &str) -> Option<String> {
    fn walk(value: &mut Value, from: &str, to: &str, path: &str, found: &mut Option<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if k == "reference" && v.as_str() == Some(from) {
                        *v = json!(to);
                        if found.is_none() {
                            *found = Some(path.to_owned());
                        }
                    } else {
                        let next = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                        walk(v, from, to, &next, found);
                    }
                }
            }
            Value::Array(list) => {
                for v in list {
                    walk(v, from, to, path, found);
                }
            }
            _ => {}
        }
    }
    let mut found = None;
    walk(value, from, to, "", &mut found);
    found
}

/// Whether `value` holds a reference to any of `targets` (`Type/id`).
fn refers_to(value: &Value, targets: &HashSet<String>) -> Option<String> {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "reference"
                    && let Some(r) = v.as_str()
                    && targets.contains(r)
                {
                    return Some(r.to_owned());
                }
                if let Some(found) = refers_to(v, targets) {
                    return Some(found);
                }
            }
            None
        }
        Value::Array(list) => list.iter().find_map(|v| refers_to(v, targets)),
        _ => None,
    }
}

/// What matching against Hearth did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HearthOutcome {
    /// Source patients compared (not yet in Hearth as migration records).
    pub compared: u64,
    /// Merged into an existing Hearth patient.
    pub merged: u64,
    /// Held for review (with their dependent records).
    pub held: u64,
    /// Existing Hearth patients given the legacy identifiers of a merged record.
    pub patients_updated: u64,
}

/// Patient search candidates per query.
const CANDIDATES: usize = 100;

/// Matches the run's source patients against the patients already in
/// Hearth, before loading. A source patient whose Patient is already stored
/// under its derived id (a rerun) is not matched: it is ours. Candidates are
/// Hearth patients of the same birth date, or of the same family name born
/// the same year, other than this export's own patients (those were matched
/// within the source); `progress` is told how many were compared. Then:
///
/// - a match: the source patient is `merged` into the Hearth patient (its
///   Patient is not created; every resource of the run that referred to it
///   refers to the Hearth patient) and, when `update_existing`, the Hearth
///   patient gains the source record's identifiers (`use = old`), so its
///   legacy key and record number find the chart;
/// - a pair for review: the source patient and every record that refers to
///   it are `quarantined`, with the candidate's id in the message.
///
/// The run's counts, issues, merges and reviews are updated.
pub async fn against_hearth(
    service: &domain::Service,
    project: &Project,
    run: &mut DryRun,
    update_existing: bool,
    mut progress: impl FnMut(u64),
) -> Result<HearthOutcome, String> {
    use domain::access::Access;
    use domain::service::{Handling, Return};
    let config = Config::of(project);
    let access = Access::system(crate::load::MIGRATION_ACTOR);
    let mut outcome = HearthOutcome::default();
    let search_page = |params: Vec<(String, String)>| {
        let access = &access;
        async move {
            service
                .search(access, Some("Patient"), &params, Handling::Strict)
                .await
                .map_err(|e| format!("searching Hearth's patients: {}", e.message()))
        }
    };
    let search = |params: Vec<(String, String)>| {
        let access = &access;
        async move {
            let found = service
                .search(access, Some("Patient"), &params, Handling::Strict)
                .await
                .map_err(|e| format!("searching Hearth's patients: {}", e.message()))?;
            let mut out = Vec::new();
            for item in found.page.items {
                let Some(body) = item.body.as_deref() else { continue };
                let value: Value =
                    serde_json::from_str(body).map_err(|e| format!("a stored Patient is unreadable: {e}"))?;
                out.push((item.id.clone(), value));
            }
            Ok::<_, String>(out)
        }
    };

    // The export's own patients: every Patient the run would write, and the
    // records merged within the source.
    let patients: Vec<usize> = run
        .resources
        .iter()
        .enumerate()
        .filter(|(_, o)| o.resource["resourceType"] == "Patient")
        .map(|(i, _)| i)
        .collect();
    let mut own: HashSet<String> =
        patients.iter().filter_map(|&i| run.resources[i].resource["id"].as_str().map(str::to_owned)).collect();
    for m in &run.merges {
        own.insert(resource_id(&m.record.table, &m.record.key, ""));
    }
    let ids: Vec<String> = own.iter().cloned().collect();
    let mut stored: HashSet<String> = HashSet::new();
    for chunk in ids.chunks(50) {
        let params = vec![
            ("_id".to_owned(), chunk.join(",")),
            ("_count".to_owned(), chunk.len().to_string()),
            ("_total".to_owned(), "none".to_owned()),
        ];
        for (id, _) in search(params).await? {
            stored.insert(id);
        }
    }

    // When every patient in Hearth is one of this export's, there is nothing
    // to compare with (a first load into an empty Hearth, a rerun).
    let total =
        search_page(vec![("_total".into(), "accurate".into()), ("_count".into(), "1".into())]).await?.page.total;
    let others = total.is_none_or(|t| t > stored.len() as u64);

    enum Step {
        Merge(String, Value, Score, Option<crate::review::Decision>),
        Hold(String, Value, Score),
    }
    use crate::review::{PairKey, Side};
    let reviewed = run.review.decisions.clone();
    run.review.hearth_checked = true;
    let mut decisions: Vec<(RecordRef, Value, Step)> = Vec::new();
    // Pairs kept apart on review: listed as decided, the record not held.
    let mut separated: Vec<(RecordRef, Value, String, Value, Score, crate::review::Decision)> = Vec::new();
    for &i in &patients {
        let patient = &run.resources[i].resource;
        let id = patient["id"].as_str().unwrap_or_default();
        let output = &run.resources[i];
        let side = Side::Source { table: output.table.clone(), key: output.key.clone() };
        if stored.contains(id) {
            // Loaded already: a decision about it was applied by that load.
            for d in reviewed.list.iter().filter(|d| d.pair.a == side && d.pair.with_hearth()) {
                run.review.loaded.insert(d.pair.clone());
            }
            continue;
        }
        outcome.compared += 1;
        if !others {
            progress(outcome.compared);
            continue;
        }
        let features = Features::of(patient, &config);
        let mut candidates: BTreeMap<String, Value> = BTreeMap::new();
        let count = ("_count".to_owned(), CANDIDATES.to_string());
        if let Some(birth) = patient["birthDate"].as_str() {
            for (cid, value) in search(vec![("birthdate".into(), birth.to_owned()), count.clone()]).await? {
                candidates.insert(cid, value);
            }
        }
        // The same family name born the same year (a transposed or mistyped
        // day or month).
        if let Some(family) = patient["name"][0]["family"].as_str()
            && let Some(year) = patient["birthDate"].as_str().and_then(|b| b.get(..4))
        {
            let params = vec![
                ("family".into(), family.to_owned()),
                ("birthdate".into(), format!("ge{year}-01-01")),
                ("birthdate".into(), format!("le{year}-12-31")),
                count.clone(),
            ];
            for (cid, value) in search(params).await? {
                candidates.insert(cid, value);
            }
        }
        let mut best: Option<(String, Value, Score)> = None;
        let mut forced: Option<(String, Value, Score, crate::review::Decision)> = None;
        let mut kept_apart: Vec<(String, Value, Score, crate::review::Decision)> = Vec::new();
        for (cid, value) in candidates {
            if own.contains(&cid) {
                continue;
            }
            let score = compare(&features, &Features::of(&value, &config), &config);
            // An analyst's decision about this pair (while it still scores
            // as a possible match) overrides the verdict.
            let key = PairKey::new(side.clone(), Side::Hearth(cid.clone()));
            if score.verdict != Verdict::Distinct
                && let Some(d) = reviewed.get(&key)
            {
                match d.verdict {
                    crate::review::Verdict::Merge if forced.is_none() => {
                        forced = Some((cid, value, score, d.clone()));
                    }
                    crate::review::Verdict::Merge => {}
                    crate::review::Verdict::Separate => kept_apart.push((cid, value, score, d.clone())),
                }
                continue;
            }
            let rank = |s: &Score| (s.verdict == Verdict::Match, s.verdict == Verdict::Review, s.total);
            let better = match &best {
                None => score.verdict != Verdict::Distinct,
                Some((_, _, b)) => rank(&score) > rank(b),
            };
            if better {
                best = Some((cid, value, score));
            }
        }
        let output = &run.resources[i];
        let record =
            RecordRef { table: output.table.clone(), provenance: output.provenance.clone(), key: output.key.clone() };
        progress(outcome.compared);
        for (cid, value, score, d) in kept_apart {
            separated.push((record.clone(), patient.clone(), cid, value, score, d));
        }
        match (forced, best) {
            (Some((cid, value, score, d)), _) => {
                decisions.push((record, patient.clone(), Step::Merge(cid, value, score, Some(d))));
            }
            (None, Some((cid, value, score))) if score.verdict == Verdict::Match => {
                decisions.push((record, patient.clone(), Step::Merge(cid, value, score, None)));
            }
            (None, Some((cid, value, score))) => decisions.push((record, patient.clone(), Step::Hold(cid, value, score))),
            (None, None) => {}
        }
    }
    for (record, source_patient, cid, value, score, d) in separated {
        let message = format!(
            "may be the same patient as Patient/{cid}, already in Hearth ({}): kept separate on review ({})",
            score.summary(),
            d.summary()
        );
        push_issue(run, &record, Severity::Information, "reviewed-separate", message);
        run.reviews.push(Pair {
            record,
            other: Other::Hearth(cid),
            score,
            decided: Some(d),
            patients: Box::new([source_patient, value]),
        });
    }

    // Merges: the source patient is not created; its references point at
    // the Hearth patient.
    let mut merged: Vec<(String, String)> = Vec::new();
    let mut held: Vec<((String, String), String)> = Vec::new();
    for (record, source_patient, decision) in decisions {
        match decision {
            Step::Merge(cid, mut existing, score, decided) => {
                let compared = existing.clone();
                if update_existing && enrich_identifiers(&mut existing, &source_patient) {
                    if let Some(map) = existing.as_object_mut() {
                        map.remove("meta");
                    }
                    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
                        "resource": existing,
                        "request": {"method": "PUT", "url": format!("Patient/{cid}")},
                    }]});
                    service.bundle(&access, bundle, "urn:hearth:migrate", Some(Return::Minimal)).await.map_err(
                        |e| format!("adding the legacy identifiers of {record} to Patient/{cid}: {}", e.message()),
                    )?;
                    outcome.patients_updated += 1;
                }
                let how = match &decided {
                    Some(d) => format!("; merged on review ({})", d.summary()),
                    None => String::new(),
                };
                let message = format!(
                    "the same patient as Patient/{cid}, already in Hearth ({}{how}): not created; its records refer to that patient",
                    score.summary()
                );
                push_issue(run, &record, Severity::Information, "merged-duplicate", message);
                run.merges.push(Pair {
                    record: record.clone(),
                    other: Other::Hearth(cid.clone()),
                    score,
                    decided,
                    patients: Box::new([source_patient.clone(), compared]),
                });
                merged.push((format!("Patient/{}", source_patient["id"].as_str().unwrap_or_default()), cid));
                set_disposition(run, &record, Disposition::Merged);
                outcome.merged += 1;
            }
            Step::Hold(cid, value, score) => {
                let message = format!(
                    "may be the same patient as Patient/{cid}, already in Hearth ({}): held for review with its records (pair {}: hearth migrate review)",
                    score.summary(),
                    PairKey::new(
                        Side::Source { table: record.table.clone(), key: record.key.clone() },
                        Side::Hearth(cid.clone())
                    )
                    .id()
                );
                push_issue(run, &record, Severity::Error, "possible-duplicate", message);
                run.reviews.push(Pair {
                    record: record.clone(),
                    other: Other::Hearth(cid.clone()),
                    score,
                    decided: None,
                    patients: Box::new([source_patient.clone(), value]),
                });
                held.push(((record.table.clone(), record.key.clone()), cid));
                outcome.held += 1;
            }
        }
    }
    for (from, cid) in &merged {
        let to = format!("Patient/{cid}");
        let mut redirected: Vec<(RecordRef, String)> = Vec::new();
        for o in run.resources.iter_mut() {
            if let Some(path) = redirect(&mut o.resource, from, &to) {
                let r = RecordRef { table: o.table.clone(), provenance: o.provenance.clone(), key: o.key.clone() };
                if !redirected.iter().any(|(x, _)| *x == r) {
                    redirected.push((r, path));
                }
            }
        }
        for (r, path) in redirected {
            let message = format!("{path} refers to a patient merged into {to} (already in Hearth): it points there");
            push_issue_field(run, &r, Severity::Information, "redirected", &path, message);
        }
    }

    // Holds: the patient and, transitively, every record that refers to it.
    let mut held_records: HashSet<(String, String)> = held.iter().map(|(r, _)| r.clone()).collect();
    loop {
        let targets: HashSet<String> = run
            .resources
            .iter()
            .filter(|o| held_records.contains(&(o.table.clone(), o.key.clone())))
            .map(|o| {
                format!(
                    "{}/{}",
                    o.resource["resourceType"].as_str().unwrap_or_default(),
                    o.resource["id"].as_str().unwrap_or_default()
                )
            })
            .collect();
        let mut added: Vec<(RecordRef, String, String)> = Vec::new();
        for o in &run.resources {
            let k = (o.table.clone(), o.key.clone());
            if held_records.contains(&k) || added.iter().any(|(r, _, _)| r.table == k.0 && r.key == k.1) {
                continue;
            }
            if let Some(target) = refers_to(&o.resource, &targets) {
                let path = reference_path(&o.resource, &target).unwrap_or_else(|| "reference".into());
                added.push((
                    RecordRef { table: o.table.clone(), provenance: o.provenance.clone(), key: o.key.clone() },
                    path,
                    target,
                ));
            }
        }
        if added.is_empty() {
            break;
        }
        for (r, path, target) in added {
            held_records.insert((r.table.clone(), r.key.clone()));
            let message = format!(
                "{path} refers to {target}, which is held for review (a possible duplicate of a patient in Hearth)"
            );
            push_issue_field(run, &r, Severity::Error, "unresolved-reference", &path, message);
        }
    }
    let mut held_list: Vec<RecordRef> = Vec::new();
    for o in &run.resources {
        if held_records.contains(&(o.table.clone(), o.key.clone()))
            && !held_list.iter().any(|r| r.table == o.table && r.key == o.key)
        {
            held_list.push(RecordRef { table: o.table.clone(), provenance: o.provenance.clone(), key: o.key.clone() });
        }
    }
    for r in &held_list {
        set_disposition(run, r, Disposition::Quarantined);
    }
    run.issues
        .sort_by(|a, b| (a.table.as_str(), line_of(&a.provenance)).cmp(&(b.table.as_str(), line_of(&b.provenance))));
    Ok(outcome)
}

fn line_of(p: &Provenance) -> u64 {
    match p {
        Provenance::FileLine { line, .. } => *line,
        Provenance::TableKey { .. } => 0,
    }
}

/// Adds the identifiers of `source` that `existing` lacks (`use = old`).
fn enrich_identifiers(existing: &mut Value, source: &Value) -> bool {
    let only = json!({ "identifier": source["identifier"].clone() });
    enrich(existing, &only)
}

/// The element path of the first reference to `target` in `value`.
fn reference_path(value: &Value, target: &str) -> Option<String> {
    let mut copy = value.clone();
    redirect(&mut copy, target, target)
}

fn push_issue(run: &mut DryRun, r: &RecordRef, severity: Severity, kind: &'static str, message: String) {
    push_issue_field(run, r, severity, kind, "patient", message);
}

fn push_issue_field(
    run: &mut DryRun,
    r: &RecordRef,
    severity: Severity,
    kind: &'static str,
    field: &str,
    message: String,
) {
    run.issues.push(Issue {
        table: r.table.clone(),
        provenance: r.provenance.clone(),
        key: r.key.clone(),
        disposition: Disposition::Converted,
        finding: Finding::new(severity, kind, field, message),
    });
}

/// Moves a converted record to `to`: its resources leave the run, its
/// counts and its issues follow.
fn set_disposition(run: &mut DryRun, r: &RecordRef, to: Disposition) {
    let before = run.resources.len();
    run.resources.retain(|o| !(o.table == r.table && o.key == r.key));
    let removed = (before - run.resources.len()) as u64;
    if let Some(c) = run.tables.get_mut(&r.table) {
        c.converted = c.converted.saturating_sub(1);
        c.resources = c.resources.saturating_sub(removed);
        match to {
            Disposition::Merged => c.merged += 1,
            Disposition::Quarantined => c.quarantined += 1,
            Disposition::Rejected => c.rejected += 1,
            Disposition::Excluded => c.excluded += 1,
            Disposition::Converted => c.converted += 1,
        }
    }
    for issue in run.issues.iter_mut().filter(|i| i.table == r.table && i.key == r.key) {
        issue.disposition = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient(family: &str, given: &str, birth: &str, sex: &str, line: &str, zip: &str, phone: &str) -> Value {
        json!({
            "resourceType": "Patient",
            "identifier": [{ "system": "urn:hearth:local:patients:mrn", "value": format!("M-{family}-{given}-{birth}-{sex}-{line}-{phone}") }],
            "name": [{ "family": family, "given": [given] }],
            "birthDate": birth,
            "gender": sex,
            "address": [{ "line": [line], "postalCode": zip }],
            "telecom": [{ "system": "phone", "value": phone }],
        })
    }

    fn score(a: &Value, b: &Value) -> Score {
        let config = Config::default();
        compare(&Features::of(a, &config), &Features::of(b, &config), &config)
    }

    #[test]
    fn a_typo_in_the_given_name_with_everything_else_equal_is_a_match() {
        let a = patient("García", "Karen", "1971-05-09", "female", "12 Oak Ave", "62701", "(217) 555-0101");
        let b = patient("Garcia", "Kraen", "1971-05-09", "female", "12 Oak Avenue", "62701", "217-555-0101");
        let s = score(&a, &b);
        assert_eq!(s.verdict, Verdict::Match, "{}", s.summary());
        assert!(s.agreed().contains(&"family".to_owned()), "accents folded: {}", s.summary());
        assert!(s.agreed().contains(&"address".to_owned()), "Ave = Avenue: {}", s.summary());
        assert!(s.agreed().contains(&"phone".to_owned()), "digits only: {}", s.summary());
        assert_eq!(s.similar(), ["given (typo)"]);
        assert_eq!(s.disagreed(), ["identifier"], "a new record number");
    }

    #[test]
    fn nicknames_and_initials_are_close_not_different() {
        let a = patient("Smith", "William", "1950-01-02", "male", "1 Main St", "53703", "608-555-0199");
        let b = patient("Smith", "Bill", "1950-01-02", "male", "1 Main Street", "53703", "608 555 0199");
        let s = score(&a, &b);
        assert_eq!(s.verdict, Verdict::Match, "{}", s.summary());
        assert_eq!(s.similar(), ["given (nickname)"]);
        let c = patient("Smith", "W", "1950-01-02", "male", "1 Main St", "53703", "608-555-0199");
        assert_eq!(score(&a, &c).similar(), ["given (initial)"]);
    }

    #[test]
    fn a_transposed_birth_date_at_another_address_is_for_review() {
        let a = patient("Müller", "José", "1987-03-04", "male", "1 Main St", "62701", "217-555-0100");
        let b = patient("Muller", "Jose", "1987-04-03", "male", "77 Cedar Ln", "53711", "608-555-0142");
        let s = score(&a, &b);
        assert_eq!(s.verdict, Verdict::Review, "{}", s.summary());
        assert_eq!(s.similar(), ["birth_date (day and month transposed)"]);
        let c = patient("Muller", "Jose", "1987-03-05", "male", "77 Cedar Ln", "53711", "608-555-0142");
        assert_eq!(score(&a, &c).similar(), ["birth_date (one digit off)"]);
        // The same moved patient with the date right is still only reviewed.
        let d = patient("Muller", "Jose", "1987-03-04", "male", "77 Cedar Ln", "53711", "608-555-0142");
        assert_eq!(score(&a, &d).verdict, Verdict::Review, "{}", score(&a, &d).summary());
    }

    #[test]
    fn same_name_and_birth_date_but_another_sex_and_address_is_never_merged() {
        let a = patient("Jones", "Jordan", "1990-06-15", "male", "4 Elm St", "55901", "507-555-0111");
        let b = patient("Jones", "Jordan", "1990-06-15", "female", "980 Pine Rd", "61602", "309-555-0123");
        let s = score(&a, &b);
        assert_ne!(s.verdict, Verdict::Match, "{}", s.summary());
        // Twins at one address, one phone: a high score, a plain given-name
        // disagreement: reviewed, never merged.
        let c = patient("Jones", "Jordan", "1990-06-15", "male", "4 Elm St", "55901", "507-555-0111");
        let d = patient("Jones", "Taylor", "1990-06-15", "male", "4 Elm St", "55901", "507-555-0111");
        let s = score(&c, &d);
        assert!(s.total >= Config::default().upper, "{}", s.summary());
        assert_eq!(s.verdict, Verdict::Review, "{}", s.summary());
        // Spouses: same family, address and phone; nothing else.
        let e = patient("Jones", "Jordan", "1990-06-15", "male", "4 Elm St", "55901", "507-555-0111");
        let f = patient("Jones", "Jamie", "1988-11-02", "female", "4 Elm St", "55901", "507-555-0111");
        assert_eq!(score(&e, &f).verdict, Verdict::Distinct, "{}", score(&e, &f).summary());
        // A common name with the same birth date and sex and nothing else
        // known: it needs corroboration, a human looks.
        let bare = |given: &str| json!({ "name": [{ "family": "Smith", "given": [given] }], "birthDate": "1980-01-01", "gender": "male" });
        let s = score(&bare("John"), &bare("John"));
        assert_eq!(s.verdict, Verdict::Review, "{}", s.summary());
        // Strangers sharing a birth date.
        let g = patient("Taylor", "Grace", "1990-06-15", "female", "980 Pine Rd", "61602", "309-555-0123");
        assert_eq!(score(&a, &g).verdict, Verdict::Distinct);
    }

    #[test]
    fn the_same_strong_identifier_is_a_deterministic_match() {
        let mut a = patient("Brown", "Ann", "1960-02-02", "female", "1 Main St", "62701", "217-555-0100");
        let mut b = patient("Browne-Smith", "Anne", "1960-02-02", "female", "9 Lake Shore Dr", "60601", "312-555-0100");
        b["identifier"] = a["identifier"].clone();
        let s = score(&a, &b);
        assert!(s.deterministic && s.verdict == Verdict::Match, "{}", s.summary());
        // The same number on a plainly different person: reviewed.
        b["name"][0]["family"] = json!("Okafor");
        b["birthDate"] = json!("1999-09-19");
        assert_eq!(score(&a, &b).verdict, Verdict::Review);
        // The legacy key is not a strong identifier by default.
        a["identifier"] = json!([{ "system": "urn:hearth:local:patients:legacy-id", "value": "P1" }]);
        b["identifier"] = a["identifier"].clone();
        assert!(!score(&a, &b).deterministic);
    }

    #[test]
    fn weights_and_thresholds_come_from_the_project() {
        let text = format!(
            "{}\n[matching]\nupper = 40.0\nlower = 20.0\nidentifiers = [\"ssn\"]\n\n[matching.weights]\nphone = {{ m = 0.9, u = 0.5 }}\n",
            crate::project::PRESETS[0].text
        );
        let project = crate::project::parse(&text, std::path::Path::new("m.toml")).expect("parses");
        let config = Config::of(&project);
        assert_eq!((config.upper, config.lower), (40.0, 20.0));
        assert_eq!(config.identifiers, ["ssn"]);
        assert!((config.weights[&Field::Phone].agree - (0.9f64 / 0.5).log2()).abs() < 1e-9);
        let bad = text.replace("u = 0.5", "u = 0.95");
        let e = crate::project::parse(&bad, std::path::Path::new("m.toml")).expect_err("m below u");
        assert!(e.field.starts_with("matching.weights") && e.message.contains("0 < u < m < 1"), "{e}");
        let bad = text.replace("lower = 20.0", "lower = 50.0");
        let e = crate::project::parse(&bad, std::path::Path::new("m.toml")).expect_err("lower above upper");
        assert_eq!(e.field, "matching.lower", "{e}");
        let bad = text.replace("lower = 20.0", "lowr = 20.0");
        let e = crate::project::parse(&bad, std::path::Path::new("m.toml")).expect_err("unknown key");
        assert!(e.message.contains("unknown field"), "{e}");
        assert!(e.line > 0);
    }

    #[test]
    fn blocks_pair_what_may_match_and_not_everything() {
        let config = Config::default();
        let records: Vec<Features> = [
            patient("Smith", "Ann", "1960-02-02", "female", "1 Main St", "62701", "217-555-0100"),
            patient("Smyth", "Anne", "1960-02-20", "female", "2 Oak Ave", "62702", "217-555-0199"),
            patient("Okafor", "Rex", "1999-09-09", "male", "3 Elm St", "62703", "217-555-0177"),
            patient("Okafor", "Rex", "1999-09-09", "male", "3 Elm St", "62703", "217-555-0177"),
        ]
        .iter()
        .map(|p| Features::of(p, &config))
        .collect();
        let pairs = candidate_pairs(&records);
        assert_eq!(pairs, [(0, 1), (2, 3)], "Smith/Smyth share a Soundex and an initial");
        assert_eq!(soundex("robert"), "R163");
        assert_eq!(soundex("rupert"), "R163");
        assert_eq!(soundex("ashcraft"), "A261");
        let found = find(&records, &config);
        assert!(found.iter().any(|(i, j, s)| (*i, *j) == (2, 3) && s.verdict == Verdict::Match));
    }

    #[test]
    fn enrich_adds_what_is_missing_and_overwrites_nothing() {
        let mut survivor = json!({
            "resourceType": "Patient",
            "identifier": [{ "system": "a", "value": "1" }],
            "telecom": [{ "system": "phone", "value": "(217) 555-0100" }],
        });
        let duplicate = json!({
            "resourceType": "Patient",
            "identifier": [{ "system": "a", "value": "2" }, { "system": "a", "value": "1" }],
            "telecom": [{ "system": "phone", "value": "217-555-0100" }, { "system": "phone", "value": "217-555-0199" }],
            "address": [{ "line": ["1 Main St"] }],
        });
        assert!(enrich(&mut survivor, &duplicate));
        assert_eq!(survivor["identifier"].as_array().map(Vec::len), Some(2));
        assert_eq!(survivor["identifier"][1], json!({ "system": "a", "value": "2", "use": "old" }));
        assert_eq!(survivor["telecom"].as_array().map(Vec::len), Some(2));
        assert_eq!(survivor["address"][0]["line"][0], "1 Main St");
        assert!(!enrich(&mut survivor, &duplicate), "a second time changes nothing");
        let mut obs = json!({ "subject": { "reference": "Patient/x" }, "performer": [{ "reference": "Patient/x" }] });
        assert_eq!(redirect(&mut obs, "Patient/x", "Patient/y").as_deref(), Some("subject"));
        assert_eq!(obs["performer"][0]["reference"], "Patient/y");
    }
}
