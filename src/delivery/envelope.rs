//! The JSON body: the row's `payload` wrapped in the event envelope,
//! deterministically, so every retry sends the same bytes, and written as
//! JavaScript's `JSON.stringify` writes JSON (`es_json`), so a receiver that
//! re-serializes the parsed body still has the bytes that were signed.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::timestamp::write_rfc3339_seconds;

/// `{"id":…,"event":…,"site_id":<domain>,"timestamp":…,"data":<payload>}`.
/// `data_json` is the payload as PostgreSQL renders jsonb (stable for a row);
/// it is re-written compact by `es_json`. A payload `es_json` cannot read
/// (nested deeper than 128 levels, which jsonb allows) goes as PostgreSQL
/// wrote it: still JSON, still the same bytes on every retry.
pub fn envelope(
    id: &Uuid,
    event: &str,
    site_domain: &str,
    at: OffsetDateTime,
    data_json: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + data_json.len());
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(
        id.hyphenated()
            .encode_lower(&mut Uuid::encode_buffer())
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"event\":");
    serde_json::to_writer(&mut out, event).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b",\"site_id\":");
    serde_json::to_writer(&mut out, site_domain).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b",\"timestamp\":\"");
    write_rfc3339_seconds(&mut out, at);
    out.extend_from_slice(b"\",\"data\":");
    // Rendered straight into the body: one buffer per delivery, not a
    // string per JSON value and a copy of the whole (measured: most of the
    // envelope's cost).
    if super::es_json::es_json_into(data_json, &mut out).is_err() {
        out.extend_from_slice(data_json.as_bytes());
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_valid_json_with_the_spec_fields() {
        let id = Uuid::parse_str("0b9a1c8e-4a57-4a4e-9a8e-2f1d3c4b5a69").unwrap();
        let at = time::macros::datetime!(2026-02-25 12:00:00.789 UTC);
        let body = envelope(
            &id,
            "goal_completion",
            "ex\"ample.com",
            at,
            r#"{"goal_id": 7}"#,
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], id.to_string());
        assert_eq!(v["event"], "goal_completion");
        assert_eq!(v["site_id"], "ex\"ample.com");
        assert_eq!(v["timestamp"], "2026-02-25T12:00:00Z");
        assert_eq!(v["data"]["goal_id"], 7);
        assert!(
            body.ends_with(br#","data":{"goal_id":7}}"#),
            "compact, as JSON.stringify writes it"
        );
        assert_eq!(
            body,
            envelope(
                &id,
                "goal_completion",
                "ex\"ample.com",
                at,
                r#"{"goal_id": 7}"#
            )
        );
    }
}
