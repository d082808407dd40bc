//! Writing ClickHouse SQL text and reading its TabSeparated answers.
//!
//! Old servers (Debian's 18.x) have no query parameters, so every value a
//! query needs is written into its text. That is safe only because of
//! `string`: inside a single-quoted ClickHouse literal only `'` and `\` are
//! special, and `string` lets through nothing but characters that are plain
//! on every version (letters, digits and a few punctuation marks). Every other
//! byte, quotes, backslashes, braces, newlines, NUL and anything non-ASCII,
//! is written as `\xHH`, which every version decodes to that byte. No goal
//! name, page path or property can therefore end the literal.

use anyhow::{bail, Result};

/// `s` as a ClickHouse string literal (the bytes of `s`, exactly).
pub fn string(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for &b in s {
        if b.is_ascii_alphanumeric() || b" /._-:@,;=+*()[]|^$?#%&!~<>".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out.push('\'');
    out
}

/// An identifier the config validated (letters, digits, `_`), quoted anyway.
pub fn ident(s: &str) -> String {
    debug_assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    format!("`{s}`")
}

/// The rows of a TabSeparated answer, each with exactly `columns` fields,
/// unescaped to their bytes. Anything else (an exception ClickHouse wrote
/// into the body after the answer had begun, a different shape) is an error
/// that quotes the offending line.
pub fn rows(body: &[u8], columns: usize) -> Result<Vec<Vec<Vec<u8>>>> {
    let mut out = Vec::new();
    if body.is_empty() {
        return Ok(out);
    }
    let Some(body) = body.strip_suffix(b"\n") else {
        bail!(
            "ClickHouse's answer ends mid-row: {}",
            excerpt(body.rsplit(|&b| b == b'\n').next().unwrap_or(body))
        );
    };
    for line in body.split(|&b| b == b'\n') {
        let fields: Vec<Vec<u8>> = line.split(|&b| b == b'\t').map(unescape).collect();
        if fields.len() != columns {
            bail!(
                "ClickHouse answered a row with {} fields where {columns} were expected: {}",
                fields.len(),
                excerpt(line)
            );
        }
        out.push(fields);
    }
    Ok(out)
}

/// The first line of an answer (an error text), at most 300 characters.
pub fn excerpt(body: &[u8]) -> String {
    let line = body.split(|&b| b == b'\n').next().unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.into_owned(),
    }
}

/// TabSeparated escapes: `\t`, `\n`, `\\` and the like, back to bytes.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut it = field.iter().copied();
    while let Some(b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'b') => out.push(0x08),
            Some(b'f') => out.push(0x0c),
            Some(b'0') => out.push(0),
            Some(other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    out
}

pub fn int(field: &[u8]) -> Result<i64> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "ClickHouse answered `{}` where a number was expected",
                excerpt(field)
            )
        })
}

/// Bytes as text for payloads and keys: invalid UTF-8 becomes U+FFFD, and
/// so does NUL, which PostgreSQL cannot store in a payload (jsonb): one such
/// event would otherwise fail its whole batch at every scan.
pub fn text(field: Vec<u8>) -> String {
    let s = match String::from_utf8(field) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_let_through_only_plain_characters() {
        assert_eq!(string(b"/blog/a-b_c.html"), "'/blog/a-b_c.html'");
        assert_eq!(string(b"it's"), "'it\\x27s'");
        assert_eq!(string(b"a\\b"), "'a\\x5Cb'");
        assert_eq!(string(b"{x:String}"), "'\\x7Bx:String\\x7D'");
        assert_eq!(string(b"l1\nl2\r\0"), "'l1\\x0Al2\\x0D\\x00'");
        assert_eq!(string("é".as_bytes()), "'\\xC3\\xA9'");
        assert_eq!(string(&[0xff, 0xfe]), "'\\xFF\\xFE'");
        // Whatever goes in, the literal holds no quote, backslash-quote or
        // newline that could end it or start another statement.
        let hostile: Vec<u8> = (0u8..=255).collect();
        let lit = string(&hostile);
        let inner = &lit[1..lit.len() - 1];
        assert!(!inner.contains('\'') && !inner.contains('\n') && !inner.contains('{'));
        assert!(inner.split("\\x").skip(1).all(|h| h.len() >= 2));
    }

    #[test]
    fn tab_separated_rows_unescape_and_refuse_other_shapes() {
        let body = b"1\t/a\\nb\\tc\t\\\\x\\'\n2\t\xff\\0\t\n";
        let r = rows(body, 3).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            vec![b"1".to_vec(), b"/a\nb\tc".to_vec(), b"\\x'".to_vec()]
        );
        assert_eq!(r[1], vec![b"2".to_vec(), vec![0xff, 0], vec![]]);
        assert_eq!(text(r[1][1].clone()), "\u{fffd}\u{fffd}");
        assert!(rows(b"", 3).unwrap().is_empty());
        let e = rows(
            b"1\t2\t3\nCode: 241, e.displayText() = DB::Exception: Memory limit\n",
            3,
        )
        .unwrap_err();
        assert!(format!("{e}").contains("Memory limit"), "{e}");
        assert!(rows(b"1\t2\t3", 3).is_err());
        assert!(int(b"12x").is_err());
        assert_eq!(int(b"-7").unwrap(), -7);
    }
}
