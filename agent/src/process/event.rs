//! The representation of events: a JSON tree made for the processing chain.
//!
//! An event is built, enriched and serialised once per log line, hundreds of thousands of
//! times a second, and then dropped; with `serde_json::Map` (a `BTreeMap` of `String` keys),
//! allocating, comparing and freeing its keys and nodes took most of the chain's time. Here:
//!
//! - An [`Object`] is one vector of entries, sorted by key. Most objects of an event have a
//!   handful of keys: a binary search over one allocation finds them faster than a B-tree's
//!   nodes, and dropping the object frees one block. Sorted, the entries serialise in the
//!   order `serde_json::Map` wrote them, so the documents the outputs send are unchanged.
//!   Each entry keeps its key's first 8 bytes as an integer, so the search compares integers
//!   and reads a whole key only to confirm a match (comparing strings was a quarter of the
//!   chain's time).
//! - Keys and strings are [`Text`] (`CompactString`): up to 24 bytes are kept inline without
//!   an allocation, which covers nearly every key, address, method, status text and timestamp.
//! - Numbers are `serde_json::Number`, so they read and print exactly as before.
//! - Enrichment caches (GeoIP, user agents, fixed fields) hold their results as shared
//!   objects ([`Object::into_shared`]): copying one into an event is a reference count, not a
//!   copy of its tree, and the event copies it only if a later step changes it.
//! - Trees are at most [`MAX_DEPTH`] levels deep where their shape comes from input (JSON
//!   read from a line or an annotation, dotted keys expanded into objects): clones,
//!   comparisons, serialisation and drops walk them recursively, and a tenant's
//!   30,000-level value overflowed the stack (the agent aborted, and again on every restart
//!   as it read the same line).
//!
//! [`Value`] and [`Object`] keep the names and methods of `serde_json`'s (`as_str`, `get`,
//! `insert`, indexing by key that yields `Null` for a missing one), implement `Serialize` and
//! `Deserialize`, and convert from `serde_json::Value` for configuration values and tests.

use compact_str::CompactString;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Number;
use std::cmp::Ordering;
use std::fmt;
use std::ops::Index;
use std::sync::Arc;

/// A key or a string value: inline up to 24 bytes, on the heap beyond.
pub type Text = CompactString;

/// The most levels of objects and arrays a value from input may have, the event's own object
/// being the first: JSON that nests deeper is not decoded, a dotted key that would is kept
/// flat. Real logs nest a few levels (ECS's deepest field is 5); 64 leaves room for any of
/// them, and for the levels a configured target adds, below serde_json's recursion limit of
/// 128, which the disk queue reads events back with (a record is an array of events).
pub const MAX_DEPTH: usize = 64;

/// Objects up to this many keys are read from JSON key by key into place; the keys beyond are
/// sorted into place once, at the end. One by one, each insert moves the keys after it, and
/// keys read in reverse order made reading an object quadratic in its keys. Small objects,
/// nearly all of them, keep the tuned path.
const INSERTED_ONE_BY_ONE: usize = 32;

/// A JSON value of an event.
#[derive(Clone, Default, PartialEq)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Number(Number),
    String(Text),
    Array(Vec<Value>),
    Object(Object),
}

/// A JSON object: entries sorted by key, each key once.
#[derive(Clone, Default)]
pub struct Object {
    entries: Entries,
}

/// The entries of an [`Object`]: its own, or shared with a cache and copied on first write.
#[derive(Clone)]
enum Entries {
    Owned(Vec<Entry>),
    Shared(Arc<[Entry]>),
}

impl Default for Entries {
    fn default() -> Self {
        Entries::Owned(Vec::new())
    }
}

/// One key of an [`Object`] and its value.
#[derive(Clone, PartialEq)]
pub struct Entry {
    /// [`prefix`] of `key`.
    prefix: u64,
    key: Text,
    value: Value,
}

impl Entry {
    fn new(key: Text, value: Value) -> Self {
        Self {
            prefix: prefix(&key),
            key,
            value,
        }
    }
}

/// The first 8 bytes of `key`, zero-padded, as a big-endian integer: integers in the order of
/// the keys, except that keys equal in their first 8 bytes (or shorter, up to NUL bytes) are
/// equal here and told apart by comparing them whole.
fn prefix(key: &str) -> u64 {
    let b = key.as_bytes();
    let n = b.len();
    if let Some(first) = b.first_chunk::<8>() {
        return u64::from_be_bytes(*first);
    }
    // A shorter key is read with two loads that overlap and together cover it (the bytes
    // both read are the same), each shifted to where its bytes go. This runs on every
    // lookup: shifting the bytes in one by one took a loop, and copying them into a zeroed
    // buffer stalled the CPU (the load waits for the copy's small stores).
    match n {
        4.. => {
            let head = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            let tail = u32::from_be_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]);
            u64::from(head) << 32 | u64::from(tail) << (8 * (8 - n))
        }
        2.. => {
            let head = u16::from_be_bytes([b[0], b[1]]);
            let tail = u16::from_be_bytes([b[n - 2], b[n - 1]]);
            u64::from(head) << 48 | u64::from(tail) << (8 * (8 - n))
        }
        1 => u64::from(b[0]) << 56,
        0 => 0,
    }
}

/// The order of two entries' keys.
fn cmp_entries(a: &Entry, b: &Entry) -> Ordering {
    a.prefix
        .cmp(&b.prefix)
        .then_with(|| tie_break(&a.key, &b.key))
}

/// The order of two keys whose [`prefix`]es are equal.
fn tie_break(a: &str, b: &str) -> Ordering {
    if a.len() <= 8 && b.len() <= 8 {
        // Both whole in their prefixes: the shorter is the other's start.
        a.len().cmp(&b.len())
    } else {
        a.cmp(b)
    }
}

/// What indexing yields for a missing key or a value that is not an object.
static NULL: Value = Value::Null;

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(object) => Some(object),
            _ => None,
        }
    }

    pub fn as_object_mut(&mut self) -> Option<&mut Object> {
        match self {
            Value::Object(object) => Some(object),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Vec<Value>> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_array_mut(&mut self) -> Option<&mut Vec<Value>> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    /// Whether this is a number stored as a float (as `serde_json::Value::is_f64`).
    pub fn is_f64(&self) -> bool {
        matches!(self, Value::Number(n) if n.is_f64())
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Value::Object(_))
    }

    pub fn is_array(&self) -> bool {
        matches!(self, Value::Array(_))
    }

    pub fn is_string(&self) -> bool {
        matches!(self, Value::String(_))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value of `key`, if this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object()?.get(key)
    }

    /// How many levels of arrays and objects this value has: 0 for a scalar, 1 for `[]`.
    pub fn depth(&self) -> usize {
        match self {
            Value::Array(items) => 1 + items.iter().map(Value::depth).max().unwrap_or(0),
            Value::Object(object) => 1 + object.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// The JSON value of `text`, refused if it opens more than `levels` levels of arrays
    /// and objects (see [`MAX_DEPTH`]).
    pub fn from_json(text: &str, levels: usize) -> serde_json::Result<Value> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let value = Within(levels).deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(value)
    }
}

impl Object {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty object with room for `capacity` keys.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Entries::Owned(Vec::with_capacity(capacity)),
        }
    }

    /// This object with its entries, and those of the objects in it, shared: clones of it
    /// are reference counts, and a clone that is changed copies its entries then. For values
    /// that caches hand out to many events.
    pub fn into_shared(self) -> Object {
        let entries: Vec<Entry> = self
            .into_entries()
            .map(|mut entry| {
                if let Value::Object(object) = entry.value {
                    entry.value = Value::Object(object.into_shared());
                }
                entry
            })
            .collect();
        Object {
            entries: Entries::Shared(entries.into()),
        }
    }

    /// Whether the entries are shared (see [`Object::into_shared`]) and not yet copied.
    pub fn is_shared(&self) -> bool {
        matches!(self.entries, Entries::Shared(_))
    }

    fn slice(&self) -> &[Entry] {
        match &self.entries {
            Entries::Owned(entries) => entries,
            Entries::Shared(entries) => entries,
        }
    }

    /// The entries to change, copied first if they are shared. Inlined into every write,
    /// with the copy out of line.
    #[inline]
    fn vec_mut(&mut self) -> &mut Vec<Entry> {
        if let Entries::Shared(shared) = &self.entries {
            self.entries = Entries::Owned(Self::copied(shared));
        }
        match &mut self.entries {
            Entries::Owned(entries) => entries,
            Entries::Shared(_) => unreachable!("copied above"),
        }
    }

    /// A copy of shared entries, with room to grow as a vector of its own would have: the
    /// write that copies them is usually an insert (a processor adding a field to a cached
    /// object).
    #[cold]
    fn copied(shared: &[Entry]) -> Vec<Entry> {
        let mut owned = Vec::with_capacity((shared.len() * 2).max(4));
        owned.extend(shared.iter().cloned());
        owned
    }

    fn into_entries(self) -> std::vec::IntoIter<Entry> {
        match self.entries {
            Entries::Owned(entries) => entries.into_iter(),
            Entries::Shared(shared) => {
                let copied: Vec<Entry> = shared.iter().cloned().collect();
                copied.into_iter()
            }
        }
    }

    pub fn len(&self) -> usize {
        self.slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.slice().is_empty()
    }

    /// Where `key` is, or where it would go.
    fn find(&self, key: &str) -> Result<usize, usize> {
        let wanted = prefix(key);
        let entries = self.slice();
        // Halved while many are left, then scanned: most objects have a handful of keys, and
        // comparing their prefixes one after the other takes fewer instructions (and fewer
        // mispredicted branches) than a binary search's steps.
        let (mut at, mut end) = (0, entries.len());
        while end - at > 8 {
            let middle = at + (end - at) / 2;
            // Equal prefixes are told apart here too: stopping at the first one and scanning
            // made a lookup linear in the keys sharing their first 8 bytes (`attribute_1` …
            // `attribute_80000`), and a line of 80,000 such keys took 16 s to read.
            match entries[middle]
                .prefix
                .cmp(&wanted)
                .then_with(|| tie_break(&entries[middle].key, key))
            {
                Ordering::Less => at = middle + 1,
                Ordering::Greater => end = middle,
                Ordering::Equal => return Ok(middle),
            }
        }
        while at < end && entries[at].prefix < wanted {
            at += 1;
        }
        while at < end && entries[at].prefix == wanted {
            match tie_break(&entries[at].key, key) {
                Ordering::Less => at += 1,
                Ordering::Equal => return Ok(at),
                Ordering::Greater => break,
            }
        }
        Err(at)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        let at = self.find(key).ok()?;
        Some(&self.slice()[at].value)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        let at = self.find(key).ok()?;
        Some(&mut self.vec_mut()[at].value)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`, returning the value it replaced. The key is made into a
    /// [`Text`] only when it is new: most fields a step sets replace one an earlier step set.
    pub fn insert<K>(&mut self, key: K, value: impl Into<Value>) -> Option<Value>
    where
        K: AsRef<str> + Into<Text>,
    {
        let value = value.into();
        match self.find(key.as_ref()) {
            Ok(at) => Some(std::mem::replace(&mut self.vec_mut()[at].value, value)),
            Err(at) => {
                self.vec_mut().insert(at, Entry::new(key.into(), value));
                None
            }
        }
    }

    /// Sets `key` to `value` unless it has a value already. Returns whether it did.
    pub fn insert_if_absent<K>(&mut self, key: K, value: impl Into<Value>) -> bool
    where
        K: AsRef<str> + Into<Text>,
    {
        match self.find(key.as_ref()) {
            Ok(_) => false,
            Err(at) => {
                self.vec_mut()
                    .insert(at, Entry::new(key.into(), value.into()));
                true
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let at = self.find(key).ok()?;
        Some(self.vec_mut().remove(at).value)
    }

    /// The object at `key`, created (or made an object, replacing another value) if needed.
    pub fn object_mut(&mut self, key: &str) -> &mut Object {
        let at = match self.find(key) {
            Ok(at) => {
                let slot = &mut self.vec_mut()[at].value;
                if !slot.is_object() {
                    *slot = Value::Object(Object::new());
                }
                at
            }
            Err(at) => {
                let entry = Entry::new(key.into(), Value::Object(Object::new()));
                self.vec_mut().insert(at, entry);
                at
            }
        };
        match &mut self.vec_mut()[at].value {
            Value::Object(object) => object,
            _ => unreachable!("made an object above"),
        }
    }

    /// The object at `key`, created if `key` is missing; `None` if it holds another value.
    pub fn object_if_free(&mut self, key: &str) -> Option<&mut Object> {
        let at = match self.find(key) {
            Ok(at) => at,
            Err(at) => {
                let entry = Entry::new(key.into(), Value::Object(Object::new()));
                self.vec_mut().insert(at, entry);
                at
            }
        };
        self.vec_mut()[at].value.as_object_mut()
    }

    /// The entries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Text, &Value)> {
        self.slice().iter().map(|entry| (&entry.key, &entry.value))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Text> {
        self.slice().iter().map(|entry| &entry.key)
    }

    /// Merges `other` into this object: a key both have holds an object in both is merged
    /// the same way, key by key; any other key both have keeps this object's value unless
    /// `other_wins`.
    pub fn merge(&mut self, other: Object, other_wins: bool) {
        if self.is_empty() {
            // Nothing to merge with: taken whole, still shared if it is.
            *self = other;
            return;
        }
        if other.len() > INSERTED_ONE_BY_ONE {
            return self.merge_sorted(other, other_wins);
        }
        match other.entries {
            Entries::Owned(entries) => {
                for Entry { key, value, .. } in entries {
                    self.merge_entry(key, value, other_wins);
                }
            }
            // A cache's result: its entries are cloned one by one as they are merged, without
            // a copy of the whole list first.
            Entries::Shared(entries) => {
                for entry in entries.iter() {
                    self.merge_entry(entry.key.clone(), entry.value.clone(), other_wins);
                }
            }
        }
    }

    /// Sets `key` to `value`, or merges `value` into the object at `key` if both are objects
    /// (as [`Object::merge`] does, `value` winning).
    pub fn merge_key(&mut self, key: &str, value: impl Into<Value>) {
        self.merge_entry(key.into(), value.into(), true);
    }

    /// Merges one entry of [`Object::merge`]'s `other`.
    fn merge_entry(&mut self, key: Text, value: Value, other_wins: bool) {
        match self.find(&key) {
            Ok(at) => merge_value(&mut self.vec_mut()[at].value, value, other_wins),
            Err(at) => self.vec_mut().insert(at, Entry::new(key, value)),
        }
    }

    /// [`Object::merge`] of a large `other`: both sorted lists walked once, side by side.
    /// Key by key, each new key inserted moves the keys after it: quadratic for the 80,000
    /// keys of one decoded line merged into its event.
    fn merge_sorted(&mut self, other: Object, other_wins: bool) {
        let mut mine = std::mem::take(self).into_entries().peekable();
        let mut theirs = other.into_entries().peekable();
        let mut merged = Vec::with_capacity(mine.len() + theirs.len());
        while let (Some(a), Some(b)) = (mine.peek(), theirs.peek()) {
            match cmp_entries(a, b) {
                Ordering::Less => merged.extend(mine.next()),
                Ordering::Greater => merged.extend(theirs.next()),
                Ordering::Equal => {
                    if let (Some(mut entry), Some(theirs)) = (mine.next(), theirs.next()) {
                        merge_value(&mut entry.value, theirs.value, other_wins);
                        merged.push(entry);
                    }
                }
            }
        }
        merged.extend(mine);
        merged.extend(theirs);
        self.entries = Entries::Owned(merged);
    }

    /// Adds `entries`, in any order, a repeated key keeping its last value (as inserting
    /// them one by one would): appended, sorted once, deduplicated.
    fn extend_unsorted(&mut self, entries: Vec<Entry>) {
        let all = self.vec_mut();
        all.extend(entries);
        // A stable sort: of entries with equal keys, the last one read comes last.
        all.sort_by(cmp_entries);
        // `later` is dropped when it repeats `kept`'s key; its value is kept instead.
        all.dedup_by(|later, kept| {
            let repeated = cmp_entries(later, kept) == Ordering::Equal;
            if repeated {
                std::mem::swap(later, kept);
            }
            repeated
        });
    }
}

/// Merges `theirs` into `mine` as [`Object::merge`] merges the values of a key both have.
fn merge_value(mine: &mut Value, theirs: Value, other_wins: bool) {
    match (mine, theirs) {
        (Value::Object(mine), Value::Object(theirs)) => mine.merge(theirs, other_wins),
        (mine, theirs) => {
            if other_wins {
                *mine = theirs;
            }
        }
    }
}

impl Index<&str> for Object {
    type Output = Value;

    /// The value of `key`, or `Null` if there is none (as `serde_json::Map` indexes).
    fn index(&self, key: &str) -> &Value {
        self.get(key).unwrap_or(&NULL)
    }
}

impl Index<&str> for Value {
    type Output = Value;

    /// The value of `key` in this object, or `Null` (as `serde_json::Value` indexes).
    fn index(&self, key: &str) -> &Value {
        self.get(key).unwrap_or(&NULL)
    }
}

impl<K: AsRef<str> + Into<Text>, V: Into<Value>> Extend<(K, V)> for Object {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, entries: I) {
        for (key, value) in entries {
            self.insert(key, value);
        }
    }
}

impl<K: AsRef<str> + Into<Text>, V: Into<Value>> FromIterator<(K, V)> for Object {
    /// With room for as many entries as the iterator says it has: most collected objects
    /// are small, and a vector's first growth would give them room for four.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let entries = entries.into_iter();
        let mut object = Object::with_capacity(entries.size_hint().0);
        object.extend(entries);
        object
    }
}

impl IntoIterator for Object {
    type Item = (Text, Value);
    type IntoIter = std::iter::Map<std::vec::IntoIter<Entry>, fn(Entry) -> (Text, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.into_entries().map(|entry| (entry.key, entry.value))
    }
}

impl PartialEq for Object {
    fn eq(&self, other: &Object) -> bool {
        self.slice() == other.slice()
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("Null"),
            Value::Bool(b) => write!(f, "Bool({b})"),
            Value::Number(n) => write!(f, "Number({n})"),
            Value::String(s) => write!(f, "String({s:?})"),
            Value::Array(items) => f.debug_list().entries(items).finish(),
            Value::Object(object) => object.fmt(f),
        }
    }
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl fmt::Display for Value {
    /// The value as JSON text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::String(text.into())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::String(text.into())
    }
}

impl From<Text> for Value {
    fn from(text: Text) -> Self {
        Value::String(text)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<Object> for Value {
    fn from(object: Object) -> Self {
        Value::Object(object)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::Array(items)
    }
}

macro_rules! from_integer {
    ($($t:ty => $as:ident $wide:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Self {
                Value::Number(n.into())
            }
        }

        impl PartialEq<$t> for Value {
            fn eq(&self, other: &$t) -> bool {
                self.$as() == Some(<$wide>::from(*other))
            }
        }
    )*};
}

from_integer!(u16 => as_u64 u64, u32 => as_u64 u64, u64 => as_u64 u64, i32 => as_i64 i64, i64 => as_i64 i64);

impl From<f64> for Value {
    /// A finite number; NaN and the infinities, which JSON cannot write, are `Null`.
    fn from(n: f64) -> Self {
        Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

impl From<serde_json::Value> for Value {
    fn from(value: serde_json::Value) -> Self {
        match value {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => Value::Number(n),
            serde_json::Value::String(s) => Value::String(s.into()),
            serde_json::Value::Array(items) => {
                Value::Array(items.into_iter().map(Value::from).collect())
            }
            serde_json::Value::Object(map) => Value::Object(map.into()),
        }
    }
}

impl From<serde_json::Map<String, serde_json::Value>> for Object {
    fn from(map: serde_json::Map<String, serde_json::Value>) -> Self {
        // Already in key order: pushed, not inserted.
        Object {
            entries: Entries::Owned(
                map.into_iter()
                    .map(|(k, v)| Entry::new(k.into(), v.into()))
                    .collect(),
            ),
        }
    }
}

impl PartialEq<str> for Value {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}

impl PartialEq<&str> for Value {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl PartialEq<serde_json::Value> for Value {
    fn eq(&self, other: &serde_json::Value) -> bool {
        match (self, other) {
            (Value::Null, serde_json::Value::Null) => true,
            (Value::Bool(a), serde_json::Value::Bool(b)) => a == b,
            (Value::Number(a), serde_json::Value::Number(b)) => a == b,
            (Value::String(a), serde_json::Value::String(b)) => a == b,
            (Value::Array(a), serde_json::Value::Array(b)) => a == b,
            (Value::Object(a), serde_json::Value::Object(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, va), (kb, vb))| ka == kb && va == vb)
            }
            _ => false,
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Number(n) => n.serialize(serializer),
            Value::String(s) => serializer.serialize_str(s),
            Value::Array(items) => serializer.collect_seq(items),
            Value::Object(object) => object.serialize(serializer),
        }
    }
}

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for entry in self.slice() {
            map.serialize_entry(entry.key.as_str(), &entry.value)?;
        }
        map.end()
    }
}

/// How deep a value read with `Deserialize` may be: twice [`MAX_DEPTH`], for the events the
/// agent wrote and reads back (the disk queue), whose input's levels may sit under levels a
/// configured path adds (`rename` to `a.b.c`). Input is read with [`Value::from_json`].
const READ_DEPTH: usize = 2 * MAX_DEPTH;

impl<'de> Deserialize<'de> for Value {
    /// At most [`READ_DEPTH`] levels deep.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Within(READ_DEPTH).deserialize(deserializer)
    }
}

impl<'de> Deserialize<'de> for Object {
    /// At most [`READ_DEPTH`] levels deep, this object included.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(ValueVisitor { levels: READ_DEPTH })
            .and_then(|value| match value {
                Value::Object(object) => Ok(object),
                _ => Err(de::Error::custom("expected a JSON object")),
            })
    }
}

/// Reads a value that opens at most this many levels of arrays and objects.
#[derive(Clone, Copy)]
struct Within(usize);

impl<'de> DeserializeSeed<'de> for Within {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor { levels: self.0 })
    }
}

/// Reads any JSON value, as `serde_json::Value` does, opening at most `levels` levels of
/// arrays and objects: each level is a few stack frames of the reader, and of every walk of
/// the tree after it.
struct ValueVisitor {
    levels: usize,
}

impl ValueVisitor {
    /// The levels left inside the array or object this visitor opens.
    fn inside<E: de::Error>(&self) -> Result<Within, E> {
        match self.levels.checked_sub(1) {
            Some(levels) => Ok(Within(levels)),
            None => Err(E::custom("nested deeper than an event may be")),
        }
    }
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(n.into())
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(n.into())
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(n.into())
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(s.into())
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(s.into())
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Within(self.levels).deserialize(deserializer)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inside = self.inside()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(inside)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inside = self.inside()?;
        let mut object = Object::with_capacity(map.size_hint().unwrap_or(0).min(64));
        let mut more = Vec::new();
        // A key read twice keeps its last value, as serde_json's map does.
        while let Some(key) = map.next_key::<KeyText>()? {
            let value = map.next_value_seed(inside)?;
            if object.len() < INSERTED_ONE_BY_ONE {
                object.insert(key.0, value);
            } else {
                more.push(Entry::new(key.0, value));
            }
        }
        if !more.is_empty() {
            object.extend_unsorted(more);
        }
        Ok(Value::Object(object))
    }
}

/// A key read straight into a [`Text`], without a `String` in between.
struct KeyText(Text);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl Visitor<'_> for KeyVisitor {
            type Value = KeyText;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_str<E>(self, s: &str) -> Result<KeyText, E> {
                Ok(KeyText(s.into()))
            }

            fn visit_string<E>(self, s: String) -> Result<KeyText, E> {
                Ok(KeyText(s.into()))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

impl AsRef<str> for KeyText {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// Runs `f` on a thread with a stack of 256 KiB, an eighth of a Rust thread's default:
    /// what passes here walks trees with bounded recursion (a 30,000-level tree needs
    /// megabytes).
    pub(crate) fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    /// `levels` levels of `open` around a 1: `[[[1]]]` or `{"a":{"a":1}}`.
    pub(crate) fn nested(open: &str, close: &str, levels: usize) -> String {
        let mut text = open.repeat(levels);
        text.push('1');
        text.push_str(&close.repeat(levels));
        text
    }

    #[test]
    fn json_nested_deeper_than_an_event_may_be_is_refused() {
        on_small_stack(|| {
            for (open, close) in [("[", "]"), (r#"{"a":"#, "}")] {
                let deepest = nested(open, close, MAX_DEPTH);
                let value = Value::from_json(&deepest, MAX_DEPTH).unwrap();
                assert_eq!(value.depth(), MAX_DEPTH);
                assert_eq!(serde_json::to_string(&value).unwrap(), deepest);
                let clone = value.clone();
                assert_eq!(clone, value);
                drop((value, clone));
                for levels in [MAX_DEPTH + 1, 1 << 20] {
                    let err = Value::from_json(&nested(open, close, levels), MAX_DEPTH)
                        .unwrap_err()
                        .to_string();
                    assert!(err.contains("nested deeper"), "{levels}: {err}");
                }
                // What the agent reads back may be deeper (see `READ_DEPTH`), never unbounded.
                let read_back = nested(open, close, READ_DEPTH - 1);
                assert!(serde_json::from_str::<Value>(&read_back).is_ok());
                assert!(serde_json::from_str::<Value>(&nested(open, close, 1 << 20)).is_err());
            }
        });
    }

    /// Keys sharing their first 8 bytes, in an order of their own: `attribute_{n}`.
    fn many_keys(n: usize) -> Vec<String> {
        // A stride coprime with `n` visits every key once, far from sorted.
        (0..n)
            .map(|i| format!("attribute_{}", (i * 7919) % n))
            .collect()
    }

    #[test]
    fn large_objects_read_as_serde_json_reads_them() {
        let keys = many_keys(80_000);
        let mut text = String::from("{");
        for (i, key) in keys.iter().enumerate() {
            text.push_str(&format!("\"{key}\":{i},"));
        }
        // Repeated keys, one among the first read and one among the last: the last wins.
        text.push_str(&format!(
            "\"{}\":\"again\",\"{}\":\"again\"}}",
            keys[3], keys[79_000]
        ));
        let ours: Value = serde_json::from_str(&text).unwrap();
        let theirs: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(ours.as_object().unwrap().len(), 80_000);
        assert_eq!(ours, theirs);
        assert_eq!(ours[keys[3].as_str()], "again");
        assert_eq!(ours[keys[79_000].as_str()], "again");
        assert_eq!(ours["attribute_12345"], theirs["attribute_12345"]);
    }

    #[test]
    fn large_merges_are_the_merges_of_their_keys() {
        let keys = many_keys(200);
        let object = |from: usize, nest: bool| -> Object {
            keys.iter()
                .enumerate()
                .skip(from)
                .take(100)
                .map(|(i, key)| {
                    let value = if nest && i % 3 == 0 {
                        Value::Object([(format!("n{from}"), i as u64)].into_iter().collect())
                    } else {
                        Value::from(i as u64 + from as u64)
                    };
                    (key.as_str(), value)
                })
                .collect()
        };
        for other_wins in [false, true] {
            let (mine, theirs) = (object(0, true), object(50, true).into_shared());
            let mut merged = mine.clone();
            merged.merge(theirs.clone(), other_wins);
            let mut expected = mine;
            for (key, value) in theirs {
                expected.merge_entry(key, value, other_wins);
            }
            assert_eq!(merged.len(), 150);
            assert_eq!(merged, expected, "other_wins: {other_wins}");
        }
    }

    #[test]
    fn objects_keep_keys_sorted_and_serialise_as_serde_json_maps_do() {
        let source = json!({ "b": 1, "a": { "z": [1, "x", null, true, 1.5], "y": {} }, "@t": "t" });
        let mut object = Object::new();
        object.insert("b", 1u64);
        object.insert("@t", "t");
        let a = object.object_mut("a");
        a.insert("z", Value::from(source["a"]["z"].clone()));
        a.object_mut("y");
        assert_eq!(
            serde_json::to_string(&object).unwrap(),
            serde_json::to_string(&source).unwrap()
        );
        assert_eq!(Value::Object(object.clone()), source);
        let read: Object = serde_json::from_str(&source.to_string()).unwrap();
        assert_eq!(read, object);
        assert_eq!(Object::from(source.as_object().unwrap().clone()), object);
    }

    #[test]
    fn keys_sharing_their_first_bytes_sort_as_strings_do() {
        let keys = [
            "",
            "a",
            "ab",
            "ab\0",
            "ab\0c",
            "abcdefgh",
            "abcdefgh\0",
            "abcdefghi",
            "abcdefgz",
            "b",
        ];
        let mut object = Object::new();
        for key in keys.iter().rev() {
            object.insert(*key, *key);
        }
        let sorted: Vec<&str> = object.keys().map(Text::as_str).collect();
        assert_eq!(sorted, keys);
        for key in keys {
            assert_eq!(object[key], key);
        }
    }

    #[test]
    fn large_objects_are_searched_as_small_ones() {
        // Many keys sharing their first 8 bytes, and many not: the halving steps meet both.
        let mut keys: Vec<String> = (0..40).map(|i| format!("abcdefgh{i}")).collect();
        keys.extend((0..40).map(|i| format!("k{i}")));
        let mut object = Object::new();
        for (i, key) in keys.iter().enumerate() {
            if i % 2 == 0 {
                object.insert(key.as_str(), i as u64);
            }
        }
        for (i, key) in keys.iter().enumerate().filter(|(i, _)| i % 2 == 1).rev() {
            object.insert(key.as_str(), i as u64);
        }
        let mut sorted = keys.clone();
        sorted.sort();
        let found: Vec<&str> = object.keys().map(Text::as_str).collect();
        assert_eq!(found, sorted);
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(object[key.as_str()], i as u64, "{key}");
            assert!(object.get(&format!("{key}x")).is_none(), "{key}x");
        }
        assert!(object.get("abcdefgh").is_none() && object.get("a").is_none());
    }

    #[test]
    fn prefixes_are_the_first_eight_bytes_zero_padded() {
        let alphabet = ["\0", "a", "\u{ff}", "é"];
        let mut keys = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = keys
                .iter()
                .flat_map(|key| alphabet.iter().map(move |c| format!("{key}{c}")))
                .collect();
            keys.extend(longer);
        }
        for key in &keys {
            let mut padded = [0; 8];
            let n = key.len().min(8);
            padded[..n].copy_from_slice(&key.as_bytes()[..n]);
            assert_eq!(prefix(key), u64::from_be_bytes(padded), "{key:?}");
        }
    }

    #[test]
    fn insert_replace_remove_and_index() {
        let mut object = Object::new();
        assert_eq!(object.insert("k", "v"), None);
        assert_eq!(object.insert("k", 2u64), Some("v".into()));
        assert_eq!(object["k"], 2u64);
        assert!(object["missing"].is_null());
        assert!(object["k"]["deeper"].is_null());
        assert_eq!(object.remove("k"), Some(2u64.into()));
        assert!(object.is_empty());
        let read: Value = serde_json::from_str(r#"{"k":1,"k":2}"#).unwrap();
        assert_eq!(read["k"], 2u64, "the last of a repeated key wins");
    }

    #[test]
    fn shared_objects_are_copied_when_changed() {
        let cached = Object::from(
            json!({ "geo": { "city": "x" }, "n": 1 })
                .as_object()
                .unwrap()
                .clone(),
        )
        .into_shared();
        let mut event = Object::new();
        event.insert("client", cached.clone());
        event
            .object_mut("client")
            .object_mut("geo")
            .insert("city", "y");
        assert_eq!(event["client"]["geo"]["city"], "y");
        assert_eq!(cached["geo"]["city"], "x", "the cache's copy is untouched");
        assert_eq!(
            serde_json::to_string(&cached).unwrap(),
            r#"{"geo":{"city":"x"},"n":1}"#
        );
    }

    #[test]
    fn merge_recurses_into_objects() {
        let mut mine = Object::from(
            json!({ "log": { "offset": 1, "file": { "path": "p" } }, "a": 1 })
                .as_object()
                .unwrap()
                .clone(),
        );
        let theirs = Object::from(
            json!({ "log": { "level": "warn", "offset": 9 }, "a": { "b": 2 }, "c": 3 })
                .as_object()
                .unwrap()
                .clone(),
        );
        let mut overwritten = mine.clone();
        mine.merge(theirs.clone(), false);
        assert_eq!(
            Value::Object(mine),
            json!({ "log": { "offset": 1, "file": { "path": "p" }, "level": "warn" }, "a": 1, "c": 3 })
        );
        overwritten.merge(theirs, true);
        assert_eq!(
            Value::Object(overwritten),
            json!({ "log": { "offset": 9, "file": { "path": "p" }, "level": "warn" }, "a": { "b": 2 }, "c": 3 })
        );
    }
}
