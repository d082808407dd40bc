//! The operations' inputs, one type each, read the same way by every face:
//! from a JSON body (the API), a form or a query string (the web page, the
//! API's filters) through [`from_json`] and [`from_query`], and from the
//! command line by clap (the same struct, `#[derive(clap::Args)]`).
//!
//! The types only carry what was given. Values a person types in more than
//! one way (`5m` or `300`, a site's domain or its number, `default`) keep
//! the text until validation (`super::validate`), which names the field and
//! the rule and finds every refusal at once. What the parse itself refuses
//! is named too: a key the type does not have (`unknown_field`; in a query
//! string `not_applicable`) and a value of the wrong JSON type
//! (`wrong_type`), each with its path (`triggers[0].threshold`).
//!
//! An empty string is "not given" for optional text (a form's blank field
//! sends one): an empty `secret` is generated, an empty `event` filters
//! nothing.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::validate::{split_patterns, Invalid, Invalids, Rule};

// ------------------------------------------------------------ parsing

/// Why a request's input could not be read at all (before any field rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// Not JSON, or not a JSON object (HTTP 400 `bad_json`).
    NotJson(String),
    /// Keys the input does not have, or a value of the wrong type.
    Invalid(Invalids),
}

/// `body` as the input `T`: a JSON object; unknown keys refused.
pub fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, InputError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(InputError::NotJson(
            "the body is empty; send a JSON object".into(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    // An object first: anything else is not what any endpoint takes.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        _ => return Err(InputError::NotJson("the body must be a JSON object".into())),
    }
    let v = read(&mut de, Rule::UnknownField, |e: &serde_json::Error| {
        !e.is_data()
    })?;
    de.end()
        .map_err(|e| InputError::NotJson(format!("the body is not valid JSON ({e})")))?;
    Ok(v)
}

/// `from_json`, with an empty body read as `{}` (endpoints whose every
/// field is optional).
pub fn from_json_or_empty<T: DeserializeOwned>(body: &[u8]) -> Result<T, InputError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return from_json(b"{}");
    }
    from_json(body)
}

/// A query string (or an `application/x-www-form-urlencoded` body) as the
/// input `T`. Unknown keys are `unknown`'s rule (`not_applicable` for the
/// API's query parameters, as they always were).
pub fn from_form<T: DeserializeOwned>(query: &[u8], unknown: Rule) -> Result<T, InputError> {
    let de = serde_html_form::Deserializer::new(form_urlencoded::parse(query));
    read(de, unknown, |_: &serde_html_form::de::Error| false)
}

/// A query string as the input `T` (`not_applicable` for unknown keys).
pub fn from_query<T: DeserializeOwned>(query: Option<&str>) -> Result<T, InputError> {
    from_form(query.unwrap_or("").as_bytes(), Rule::NotApplicable)
}

/// Deserializes `T`, collecting the keys it ignores (each refused with
/// `unknown`) and blaming a wrong value on its path. `syntax` tells an error
/// of the text's syntax (not JSON) from one of its data.
fn read<'de, D, T>(
    de: D,
    unknown: Rule,
    syntax: impl Fn(&D::Error) -> bool,
) -> Result<T, InputError>
where
    D: Deserializer<'de>,
    D::Error: fmt::Display,
    T: DeserializeOwned,
{
    let mut ignored = Vec::new();
    let mut note = |path: serde_ignored::Path| ignored.push(path.to_string());
    let tracked = serde_ignored::Deserializer::new(de, &mut note);
    let value: Result<T, _> = serde_path_to_error::deserialize(tracked);
    match value {
        Err(e) if syntax(e.inner()) => Err(InputError::NotJson(format!(
            "the body is not valid JSON ({})",
            e.inner()
        ))),
        Err(e) => {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            Err(InputError::Invalid(
                Invalid::new(&field, Rule::WrongType, format!("{}", e.inner())).into(),
            ))
        }
        Ok(_) if !ignored.is_empty() => {
            let mut all = ignored.into_iter().map(|f| {
                let message = match unknown {
                    Rule::NotApplicable => "unknown query parameter",
                    _ => "this endpoint does not take this field",
                };
                Invalid::new(&f, unknown, message)
            });
            let mut refused: Invalids = all.next().expect("one ignored key").into();
            for i in all {
                refused.push(i);
            }
            Err(InputError::Invalid(refused))
        }
        Ok(v) => Ok(v),
    }
}

/// An optional text as given: None when absent or blank.
pub fn given(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

// ------------------------------------------------------------ values

/// `FromStr` (text kept as given) and `Deserialize` (a JSON number, or
/// text) for an enum of `Number(i64)` and `Text(String)`: a value a person
/// types in more than one way, read by validation.
macro_rules! number_or_text {
    ($t:ident, $expecting:literal) => {
        impl FromStr for $t {
            type Err = std::convert::Infallible;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok($t::Text(s.to_string()))
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$t, E> {
                        Ok($t::Text(s.to_string()))
                    }
                    fn visit_i64<E: de::Error>(self, n: i64) -> Result<$t, E> {
                        Ok($t::Number(n))
                    }
                    fn visit_u64<E: de::Error>(self, n: u64) -> Result<$t, E> {
                        Ok($t::Number(i64::try_from(n).unwrap_or(i64::MAX)))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

/// A site as callers name it: its domain as in Plausible (`example.com`,
/// also the envelope's `site_id`) or its numeric id; a JSON number or string.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SiteRef(String);

impl SiteRef {
    pub fn new(s: &str) -> SiteRef {
        SiteRef(s.trim().to_string())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SiteRef {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SiteRef::new(s))
    }
}

impl fmt::Display for SiteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SiteRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SiteRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a domain or a numeric site id")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SiteRef, E> {
                Ok(SiteRef::new(s))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<SiteRef, E> {
                Ok(SiteRef(n.to_string()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<SiteRef, E> {
                Ok(SiteRef(n.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A length of time as given: whole seconds (a JSON number, or text of
/// digits) or text with units (`90s`, `5m`, `12h`, `7d`, `1h30m`), read
/// into seconds by validation (`Secs::seconds`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secs {
    Number(i64),
    Text(String),
}

impl Secs {
    /// The seconds, or `field`'s syntax refusal.
    pub fn seconds(&self, field: &str) -> Result<i64, Invalid> {
        match self {
            Secs::Number(n) => Ok(*n),
            Secs::Text(t) => super::validate::duration_secs(field, t),
        }
    }
}

number_or_text!(Secs, "seconds, or a duration like 5m");

/// A retry schedule as given: a list of delays (`[60, "5m"]`) or one text
/// of them (`1m,5m,30m`; `none` or empty: no retries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Items(Vec<Secs>),
    Text(String),
}

impl FromStr for Schedule {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Schedule::Text(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Schedule;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of delays, or a text like 1m,5m,30m")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Schedule, E> {
                Ok(Schedule::Text(s.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Schedule, A::Error> {
                let mut items = Vec::new();
                while let Some(s) = a.next_element::<Secs>()? {
                    items.push(s);
                }
                Ok(Schedule::Items(items))
            }
        }
        d.deserialize_any(V)
    }
}

/// A setting that can go back to the daemon's default: `null` or
/// `default` (the CLI's word), or a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting<T> {
    Default,
    Value(T),
}

impl<T: FromStr> FromStr for Setting<T> {
    type Err = T::Err;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "default" {
            return Ok(Setting::Default);
        }
        s.parse().map(Setting::Value)
    }
}

/// A whole number as given: a JSON number, or text (a form's field, the
/// CLI's argument), read by validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Num {
    Number(i64),
    Text(String),
}

impl Num {
    pub fn number(&self, field: &str) -> Result<i64, Invalid> {
        match self {
            Num::Number(n) => Ok(*n),
            Num::Text(t) => t.trim().parse().map_err(|_| {
                Invalid::new(
                    field,
                    Rule::Syntax,
                    format!("`{t}` is not a whole number (or `default`)"),
                )
            }),
        }
    }
}

number_or_text!(Num, "a whole number");

/// `Setting<T>` from JSON or a form: null or `"default"`, else a `T`
/// read from the same value.
impl<'de, T: SettingValue> Deserialize<'de> for Setting<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: SettingValue> Visitor<'de> for V<T> {
            type Value = Setting<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value, or null (the default)")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Setting::Default)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Setting::Default)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(match s.trim() {
                    // A form's blank field: back to the default too.
                    "default" | "" => Setting::Default,
                    _ => Setting::Value(T::from_text(s)),
                })
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                T::from_number(n)
                    .map(Setting::Value)
                    .ok_or_else(|| E::invalid_type(de::Unexpected::Signed(n), &self))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                T::from_seq(a).map(Setting::Value)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// What a [`Setting`] may hold.
pub trait SettingValue: Sized {
    fn from_text(s: &str) -> Self;
    fn from_number(n: i64) -> Option<Self>;
    fn from_seq<'de, A: SeqAccess<'de>>(_: A) -> Result<Self, A::Error> {
        Err(de::Error::invalid_type(de::Unexpected::Seq, &"a value"))
    }
}

impl SettingValue for Num {
    fn from_text(s: &str) -> Self {
        Num::Text(s.to_string())
    }
    fn from_number(n: i64) -> Option<Self> {
        Some(Num::Number(n))
    }
}

impl SettingValue for Schedule {
    fn from_text(s: &str) -> Self {
        Schedule::Text(s.to_string())
    }
    fn from_number(_: i64) -> Option<Self> {
        None
    }
    fn from_seq<'de, A: SeqAccess<'de>>(mut a: A) -> Result<Self, A::Error> {
        let mut items = Vec::new();
        while let Some(s) = a.next_element::<Secs>()? {
            items.push(s);
        }
        Ok(Schedule::Items(items))
    }
}

/// `Some` around whatever the value is (null included): a field present
/// as null is not a field left out.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A custom header as given: `NAME=VALUE` or `NAME: VALUE` (the CLI's
/// `--header`, a form's line), or a pair from a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderArg {
    Pair(String, String),
    /// Text with neither `=` nor `:`: refused by validation, named.
    Malformed(String),
}

impl FromStr for HeaderArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.find(['=', ':']) {
            Some(i) => HeaderArg::Pair(s[..i].trim().to_string(), s[i + 1..].trim().to_string()),
            None => HeaderArg::Malformed(s.to_string()),
        })
    }
}

/// Headers from a JSON object (`{"Authorization": "Bearer …"}`), a list of
/// `NAME=VALUE` texts, one text of lines (a form's text area), or null.
fn headers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HeaderArg>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<HeaderArg>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of header names to values")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = m.next_entry::<String, String>()? {
                out.push(HeaderArg::Pair(k, v));
            }
            Ok(out)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = a.next_element::<String>()? {
                out.push(s.parse().expect("infallible"));
            }
            Ok(out)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(s.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.parse().expect("infallible"))
                .collect())
        }
    }
    d.deserialize_any(V)
}

/// Event types or subscriptions: a list, or text separated by commas,
/// spaces or lines (a form's text area, the CLI's `--event a,b`); each list
/// item is split the same way, and blanks are dropped.
fn patterns<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of event types, or a text of them")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(split_patterns(s))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = a.next_element::<String>()? {
                out.extend(split_patterns(&s));
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

fn optional_patterns<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    patterns(d).map(Some)
}

fn optional_headers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<HeaderArg>>, D::Error> {
    headers(d).map(Some)
}

/// `true`/`false` from JSON, or from text as forms and query strings send
/// it: `true`, `1`, `on`, or present and empty; `false`, `0`, `off`.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("true or false")
        }
        fn visit_bool<E: de::Error>(self, b: bool) -> Result<bool, E> {
            Ok(b)
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<bool, E> {
            match s {
                "true" | "1" | "on" | "" => Ok(true),
                "false" | "0" | "off" => Ok(false),
                _ => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
            }
        }
    }
    d.deserialize_any(V)
}

fn optional_flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("true, false or null")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
            Ok(Some(b))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            flag(de::value::StrDeserializer::<E>::new(s)).map(Some)
        }
    }
    d.deserialize_any(V)
}

/// A goal of the webhook's site: its id, or its display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoalRef(pub String);

impl FromStr for GoalRef {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(GoalRef(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for GoalRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SiteRef::deserialize(d).map(|s| GoalRef(s.0))
    }
}

/// One prop a custom_event trigger requires of its event: `key=value` on
/// the command line and in a form's lines; in JSON an object's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropArg {
    pub key: String,
    pub value: String,
}

impl FromStr for PropArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((k, v)) => Ok(PropArg {
                key: k.trim().to_string(),
                value: v.trim().to_string(),
            }),
            None => Err(format!(
                "`{}` is not key=value (a prop the event must carry, as plan=pro)",
                s.chars().take(100).collect::<String>()
            )),
        }
    }
}

/// `props`: an object of strings (`{"plan": "pro"}`), or `key=value` items,
/// as an array or as the lines of one text (a form's textarea).
fn props<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PropArg>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<PropArg>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of strings, or key=value lines")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            s.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.parse().map_err(E::custom))
                .collect()
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = a.next_element::<String>()? {
                out.push(item.parse().map_err(de::Error::custom)?);
            }
            Ok(out)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((key, value)) = a.next_entry::<String, String>()? {
                out.push(PropArg { key, value });
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

// ------------------------------------------------------------ inputs

/// A trigger: what makes events for a webhook. `{"type": "visitor_spike",
/// "threshold": 50}`; on the command line `spike --threshold 50`. In a
/// webhook's `triggers` a type alone may be given as text (`"goal"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args, ToSchema)]
#[group(skip)]
pub struct NewTrigger {
    /// spike (visitor_spike), drop (traffic_drop), goal (goal_completion),
    /// event (custom_event) or tracking (tracking_stopped).
    #[arg(value_name = "TYPE", required = true)]
    #[serde(rename = "type", default)]
    #[schema(value_type = String, example = "visitor_spike")]
    pub trigger_type: Option<String>,
    /// spike/drop: unique visitors, 1–10,000,000. Default: derived from the site's last 7 days.
    #[arg(long)]
    #[serde(default)]
    pub threshold: Option<i64>,
    /// spike/drop: the window counted, 1m–7d (default spike 5m, drop 12h);
    /// a digest: each digest's window, 1m–7d (default 1h); tracking: how
    /// long without an event is an outage, 1m–7d (default 1h).
    #[arg(long = "window")]
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub window_secs: Option<Secs>,
    /// spike/drop: the least time between two firings, 0–7d (default 1h).
    #[arg(long = "cooldown")]
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub cooldown_secs: Option<Secs>,
    /// goal: one goal of the site, by id or display name. Default: every goal of the site.
    #[arg(long)]
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub goal: Option<GoalRef>,
    /// event: the custom event's name, as the site sends it (any name, not
    /// only a goal's).
    #[arg(long = "event-name", alias = "name")]
    #[serde(default, alias = "event")]
    pub event_name: Option<String>,
    /// event: a prop the event must carry, key=value (repeat for more; all
    /// must match, as a goal's custom props).
    #[arg(long = "prop", value_name = "KEY=VALUE")]
    #[serde(default, deserialize_with = "props")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    pub props: Vec<PropArg>,
    /// goal/event: `each` occurrence as its own POST (default), or a
    /// `digest` per window with the count and the first occurrences.
    #[arg(long)]
    #[serde(default)]
    pub mode: Option<String>,
}

impl FromStr for NewTrigger {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(NewTrigger {
            trigger_type: Some(s.to_string()),
            ..Default::default()
        })
    }
}

/// A trigger to preview on a site: the trigger as `triggers add` takes it,
/// and how much of the site's history to replay it over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args, ToSchema)]
#[group(skip)]
pub struct PreviewInput {
    /// How far back to replay it: a duration up to 90d (30d, 12h). Default 30d.
    #[arg(long = "since")]
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "30d")]
    pub since: Option<Secs>,
    /// The trigger, as `POST /api/webhooks/{id}/triggers` takes it. Nested
    /// in JSON, not flattened: serde's flatten would let a mistyped key
    /// through unrefused.
    #[command(flatten)]
    #[serde(default)]
    pub trigger: NewTrigger,
}

/// One of a webhook's `triggers`: an object, or its type alone. Read by
/// hand, not as an untagged enum: that would buffer the value and hide
/// its unknown keys and paths from the parse.
struct OneTrigger(NewTrigger);

impl<'de> Deserialize<'de> for OneTrigger {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneTrigger;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a trigger object, or a trigger type")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<OneTrigger, E> {
                Ok(OneTrigger(s.parse().expect("infallible")))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<OneTrigger, A::Error> {
                NewTrigger::deserialize(de::value::MapAccessDeserializer::new(m)).map(OneTrigger)
            }
        }
        d.deserialize_any(V)
    }
}

fn triggers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NewTrigger>, D::Error> {
    let v: Option<Vec<OneTrigger>> = Option::deserialize(d)?;
    Ok(v.unwrap_or_default().into_iter().map(|t| t.0).collect())
}

/// A new webhook for a site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args, ToSchema)]
#[group(skip)]
pub struct NewWebhook {
    /// The site: its domain as in Plausible (example.com) or its numeric id.
    #[arg(long = "site", value_name = "SITE", required = true)]
    #[serde(default)]
    #[schema(value_type = String, example = "example.com")]
    pub site_id: Option<SiteRef>,
    /// The deprecated name of `site_id`, read this release only.
    #[arg(skip)]
    #[serde(default)]
    #[schema(value_type = Option<String>, deprecated)]
    pub site: Option<SiteRef>,
    /// A name people will recognise (1–255 characters).
    #[arg(long, required = true)]
    #[serde(default)]
    pub name: Option<String>,
    /// The receiver: https, no user:password, a public host (at most 2048 characters).
    #[arg(long, required = true)]
    #[serde(default)]
    pub url: Option<String>,
    /// The signing secret (32–256 characters; `-` reads it from stdin). Default: generated
    /// as whsec_ + base64 of 32 random bytes.
    #[arg(long)]
    #[serde(default)]
    pub secret: Option<String>,
    /// A custom header sent with every delivery, NAME=VALUE (repeatable). Content-Type,
    /// User-Agent and the signature headers cannot be set.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    #[serde(default, deserialize_with = "headers")]
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub headers: Vec<HeaderArg>,
    /// Make events with a trigger: goal (every goal of the site), spike or drop
    /// (threshold derived from recent traffic); repeatable. `triggers add` sets the
    /// details. The webhook is subscribed to what its triggers make.
    #[arg(long = "trigger", value_name = "TYPE")]
    #[serde(default, deserialize_with = "triggers")]
    pub triggers: Vec<NewTrigger>,
    /// Receive events of these types, as its site publishes them (`webhook_enqueue`):
    /// a type (`site.tracking_stopped`), a prefix wildcard (`site.*`) or `*`;
    /// repeatable, or several separated by commas. `event-types` lists the built-in ones.
    #[arg(long = "event", value_name = "TYPE")]
    #[serde(default, deserialize_with = "patterns")]
    pub events: Vec<String>,
    /// Delays between retries, e.g. 1m,5m,30m (at most 10, each ≤ 24h; `none`: no retries).
    /// Default: the daemon's delivery.retry_schedule_secs.
    #[arg(long = "retry-schedule")]
    #[serde(default)]
    #[schema(value_type = Option<Vec<i64>>)]
    pub retry_schedule_secs: Option<Schedule>,
    /// Requests per second to this receiver (over all instances together). Default:
    /// delivery.default_rate_limit_per_sec.
    #[arg(long = "rate-limit")]
    #[serde(default)]
    pub rate_limit_per_sec: Option<i64>,
    /// Concurrent requests to this receiver (over all instances together, 1–1000).
    /// Default: delivery.default_max_concurrency.
    #[arg(long)]
    #[serde(default)]
    pub max_concurrency: Option<i64>,
    /// What the receiver takes: standard (the signed JSON envelope, the default), or a
    /// chat service's incoming-webhook message: slack, discord, teams, google_chat.
    #[arg(long)]
    #[serde(default)]
    pub format: Option<String>,
    /// How deliveries are signed: hmac (`v1,` and X-Webhook-Signature, the default) or
    /// both (`v1a,` added, ed25519). With both a key pair is made; its public key
    /// (whpk_…) is shown.
    #[arg(long)]
    #[serde(default)]
    pub signature: Option<String>,
    /// With both: import this private key instead of generating one, whsk_ +
    /// base64 of the 32-byte seed or of the 64 bytes seed and public key (`-` reads it from stdin).
    #[arg(long)]
    #[serde(default)]
    pub signing_key: Option<String>,
    /// Send the test event to the receiver first (signed with this secret, with these
    /// headers) and create the webhook only if it answers 2xx; refused otherwise, saying why.
    #[arg(long)]
    #[serde(default, deserialize_with = "flag")]
    pub check: bool,
}

/// What to change on a webhook; what is left out stays as it is. Settings
/// go back to the daemon's default with `null` (`default` on the command
/// line). With `enabled`, the state changes in the same commit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args, ToSchema)]
#[group(skip)]
pub struct WebhookChanges {
    #[arg(long)]
    #[serde(default)]
    pub name: Option<String>,
    /// How deliveries are signed: hmac, or both (`v1a,` added, ed25519). Switching to
    /// both makes a key pair if the webhook has none.
    #[arg(long)]
    #[serde(default)]
    pub signature: Option<String>,
    #[arg(long)]
    #[serde(default)]
    pub url: Option<String>,
    /// Replaces every custom header (`{}` or null: none).
    #[arg(skip)]
    #[serde(default, deserialize_with = "optional_headers")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    pub headers: Option<Vec<HeaderArg>>,
    /// Set a header, NAME=VALUE (repeatable; replaces one of the same name).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    #[serde(default, deserialize_with = "headers")]
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub set_headers: Vec<HeaderArg>,
    /// Remove a header by name (repeatable).
    #[arg(long = "remove-header", value_name = "NAME")]
    #[serde(default)]
    pub remove_headers: Vec<String>,
    /// Remove every custom header (before --header ones are set).
    #[arg(long)]
    #[serde(default, deserialize_with = "flag")]
    pub clear_headers: bool,
    /// e.g. 1m,5m,30m; `none` for no retries; `default` for the daemon's schedule.
    #[arg(long = "retry-schedule")]
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<i64>>)]
    pub retry_schedule_secs: Option<Setting<Schedule>>,
    /// standard, slack, discord, teams or google_chat.
    #[arg(long)]
    #[serde(default)]
    pub format: Option<String>,
    /// Requests per second, or `default`.
    #[arg(long = "rate-limit")]
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub rate_limit_per_sec: Option<Setting<Num>>,
    /// Concurrent requests (1–1000), or `default`.
    #[arg(long)]
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub max_concurrency: Option<Setting<Num>>,
    /// Replaces every subscription (event types, `site.*`, `*`); its triggers' types
    /// must stay among them.
    #[arg(skip)]
    #[serde(default, deserialize_with = "optional_patterns")]
    #[schema(value_type = Option<Vec<String>>)]
    pub events: Option<Vec<String>>,
    /// Subscribe to these too (repeatable).
    #[arg(long = "subscribe", value_name = "TYPE")]
    #[serde(default, deserialize_with = "patterns")]
    pub subscribe: Vec<String>,
    /// Drop these subscriptions (repeatable); a type its triggers make stays.
    #[arg(long = "unsubscribe", value_name = "TYPE")]
    #[serde(default, deserialize_with = "patterns")]
    pub unsubscribe: Vec<String>,
    /// true: enable (its failure count and disable reason are reset); false: disable.
    #[arg(skip)]
    #[serde(default, deserialize_with = "optional_flag")]
    pub enabled: Option<bool>,
    /// Why it is disabled (with `enabled: false`).
    #[arg(skip)]
    #[serde(default)]
    pub disabled_reason: Option<String>,
}

/// A new secret: given, or generated; the current one keeps signing beside
/// it for the grace period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args, ToSchema)]
#[group(skip)]
pub struct RotateSecret {
    /// The new secret (32–256 characters; `-` reads it from stdin). Default: generated.
    #[arg(long)]
    #[serde(default)]
    pub secret: Option<String>,
    /// How long the old secret still signs (both `v1,` signatures are sent): 24h, 90m, 0 …
    /// Default 24h.
    #[arg(long = "grace")]
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub grace_secs: Option<Secs>,
}

/// A new ed25519 key pair for a webhook (`rotate-key`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args, ToSchema)]
#[group(skip)]
pub struct RotateKey {
    /// Import this private key instead of generating one: whsk_ + base64 of the 32-byte
    /// seed or of the 64 bytes seed and public key (`-` reads it from stdin).
    #[arg(long)]
    #[serde(default)]
    pub signing_key: Option<String>,
    /// How long the old key still signs (two `v1a,` signatures are sent): 24h, 90m, 0 …
    /// Default 24h.
    #[arg(long = "grace")]
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub grace_secs: Option<Secs>,
}

/// Which failed deliveries of a webhook to send again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args, ToSchema)]
#[group(skip)]
pub struct ReplayInput {
    /// Deliveries created at or after this: an RFC 3339 time, or a duration ago (2h, 1d).
    #[arg(long, required = true)]
    #[serde(default)]
    pub since: Option<String>,
    /// …and before this (same forms).
    #[arg(long)]
    #[serde(default)]
    pub until: Option<String>,
    /// Only this event type (goal_completion, visitor_spike, traffic_drop, test).
    #[arg(long)]
    #[serde(default)]
    pub event: Option<String>,
    /// Send deliveries that succeeded again too.
    #[arg(long)]
    #[serde(default, deserialize_with = "flag")]
    pub include_success: bool,
    /// Count what would be replayed; change nothing.
    #[arg(long)]
    #[serde(default, deserialize_with = "flag")]
    pub dry_run: bool,
}

/// Whether to send a delivery that succeeded again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args, ToSchema, IntoParams)]
#[group(skip)]
#[into_params(parameter_in = Query)]
pub struct RetryInput {
    /// Send it even though it succeeded (the receiver sees the same webhook-id twice).
    #[arg(long)]
    #[serde(default, deserialize_with = "flag")]
    pub force: bool,
}

/// Which deliveries of the log to show, a page at a time, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args, IntoParams)]
#[group(skip)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// pending, retrying, delivering, success or failed.
    #[arg(long)]
    #[serde(default)]
    pub status: Option<String>,
    /// Event type (goal_completion, visitor_spike, traffic_drop, test).
    #[arg(long)]
    #[serde(default)]
    pub event: Option<String>,
    /// Created at or after: an RFC 3339 time or a duration ago (2h, 1d).
    #[arg(long)]
    #[serde(default)]
    pub since: Option<String>,
    /// The page's size, 1–1,000 (default 50).
    #[arg(long)]
    #[serde(default)]
    #[param(value_type = Option<i64>)]
    pub limit: Option<Num>,
    /// The next page: the `next_cursor` the previous one ended with.
    #[arg(long)]
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Which webhooks to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args, IntoParams)]
#[group(skip)]
#[into_params(parameter_in = Query)]
pub struct WebhookQuery {
    /// The site: its domain as in Plausible (example.com) or its numeric id.
    #[arg(long = "site", value_name = "SITE")]
    #[serde(default)]
    #[param(value_type = Option<String>)]
    pub site_id: Option<SiteRef>,
    /// The deprecated name of `site_id`, read this release only.
    #[arg(skip)]
    #[serde(default)]
    #[param(value_type = Option<String>)]
    pub site: Option<SiteRef>,
    /// Include soft-deleted webhooks (restorable until purged).
    #[arg(long = "deleted")]
    #[serde(default, deserialize_with = "flag")]
    pub include_deleted: bool,
    /// The page's size, 1–1,000 (default 50).
    #[arg(long)]
    #[serde(default)]
    #[param(value_type = Option<i64>)]
    pub limit: Option<Num>,
    /// The next page: the `next_cursor` the previous one ended with.
    #[arg(long)]
    #[serde(default)]
    pub cursor: Option<String>,
}

/// A portal link to hand out: a sign-in to one site's webhooks for someone
/// without a Plausible account on this host (docs/web.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args, ToSchema)]
#[group(skip)]
pub struct NewPortalLink {
    /// viewer (reads) or editor (manages); default viewer.
    #[arg(long)]
    #[serde(default)]
    pub role: Option<String>,
    /// How long the link may wait to be opened (it signs in once): 10m, 1h, 7d
    /// (default 1h, at most 7d).
    #[arg(long = "ttl")]
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub ttl_secs: Option<Secs>,
}

/// `site_id`, or the deprecated `site` (true: it came as `site`).
pub fn site_of(
    site_id: &Option<SiteRef>,
    site: &Option<SiteRef>,
) -> Result<Option<(SiteRef, bool)>, Invalid> {
    match (site_id, site) {
        (Some(_), Some(_)) => Err(Invalid::new(
            "site",
            Rule::Duplicate,
            "give `site_id` only (`site` is its deprecated name)",
        )),
        (Some(s), None) => Ok(Some((s.clone(), false))),
        (None, Some(s)) => Ok(Some((s.clone(), true))),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid<T: std::fmt::Debug>(r: Result<T, InputError>) -> Vec<(String, Rule)> {
        match r {
            Err(InputError::Invalid(i)) => {
                i.all().iter().map(|i| (i.field.clone(), i.rule)).collect()
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn json_names_unknown_keys_and_wrong_types_by_path() {
        let r = from_json::<NewWebhook>(br#"{"name": "x", "nmae": 1, "colour": 2}"#);
        assert_eq!(
            invalid(r),
            [
                ("nmae".to_string(), Rule::UnknownField),
                ("colour".to_string(), Rule::UnknownField)
            ]
        );
        let r = from_json::<NewWebhook>(br#"{"name": 7}"#);
        assert_eq!(invalid(r), [("name".to_string(), Rule::WrongType)]);
        let r = from_json::<NewWebhook>(br#"{"triggers": [{"type": "spike", "threshold": "x"}]}"#);
        assert_eq!(
            invalid(r),
            [("triggers[0].threshold".to_string(), Rule::WrongType)]
        );
        let r = from_json::<NewWebhook>(br#"{"triggers": [{"type": "spike", "x": 1}]}"#);
        assert_eq!(invalid(r)[0].1, Rule::UnknownField);
        for bad in [&b"[1]"[..], b"", b"{", b"{} x", b"\"s\""] {
            assert!(
                matches!(from_json::<NewWebhook>(bad), Err(InputError::NotJson(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_same_values_from_json_a_form_and_clap() {
        let j: NewWebhook = from_json(
            br#"{"site_id": 7, "name": "n", "url": "https://x.example/", "headers": {"A": "1"},
                 "retry_schedule_secs": [60, "5m"], "triggers": ["goal", {"type": "spike", "window_secs": "10m"}]}"#,
        )
        .unwrap();
        let f: NewWebhook = from_form(
            b"site_id=7&name=n&url=https%3A%2F%2Fx.example%2F&headers=A%3A+1&retry_schedule_secs=1m%2C5m",
            Rule::UnknownField,
        )
        .unwrap();
        assert_eq!(j.site_id, Some(SiteRef::new("7")));
        assert_eq!(f.site_id, j.site_id);
        assert_eq!(j.headers, [HeaderArg::Pair("A".into(), "1".into())]);
        assert_eq!(f.headers, j.headers);
        assert_eq!(
            j.retry_schedule_secs,
            Some(Schedule::Items(vec![
                Secs::Number(60),
                Secs::Text("5m".into())
            ]))
        );
        assert_eq!(f.retry_schedule_secs, Some(Schedule::Text("1m,5m".into())));
        assert_eq!(j.triggers[0].trigger_type.as_deref(), Some("goal"));
        assert_eq!(j.triggers[1].window_secs, Some(Secs::Text("10m".into())));

        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            w: NewWebhook,
        }
        let c = Cli::try_parse_from([
            "x",
            "--site",
            "7",
            "--name",
            "n",
            "--url",
            "https://x.example/",
            "--header",
            "A=1",
            "--retry-schedule",
            "1m,5m",
            "--trigger",
            "goal",
        ])
        .unwrap()
        .w;
        assert_eq!(c.site_id, j.site_id);
        assert_eq!(c.headers, j.headers);
        assert_eq!(c.retry_schedule_secs, f.retry_schedule_secs);
        assert_eq!(c.triggers[0], j.triggers[0]);
    }

    #[test]
    fn settings_go_back_to_the_default_by_null_or_by_name() {
        let c: WebhookChanges =
            from_json(br#"{"rate_limit_per_sec": null, "max_concurrency": 3, "retry_schedule_secs": "default"}"#)
                .unwrap();
        assert_eq!(c.rate_limit_per_sec, Some(Setting::Default));
        assert_eq!(c.max_concurrency, Some(Setting::Value(Num::Number(3))));
        assert_eq!(c.retry_schedule_secs, Some(Setting::Default));
        let c: WebhookChanges = from_json(br#"{"name": "x"}"#).unwrap();
        assert_eq!(c.rate_limit_per_sec, None);
        let c: WebhookChanges = from_form(
            b"max_concurrency=default&rate_limit_per_sec=5&enabled=on",
            Rule::UnknownField,
        )
        .unwrap();
        assert_eq!(c.max_concurrency, Some(Setting::Default));
        assert_eq!(
            c.rate_limit_per_sec,
            Some(Setting::Value(Num::Text("5".into())))
        );
        assert_eq!(c.enabled, Some(true));
        let r = from_json::<WebhookChanges>(br#"{"max_concurrency": true}"#);
        assert_eq!(
            invalid(r),
            [("max_concurrency".to_string(), Rule::WrongType)]
        );
    }

    #[test]
    fn query_strings_refuse_unknown_parameters_as_not_applicable() {
        let q: DeliveryQuery = from_query(Some("status=failed&limit=2")).unwrap();
        assert_eq!(q.status.as_deref(), Some("failed"));
        assert_eq!(q.limit, Some(Num::Text("2".into())));
        let r = from_query::<DeliveryQuery>(Some("colour=red"));
        assert_eq!(invalid(r), [("colour".to_string(), Rule::NotApplicable)]);
        let q: WebhookQuery = from_query(Some("include_deleted=1&site=a.example")).unwrap();
        assert!(q.include_deleted);
        assert_eq!(
            site_of(&q.site_id, &q.site).unwrap(),
            Some((SiteRef::new("a.example"), true))
        );
    }
}
