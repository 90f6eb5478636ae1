//! The API tokens test gateways accept, and HTTP clients that send them.

use tradegate::config::{ApiTokenConfig, Config, Role};

/// An operator token (name `ops`).
pub const OPERATOR: &str = "test-operator-token-0000000000000001";
/// An auditor token (name `audit`).
pub const AUDITOR: &str = "test-auditor-token-00000000000000002";
/// An ingest token (name `ingest`).
pub const INGEST: &str = "test-ingest-token-000000000000000003";
/// A token with every role (name `all`), for tests about something else than access.
pub const ALL: &str = "test-all-roles-token-0000000000000004";

/// The test tokens as `[[api.tokens]]` entries.
pub fn tokens() -> Vec<ApiTokenConfig> {
    let entry = |name: &str, token: &str, roles: &[Role]| ApiTokenConfig {
        name: name.into(),
        token: token.into(),
        roles: roles.to_vec(),
        ..ApiTokenConfig::default()
    };
    vec![
        entry("ops", OPERATOR, &[Role::Operator]),
        entry("audit", AUDITOR, &[Role::Auditor]),
        entry("ingest", INGEST, &[Role::Ingest]),
        entry("all", ALL, &[Role::Operator, Role::Auditor, Role::Ingest]),
    ]
}

/// `config` with the test tokens, and no request rate limit a test could meet by chance.
pub fn secure(config: &mut Config) {
    config.api.tokens = tokens();
    config.api.max_requests_per_sec = 1_000_000;
}

/// A client that sends `token` as its bearer token with every request.
pub fn client(token: &str) -> reqwest::Client {
    let _ = tradegate_actors::tls::local_http();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}
