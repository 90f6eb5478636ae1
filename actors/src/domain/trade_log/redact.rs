//! Credential-free encoding: which keys are sensitive, JSON and form redaction, and the spec's
//! encoding of HTTP requests.

use super::columns::RawJson;
use indexmap::IndexMap;
use serde_json::value::RawValue;

/// Whether a header, query parameter or JSON key names authentication material.
pub fn is_sensitive_key(key: &str) -> bool {
    let normalized: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    const MARKERS: [&str; 12] = [
        "apikey",
        "keyid",
        "secret",
        "signature",
        "password",
        "passphrase",
        "token",
        "authorization",
        "cookie",
        "credential",
        "privatekey",
        "accesskey",
    ];
    normalized == "sig" || normalized == "key" || MARKERS.iter().any(|m| normalized.contains(m))
}

/// `raw` JSON with every sensitive key removed at any depth. Everything else — key order,
/// number text — is kept exactly.
pub fn redact_json(raw: &str) -> Result<String, serde_json::Error> {
    let value: &RawValue = serde_json::from_str(raw)?;
    let mut out = String::with_capacity(raw.len());
    redact_into(value, &mut out)?;
    Ok(out)
}

pub(super) fn redact_into(value: &RawValue, out: &mut String) -> Result<(), serde_json::Error> {
    let text = value.get().trim();
    if text.starts_with('{') {
        let map: IndexMap<String, &RawValue> = serde_json::from_str(text)?;
        out.push('{');
        let mut first = true;
        for (key, value) in map {
            if is_sensitive_key(&key) {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&serde_json::to_string(&key)?);
            out.push(':');
            redact_into(value, out)?;
        }
        out.push('}');
    } else if text.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(text)?;
        out.push('[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            redact_into(item, out)?;
        }
        out.push(']');
    } else {
        out.push_str(text);
    }
    Ok(())
}

/// An HTTP request encoded for `body` as the spec requires:
/// `{"transport":"http","method":..,"path":..,"query":{..},"headers":{..},"body":..}`, with API
/// keys, secrets and signatures removed from headers, query and body. A JSON body stays JSON
/// (numbers verbatim); any other body is stored as a string, with sensitive form fields removed.
pub fn encode_http_request(
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    body: Option<&str>,
) -> RawJson {
    let mut out = String::with_capacity(128 + body.map_or(0, str::len));
    out.push_str("{\"transport\":\"http\",\"method\":");
    push_json_string(&mut out, &method.to_ascii_uppercase());
    out.push_str(",\"path\":");
    push_json_string(&mut out, path);

    let mut query_map: IndexMap<&str, Vec<&str>> = IndexMap::new();
    for (k, v) in query.iter().filter(|(k, _)| !is_sensitive_key(k)) {
        query_map.entry(k.as_str()).or_default().push(v.as_str());
    }
    out.push_str(",\"query\":{");
    for (i, (k, values)) in query_map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, k);
        out.push(':');
        if let [single] = values.as_slice() {
            push_json_string(&mut out, single);
        } else {
            out.push('[');
            for (j, v) in values.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                push_json_string(&mut out, v);
            }
            out.push(']');
        }
    }
    out.push('}');

    let kept_headers: Vec<&(String, String)> = headers
        .iter()
        .filter(|(k, _)| !is_sensitive_key(k))
        .collect();
    if !kept_headers.is_empty() {
        out.push_str(",\"headers\":{");
        for (i, (k, v)) in kept_headers.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(&mut out, &k.to_ascii_lowercase());
            out.push(':');
            push_json_string(&mut out, v);
        }
        out.push('}');
    }

    if let Some(body) = body.filter(|b| !b.trim().is_empty()) {
        out.push_str(",\"body\":");
        match redact_json(body) {
            Ok(json) => out.push_str(&json),
            Err(_) => push_json_string(&mut out, &redact_form(body)),
        }
    }
    out.push('}');
    // Built from escaped strings and validated JSON, so it parses.
    RawJson::parse(out).unwrap_or_default()
}

/// A form-encoded (`a=1&b=2`) body without its sensitive fields; other text unchanged.
pub(super) fn redact_form(body: &str) -> String {
    if !body.contains('=') || body.contains(char::is_whitespace) {
        return body.to_string();
    }
    body.split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            !is_sensitive_key(key)
        })
        .collect::<Vec<_>>()
        .join("&")
}

pub(super) fn push_json_string(out: &mut String, s: &str) {
    // Serializing a str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}
