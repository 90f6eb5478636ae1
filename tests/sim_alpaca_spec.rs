//! The simulated venue held to Alpaca's own published OpenAPI definition of the Trading API
//! (`../shared/specs/alpaca/trading-api.json`, read where it is, never copied): every answer
//! of every endpoint and error the venue implements validates against the definition's
//! schemas, and every field it sends is one the definition (or its published examples) names.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use tradegate::sim::alpaca::SimConfig;

use common::orders::start_venue;

/// The published definition: `TRADEGATE_ALPACA_SPEC`, else beside the project (`../shared`).
fn spec() -> Value {
    let candidates: Vec<PathBuf> = std::env::var_os("TRADEGATE_ALPACA_SPEC")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/specs/alpaca/trading-api.json"),
            PathBuf::from("/work/shared/specs/alpaca/trading-api.json"),
        ])
        .collect();
    let path = candidates
        .iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("Alpaca's trading-api.json not found (set TRADEGATE_ALPACA_SPEC); looked at {candidates:?}")
        });
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// OpenAPI 3.0 schema -> JSON Schema: `nullable: true` admits null.
fn to_json_schema(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut out: Map<String, Value> = o
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "nullable" | "example" | "examples"))
                .map(|(k, v)| (k.clone(), to_json_schema(v)))
                .collect();
            if o.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = out.get("type").cloned() {
                    out.insert("type".into(), json!([t, "null"]));
                    if let Some(Value::Array(e)) = out.get_mut("enum") {
                        e.push(Value::Null);
                    }
                } else {
                    return json!({"anyOf": [Value::Object(out), {"type": "null"}]});
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

struct Spec {
    doc: Value,
    components: Value,
}

impl Spec {
    fn load() -> Self {
        let doc = spec();
        let components = to_json_schema(&doc["components"]);
        Self { doc, components }
    }

    /// Validates `instance` against `#/components/schemas/{name}` (or an array of them).
    fn check(&self, name: &str, array: bool, instance: &Value, what: &str) {
        let target = json!({"$ref": format!("#/components/schemas/{name}")});
        let mut schema = if array {
            json!({"type": "array", "items": target})
        } else {
            target
        };
        schema["components"] = self.components.clone();
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what} is not a valid {name}: {errors:#?}\n{instance:#}"
        );
        let items: Vec<&Value> = match instance {
            Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        // errors carry extra fields (a 403 its buying power and cost basis), as Alpaca's do
        if !matches!(name, "Order" | "Account") {
            return;
        }
        let known = self.known_fields(name);
        for item in items {
            if let Some(o) = item.as_object() {
                let unknown: Vec<&String> = o.keys().filter(|k| !known.contains(*k)).collect();
                assert!(
                    unknown.is_empty(),
                    "{what}: fields {unknown:?} are not in {name}"
                );
            }
        }
    }

    /// The fields of `name`, and those its published examples show.
    fn known_fields(&self, name: &str) -> BTreeSet<String> {
        let mut known: BTreeSet<String> = self.doc["components"]["schemas"][name]["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        let examples = self.doc["components"]["examples"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut add = |v: &Value| {
            if let Some(o) = v.as_object() {
                known.extend(o.keys().cloned());
            }
        };
        match name {
            "Order" => {
                for (k, e) in &examples {
                    if k.ends_with("OrderResponse") && k.starts_with("Equity") {
                        add(&e["value"]);
                    }
                }
            }
            "Account" => add(
                &self.doc["paths"]["/v2/account"]["get"]["responses"]["200"]["content"]["application/json"]
                    ["example"],
            ),
            _ => {}
        }
        known
    }
}

struct Venue {
    http: reqwest::Client,
    base: String,
}

impl Venue {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("APCA-API-KEY-ID", "SIMKEY")
            .header("APCA-API-SECRET-KEY", "SIMSECRET");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{path} answered {status} with non-JSON: {text}"))
        };
        (status, headers, value)
    }
}

fn order(symbol: &str, side: &str, extra: Value) -> Value {
    let mut o = json!({"symbol": symbol, "side": side, "type": "market", "time_in_force": "day", "qty": "1"});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            o.as_object_mut().unwrap().remove(k);
        } else {
            o[k] = v.clone();
        }
    }
    o
}

#[tokio::test]
async fn every_answer_of_the_venue_validates_against_alpacas_published_definition() {
    let spec = Spec::load();
    let (_sim, base) = start_venue(SimConfig {
        buying_power: Decimal::from(5_000),
        rate_limit_per_min: 60,
        ..SimConfig::default()
    })
    .await;
    let v = Venue {
        http: tradegate_actors::tls::local_http(),
        base,
    };
    let error = |status: u16, expected: u16, body: &Value, what: &str| {
        assert_eq!(status, expected, "{what}: {body}");
        spec.check("Error", false, body, what);
    };

    // orders of every kind the venue implements
    let (s, _, market) = v
        .call(
            Method::POST,
            "/v2/orders",
            Some(order("AAPL", "buy", json!({}))),
        )
        .await;
    assert_eq!(s, 200, "{market}");
    spec.check("Order", false, &market, "a market order");
    assert!(
        market["expires_at"].is_string(),
        "expires_at is a date-time: {market}"
    );
    let (s, _, resting) = v
        .call(
            Method::POST,
            "/v2/orders",
            Some(order(
                "MSFT",
                "buy",
                json!({"type": "limit", "limit_price": "50", "time_in_force": "gtc"}),
            )),
        )
        .await;
    assert_eq!(s, 200, "{resting}");
    spec.check("Order", false, &resting, "a resting limit order");
    let (s, _, notional) = v
        .call(
            Method::POST,
            "/v2/orders",
            Some(order(
                "AAPL",
                "buy",
                json!({"qty": null, "notional": "250.50"}),
            )),
        )
        .await;
    assert_eq!(s, 200, "{notional}");
    spec.check("Order", false, &notional, "a notional order");
    assert_eq!(notional["notional"], "250.5");
    assert!(notional["qty"].is_null());
    let (_, _, filled) = v
        .call(
            Method::GET,
            &format!("/v2/orders/{}", notional["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(filled["filled_qty"], "2.505", "fractional shares: {filled}");
    assert_eq!(filled["status"], "filled");
    let (s, _, trailing) = v
        .call(
            Method::POST,
            "/v2/orders",
            Some(order(
                "AAPL",
                "sell",
                json!({"type": "trailing_stop", "trail_percent": "2.5", "time_in_force": "gtc"}),
            )),
        )
        .await;
    assert_eq!(s, 200, "{trailing}");
    spec.check("Order", false, &trailing, "a trailing stop");
    assert_eq!(trailing["trail_percent"], "2.5");
    assert_eq!(trailing["hwm"], "100");
    let long_id = "c".repeat(128);
    let (s, _, long) = v
        .call(
            Method::POST,
            "/v2/orders",
            Some(order("AAPL", "buy", json!({"client_order_id": long_id}))),
        )
        .await;
    assert_eq!(
        s, 200,
        "a 128-character client order id is accepted: {long}"
    );
    assert_eq!(long["client_order_id"], "c".repeat(128));

    // every refusal is Alpaca's JSON error
    for (what, body, status) in [
        (
            "qty and notional",
            order("AAPL", "buy", json!({"notional": "10"})),
            422,
        ),
        (
            "neither qty nor notional",
            order("AAPL", "buy", json!({"qty": null})),
            422,
        ),
        (
            "a notional limit order",
            order(
                "AAPL",
                "buy",
                json!({"qty": null, "notional": "10", "type": "limit", "limit_price": "1"}),
            ),
            422,
        ),
        (
            "a trailing stop without a trail",
            order("AAPL", "sell", json!({"type": "trailing_stop"})),
            422,
        ),
        (
            "a trailing stop with both trails",
            order(
                "AAPL",
                "sell",
                json!({"type": "trailing_stop", "trail_price": "1", "trail_percent": "1"}),
            ),
            422,
        ),
        (
            "a 129-character client order id",
            order("AAPL", "buy", json!({"client_order_id": "c".repeat(129)})),
            422,
        ),
        (
            "a duplicate client order id",
            order("AAPL", "buy", json!({"client_order_id": "c".repeat(128)})),
            422,
        ),
        ("a zero qty", order("AAPL", "buy", json!({"qty": "0"})), 422),
        (
            "a qty that is no number",
            order("AAPL", "buy", json!({"qty": {"n": 1}})),
            422,
        ),
        (
            "an unknown time in force",
            order("AAPL", "buy", json!({"time_in_force": "forever"})),
            422,
        ),
        (
            "no buying power",
            order("AAPL", "buy", json!({"qty": "500"})),
            403,
        ),
    ] {
        let (s, _, body) = v.call(Method::POST, "/v2/orders", Some(body)).await;
        error(s, status, &body, what);
    }
    let bad = v
        .http
        .post(format!("{}/v2/orders", v.base))
        .header("APCA-API-KEY-ID", "SIMKEY")
        .header("APCA-API-SECRET-KEY", "SIMSECRET")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let status = bad.status().as_u16();
    let body: Value = bad.json().await.unwrap();
    error(status, 400, &body, "a body that is not JSON");

    // listing, with every filter
    let (s, _, all) = v
        .call(
            Method::GET,
            "/v2/orders?status=all&limit=500&direction=asc&nested=true",
            None,
        )
        .await;
    assert_eq!(s, 200);
    spec.check("Order", true, &all, "the order list");
    assert_eq!(all.as_array().unwrap().len(), 5);
    assert_eq!(all[0]["id"], market["id"], "ascending: oldest first");
    let (_, _, sells) = v
        .call(Method::GET, "/v2/orders?status=all&side=sell", None)
        .await;
    assert_eq!(sells.as_array().unwrap().len(), 1, "side filters: {sells}");
    assert_eq!(sells[0]["id"], trailing["id"]);
    let (_, _, msft) = v
        .call(Method::GET, "/v2/orders?status=all&symbols=MSFT,TSLA", None)
        .await;
    assert_eq!(msft.as_array().unwrap().len(), 1, "{msft}");
    let (_, _, open) = v.call(Method::GET, "/v2/orders", None).await;
    assert_eq!(
        open.as_array().unwrap().len(),
        2,
        "open by default: the resting limit and the trailing stop"
    );
    let (_, _, two) = v
        .call(Method::GET, "/v2/orders?status=all&limit=2", None)
        .await;
    assert_eq!(two.as_array().unwrap().len(), 2);
    let after = market["created_at"].as_str().unwrap();
    let (_, _, later) = v
        .call(
            Method::GET,
            &format!("/v2/orders?status=all&after={}", urlencode(after)),
            None,
        )
        .await;
    assert_eq!(
        later.as_array().unwrap().len(),
        4,
        "after: submitted later than the first"
    );
    let (_, _, none) = v
        .call(
            Method::GET,
            &format!("/v2/orders?status=all&until={}", urlencode(after)),
            None,
        )
        .await;
    assert_eq!(none.as_array().unwrap().len(), 0);
    for bad in [
        "limit=abc",
        "limit=0",
        "limit=501",
        "status=sometimes",
        "direction=up",
        "side=short",
        "after=yesterday",
        "nested=maybe",
        "colour=blue",
    ] {
        let (s, headers, body) = v
            .call(Method::GET, &format!("/v2/orders?{bad}"), None)
            .await;
        error(s, 422, &body, bad);
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{bad}: JSON, not plain text"
        );
    }

    // one order, by id and by client order id
    let id = resting["id"].as_str().unwrap();
    let (s, _, one) = v.call(Method::GET, &format!("/v2/orders/{id}"), None).await;
    assert_eq!(s, 200);
    spec.check("Order", false, &one, "an order by id");
    let cid = resting["client_order_id"].as_str().unwrap();
    let (s, _, by_client) = v
        .call(
            Method::GET,
            &format!("/v2/orders:by_client_order_id?client_order_id={cid}"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    spec.check("Order", false, &by_client, "an order by client order id");
    let (s, _, body) = v
        .call(Method::GET, "/v2/orders:by_client_order_id", None)
        .await;
    error(s, 422, &body, "a look-up without client_order_id");
    let (s, _, body) = v
        .call(
            Method::GET,
            "/v2/orders:by_client_order_id?client_order_id=nope",
            None,
        )
        .await;
    error(s, 404, &body, "an unknown client order id");
    let (s, _, body) = v
        .call(
            Method::GET,
            "/v2/orders/00000000-0000-0000-0000-000000000000",
            None,
        )
        .await;
    error(s, 404, &body, "an unknown order");

    // replace: validated as strictly as a submission
    for (what, change) in [
        (
            "an unknown time in force",
            json!({"time_in_force": "forever"}),
        ),
        ("a negative qty", json!({"qty": "-1"})),
        ("a stop price on a limit order", json!({"stop_price": "5"})),
        ("a field that cannot change", json!({"side": "sell"})),
    ] {
        let (s, _, body) = v
            .call(Method::PATCH, &format!("/v2/orders/{id}"), Some(change))
            .await;
        error(s, 422, &body, what);
    }
    let (s, _, replaced) = v
        .call(
            Method::PATCH,
            &format!("/v2/orders/{id}"),
            Some(json!({"qty": "2", "limit_price": "51", "time_in_force": "day"})),
        )
        .await;
    assert_eq!(s, 200, "{replaced}");
    spec.check("Order", false, &replaced, "a replacement");
    assert_eq!(replaced["replaces"], id);
    assert_eq!(replaced["time_in_force"], "day");

    // cancel one, cancel all
    let new_id = replaced["id"].as_str().unwrap();
    let (s, _, body) = v
        .call(Method::DELETE, &format!("/v2/orders/{new_id}"), None)
        .await;
    assert_eq!(s, 204, "{body}");
    let (s, _, body) = v
        .call(Method::DELETE, &format!("/v2/orders/{new_id}"), None)
        .await;
    error(s, 422, &body, "cancelling a cancelled order");
    let (s, _, cancelled) = v.call(Method::DELETE, "/v2/orders", None).await;
    assert_eq!(s, 207);
    spec.check("CanceledOrderResponse", true, &cancelled, "cancel all");

    // the account
    let (s, _, account) = v.call(Method::GET, "/v2/account", None).await;
    assert_eq!(s, 200);
    spec.check("Account", false, &account, "the account");
    let example = &spec.doc["paths"]["/v2/account"]["get"]["responses"]["200"]["content"]["application/json"]
        ["example"];
    let missing: Vec<&String> = example
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| account.get(k.as_str()).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "fields of the published example missing: {missing:?}"
    );

    // positions: the net of the fills the venue made (the AAPL market buy above), then one
    // changed without a fill (a trade made elsewhere), short
    let (s, _, positions) = v.call(Method::GET, "/v2/positions", None).await;
    assert_eq!(s, 200, "{positions}");
    spec.check("Position", true, &positions, "the positions");
    let held = |positions: &Value, symbol: &str| {
        positions
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["symbol"] == symbol)
            .cloned()
    };
    let aapl = held(&positions, "AAPL").expect("the AAPL bought is held");
    assert_eq!(aapl["side"], "long", "{aapl}");
    let changed = v
        .http
        .post(format!("{}/sim/control", v.base))
        .json(&json!({"positions": {"ZZZ": {"qty": "-3", "avg_entry_price": "20"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let (s, _, positions) = v.call(Method::GET, "/v2/positions", None).await;
    assert_eq!(s, 200, "{positions}");
    spec.check(
        "Position",
        true,
        &positions,
        "the positions after a trade elsewhere",
    );
    let zzz = held(&positions, "ZZZ").expect("the position set without a fill");
    assert_eq!(
        (
            &zzz["qty"],
            &zzz["side"],
            &zzz["avg_entry_price"],
            &zzz["cost_basis"]
        ),
        (&json!("-3"), &json!("short"), &json!("20"), &json!("-60")),
        "{zzz}"
    );
    let refused = v
        .http
        .post(format!("{}/sim/control", v.base))
        .json(&json!({"positions": {"ZZZ": {"qty": "1", "avg_entry_price": "0"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);

    // no credentials, an unknown endpoint, the rate limit
    let no_auth = v
        .http
        .get(format!("{}/v2/account", v.base))
        .send()
        .await
        .unwrap();
    let status = no_auth.status().as_u16();
    error(
        status,
        401,
        &no_auth.json().await.unwrap(),
        "no credentials",
    );
    let (s, _, body) = v.call(Method::GET, "/v2/nothing-here", None).await;
    error(s, 404, &body, "an unknown endpoint");
    let mut limited = None;
    for _ in 0..80 {
        let (s, headers, body) = v.call(Method::GET, "/v2/account", None).await;
        if s == 429 {
            limited = Some((headers, body));
            break;
        }
    }
    let (headers, body) = limited.expect("the rate limit was never hit");
    spec.check("Error", false, &body, "the rate limit");
    for h in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        let value = headers[h].to_str().unwrap();
        assert!(
            value.parse::<i64>().is_ok(),
            "{h} is an integer as the definition says: {value}"
        );
    }
}

fn urlencode(s: &str) -> String {
    s.replace(':', "%3A").replace('+', "%2B")
}
