//! Reading spec bytes the way the engine's Go library does.
//!
//! The library parses every file, `.json` included, with `sigs.k8s.io/yaml`'s
//! `UnmarshalStrict`: YAML 1.1 (`gopkg.in/yaml.v2`) into a generic tree, numbers and
//! booleans turned into text where the Go field is a string, then Go's
//! `encoding/json` with unknown fields refused. What follows from that, and is
//! reproduced here:
//! - field names match **case-insensitively** (`CDIVERSION`, `Kind`), an exact match
//!   winning; unknown fields and duplicate keys refuse the file;
//! - YAML 1.1 numbers: `fileMode: 0666` is octal (438), `1_000` is 1000, `0x1F`
//!   and `0b101` work; `yes`/`no`/`on`/`off` are booleans;
//! - a number or boolean where a string is expected becomes its text (`name: 0`);
//!   `null` leaves a field at its zero value;
//! - a `null` entry in `deviceNodes`, `hooks`, `mounts` or `netDevices` becomes a nil
//!   pointer that the library's validation dereferences: it panics.
//!
//! - a quoted scalar is a string whatever its text (`yaml.v2` resolves only plain ones):
//!   `fileMode: "0666"`, `major: "1_000"`, `enableCMT: "yes"` are type errors; a plain
//!   YAML 1.1-only spelling in a string field becomes Go's text for its value
//!   (`name: 010` is `"8"`, `name: yes` is `"true"`).
//!
//! The YAML parser behind [`Value`] follows YAML 1.2 and does not say whether a scalar
//! was quoted, so [`mark_scalar_styles`] reads that from libyaml's events and tags the
//! scalars where it matters. Where it cannot (explicitly tagged scalars such as
//! `!!str 010`, a tree that does not match the events), the decoder falls back to
//! reading a 1.1-only spelling as plain in an int or bool field and as its text in a
//! string field.
//!
//! Robustness: nesting deeper than [`MAX_DEPTH`] is refused before any parser runs
//! (the YAML scanner is quadratic in flow nesting depth), so every input is handled in
//! linear time.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use serde_yaml_ng::Value;
use serde_yaml_ng::value::{Tag, TaggedValue};

use super::spec::{
    ContainerEdits, Device, DeviceNode, Hook, IntelRdt, LinuxNetDevice, Mount, Spec,
};

/// The deepest nesting of `[`/`{` accepted. A real spec nests 7 levels at most
/// (spec → devices → device → containerEdits → deviceNodes → node); the Go library
/// refuses anything deeper anyway, because no field of its structs nests further.
pub const MAX_DEPTH: usize = 64;

/// A problem found while turning the tree into a [`Spec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeProblem {
    /// Field path, e.g. `devices[0].containerEdits.deviceNodes[0].major`.
    pub path: String,
    /// What Go's decoder would say, in words.
    pub message: String,
    /// The library panics on it instead of refusing.
    pub crash: bool,
}

/// A spec decoded as far as possible, with everything the Go decoder would refuse.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decoded {
    /// The spec (fields that failed to decode keep their zero value).
    pub spec: Spec,
    /// Decoder errors: any one refuses the file.
    pub problems: Vec<DecodeProblem>,
}

/// The deepest `[`/`{` nesting of the text outside quoted strings and comments, stopping
/// early once `limit` is passed; linear in the input.
pub fn flow_depth(bytes: &[u8], limit: usize) -> usize {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut i = 0;
    let mut prev = b'\n';
    while i < bytes.len() {
        let c = bytes[i];
        let quote_may_start = matches!(
            prev,
            b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b',' | b':' | b'-'
        );
        match c {
            b'"' if quote_may_start => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'\'' if quote_may_start => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == b'\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'#' if matches!(prev, b' ' | b'\t' | b'\n' | b'\r') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                prev = b'\n';
                i += 1;
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
                if max > limit {
                    return max;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = c;
        i += 1;
    }
    max
}

/// Turns a parsed YAML tree into a [`Spec`] with Go's `encoding/json` rules (see the
/// module docs). `None` for a `null` document ("no Spec data").
pub fn decode_value(value: &Value) -> Option<Decoded> {
    let mut d = Decoder::default();
    let value = untag(value);
    if matches!(value, Value::Null) {
        return None;
    }
    let spec = d.spec(value);
    Some(Decoded {
        spec,
        problems: d.problems,
    })
}

/// The value under any YAML tag (`!!str`, custom tags): Go's decoder resolves the
/// standard ones and keeps the node otherwise.
fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        other => other,
    }
}

#[derive(Default)]
struct Decoder {
    problems: Vec<DecodeProblem>,
}

/// Go's `equalFold` for field names: ASCII case-insensitive, plus the two non-ASCII
/// runes that fold to ASCII letters (the Kelvin sign and the long s).
fn fold_eq(a: &str, b: &str) -> bool {
    let fold = |c: char| match c {
        '\u{212A}' => 'k',
        '\u{017F}' => 's',
        c => c.to_ascii_lowercase(),
    };
    a.chars().map(fold).eq(b.chars().map(fold))
}

/// A map key as `sigs.k8s.io/yaml` turns it into a JSON key.
fn key_text(k: &Value) -> Option<String> {
    match untag(k) {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(number_text(n)),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A number as text where Go expects a string: integers in decimal, floats with
/// `strconv.FormatFloat(v, 'g', -1, 32)`.
fn number_text(n: &serde_yaml_ng::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    go_float32_g(n.as_f64().unwrap_or(f64::NAN))
}

/// `strconv.FormatFloat(v, 'g', -1, 32)`: the shortest digits of the float32, in `%e`
/// form when the exponent is below -4 or at least 6 (Go's rule for the shortest `'g'`).
fn go_float32_g(v: f64) -> String {
    let f = v as f32;
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Shortest round-trip digits and the exponent, from Rust's `{:e}`.
    let e = format!("{f:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let nd = digits.len() as i32;
    let sign = if negative { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.abs());
    }
    // Plain form.
    let dp = exp + 1;
    let s = if dp <= 0 {
        format!("0.{}{}", "0".repeat((-dp) as usize), digits)
    } else if dp >= nd {
        format!("{}{}", digits, "0".repeat((dp - nd) as usize))
    } else {
        let (a, b) = digits.split_at(dp as usize);
        format!("{a}.{b}")
    };
    format!("{sign}{s}")
}

/// A plain scalar read by YAML 1.1 (`yaml.v2`'s resolver) as an integer: `0666`
/// (octal), `0x1F`, `0o17`, `0b101`, `1_000`, signs.
fn yaml11_int(s: &str) -> Option<i128> {
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    let (neg, body) = match plain.as_bytes().first() {
        Some(b'-') => (true, &plain[1..]),
        Some(b'+') => (false, &plain[1..]),
        _ => (false, plain.as_str()),
    };
    if body.is_empty() {
        return None;
    }
    let (radix, digits) = if let Some(h) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        (16, h)
    } else if let Some(o) = body.strip_prefix("0o").or(body.strip_prefix("0O")) {
        (8, o)
    } else if let Some(b) = body.strip_prefix("0b").or(body.strip_prefix("0B")) {
        (2, b)
    } else if body.len() > 1 && body.starts_with('0') {
        (8, &body[1..])
    } else {
        (10, body)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = i128::from_str_radix(digits, radix).ok()?;
    Some(if neg { -v } else { v })
}

/// Whether `s` is an integer only under YAML 1.1: an octal with a bare leading zero
/// (`0666`) or digits with underscores (`1_000`). A YAML 1.2 parser keeps those as
/// strings; every other integer spelling it reads as a number itself.
fn yaml11_only_int(s: &str) -> bool {
    let body = s.trim_start_matches(['+', '-']);
    let leading_zero = body.len() > 1
        && body.starts_with('0')
        && body[1..].bytes().all(|b| b.is_ascii_digit() || b == b'_');
    (leading_zero || s.contains('_')) && yaml11_int(s).is_some()
}

/// Whether `s` is a boolean only under YAML 1.1 (`yes`, `on`, `n`, …): `true` and
/// `false` in any spelling a YAML 1.2 parser reads as booleans itself.
fn yaml11_only_bool(s: &str) -> bool {
    yaml11_bool(s).is_some() && !s.eq_ignore_ascii_case("true") && !s.eq_ignore_ascii_case("false")
}

/// YAML 1.1 booleans as `yaml.v2` resolves them.
fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Some(false)
        }
        _ => None,
    }
}

/// The tag that [`mark_scalar_styles`] puts on a string scalar written plain. Private
/// tags, so that the marks ride through alias expansion and `<<` merges with the value;
/// a document that wrote these tags itself would be read as marked (no spec has reason to).
const PLAIN_MARK: &str = "!cdi-harness/plain";
/// The tag that [`mark_scalar_styles`] puts on a string scalar written quoted (or as a
/// block scalar): anything but plain.
const QUOTED_MARK: &str = "!cdi-harness/quoted";

/// How a scalar was written, where it matters to `yaml.v2`: its parser passes
/// `implicit` only for plain scalars, and its decoder (`decode.go`, `scalar`) resolves
/// a scalar without tag and without `implicit` as `!!str` without looking at the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Plain: `yaml.v2` resolves it with the YAML 1.1 rules (`010` is the int 8).
    Plain,
    /// Quoted or a block scalar: always a string to `yaml.v2`.
    Quoted,
}

/// The style marked on `v` by [`mark_scalar_styles`]; `None` where unknown.
fn marked_style(v: &Value) -> Option<Style> {
    match v {
        Value::Tagged(t) if t.tag == Tag::new(PLAIN_MARK) => Some(Style::Plain),
        Value::Tagged(t) if t.tag == Tag::new(QUOTED_MARK) => Some(Style::Quoted),
        _ => None,
    }
}

/// The shape of a YAML document as libyaml's events give it: what the YAML 1.2 tree
/// ([`Value`]) forgets, i.e. whether each scalar was plain.
#[derive(Debug)]
enum Shape {
    /// A scalar; `style` is `None` when it carries an explicit tag (`!!str 010`), which
    /// decides its type instead of the style: left to the value as parsed.
    Scalar {
        style: Option<Style>,
    },
    Sequence(Vec<Rc<Shape>>),
    /// Key and value shapes, in document order.
    Mapping(Vec<(Rc<Shape>, Rc<Shape>)>),
}

/// One libyaml event, copied out of the C-style structure.
enum Event {
    Scalar {
        anchor: Option<String>,
        style: Option<Style>,
    },
    SequenceStart(Option<String>),
    MappingStart(Option<String>),
    End,
    Alias(String),
    /// Stream/document start: nothing to build.
    Skip,
    /// End of the first document or of the stream: `yaml.v2` reads only the first.
    Stop,
}

/// Wraps every string scalar of `value` that `yaml.v2` would resolve differently
/// from the YAML 1.2 parser behind [`Value`] (an int or bool spelling only YAML 1.1
/// has: `0666`, `1_000`, `yes`) in a tag saying whether it was written plain or
/// quoted, so the decoder can follow Go: quoted, it stays a string (refused in an
/// int or bool field); plain, it is a number or bool (its decimal text in a string
/// field: `010` → `"8"`).
///
/// Run it on the tree as parsed from `bytes`, before `<<` merges are applied: the
/// tree then matches libyaml's events one to one (aliases are followed to their
/// anchors, so an aliased scalar gets the style of the anchored one, as in Go), and
/// merged entries carry their marks along. Where the two do not line up (an event
/// stream serde_yaml_ng read differently, a tagged node), nothing is marked and the
/// decoder keeps its style-blind reading (1.1-only spellings taken as plain).
pub fn mark_scalar_styles(value: &mut Value, bytes: &[u8]) {
    if let Some(shape) = scan_shape(bytes) {
        mark(value, &shape);
    }
}

/// Marks `value` against `shape`, stopping wherever they disagree.
fn mark(value: &mut Value, shape: &Shape) {
    match (value, shape) {
        (Value::Mapping(m), Shape::Mapping(pairs)) if m.len() == pairs.len() => {
            for ((_, v), (_, s)) in m.iter_mut().zip(pairs) {
                mark(v, s);
            }
        }
        (Value::Sequence(items), Shape::Sequence(shapes)) if items.len() == shapes.len() => {
            for (v, s) in items.iter_mut().zip(shapes) {
                mark(v, s);
            }
        }
        (v @ Value::String(_), Shape::Scalar { style: Some(style) }) => {
            let Value::String(s) = &*v else {
                return;
            };
            if !(yaml11_only_int(s) || yaml11_only_bool(s)) {
                return;
            }
            let tag = match style {
                Style::Plain => PLAIN_MARK,
                Style::Quoted => QUOTED_MARK,
            };
            let inner = std::mem::replace(v, Value::Null);
            *v = Value::Tagged(Box::new(TaggedValue {
                tag: Tag::new(tag),
                value: inner,
            }));
        }
        _ => {}
    }
}

/// The first document's shape, from libyaml's event stream (the same parser
/// serde_yaml_ng runs, over the same bytes); `None` if it fails or does not nest.
fn scan_shape(bytes: &[u8]) -> Option<Shape> {
    let mut builder = Builder {
        events: libyaml_events(bytes)?,
        pos: 0,
        anchors: HashMap::new(),
    };
    let root = builder.node()?;
    drop(builder);
    Rc::try_unwrap(root).ok()
}

/// Turns the event list into a [`Shape`] tree, following aliases.
struct Builder {
    events: Vec<Event>,
    pos: usize,
    anchors: HashMap<String, Rc<Shape>>,
}

impl Builder {
    fn next(&mut self) -> Option<&Event> {
        let e = self.events.get(self.pos)?;
        self.pos += 1;
        Some(e)
    }

    /// The next node; `None` on anything unexpected (an end event, an unknown alias).
    fn node(&mut self) -> Option<Rc<Shape>> {
        let (anchor, shape) = match self.next()? {
            Event::End | Event::Skip | Event::Stop => return None,
            Event::Alias(name) => {
                let name = name.clone();
                return self.anchors.get(&name).cloned();
            }
            Event::Scalar { anchor, style } => {
                let style = *style;
                (anchor.clone(), Rc::new(Shape::Scalar { style }))
            }
            Event::SequenceStart(anchor) => {
                let anchor = anchor.clone();
                let mut items = Vec::new();
                while !self.at_end() {
                    items.push(self.node()?);
                }
                (anchor, Rc::new(Shape::Sequence(items)))
            }
            Event::MappingStart(anchor) => {
                let anchor = anchor.clone();
                let mut pairs = Vec::new();
                while !self.at_end() {
                    let key = self.node()?;
                    let value = self.node()?;
                    pairs.push((key, value));
                }
                (anchor, Rc::new(Shape::Mapping(pairs)))
            }
        };
        if let Some(name) = anchor {
            self.anchors.insert(name, Rc::clone(&shape));
        }
        Some(shape)
    }

    /// Consumes a collection's end event if it is next; also true past the end, so
    /// that a truncated stream ends the loops (and then fails in `node`).
    fn at_end(&mut self) -> bool {
        match self.events.get(self.pos) {
            Some(Event::End) => {
                self.pos += 1;
                true
            }
            Some(_) => false,
            None => true,
        }
    }
}

/// The events of the first document (`yaml.v2` reads only the first), without
/// stream and document markers; `None` if libyaml fails on the bytes.
fn libyaml_events(bytes: &[u8]) -> Option<Vec<Event>> {
    use std::mem::MaybeUninit;
    use unsafe_libyaml as unsafe_sys;

    /// Owns an initialized parser and deletes it on every way out.
    struct Parser(Box<MaybeUninit<unsafe_sys::yaml_parser_t>>);
    impl Drop for Parser {
        fn drop(&mut self) {
            // SAFETY: only built after `yaml_parser_initialize` succeeded.
            unsafe { unsafe_sys::yaml_parser_delete(self.0.as_mut_ptr()) }
        }
    }

    /// A NUL-terminated anchor name, or none.
    ///
    /// SAFETY: `p` is null or a NUL-terminated string owned by a live event.
    unsafe fn anchor(p: *const u8) -> Option<String> {
        if p.is_null() {
            return None;
        }
        // SAFETY: as promised by the caller.
        let c = unsafe { std::ffi::CStr::from_ptr(p.cast()) };
        Some(c.to_string_lossy().into_owned())
    }

    let mut raw = Box::new(MaybeUninit::<unsafe_sys::yaml_parser_t>::uninit());
    // SAFETY: `raw` is a valid place for a parser; on failure nothing needs freeing.
    if unsafe { unsafe_sys::yaml_parser_initialize(raw.as_mut_ptr()) }.fail {
        return None;
    }
    let mut parser = Parser(raw);
    let p = parser.0.as_mut_ptr();
    // SAFETY: `p` is initialized; `bytes` outlives the parser, which is dropped at the
    // end of this function.
    unsafe {
        unsafe_sys::yaml_parser_set_encoding(p, unsafe_sys::YAML_UTF8_ENCODING);
        unsafe_sys::yaml_parser_set_input_string(p, bytes.as_ptr(), bytes.len() as u64);
    }
    let mut events = Vec::new();
    loop {
        let mut raw_event = MaybeUninit::<unsafe_sys::yaml_event_t>::uninit();
        let e = raw_event.as_mut_ptr();
        // SAFETY: `p` is an initialized parser; on success `e` holds an event.
        if unsafe { unsafe_sys::yaml_parser_parse(p, e) }.fail {
            return None;
        }
        // SAFETY: the event was filled in by the successful parse above; each union
        // field is read only for the event type that sets it; the event is deleted
        // right after.
        let event = unsafe {
            let ev = &*e;
            let event = match ev.type_ {
                unsafe_sys::YAML_SCALAR_EVENT => {
                    let s = &ev.data.scalar;
                    let style = if !s.tag.is_null() {
                        None
                    } else if s.style == unsafe_sys::YAML_PLAIN_SCALAR_STYLE {
                        Some(Style::Plain)
                    } else {
                        Some(Style::Quoted)
                    };
                    Event::Scalar {
                        anchor: anchor(s.anchor),
                        style,
                    }
                }
                unsafe_sys::YAML_SEQUENCE_START_EVENT => {
                    Event::SequenceStart(anchor(ev.data.sequence_start.anchor))
                }
                unsafe_sys::YAML_MAPPING_START_EVENT => {
                    Event::MappingStart(anchor(ev.data.mapping_start.anchor))
                }
                unsafe_sys::YAML_SEQUENCE_END_EVENT | unsafe_sys::YAML_MAPPING_END_EVENT => {
                    Event::End
                }
                unsafe_sys::YAML_ALIAS_EVENT => match anchor(ev.data.alias.anchor) {
                    Some(name) => Event::Alias(name),
                    None => Event::Stop,
                },
                unsafe_sys::YAML_STREAM_START_EVENT | unsafe_sys::YAML_DOCUMENT_START_EVENT => {
                    Event::Skip
                }
                _ => Event::Stop,
            };
            unsafe_sys::yaml_event_delete(e);
            event
        };
        match event {
            Event::Skip => {}
            Event::Stop => return Some(events),
            other => events.push(other),
        }
    }
}

/// The text sigs.k8s.io/yaml gives a string field for a plain scalar with a YAML
/// 1.1-only spelling: `strconv.FormatInt`/`FormatUint` of the int `yaml.v2` resolved,
/// or `"true"`/`"false"`. A digit string too large for 64 bits is a float to
/// `yaml.v2` (`yamlStyleFloat`), written with `FormatFloat(v, 'g', -1, 32)`.
fn yaml11_plain_text(s: &str) -> String {
    if let Some(b) = yaml11_bool(s) {
        return b.to_string();
    }
    match yaml11_int(s) {
        Some(i) if i >= i128::from(i64::MIN) && i <= i128::from(u64::MAX) => i.to_string(),
        _ => {
            let plain: String = s.chars().filter(|&c| c != '_').collect();
            match plain.parse::<f64>() {
                Ok(f) => go_float32_g(f),
                Err(_) => s.to_owned(),
            }
        }
    }
}

/// What a value is, for type-error messages (JSON's words, as Go reports them).
fn json_kind(v: &Value) -> &'static str {
    match untag(v) {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Sequence(_) => "array",
        Value::Mapping(_) => "object",
        Value::Tagged(_) => "value",
    }
}

impl Decoder {
    fn problem(&mut self, path: &str, message: String) {
        self.problems.push(DecodeProblem {
            path: path.to_owned(),
            message,
            crash: false,
        });
    }

    fn type_error(&mut self, path: &str, v: &Value, want: &str) {
        self.problem(
            path,
            format!(
                "cannot unmarshal {} into a Go value of type {want}",
                json_kind(v)
            ),
        );
    }

    /// The entries of an object as Go sees them: keys as text, sorted (sigs.k8s.io/yaml
    /// re-encodes through a Go map, which `json.Marshal` writes in key order), each
    /// matched to one of `fields` (exact match first, then case-insensitive). Unknown
    /// keys are reported; the result maps field name → value, later keys winning.
    fn object<'v>(
        &mut self,
        path: &str,
        v: &'v Value,
        ty: &str,
        fields: &[&'static str],
    ) -> Option<BTreeMap<&'static str, &'v Value>> {
        let map = match untag(v) {
            Value::Mapping(m) => m,
            Value::Null => return None,
            other => {
                self.type_error(path, other, ty);
                return None;
            }
        };
        let mut entries: Vec<(String, &Value)> = Vec::new();
        for (k, val) in map {
            match key_text(k) {
                Some(text) => entries.push((text, val)),
                None => self.problem(
                    path,
                    format!("unsupported map key of type {}", json_kind(k)),
                ),
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = BTreeMap::new();
        for (key, val) in entries {
            let exact = fields.iter().find(|f| **f == key);
            let found = exact.or_else(|| fields.iter().find(|f| fold_eq(f, &key)));
            match found {
                Some(f) => {
                    out.insert(*f, val);
                }
                None => {
                    let at = join(path, &key);
                    self.problem(
                        &at,
                        format!(
                            "unknown field {key:?} (the engine refuses unknown fields; {ty} has {})",
                            fields.join(", ")
                        ),
                    );
                }
            }
        }
        Some(out)
    }

    fn string(&mut self, path: &str, v: &Value) -> Option<String> {
        let plain = marked_style(v) == Some(Style::Plain);
        match untag(v) {
            Value::Null => None,
            // Written plain, a 1.1-only spelling is a number or bool to `yaml.v2`, and
            // sigs.k8s.io/yaml writes that back as text for a string field: `010` →
            // "8", `1_000` → "1000", `yes` → "true". Unmarked (style unknown), the
            // text is kept.
            Value::String(s) if plain => Some(yaml11_plain_text(s)),
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(number_text(n)),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                self.type_error(path, other, "string");
                None
            }
        }
    }

    fn integer(&mut self, path: &str, v: &Value, ty: &str, min: i128, max: i128) -> Option<i128> {
        let quoted = marked_style(v) == Some(Style::Quoted);
        let value = match untag(v) {
            Value::Null => return None,
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Some(i128::from(i))
                } else if let Some(u) = n.as_u64() {
                    Some(i128::from(u))
                } else {
                    // json.Marshal writes a float64 in plain form below 1e21; an
                    // integral one then parses as an integer.
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 1e21)
                        .map(|f| f as i128)
                }
            }
            // A string here is either a plain scalar that only YAML 1.1 reads as a
            // number (the parser used here follows 1.2) or a quoted one, which Go
            // refuses. Only the 1.1-only forms can be the former, and only when not
            // marked quoted (unmarked: style unknown, taken as plain).
            Value::String(s) if yaml11_only_int(s) && !quoted => yaml11_int(s),
            _ => None,
        };
        match value {
            Some(i) if (min..=max).contains(&i) => Some(i),
            Some(i) => {
                self.problem(path, format!("{i} overflows the Go type {ty}"));
                None
            }
            None => {
                self.type_error(path, v, ty);
                None
            }
        }
    }

    fn boolean(&mut self, path: &str, v: &Value) -> Option<bool> {
        let quoted = marked_style(v) == Some(Style::Quoted);
        match untag(v) {
            Value::Null => None,
            Value::Bool(b) => Some(*b),
            // As for integers: only the YAML 1.1-only spellings can have been plain.
            Value::String(s) if yaml11_only_bool(s) && !quoted => yaml11_bool(s),
            other => {
                self.type_error(path, other, "bool");
                None
            }
        }
    }

    fn strings(&mut self, path: &str, v: &Value) -> Option<Vec<String>> {
        match untag(v) {
            Value::Null => None,
            Value::Sequence(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        self.string(&format!("{path}[{i}]"), item)
                            .unwrap_or_default()
                    })
                    .collect(),
            ),
            other => {
                self.type_error(path, other, "[]string");
                None
            }
        }
    }

    fn string_map(&mut self, path: &str, v: &Value) -> Option<BTreeMap<String, String>> {
        match untag(v) {
            Value::Null => None,
            Value::Mapping(m) => {
                let mut out = BTreeMap::new();
                for (k, val) in m {
                    let Some(key) = key_text(k) else {
                        self.problem(
                            path,
                            format!("unsupported map key of type {}", json_kind(k)),
                        );
                        continue;
                    };
                    let at = format!("{path}[{key:?}]");
                    let text = self.string(&at, val).unwrap_or_default();
                    out.insert(key, text);
                }
                Some(out)
            }
            other => {
                self.type_error(path, other, "map[string]string");
                None
            }
        }
    }

    /// A list of pointers to structs: a `null` entry is a nil pointer the library
    /// dereferences in validation.
    fn pointer_list<T>(
        &mut self,
        path: &str,
        v: &Value,
        ty: &str,
        mut item: impl FnMut(&mut Self, &str, &Value) -> T,
    ) -> Option<Vec<T>> {
        match untag(v) {
            Value::Null => None,
            Value::Sequence(items) => {
                let mut out = Vec::new();
                for (i, entry) in items.iter().enumerate() {
                    let at = format!("{path}[{i}]");
                    if matches!(untag(entry), Value::Null) {
                        self.problems.push(DecodeProblem {
                            path: at,
                            message: format!(
                                "null entry: a nil *{ty} that the CDI library dereferences in validation (nil pointer panic); remove it"
                            ),
                            crash: true,
                        });
                        continue;
                    }
                    out.push(item(self, &at, entry));
                }
                Some(out)
            }
            other => {
                self.type_error(path, other, &format!("[]*{ty}"));
                None
            }
        }
    }

    fn spec(&mut self, v: &Value) -> Spec {
        let mut spec = Spec::default();
        let Some(f) = self.object(
            "",
            v,
            "Spec",
            &[
                "cdiVersion",
                "kind",
                "annotations",
                "devices",
                "containerEdits",
            ],
        ) else {
            return spec;
        };
        if let Some(x) = f.get("cdiVersion") {
            spec.cdi_version = self.string("cdiVersion", x).unwrap_or_default();
        }
        if let Some(x) = f.get("kind") {
            spec.kind = self.string("kind", x).unwrap_or_default();
        }
        if let Some(x) = f.get("annotations") {
            spec.annotations = self.string_map("annotations", x);
        }
        if let Some(x) = f.get("devices") {
            match untag(x) {
                Value::Null => {}
                Value::Sequence(items) => {
                    for (i, d) in items.iter().enumerate() {
                        let dev = self.device(&format!("devices[{i}]"), d);
                        spec.devices.push(dev);
                    }
                }
                other => self.type_error("devices", other, "[]Device"),
            }
        }
        if let Some(x) = f.get("containerEdits")
            && !matches!(untag(x), Value::Null)
        {
            spec.container_edits = Some(self.edits("containerEdits", x));
        }
        spec
    }

    fn device(&mut self, path: &str, v: &Value) -> Device {
        let mut dev = Device::default();
        let Some(f) = self.object(
            path,
            v,
            "Device",
            &["name", "annotations", "containerEdits"],
        ) else {
            return dev;
        };
        if let Some(x) = f.get("name") {
            dev.name = self.string(&join(path, "name"), x).unwrap_or_default();
        }
        if let Some(x) = f.get("annotations") {
            dev.annotations = self.string_map(&join(path, "annotations"), x);
        }
        if let Some(x) = f.get("containerEdits") {
            dev.container_edits = self.edits(&join(path, "containerEdits"), x);
        }
        dev
    }

    fn edits(&mut self, path: &str, v: &Value) -> ContainerEdits {
        let mut e = ContainerEdits::default();
        let Some(f) = self.object(
            path,
            v,
            "ContainerEdits",
            &[
                "env",
                "deviceNodes",
                "netDevices",
                "hooks",
                "mounts",
                "intelRdt",
                "additionalGids",
            ],
        ) else {
            return e;
        };
        if let Some(x) = f.get("env") {
            e.env = self.strings(&join(path, "env"), x);
        }
        if let Some(x) = f.get("deviceNodes") {
            e.device_nodes =
                self.pointer_list(&join(path, "deviceNodes"), x, "DeviceNode", Self::node);
        }
        if let Some(x) = f.get("netDevices") {
            e.net_devices = self.pointer_list(
                &join(path, "netDevices"),
                x,
                "LinuxNetDevice",
                Self::net_device,
            );
        }
        if let Some(x) = f.get("hooks") {
            e.hooks = self.pointer_list(&join(path, "hooks"), x, "Hook", Self::hook);
        }
        if let Some(x) = f.get("mounts") {
            e.mounts = self.pointer_list(&join(path, "mounts"), x, "Mount", Self::mount);
        }
        if let Some(x) = f.get("intelRdt")
            && !matches!(untag(x), Value::Null)
        {
            e.intel_rdt = Some(self.intel_rdt(&join(path, "intelRdt"), x));
        }
        if let Some(x) = f.get("additionalGids") {
            let at = join(path, "additionalGids");
            e.additional_gids = match untag(x) {
                Value::Null => None,
                Value::Sequence(items) => Some(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, g)| {
                            self.integer(
                                &format!("{at}[{i}]"),
                                g,
                                "uint32",
                                0,
                                i128::from(u32::MAX),
                            )
                            .map_or(0, |g| g as u32)
                        })
                        .collect(),
                ),
                other => {
                    self.type_error(&at, other, "[]uint32");
                    None
                }
            };
        }
        e
    }

    fn node(&mut self, path: &str, v: &Value) -> DeviceNode {
        let mut n = DeviceNode::default();
        let Some(f) = self.object(
            path,
            v,
            "DeviceNode",
            &[
                "path",
                "hostPath",
                "type",
                "major",
                "minor",
                "fileMode",
                "permissions",
                "uid",
                "gid",
            ],
        ) else {
            return n;
        };
        let i64_range = (i128::from(i64::MIN), i128::from(i64::MAX));
        let u32_max = i128::from(u32::MAX);
        if let Some(x) = f.get("path") {
            n.path = self.string(&join(path, "path"), x).unwrap_or_default();
        }
        if let Some(x) = f.get("hostPath") {
            n.host_path = self.string(&join(path, "hostPath"), x);
        }
        if let Some(x) = f.get("type") {
            n.r#type = self.string(&join(path, "type"), x);
        }
        if let Some(x) = f.get("major") {
            n.major = self
                .integer(&join(path, "major"), x, "int64", i64_range.0, i64_range.1)
                .map(|m| m as i64);
        }
        if let Some(x) = f.get("minor") {
            n.minor = self
                .integer(&join(path, "minor"), x, "int64", i64_range.0, i64_range.1)
                .map(|m| m as i64);
        }
        if let Some(x) = f.get("fileMode") {
            n.file_mode = self
                .integer(
                    &join(path, "fileMode"),
                    x,
                    "os.FileMode (uint32)",
                    0,
                    u32_max,
                )
                .map(|m| m as u32);
        }
        if let Some(x) = f.get("permissions") {
            n.permissions = self.string(&join(path, "permissions"), x);
        }
        if let Some(x) = f.get("uid") {
            n.uid = self
                .integer(&join(path, "uid"), x, "uint32", 0, u32_max)
                .map(|m| m as u32);
        }
        if let Some(x) = f.get("gid") {
            n.gid = self
                .integer(&join(path, "gid"), x, "uint32", 0, u32_max)
                .map(|m| m as u32);
        }
        n
    }

    fn mount(&mut self, path: &str, v: &Value) -> Mount {
        let mut m = Mount::default();
        let Some(f) = self.object(
            path,
            v,
            "Mount",
            &["hostPath", "containerPath", "options", "type"],
        ) else {
            return m;
        };
        if let Some(x) = f.get("hostPath") {
            m.host_path = self.string(&join(path, "hostPath"), x).unwrap_or_default();
        }
        if let Some(x) = f.get("containerPath") {
            m.container_path = self
                .string(&join(path, "containerPath"), x)
                .unwrap_or_default();
        }
        if let Some(x) = f.get("options") {
            m.options = self.strings(&join(path, "options"), x);
        }
        if let Some(x) = f.get("type") {
            m.r#type = self.string(&join(path, "type"), x);
        }
        m
    }

    fn hook(&mut self, path: &str, v: &Value) -> Hook {
        let mut h = Hook::default();
        let Some(f) = self.object(
            path,
            v,
            "Hook",
            &["hookName", "path", "args", "env", "timeout"],
        ) else {
            return h;
        };
        if let Some(x) = f.get("hookName") {
            h.hook_name = self.string(&join(path, "hookName"), x).unwrap_or_default();
        }
        if let Some(x) = f.get("path") {
            h.path = self.string(&join(path, "path"), x).unwrap_or_default();
        }
        if let Some(x) = f.get("args") {
            h.args = self.strings(&join(path, "args"), x);
        }
        if let Some(x) = f.get("env") {
            h.env = self.strings(&join(path, "env"), x);
        }
        if let Some(x) = f.get("timeout") {
            h.timeout = self
                .integer(
                    &join(path, "timeout"),
                    x,
                    "int",
                    i128::from(i64::MIN),
                    i128::from(i64::MAX),
                )
                .map(|t| t as i64);
        }
        h
    }

    /// Every field any library version has; which ones a given library refuses is
    /// decided by validation ([`crate::cdi::validate_spec`]).
    fn intel_rdt(&mut self, path: &str, v: &Value) -> IntelRdt {
        let mut r = IntelRdt::default();
        let Some(f) = self.object(
            path,
            v,
            "IntelRdt",
            &[
                "closID",
                "l3CacheSchema",
                "memBwSchema",
                "schemata",
                "enableMonitoring",
                "enableCMT",
                "enableMBM",
            ],
        ) else {
            return r;
        };
        if let Some(x) = f.get("closID") {
            r.clos_id = self.string(&join(path, "closID"), x);
        }
        if let Some(x) = f.get("l3CacheSchema") {
            r.l3_cache_schema = self.string(&join(path, "l3CacheSchema"), x);
        }
        if let Some(x) = f.get("memBwSchema") {
            r.mem_bw_schema = self.string(&join(path, "memBwSchema"), x);
        }
        if let Some(x) = f.get("schemata") {
            r.schemata = self.strings(&join(path, "schemata"), x);
        }
        if let Some(x) = f.get("enableMonitoring") {
            r.enable_monitoring = self.boolean(&join(path, "enableMonitoring"), x);
            if r.enable_monitoring.is_none() {
                r.enable_monitoring = Some(false);
            }
        }
        if let Some(x) = f.get("enableCMT") {
            r.enable_cmt = Some(self.boolean(&join(path, "enableCMT"), x).unwrap_or(false));
        }
        if let Some(x) = f.get("enableMBM") {
            r.enable_mbm = Some(self.boolean(&join(path, "enableMBM"), x).unwrap_or(false));
        }
        r
    }

    fn net_device(&mut self, path: &str, v: &Value) -> LinuxNetDevice {
        let mut d = LinuxNetDevice::default();
        let Some(f) = self.object(path, v, "LinuxNetDevice", &["hostInterfaceName", "name"]) else {
            return d;
        };
        if let Some(x) = f.get("hostInterfaceName") {
            d.host_interface_name = self
                .string(&join(path, "hostInterfaceName"), x)
                .unwrap_or_default();
        }
        if let Some(x) = f.get("name") {
            d.name = self.string(&join(path, "name"), x).unwrap_or_default();
        }
        d
    }
}

/// `a.b`, or `b` at the top.
fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(yaml: &str) -> Decoded {
        let mut v: Value = serde_yaml_ng::from_str(yaml).expect("yaml");
        mark_scalar_styles(&mut v, yaml.as_bytes());
        v.apply_merge().expect("merge");
        decode_value(&v).expect("not null")
    }

    fn problem_paths(d: &Decoded) -> Vec<&str> {
        d.problems.iter().map(|p| p.path.as_str()).collect()
    }

    #[test]
    fn quoted_yaml_1_1_spellings_are_strings_and_refused_in_int_and_bool_fields() {
        // yaml.v2 decode.go `scalar`: no tag and not `implicit` (not plain) → !!str;
        // encoding/json then refuses a string for an int or bool field. The plain
        // twins of each are numbers and booleans.
        let d = decode(
            "devices: [{name: x, containerEdits: {deviceNodes: [{path: /dev/x, fileMode: \"0666\", major: '1_000', minor: 0666, uid: 1_000}], intelRdt: {enableCMT: \"yes\", enableMBM: on}, additionalGids: [\"010\", 010]}}]\n",
        );
        assert_eq!(
            problem_paths(&d),
            [
                "devices[0].containerEdits.deviceNodes[0].major",
                "devices[0].containerEdits.deviceNodes[0].fileMode",
                "devices[0].containerEdits.intelRdt.enableCMT",
                "devices[0].containerEdits.additionalGids[0]",
            ]
        );
        assert!(
            d.problems
                .iter()
                .all(|p| p.message.starts_with("cannot unmarshal string")),
            "{:?}",
            d.problems
        );
        let edits = &d.spec.devices[0].container_edits;
        let node = &edits.device_nodes.as_ref().expect("nodes")[0];
        assert_eq!((node.minor, node.uid), (Some(0o666), Some(1000)));
        assert_eq!(
            edits.intel_rdt.as_ref().expect("rdt").enable_mbm,
            Some(true)
        );
        assert_eq!(edits.additional_gids.as_deref(), Some(&[0, 8][..]));
    }

    #[test]
    fn block_scalars_are_quoted_too() {
        // Only a plain scalar is `implicit` in yaml.v2's parser (parserc.go).
        let d = decode(
            "devices:\n- name: x\n  containerEdits:\n    deviceNodes:\n    - path: /dev/x\n      fileMode: |-\n        0666\n",
        );
        assert_eq!(
            problem_paths(&d),
            ["devices[0].containerEdits.deviceNodes[0].fileMode"]
        );
    }

    #[test]
    fn plain_yaml_1_1_numbers_and_booleans_in_string_fields_become_go_text() {
        // yaml.v2 resolves plain 010 as the octal int 8 and `yes` as true;
        // sigs.k8s.io/yaml's convertToJSONableObject writes them back for a string
        // field with strconv.FormatInt / "true".
        let d = decode(
            "kind: a.com/b\ndevices: [{name: 010, containerEdits: {env: [1_000, yes, \"010\", '1_000', \"yes\"]}}, {name: \"010\", containerEdits: {env: [A=1]}}]\n",
        );
        assert_eq!(d.problems, []);
        assert_eq!(d.spec.devices[0].name, "8");
        assert_eq!(d.spec.devices[1].name, "010");
        let env = d.spec.devices[0].container_edits.env.as_ref().expect("env");
        assert_eq!(env, &["1000", "true", "010", "1_000", "yes"]);
    }

    #[test]
    fn aliases_and_merge_keys_carry_the_style_of_the_anchored_scalar() {
        let d = decode(
            "kind: a.com/b\nx-q: &q {path: /dev/q, fileMode: \"0666\"}\nx-p: &p {path: /dev/p, fileMode: 0666}\nx-n: &n 010\n",
        );
        // Only the unknown fields: the anchors' own entries are not spec fields.
        assert_eq!(problem_paths(&d), ["x-n", "x-p", "x-q"]);
        let d = decode(
            "kind: a.com/b\ndevices:\n- name: &n 010\n  containerEdits:\n    deviceNodes:\n    - &q {path: /dev/q, fileMode: \"0666\"}\n    - &p {path: /dev/p, fileMode: 0666}\n    - *q\n    - <<: *p\n      path: /dev/m\n- name: *n\n  containerEdits: {env: [A=1]}\n",
        );
        assert_eq!(
            problem_paths(&d),
            [
                "devices[0].containerEdits.deviceNodes[0].fileMode",
                "devices[0].containerEdits.deviceNodes[2].fileMode",
            ]
        );
        let nodes = d.spec.devices[0]
            .container_edits
            .device_nodes
            .as_ref()
            .expect("nodes");
        assert_eq!(nodes[3].file_mode, Some(0o666));
        assert_eq!(nodes[3].path, "/dev/m");
        assert_eq!(d.spec.devices[1].name, "8");
    }

    #[test]
    fn explicitly_tagged_scalars_keep_the_style_blind_reading() {
        // `!!str 0666` is a string to yaml.v2 too, but a tag is not a style: the
        // decoder falls back to reading the 1.1 spelling as plain (documented gap).
        let d = decode(
            "devices: [{name: x, containerEdits: {deviceNodes: [{path: /dev/x, fileMode: !!str 0666}]}}]\n",
        );
        assert_eq!(d.problems, []);
    }

    #[test]
    fn field_names_match_case_insensitively_like_go_json() {
        let d = decode(
            r#"{"CDIVERSION": "0.5.0", "Kind": "a.com/b", "devices": [{"NAME": "x", "containerEdits": {"ENV": ["A=1"]}}]}"#,
        );
        assert_eq!(d.problems, []);
        assert_eq!(d.spec.cdi_version, "0.5.0");
        assert_eq!(d.spec.kind, "a.com/b");
        assert_eq!(d.spec.devices[0].name, "x");
    }

    #[test]
    fn yaml_1_1_octal_and_underscores_are_numbers() {
        let d = decode("deviceNodes: []\n");
        assert_eq!(d.problems.len(), 1, "unknown top-level field");
        assert_eq!(yaml11_int("0666"), Some(438));
        assert_eq!(yaml11_int("1_000"), Some(1000));
        assert_eq!(yaml11_int("0x1F"), Some(31));
        assert_eq!(yaml11_int("0o17"), Some(15));
        assert_eq!(yaml11_int("0b101"), Some(5));
        assert_eq!(yaml11_int("08"), None);
        assert_eq!(yaml11_int("abc"), None);
        let d = decode(
            "kind: a.com/b\ndevices: [{name: x, containerEdits: {deviceNodes: [{path: /dev/x, fileMode: 0666}]}}]\n",
        );
        assert_eq!(d.problems, []);
        let node = &d.spec.devices[0]
            .container_edits
            .device_nodes
            .as_ref()
            .expect("nodes")[0];
        assert_eq!(node.file_mode, Some(0o666));
    }

    #[test]
    fn null_pointer_entries_are_crashes_and_type_errors_name_the_field() {
        let d = decode("devices: [{name: x, containerEdits: {deviceNodes: [null], hooks: {}}}]\n");
        let got: Vec<(&str, bool)> = d
            .problems
            .iter()
            .map(|p| (p.path.as_str(), p.crash))
            .collect();
        assert_eq!(
            got,
            [
                ("devices[0].containerEdits.deviceNodes[0]", true),
                ("devices[0].containerEdits.hooks", false)
            ]
        );
    }

    #[test]
    fn quoted_numbers_and_booleans_are_type_errors_like_go_json() {
        let d = decode(
            "devices: [{name: x, containerEdits: {deviceNodes: [{path: /dev/x, major: \"5\", uid: 1_000}], intelRdt: {enableCMT: \"true\", enableMBM: yes}}}]\n",
        );
        let paths: Vec<&str> = d.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "devices[0].containerEdits.deviceNodes[0].major",
                "devices[0].containerEdits.intelRdt.enableCMT"
            ]
        );
        let node = &d.spec.devices[0]
            .container_edits
            .device_nodes
            .as_ref()
            .expect("nodes")[0];
        assert_eq!(node.uid, Some(1000));
        let rdt = d.spec.devices[0]
            .container_edits
            .intel_rdt
            .as_ref()
            .expect("rdt");
        assert_eq!(rdt.enable_mbm, Some(true));
    }

    #[test]
    fn numbers_in_string_fields_become_go_text() {
        assert_eq!(go_float32_g(1.0), "1");
        assert_eq!(go_float32_g(0.5), "0.5");
        assert_eq!(go_float32_g(1.1), "1.1");
        assert_eq!(go_float32_g(1e6), "1e+06");
        assert_eq!(go_float32_g(0.0001), "0.0001");
        let d = decode(
            "cdiVersion: 1.0\nkind: a.com/b\ndevices: [{name: 7, containerEdits: {env: [A=1]}}]\n",
        );
        assert_eq!(d.spec.cdi_version, "1");
        assert_eq!(d.spec.devices[0].name, "7");
    }

    #[test]
    fn depth_scan_ignores_brackets_in_strings_and_comments() {
        assert_eq!(flow_depth(br#"{"a": "[[[[", b: '{{{{' } # [[[["#, 10), 1);
        assert_eq!(flow_depth(b"a: [[[]]]", 10), 3);
        let deep = "[".repeat(100_000);
        assert!(flow_depth(deep.as_bytes(), MAX_DEPTH) > MAX_DEPTH);
    }
}
