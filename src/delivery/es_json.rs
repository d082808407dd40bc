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

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// `text` (any JSON) re-written by the rules above. Fails only on text that
/// is not JSON or nests deeper than `serde_json`'s recursion limit (128).
pub fn es_json(text: &str) -> Result<String, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let out = Es.deserialize(&mut de)?;
    de.end()?;
    Ok(out)
}

/// Renders one JSON value.
#[derive(Clone, Copy)]
struct Es;

impl<'de> DeserializeSeed<'de> for Es {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

/// An object key: a string, kept as its raw text.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        String::deserialize(d)
    }
}

use serde::Deserialize as _;

fn number(v: f64) -> String {
    if v == 0.0 {
        // -0 too: JavaScript writes it as 0.
        return "0".into();
    }
    ryu_js::Buffer::new().format_finite(v).to_string()
}

/// The array index a key names for JavaScript's property order: a canonical
/// decimal integer below 2^32 − 1.
fn array_index(key: &str) -> Option<u32> {
    if key.is_empty() || (key.len() > 1 && key.starts_with('0')) {
        return None;
    }
    key.parse::<u32>().ok().filter(|&i| i != u32::MAX)
}

impl<'de> Visitor<'de> for Es {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(if v { "true" } else { "false" }.into())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(number(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(serde_json::to_string(v).expect("a string always serializes"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok("null".into())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
        let mut out = String::from("[");
        while let Some(v) = seq.next_element_seed(Es)? {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&v);
        }
        out.push(']');
        Ok(out)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        let mut entries: Vec<(String, String)> = Vec::new();
        while let Some(k) = map.next_key_seed(Key)? {
            let v = map.next_value_seed(Es)?;
            match entries.iter_mut().find(|(ek, _)| *ek == k) {
                Some(e) => e.1 = v,
                None => entries.push((k, v)),
            }
        }
        // Stable: the non-index keys keep their order.
        entries.sort_by_key(|(k, _)| array_index(k).map_or((1, 0), |i| (0, i)));
        let mut out = String::from("{");
        for (i, (k, v)) in entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k).expect("a string always serializes"));
            out.push(':');
            out.push_str(v);
        }
        out.push('}');
        Ok(out)
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

    #[test]
    fn refuses_what_is_not_json() {
        assert!(es_json("{").is_err());
        assert!(es_json("1 2").is_err());
        assert!(es_json(&"[".repeat(200)).is_err());
    }
}
