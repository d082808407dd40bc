//! JSON text as ECMAScript's `JSON.stringify` writes it, so a receiver that
//! re-serializes the parsed body (`JSON.stringify(JSON.parse(body))`, the
//! seeds' own verification example) gets the bytes that were signed.
//!
//! The rules are RFC 8785's, with the key order of the input kept:
//! - no whitespace;
//! - numbers as ECMAScript's `Number.prototype.toString` (`6.0` → `6`,
//!   `1e21` → `1e+21`, `-0` → `0`, shortest round-trip digits), via `ryu-js`;
//!   integers that fit 64 bits keep all their digits: beyond 2^53 JavaScript
//!   would round them (the one case a re-serialized body differs);
//! - strings escaped as `JSON.stringify` does (`"`, `\`, and control
//!   characters only; U+2028 and non-ASCII as they are), which is what
//!   `serde_json` writes;
//! - object keys in the order JavaScript enumerates them after parsing:
//!   array-index keys (`"0"`, `"17"`) first in ascending order, then the
//!   others as they came. A repeated key keeps its first position and its
//!   last value, as `JSON.parse` does.

use std::fmt;
use std::io::Write as _;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// `text` (any JSON) re-written by the rules above. Fails only on text that
/// is not JSON or nests deeper than `serde_json`'s recursion limit (128).
pub fn es_json(text: &str) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(text.len());
    es_json_into(text, &mut out)?;
    Ok(String::from_utf8(out).expect("es_json writes UTF-8 only"))
}

/// [`es_json`] appended to `out`, which the envelope is built in: one
/// buffer for the whole body instead of a `String` per value (the
/// delivery's largest cost on the hot path, measured). On error `out` is as
/// it was.
pub fn es_json_into(text: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let start = out.len();
    let mut de = serde_json::Deserializer::from_str(text);
    let done = Es(out).deserialize(&mut de).and_then(|()| de.end());
    if done.is_err() {
        out.truncate(start);
    }
    done
}

/// Renders one JSON value at the end of its buffer.
struct Es<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Es<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// An object key: written escaped at the end of the buffer; its value is
/// the array index it names, if any.
struct Key<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<u32>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<u32>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<u32>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<u32>, E> {
        string(self.0, v);
        Ok(array_index(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Option<u32>, E> {
        unescaped(self.0, v);
        Ok(array_index(v))
    }
}

/// `v` as a JSON string, escaped as `JSON.stringify` escapes (serde_json's
/// escaping).
fn string(out: &mut Vec<u8>, v: &str) {
    serde_json::to_writer(out, v).expect("writing to a Vec cannot fail");
}

/// A string serde_json lent from the input as it stands, which it does only
/// when the input had no escape in it; the parser refuses raw control
/// characters, so nothing in it needs escaping either: written as it is,
/// without escaping's scan of every byte (the payloads' long strings).
fn unescaped(out: &mut Vec<u8>, v: &str) {
    out.push(b'"');
    out.extend_from_slice(v.as_bytes());
    out.push(b'"');
}

fn number(out: &mut Vec<u8>, v: f64) {
    if v == 0.0 {
        // -0 too: JavaScript writes it as 0.
        out.push(b'0');
        return;
    }
    out.extend_from_slice(ryu_js::Buffer::new().format_finite(v).as_bytes());
}

/// The array index a key names for JavaScript's property order: a canonical
/// decimal integer below 2^32 − 1.
fn array_index(key: &str) -> Option<u32> {
    if key.is_empty() || (key.len() > 1 && key.starts_with('0')) {
        return None;
    }
    key.parse::<u32>().ok().filter(|&i| i != u32::MAX)
}

/// One member of an object being written: where its `"key":value` text
/// is in the buffer, where its key ends, and the array index the key names.
struct Member {
    start: usize,
    key_end: usize,
    end: usize,
    index: Option<u32>,
}

impl<'de> Visitor<'de> for Es<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        let _ = write!(self.0, "{v}");
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        let _ = write!(self.0, "{v}");
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        number(self.0, v);
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        string(self.0, v);
        Ok(())
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        unescaped(self.0, v);
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push(b'[');
        let first = out.len();
        loop {
            let before = out.len();
            if before > first {
                out.push(b',');
            }
            if seq.next_element_seed(Es(&mut *out))?.is_none() {
                out.truncate(before);
                break;
            }
        }
        out.push(b']');
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push(b'{');
        let base = out.len();
        let mut members: Vec<Member> = Vec::new();
        // Written in input order as they come; rewritten only when a key
        // repeats or names an array index (JavaScript's order differs then).
        let mut reorder = false;
        loop {
            let before = out.len();
            if !members.is_empty() {
                out.push(b',');
            }
            let start = out.len();
            let Some(index) = map.next_key_seed(Key(&mut *out))? else {
                out.truncate(before);
                break;
            };
            let key_end = out.len();
            out.push(b':');
            map.next_value_seed(Es(&mut *out))?;
            let end = out.len();
            reorder |= index.is_some();
            // The escaped text is canonical, so equal keys have equal bytes.
            let key = &out[start..key_end];
            match members
                .iter_mut()
                .find(|m| m.key_end - m.start == key.len() && out[m.start..m.key_end] == *key)
            {
                // The first position, the last value (as `JSON.parse`).
                Some(m) => {
                    m.start = start;
                    m.key_end = key_end;
                    m.end = end;
                    reorder = true;
                }
                None => members.push(Member {
                    start,
                    key_end,
                    end,
                    index,
                }),
            }
        }
        if reorder {
            // Stable: the non-index keys keep their order.
            members.sort_by_key(|m| m.index.map_or((1, 0), |i| (0, i)));
            let written = out.split_off(base);
            for (i, m) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&written[m.start - base..m.end - base]);
            }
        }
        out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::es_json;

    #[test]
    fn writes_what_json_stringify_writes() {
        for (input, want) in [
            (
                r#"{"visitors": 25, "ratio": 6.0}"#,
                r#"{"visitors":25,"ratio":6}"#,
            ),
            (
                "[1e21, 1E-7, 0.000001, 123456789012345680000, -0, -0.0, 1.5e300]",
                "[1e+21,1e-7,0.000001,123456789012345680000,0,0,1.5e+300]",
            ),
            ("0.1", "0.1"),
            (
                "[0.30000000000000004, 100, 1e2, 2.50]",
                "[0.30000000000000004,100,100,2.5]",
            ),
            (
                r#"{"b": 1, "2": 2, "a": 3, "10": 4, "01": 5, "4294967295": 6}"#,
                r#"{"2":2,"10":4,"b":1,"a":3,"01":5,"4294967295":6}"#,
            ),
            (r#"{"a": 1, "a": 2, "b": 3}"#, r#"{"a":2,"b":3}"#),
            (
                "\"caf\u{e9} \u{2028} \\u2029 \\u0001 \\/ \\\" \\\\ \\n\"",
                "\"caf\u{e9} \u{2028} \u{2029} \\u0001 / \\\" \\\\ \\n\"",
            ),
            (
                r#"{"nested": {"list": [true, false, null, {"x": [[]]}]}}"#,
                r#"{"nested":{"list":[true,false,null,{"x":[[]]}]}}"#,
            ),
            ("9007199254740993", "9007199254740993"),
        ] {
            assert_eq!(es_json(input).unwrap(), want, "{input}");
        }
    }

    /// Members are rewritten in place within their own object: reordering
    /// or a repeated key in an inner object leaves the outer one's text whole.
    #[test]
    fn reorders_nested_objects_within_their_own_text() {
        for (input, want) in [
            (
                r#"{"x": [{"b": 1, "1": 2, "b": 3}, {"z": {"9": 0, "y": 1}}], "0": {"a": {"a": 1, "2": 2}}}"#,
                r#"{"0":{"a":{"2":2,"a":1}},"x":[{"1":2,"b":3},{"z":{"9":0,"y":1}}]}"#,
            ),
            (r#"{"k": {"a": 1}, "k": [1, 2]}"#, r#"{"k":[1,2]}"#),
            (r#"{"": 1, "": 2}"#, r#"{"":2}"#),
            ("[[], {}, [{}], \"\"]", r#"[[],{},[{}],""]"#),
        ] {
            assert_eq!(es_json(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn refuses_what_is_not_json() {
        assert!(es_json("{").is_err());
        assert!(es_json("1 2").is_err());
        assert!(es_json(&"[".repeat(200)).is_err());
        // The envelope's buffer is left as it was, for the raw text to follow.
        let mut out = b"{\"data\":".to_vec();
        assert!(super::es_json_into(r#"{"a": [1, 2"#, &mut out).is_err());
        assert_eq!(out, b"{\"data\":");
    }
}
