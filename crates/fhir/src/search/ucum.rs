//! A small UCUM canonicaliser (<https://ucum.org/ucum>) for quantity search:
//! `mg` and `g` compare once both are expressed in base units
//! (<http://hl7.org/fhir/R4/search.html#quantity>).
//!
//! It parses the UCUM expression syntax (products `.`, quotients `/`,
//! exponents, parentheses, annotations `{...}`, the prefixes of table 1 and
//! `10*n`/`10^n`) over the unit atoms that clinical data uses: mass, length,
//! volume, time, amount of substance, equivalents, osmoles, pressure
//! (`mm[Hg]`, `cm[H2O]`, `Pa`, `bar`), energy, frequency, catalytic activity,
//! percent and parts per thousand/million, international units and the
//! customary units of weight, length and volume. Units outside that set, and
//! the non-linear ones (`Cel`, `[degF]`, `[pH]`), have no canonical form: such
//! quantities are compared by their unit code as written.
//!
//! Hand-written rather than a dependency: the UCUM crates on crates.io are
//! either unmaintained single releases or much larger than the one function
//! search needs, and search needs the conversion factor to be computed the
//! same way at index and at query time (see ARCHITECTURE.md).
//!
//! Deviation from UCUM, on purpose: `mol` (and `eq`, `osm`) is a base
//! dimension of its own instead of 6.0221367e23 times a pure number, so that
//! `mmol/L` is never comparable with a cell count such as `10*9/L`.

/// The UCUM code system URI of FHIR quantities.
pub const UCUM: &str = "http://unitsofmeasure.org";

/// Base dimensions, in the order the canonical unit is written.
const BASES: [&str; 9] = ["g", "m", "s", "K", "C", "cd", "rad", "mol", "[iU]"];

type Dims = [i8; BASES.len()];

/// A unit in base units: a value in the unit times `factor` is the value in
/// the canonical `unit` (e.g. `mg` -> factor 0.001, unit `g`).
#[derive(Debug, Clone, PartialEq)]
pub struct Canonical {
    pub factor: f64,
    pub unit: String,
}

/// The canonical form of a UCUM unit code, or `None` when the code is not
/// understood (or not linear).
pub fn canonical(code: &str) -> Option<Canonical> {
    if code.is_empty() || code.len() > 64 {
        return None;
    }
    // Index extraction meets the same few units over and over, often the
    // same one several times in a row (a quantity and its composites).
    thread_local! {
        static LAST: std::cell::RefCell<Option<(String, Option<Canonical>)>> = const { std::cell::RefCell::new(None) };
        static SEEN: std::cell::RefCell<std::collections::HashMap<String, Option<Canonical>>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    let last = LAST.with(|last| match &*last.borrow() {
        Some((unit, known)) if unit == code => Some(known.clone()),
        _ => None,
    });
    if let Some(known) = last {
        return known;
    }
    let result = match SEEN.with(|seen| seen.borrow().get(code).cloned()) {
        Some(known) => known,
        None => {
            let parsed = parse_canonical(code);
            SEEN.with(|seen| {
                let mut seen = seen.borrow_mut();
                if seen.len() >= 512 {
                    seen.clear();
                }
                seen.insert(code.to_string(), parsed.clone());
            });
            parsed
        }
    };
    LAST.with(|last| *last.borrow_mut() = Some((code.to_string(), result.clone())));
    result
}

fn parse_canonical(code: &str) -> Option<Canonical> {
    let mut parser = Parser { text: code.as_bytes(), pos: 0, depth: 0 };
    let (factor, dims) = parser.term()?;
    if parser.pos != parser.text.len() || !factor.is_finite() || factor <= 0.0 {
        return None;
    }
    Some(Canonical { factor, unit: unit_text(&dims) })
}

/// Converts a value range in unit `code` to its canonical range and unit.
/// The bounds are rounded to 12 significant digits, so that the same
/// decimal reached through different units (`72.45 kg`, `0.07245 t`) is the
/// same number: stored and searched ranges that should touch do.
pub fn canonical_range(low: f64, high: f64, code: &str) -> Option<(f64, f64, String)> {
    let c = canonical(code)?;
    Some((round_significant(low * c.factor), round_significant(high * c.factor), c.unit))
}

/// `x` rounded to 12 significant decimal digits (infinities and zero as they are).
fn round_significant(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    // Digits after the decimal point that keep 12 significant digits.
    let keep = 11 - x.abs().log10().floor() as i32;
    if (0..=22).contains(&keep) {
        let scale = 10f64.powi(keep);
        (x * scale).round() / scale
    } else if (-22..0).contains(&keep) {
        let scale = 10f64.powi(-keep);
        (x / scale).round() * scale
    } else {
        x
    }
}

fn unit_text(dims: &Dims) -> String {
    let mut out = String::new();
    for (base, &exp) in BASES.iter().zip(dims) {
        if exp == 0 {
            continue;
        }
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(base);
        if exp != 1 {
            out.push_str(&exp.to_string());
        }
    }
    if out.is_empty() { "1".to_string() } else { out }
}

/// (symbol, factor to base units, dimension exponents in `BASES` order, metric).
/// Metric atoms take prefixes.
struct Atom {
    symbol: &'static str,
    factor: f64,
    dims: Dims,
    metric: bool,
}

const fn d(g: i8, m: i8, s: i8, k: i8, c: i8, mol: i8, iu: i8) -> Dims {
    [g, m, s, k, c, 0, 0, mol, iu]
}

const NONE: Dims = d(0, 0, 0, 0, 0, 0, 0);
const MASS: Dims = d(1, 0, 0, 0, 0, 0, 0);
const LENGTH: Dims = d(0, 1, 0, 0, 0, 0, 0);
const VOLUME: Dims = d(0, 3, 0, 0, 0, 0, 0);
const TIME: Dims = d(0, 0, 1, 0, 0, 0, 0);
const AMOUNT: Dims = d(0, 0, 0, 0, 0, 1, 0);
const PRESSURE: Dims = d(1, -1, -2, 0, 0, 0, 0);
const ENERGY: Dims = d(1, 2, -2, 0, 0, 0, 0);

const fn atom(symbol: &'static str, factor: f64, dims: Dims, metric: bool) -> Atom {
    Atom { symbol, factor, dims, metric }
}

/// Pressure of a metre of mercury (UCUM: 133.3220 kPa) and of water
/// (9.80665 kPa), in g.m-1.s-2 (1 Pa = 1000 g.m-1.s-2).
const M_HG: f64 = 133_322_000.0;
const M_H2O: f64 = 9_806_650.0;

const ATOMS: &[Atom] = &[
    // Base units and their SI relatives.
    atom("g", 1.0, MASS, true),
    atom("m", 1.0, LENGTH, true),
    atom("s", 1.0, TIME, true),
    atom("K", 1.0, d(0, 0, 0, 1, 0, 0, 0), true),
    atom("C", 1.0, d(0, 0, 0, 0, 1, 0, 0), true),
    atom("mol", 1.0, AMOUNT, true),
    atom("eq", 1.0, AMOUNT, true),
    atom("osm", 1.0, AMOUNT, true),
    atom("kat", 1.0, d(0, 0, -1, 0, 0, 1, 0), true),
    // Enzyme unit: umol/min.
    atom("U", 1.0e-6 / 60.0, d(0, 0, -1, 0, 0, 1, 0), true),
    atom("[iU]", 1.0, d(0, 0, 0, 0, 0, 0, 1), true),
    atom("[IU]", 1.0, d(0, 0, 0, 0, 0, 0, 1), true),
    atom("L", 1.0e-3, VOLUME, true),
    atom("l", 1.0e-3, VOLUME, true),
    atom("t", 1.0e6, MASS, true),
    atom("Hz", 1.0, d(0, 0, -1, 0, 0, 0, 0), true),
    atom("N", 1000.0, d(1, 1, -2, 0, 0, 0, 0), true),
    atom("Pa", 1000.0, PRESSURE, true),
    atom("bar", 1.0e8, PRESSURE, true),
    atom("atm", 101_325_000.0, PRESSURE, false),
    atom("m[Hg]", M_HG, PRESSURE, true),
    atom("m[H2O]", M_H2O, PRESSURE, true),
    atom("J", 1000.0, ENERGY, true),
    atom("cal", 4184.0, ENERGY, true),
    atom("[Cal]", 4_184_000.0, ENERGY, false),
    atom("W", 1000.0, d(1, 2, -3, 0, 0, 0, 0), true),
    atom("A", 1.0, d(0, 0, -1, 0, 1, 0, 0), true),
    atom("V", 1000.0, d(1, 2, -2, 0, -1, 0, 0), true),
    // Time.
    atom("min", 60.0, TIME, false),
    atom("h", 3600.0, TIME, false),
    atom("d", 86_400.0, TIME, false),
    atom("wk", 604_800.0, TIME, false),
    // Mean Julian month and year.
    atom("mo", 2_629_800.0, TIME, false),
    atom("a", 31_557_600.0, TIME, false),
    // Pure numbers.
    atom("%", 0.01, NONE, false),
    atom("[ppth]", 1.0e-3, NONE, false),
    atom("[ppm]", 1.0e-6, NONE, false),
    atom("[ppb]", 1.0e-9, NONE, false),
    atom("[pi]", std::f64::consts::PI, NONE, false),
    // Customary units.
    atom("[lb_av]", 453.592_37, MASS, false),
    atom("[oz_av]", 28.349_523_125, MASS, false),
    atom("[in_i]", 0.0254, LENGTH, false),
    atom("[ft_i]", 0.3048, LENGTH, false),
    atom("[yd_i]", 0.9144, LENGTH, false),
    atom("[mi_i]", 1609.344, LENGTH, false),
    atom("[gal_us]", 3.785_411_784e-3, VOLUME, false),
    atom("[qt_us]", 9.463_529_46e-4, VOLUME, false),
    atom("[pt_us]", 4.731_764_73e-4, VOLUME, false),
    atom("[foz_us]", 2.957_352_956_25e-5, VOLUME, false),
    atom("[tbs_us]", 1.478_676_478_125e-5, VOLUME, false),
    atom("[tsp_us]", 4.928_921_593_75e-6, VOLUME, false),
    // A drop is 1/20 mL.
    atom("[drp]", 5.0e-8, VOLUME, false),
];

/// UCUM table 1 prefixes.
const PREFIXES: &[(&str, f64)] = &[
    ("da", 1.0e1),
    ("Y", 1.0e24),
    ("Z", 1.0e21),
    ("E", 1.0e18),
    ("P", 1.0e15),
    ("T", 1.0e12),
    ("G", 1.0e9),
    ("M", 1.0e6),
    ("k", 1.0e3),
    ("h", 1.0e2),
    ("d", 1.0e-1),
    ("c", 1.0e-2),
    ("m", 1.0e-3),
    ("u", 1.0e-6),
    ("n", 1.0e-9),
    ("p", 1.0e-12),
    ("f", 1.0e-15),
    ("a", 1.0e-18),
    ("z", 1.0e-21),
    ("y", 1.0e-24),
];

fn find_atom(symbol: &str) -> Option<&'static Atom> {
    static BY_SYMBOL: once_cell::sync::Lazy<std::collections::HashMap<&'static str, &'static Atom>> =
        once_cell::sync::Lazy::new(|| ATOMS.iter().map(|a| (a.symbol, a)).collect());
    BY_SYMBOL.get(symbol).copied()
}

/// A unit symbol without exponent: an atom, a prefixed metric atom, or an
/// integer factor.
fn simple_unit(symbol: &str) -> Option<(f64, Dims)> {
    if let Some(a) = find_atom(symbol) {
        return Some((a.factor, a.dims));
    }
    if symbol.bytes().all(|c| c.is_ascii_digit()) {
        return symbol.parse::<f64>().ok().map(|n| (n, NONE));
    }
    for (prefix, scale) in PREFIXES {
        if let Some(rest) = symbol.strip_prefix(prefix)
            && let Some(a) = find_atom(rest)
            && a.metric
        {
            return Some((scale * a.factor, a.dims));
        }
    }
    None
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    /// term := '/' component | component (('.' | '/') component)*
    fn term(&mut self) -> Option<(f64, Dims)> {
        let (mut factor, mut dims) = if self.peek() == Some(b'/') {
            self.pos += 1;
            let (f, d) = self.component()?;
            (1.0 / f, negate(d)?)
        } else {
            self.component()?
        };
        while let Some(op) = self.peek() {
            if op != b'.' && op != b'/' {
                break;
            }
            self.pos += 1;
            let (f, d) = self.component()?;
            if op == b'.' {
                factor *= f;
                dims = add(dims, d)?;
            } else {
                factor /= f;
                dims = add(dims, negate(d)?)?;
            }
        }
        Some((factor, dims))
    }

    /// component := '(' term ')' | annotation | simple-unit exponent? annotation?
    fn component(&mut self) -> Option<(f64, Dims)> {
        match self.peek()? {
            b'(' => {
                self.depth += 1;
                if self.depth > 8 {
                    return None;
                }
                self.pos += 1;
                let inner = self.term()?;
                if self.peek() != Some(b')') {
                    return None;
                }
                self.pos += 1;
                self.depth -= 1;
                Some(inner)
            }
            b'{' => {
                self.annotation()?;
                Some((1.0, NONE))
            }
            _ => {
                let start = self.pos;
                // A symbol runs to the next operator, parenthesis or
                // annotation; brackets may hold any of those characters.
                let mut in_bracket = false;
                while let Some(c) = self.peek() {
                    match c {
                        b'[' => in_bracket = true,
                        b']' => in_bracket = false,
                        b'.' | b'/' | b'(' | b')' | b'{' if !in_bracket => break,
                        _ => {}
                    }
                    self.pos += 1;
                }
                let text = std::str::from_utf8(&self.text[start..self.pos]).ok()?;
                let (symbol, exponent) = split_exponent(text)?;
                let (factor, dims) = simple_unit(symbol)?;
                if self.peek() == Some(b'{') {
                    self.annotation()?;
                }
                Some((factor.powi(i32::from(exponent)), scale(dims, exponent)?))
            }
        }
    }

    fn annotation(&mut self) -> Option<()> {
        let close = self.text[self.pos..].iter().position(|&c| c == b'}')?;
        self.pos += close + 1;
        Some(())
    }
}

/// Splits a trailing exponent (`m2`, `s-1`, `10*3`) off a symbol. Digits
/// inside brackets (`[H2O]`) belong to the symbol; a symbol of digits only is
/// an integer factor.
fn split_exponent(text: &str) -> Option<(&str, i8)> {
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|c| c.is_ascii_digit()) {
        return Some((text, 1));
    }
    let after_bracket = text.rfind(']').map_or(0, |i| i + 1);
    let tail = &text[after_bracket..];
    let digits = tail.bytes().rev().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Some((text, 1));
    }
    let mut split = text.len() - digits;
    if split > after_bracket && matches!(text.as_bytes()[split - 1], b'+' | b'-') {
        split -= 1;
    }
    let (symbol, exponent) = text.split_at(split);
    if symbol.is_empty() {
        return None;
    }
    let exponent: i8 = exponent.parse().ok()?;
    // `10*3` and `10^3` are the atom `10*` to the power 3.
    if symbol == "10*" || symbol == "10^" {
        return Some(("10", exponent));
    }
    Some((symbol, exponent))
}

fn add(a: Dims, b: Dims) -> Option<Dims> {
    let mut out = a;
    for (o, x) in out.iter_mut().zip(b) {
        *o = o.checked_add(x)?;
    }
    Some(out)
}

fn negate(a: Dims) -> Option<Dims> {
    scale(a, -1)
}

fn scale(a: Dims, by: i8) -> Option<Dims> {
    let mut out = a;
    for o in &mut out {
        *o = o.checked_mul(by)?;
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn canon(code: &str) -> (f64, String) {
        let c = canonical(code).unwrap_or_else(|| panic!("{code} has no canonical form"));
        (c.factor, c.unit)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
    }

    #[test]
    fn mass_units_share_grams() {
        assert_eq!(canon("g"), (1.0, "g".into()));
        assert_eq!(canon("mg").1, "g");
        assert!(close(canon("mg").0, 1e-3));
        assert!(close(canon("kg").0, 1e3));
        assert!(close(canon("ug").0, 1e-6));
        assert!(close(canon("[lb_av]").0, 453.59237));
    }

    #[test]
    fn compound_units() {
        assert_eq!(canon("mg/dL").1, "g.m-3");
        assert!(close(canon("mg/dL").0, 10.0));
        assert_eq!(canon("mmol/L"), canon("umol/mL"));
        assert_eq!(canon("mmol/L").1, "m-3.mol");
        assert_eq!(canon("kg/m2").1, "g.m-2");
        assert_eq!(canon("10*3/uL").1, "m-3");
        assert!(close(canon("10*3/uL").0, 1e12));
        assert!(close(canon("10^3/uL").0, 1e12));
        assert_eq!(canon("/min").1, "s-1");
        assert!(close(canon("/min").0, 1.0 / 60.0));
        assert_eq!(canon("{beats}/min"), canon("/min"));
        assert_eq!(canon("mL/min/{1.73_m2}"), canon("mL/min"));
        assert_eq!(canon("m2"), (1.0, "m2".into()));
        assert_eq!(canon("s-1"), (1.0, "s-1".into()));
        assert_eq!(canon("kg.m/s2").1, "g.m.s-2");
        assert_eq!(canon("g/(kg.d)").1, "s-1");
        assert_eq!(canon("mL").1, "m3");
        assert!(close(canon("mL").0, 1e-6));
    }

    #[test]
    fn pressure_percent_time_and_units() {
        assert_eq!(canon("mm[Hg]").1, "g.m-1.s-2");
        assert!(close(canon("mm[Hg]").0, 133_322.0));
        assert!(close(canon("kPa").0 / canon("mm[Hg]").0, 1000.0 / 133.322));
        assert!(close(canon("cm[H2O]").0, 98_066.5));
        assert_eq!(canon("%"), (0.01, "1".into()));
        assert_eq!(canon("1"), (1.0, "1".into()));
        assert_eq!(canon("{score}"), (1.0, "1".into()));
        assert!(close(canon("h").0, 3600.0));
        assert!(close(canon("wk").0, 7.0 * 86400.0));
        assert!(close(canon("a").0, 365.25 * 86400.0));
        assert_eq!(canon("[iU]/L"), canon("[IU]/L"));
        assert_eq!(canon("m[iU]/mL").1, "m-3.[iU]");
        assert_eq!(canon("meq/L"), canon("mmol/L"));
        assert_eq!(canon("U/L").1, "m-3.s-1.mol");
    }

    #[test]
    fn unknown_and_nonlinear_units_have_no_canonical_form() {
        for code in ["", "Cel", "[degF]", "[pH]", "xyz", "mg/", "(mg", "m]", "kmin", "[HPF]", "m{", "g.", "10*"] {
            assert_eq!(canonical(code), None, "{code}");
        }
    }

    #[test]
    fn equal_decimals_through_different_units_are_equal() {
        let (low_kg, high_kg, _) = canonical_range(72.45, 72.55, "kg").unwrap();
        let (low_t, high_t, _) = canonical_range(0.07245, 0.07255, "t").unwrap();
        let (low_g, high_g, _) = canonical_range(72450.0, 72550.0, "g").unwrap();
        assert_eq!((low_kg, high_kg), (72450.0, 72550.0));
        assert_eq!((low_t, high_t), (low_kg, high_kg));
        assert_eq!((low_g, high_g), (low_kg, high_kg));
        assert_eq!(round_significant(f64::INFINITY), f64::INFINITY);
        assert_eq!(round_significant(-1.0e-30), -1.0e-30);
        assert_eq!(round_significant(0.1 + 0.2), 0.3);
    }

    #[test]
    fn ranges_scale_by_the_factor() {
        let (low, high, unit) = canonical_range(499.5, 500.5, "mg").unwrap();
        assert_eq!(unit, "g");
        assert!(close(low, 0.4995) && close(high, 0.5005));
    }
}
