//! The shared hand-walker over `toml::Value`.
//!
//! Both the cluster config ([`crate::config`]) and the simulator's scenario
//! files parse their text into a plain `toml::Table` and walk it by hand
//! with these helpers, so that errors read the same everywhere: every
//! problem is collected (never only the first), each names the path of the
//! offending field (`channels[3].name`), and unknown keys, missing required
//! keys and values of the wrong type are reported in the same words.
//!
//! - [`parse_table`]: the text as a table, or the TOML syntax error with its
//!   line and column.
//! - [`Errs`]: the problems found so far, each a [`ConfigError`].
//! - [`Obj`]: a table being read, with its path; creating one reports its
//!   unknown keys, and its getters report missing keys and wrong types.
//! - Path builders ([`key_path`], [`idx_path`]) and message helpers
//!   ([`type_error`], [`known_list`], [`check_range`], [`one_line`]).

use toml::{Table, Value};

use crate::config::ConfigError;

// ---------------------------------------------------------------------------
// Text.

/// Parses `text` as a TOML table. On a syntax error, the message is one
/// line, prefixed with the line and column of the error where known.
pub fn parse_table(text: &str) -> Result<Table, String> {
    text.parse::<Table>().map_err(|err| match err.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!("line {line}, column {col}: {}", one_line(err.message()))
        }
        None => one_line(err.message()),
    })
}

/// `s` with every run of whitespace (newlines included) made one space.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut col = 1;
    for (i, c) in text.char_indices() {
        if i >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
    }
    (line, col)
}

/// The two 2-digit fields of "HH:MM", unchecked against any range.
pub fn hh_mm_fields(s: &str) -> Option<(u32, u32)> {
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' {
        return None;
    }
    let digit = |c: u8| -> Option<u32> { c.is_ascii_digit().then(|| u32::from(c - b'0')) };
    let h = digit(b[0])? * 10 + digit(b[1])?;
    let m = digit(b[3])? * 10 + digit(b[4])?;
    Some((h, m))
}

// ---------------------------------------------------------------------------
// Paths and messages.

/// `path.key`, or `key` at the top level (an empty `path`).
pub fn key_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `path[i]`.
pub fn idx_path(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// "expected {expected}, found {the TOML type of found}".
pub fn type_error(expected: &str, found: &Value) -> String {
    format!("expected {expected}, found {}", found.type_str())
}

/// "a, b, c", or "(none)".
pub fn known_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    known_list_at_most(names, usize::MAX)
}

/// "a, b, c", at most `max` of them followed by ", ... (N more)", or
/// "(none)".
pub fn known_list_at_most<'a>(names: impl Iterator<Item = &'a str>, max: usize) -> String {
    let all: Vec<&str> = names.collect();
    if all.is_empty() {
        return "(none)".to_string();
    }
    let mut s = all.iter().take(max).copied().collect::<Vec<_>>().join(", ");
    if all.len() > max {
        s.push_str(&format!(", ... ({} more)", all.len() - max));
    }
    s
}

// ---------------------------------------------------------------------------
// Error collection.

/// The problems found so far, in the order found.
#[derive(Debug, Default)]
pub struct Errs(pub Vec<ConfigError>);

impl Errs {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// `i` if within `lo..=hi`; otherwise reports "must be > 0" (for `lo == 1`),
/// "must be >= lo" or "must be <= hi" at `path`.
pub fn check_range(e: &mut Errs, path: &str, i: i64, lo: i64, hi: i64) -> Option<i64> {
    if i < lo {
        if lo == 1 {
            e.push(path, "must be > 0");
        } else {
            e.push(path, format!("must be >= {lo}"));
        }
        None
    } else if i > hi {
        e.push(path, format!("must be <= {hi}"));
        None
    } else {
        Some(i)
    }
}

// ---------------------------------------------------------------------------
// Typed access to tables.

/// A table being read, with its path. Creating one with [`Obj::new`] reports
/// unknown keys. The getters return `None` for an absent key (the `_req`
/// ones reporting it as missing) and for a value of the wrong type (always
/// reported).
pub struct Obj<'a> {
    /// The table.
    pub t: &'a Table,
    /// Its path, empty at the top level.
    pub path: String,
}

impl<'a> Obj<'a> {
    /// Reports every key of `t` not in `allowed`.
    pub fn new(e: &mut Errs, t: &'a Table, path: String, allowed: &[&str]) -> Obj<'a> {
        for key in t.keys() {
            if !allowed.contains(&key.as_str()) {
                e.push(
                    key_path(&path, key),
                    format!(
                        "unknown key `{key}`; expected one of: {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
        Obj { t, path }
    }

    /// The path of `key` in this table.
    pub fn p(&self, key: &str) -> String {
        key_path(&self.path, key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.t.contains_key(key)
    }

    /// Reports `key` as missing unless present; returns whether it was
    /// missing.
    pub fn missing(&self, e: &mut Errs, key: &str) -> bool {
        if self.has(key) {
            false
        } else {
            e.push(self.p(key), "missing required key");
            true
        }
    }

    /// The value of a required key, of any type.
    pub fn get_req(&self, e: &mut Errs, key: &str) -> Option<&'a Value> {
        let v = self.t.get(key);
        if v.is_none() {
            e.push(self.p(key), "missing required key");
        }
        v
    }

    pub fn str_opt(&self, e: &mut Errs, key: &str) -> Option<&'a str> {
        let v = self.t.get(key)?;
        match v.as_str() {
            Some(s) => Some(s),
            None => {
                e.push(self.p(key), type_error("a string", v));
                None
            }
        }
    }

    pub fn str_req(&self, e: &mut Errs, key: &str) -> Option<&'a str> {
        if self.missing(e, key) {
            return None;
        }
        self.str_opt(e, key)
    }

    /// A required, non-empty string.
    pub fn name_req(&self, e: &mut Errs, key: &str) -> Option<&'a str> {
        let s = self.str_req(e, key)?;
        if s.is_empty() {
            e.push(self.p(key), "must not be empty");
            return None;
        }
        Some(s)
    }

    /// An optional, non-empty string.
    pub fn name_opt(&self, e: &mut Errs, key: &str) -> Option<&'a str> {
        let s = self.str_opt(e, key)?;
        if s.is_empty() {
            e.push(self.p(key), "must not be empty");
            return None;
        }
        Some(s)
    }

    pub fn bool_opt(&self, e: &mut Errs, key: &str) -> Option<bool> {
        let v = self.t.get(key)?;
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                e.push(self.p(key), type_error("a boolean", v));
                None
            }
        }
    }

    pub fn int_opt(&self, e: &mut Errs, key: &str) -> Option<i64> {
        let v = self.t.get(key)?;
        match v.as_integer() {
            Some(i) => Some(i),
            None => {
                e.push(self.p(key), type_error("an integer", v));
                None
            }
        }
    }

    pub fn int_req(&self, e: &mut Errs, key: &str) -> Option<i64> {
        if self.missing(e, key) {
            return None;
        }
        self.int_opt(e, key)
    }

    /// An optional integer in `lo..=hi`.
    pub fn int_range_opt(&self, e: &mut Errs, key: &str, lo: i64, hi: i64) -> Option<i64> {
        let i = self.int_opt(e, key)?;
        check_range(e, &self.p(key), i, lo, hi)
    }

    /// A required integer in `lo..=hi`.
    pub fn int_range_req(&self, e: &mut Errs, key: &str, lo: i64, hi: i64) -> Option<i64> {
        if self.missing(e, key) {
            return None;
        }
        self.int_range_opt(e, key, lo, hi)
    }

    /// An optional non-negative integer in `lo..=hi`, as a `u64`.
    pub fn u64_opt(&self, e: &mut Errs, key: &str, lo: i64, hi: i64) -> Option<u64> {
        self.int_range_opt(e, key, lo.max(0), hi)
            .and_then(|i| u64::try_from(i).ok())
    }

    pub fn table_opt(&self, e: &mut Errs, key: &str) -> Option<&'a Table> {
        let v = self.t.get(key)?;
        match v.as_table() {
            Some(t) => Some(t),
            None => {
                e.push(self.p(key), type_error("a table", v));
                None
            }
        }
    }

    pub fn array_opt(&self, e: &mut Errs, key: &str) -> Option<&'a Vec<Value>> {
        let v = self.t.get(key)?;
        match v.as_array() {
            Some(a) => Some(a),
            None => {
                e.push(self.p(key), type_error("an array", v));
                None
            }
        }
    }

    /// An optional array of tables, each with its path. `None` when absent
    /// or of the wrong type (the latter reported); an element that is not a
    /// table is reported and left out.
    pub fn tables_opt(&self, e: &mut Errs, key: &str) -> Option<Vec<(String, &'a Table)>> {
        let a = self.array_opt(e, key)?;
        let base = self.p(key);
        let mut out = Vec::with_capacity(a.len());
        for (i, v) in a.iter().enumerate() {
            let path = idx_path(&base, i);
            match v.as_table() {
                Some(t) => out.push((path, t)),
                None => e.push(path, type_error("a table", v)),
            }
        }
        Some(out)
    }
}
