//! Who may call what: every route is in [`ROUTES`] with the access it needs, and one middleware
//! checks each request against it before any handler runs. A route missing from the table is
//! refused to everyone (and a test reads the route definitions to find such a route), so a new
//! route is locked until it is given a role.
//!
//! Tokens are bearer tokens (`Authorization: Bearer ...`). Only their SHA-256 is kept in memory,
//! and a presented token is compared with every credential's digest without an early exit, so
//! answer timing says nothing about which token, or which prefix, is close.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::RequestPartsExt;
use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tradegate_actors::domain::Operator;
use uuid::Uuid;

use super::error::ApiError;
use crate::config::{ApiConfig, Role};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: `/health`
    Open,
    /// Nothing while `[api] public_metrics` is true, else an auditor or operator token
    Metrics,
    /// A strategy token, checked by the strategy handshake itself (`[orders.strategies]`)
    Strategy,
    /// A token with one of these roles
    Roles(&'static [Role]),
}

const OPERATOR: Access = Access::Roles(&[Role::Operator]);
const AUDITOR: Access = Access::Roles(&[Role::Auditor]);
const INGEST: Access = Access::Roles(&[Role::Ingest]);

/// One route: its method, its path as the router defines it, and what it needs.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `GET`, `POST`, ...
    pub method: &'static str,
    /// The path as given to `Router::route`
    pub path: &'static str,
    /// What a caller needs
    pub access: Access,
}

const fn route(method: &'static str, path: &'static str, access: Access) -> Route {
    Route {
        method,
        path,
        access,
    }
}

/// Every route of the API and what it needs.
pub const ROUTES: &[Route] = &[
    route("GET", "/health", Access::Open),
    route("GET", "/metrics", Access::Metrics),
    route("GET", "/v1/strategy", Access::Strategy),
    // the kill switch: operators change it; its state is for operators and auditors
    route(
        "GET",
        "/api/v1/kill-switch",
        Access::Roles(&[Role::Operator, Role::Auditor]),
    ),
    route("POST", "/api/v1/kill-switch", OPERATOR),
    route("GET", "/api/v1/operator-actions", AUDITOR),
    route("GET", "/api/v1/decisions", AUDITOR),
    route("GET", "/api/v1/decisions/{id}", AUDITOR),
    route("POST", "/api/v1/ingestion/runs", INGEST),
    route("GET", "/api/v1/ingestion/runs", AUDITOR),
    route("GET", "/api/v1/ingestion/runs/{run_id}", AUDITOR),
    route("POST", "/api/v1/ingestion/runs/{run_id}/api-calls", INGEST),
    route("POST", "/api/v1/ingestion/runs/{run_id}/records", INGEST),
    route("POST", "/api/v1/ingestion/runs/{run_id}/complete", INGEST),
    route("POST", "/api/v1/ingestion/runs/{run_id}/fail", INGEST),
    route("GET", "/api/v1/trades", AUDITOR),
    route("POST", "/api/v1/trades/sync", OPERATOR),
    route("GET", "/api/v1/trades/{id}", AUDITOR),
    route("GET", "/api/v1/trades/{id}/executions", AUDITOR),
    route("POST", "/api/v1/jobs/trades.sync", OPERATOR),
    route("POST", "/api/v1/reconcile", OPERATOR),
    route("GET", "/api/v1/reconciliation", AUDITOR),
    route("GET", "/api/v1/reports/symbol/{symbol}", AUDITOR),
    route("GET", "/api/v1/reports/decision/{id}", AUDITOR),
    route("GET", "/api/v1/reports/order/{id}", AUDITOR),
    route("GET", "/api/v1/reports/strategy", AUDITOR),
    route("GET", "/api/v1/reports/failures", AUDITOR),
    route("GET", "/api/v1/reports/daily", AUDITOR),
    route("GET", "/api/v1/audit/seals", AUDITOR),
];

/// What `path` and `method` need; `None`: the route has no role assignment.
pub fn access_of(method: &Method, path: &str) -> Option<Access> {
    // HEAD is answered by the GET route
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    ROUTES
        .iter()
        .find(|r| r.method == method && r.path == path)
        .map(|r| r.access)
}

/// One accepted token: its name, its digest, its roles, and for a data job's token the one run
/// it may write to.
#[derive(Clone)]
struct Credential {
    name: String,
    digest: [u8; 32],
    roles: Vec<Role>,
    run: Option<Uuid>,
}

/// The tokens the API accepts, and how often each may call.
#[derive(Default)]
pub struct Auth {
    credentials: Vec<Credential>,
    public_metrics: bool,
    /// Requests per token per second (0: unlimited)
    max_requests_per_sec: u32,
    /// Each token's current one-second window: its start and the requests in it
    windows: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u32)>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field(
                "tokens",
                &self
                    .credentials
                    .iter()
                    .map(|c| (&c.name, &c.roles, c.run))
                    .collect::<Vec<_>>(),
            )
            .field("public_metrics", &self.public_metrics)
            .finish()
    }
}

/// The name the local operator token's actions are recorded under.
pub const LOCAL_OPERATOR: &str = "local-operator";

fn digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(token.as_bytes()));
    out
}

fn hex_digest(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A new random token: 32 bytes from the operating system's generator, as hex.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    tradegate_actors::store::audit::hex(&bytes)
}

impl Auth {
    /// The tokens of `[[api.tokens]]` (read from the environment where they name a variable),
    /// and `local_operator` (the token file's) as an operator and auditor when given.
    pub fn from_config(api: &ApiConfig, local_operator: Option<&str>) -> Result<Self> {
        let mut credentials = Vec::new();
        for (i, t) in api.tokens.iter().enumerate() {
            let digest = if !t.token_env.is_empty() {
                match std::env::var(&t.token_env) {
                    Ok(token) if token.len() >= 16 => digest(&token),
                    Ok(_) => bail!(
                        "api.tokens[{i}] ({}): the token in {} is shorter than 16 characters",
                        t.name,
                        t.token_env
                    ),
                    _ => bail!(
                        "api.tokens[{i}] ({}): the environment variable {} holding its token is \
                         not set",
                        t.name,
                        t.token_env
                    ),
                }
            } else if !t.token_sha256.is_empty() {
                hex_digest(&t.token_sha256.to_ascii_lowercase())
                    .with_context(|| format!("api.tokens[{i}].token_sha256 is not 64 hex digits"))?
            } else {
                tracing::warn!(
                    token = %t.name,
                    "api.tokens entry with its token in the configuration file: prefer token_env \
                     or token_sha256"
                );
                digest(&t.token)
            };
            credentials.push(Credential {
                name: t.name.clone(),
                digest,
                roles: t.roles.clone(),
                run: None,
            });
        }
        if let Some(token) = local_operator {
            credentials.push(Credential {
                name: LOCAL_OPERATOR.into(),
                digest: digest(token),
                roles: vec![Role::Operator, Role::Auditor],
                run: None,
            });
        }
        Ok(Self {
            credentials,
            public_metrics: api.public_metrics,
            max_requests_per_sec: api.max_requests_per_sec,
            windows: Default::default(),
        })
    }

    /// Whether `name` may make one more request now; counts it when it may.
    fn admit(&self, name: &str) -> bool {
        if self.max_requests_per_sec == 0 {
            return true;
        }
        let now = std::time::Instant::now();
        let Ok(mut windows) = self.windows.lock() else {
            return true;
        };
        let window = windows.entry(name.to_string()).or_insert((now, 0));
        if now.duration_since(window.0) >= std::time::Duration::from_secs(1) {
            *window = (now, 0);
        }
        if window.1 >= self.max_requests_per_sec {
            return false;
        }
        window.1 += 1;
        true
    }

    /// Only `token`, which may write to `run` and nothing else (`tradegate ingest`'s job).
    pub fn for_run(run: Uuid, token: &str) -> Self {
        Self {
            credentials: vec![Credential {
                name: format!("ingest-run:{run}"),
                digest: digest(token),
                roles: vec![Role::Ingest],
                run: Some(run),
            }],
            public_metrics: false,
            max_requests_per_sec: ApiConfig::default().max_requests_per_sec,
            windows: Default::default(),
        }
    }

    /// Whether some token has `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.credentials.iter().any(|c| c.roles.contains(&role))
    }

    /// The credential of `token`: every digest is compared, in constant time each.
    fn identify(&self, token: &str) -> Option<&Credential> {
        let presented = digest(token);
        let mut found = None;
        for c in &self.credentials {
            if bool::from(c.digest.ct_eq(&presented)) {
                found = Some(c);
            }
        }
        found
    }
}

/// Whether the configured tokens (not the local token file) have both an operator and an
/// auditor, as a listener on a non-loopback address needs.
pub fn configured_for_network(api: &ApiConfig) -> bool {
    let has = |role| api.tokens.iter().any(|t| t.roles.contains(&role));
    has(Role::Operator) && has(Role::Auditor)
}

/// The caller of a request, for handlers that record what it did.
#[derive(Debug, Clone)]
pub struct Caller(pub Operator);

/// The bearer token of a request, if it sends one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Why a request was refused: its code, status and message.
fn refusal(reason: &'static str) -> (StatusCode, &'static str) {
    match reason {
        "missing_token" => (
            StatusCode::UNAUTHORIZED,
            "a bearer token is required (Authorization: Bearer ...)",
        ),
        "unknown_token" => (StatusCode::UNAUTHORIZED, "the token is not known"),
        "other_run" => (
            StatusCode::FORBIDDEN,
            "this token may write only to its own ingestion run",
        ),
        "no_role" => (
            StatusCode::FORBIDDEN,
            "this route has no role assignment: it is closed to everyone",
        ),
        "rate_limited" => (
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests with this token ([api] max_requests_per_sec)",
        ),
        _ => (StatusCode::FORBIDDEN, "the token lacks the role this needs"),
    }
}

fn refuse(
    reason: &'static str,
    method: &Method,
    route: &str,
    peer: Option<SocketAddr>,
    name: Option<&str>,
    need: Option<&[Role]>,
) -> Response {
    if reason == "rate_limited" {
        metrics::counter!("tradegate_api_refused_total", "reason" => reason).increment(1);
    } else {
        metrics::counter!(
            "tradegate_api_auth_failures_total",
            "reason" => reason,
            "route" => route.to_string()
        )
        .increment(1);
    }
    tracing::warn!(
        reason,
        %method,
        route,
        peer = peer.map(|p| p.to_string()).unwrap_or_default(),
        token = name.unwrap_or(""),
        "API request refused"
    );
    let (status, text) = refusal(reason);
    let message = match need {
        Some(roles) if reason == "forbidden" => format!(
            "{text}: {}",
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
        _ => text.to_string(),
    };
    let code = match reason {
        "missing_token" => "auth.missing_token",
        "unknown_token" => "auth.unknown_token",
        "other_run" => "auth.other_run",
        "no_role" => "auth.no_role",
        "rate_limited" => "rate_limited",
        _ => "auth.forbidden",
    };
    let mut response = ApiError::new(status, code, message).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The middleware: checks the request against [`ROUTES`] and, when it passes, gives the
/// handler its [`Caller`].
pub async fn authorize(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let Some(path) = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
    else {
        // no route matched: answered here, so that nothing unmatched (a fallback, a nested
        // service) is ever served without the check
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response();
    };
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let method = parts.method.clone();
    let need = match access_of(&method, &path) {
        Some(Access::Open | Access::Strategy) => {
            return next.run(Request::from_parts(parts, body)).await;
        }
        Some(Access::Metrics) if auth.public_metrics => {
            return next.run(Request::from_parts(parts, body)).await;
        }
        Some(Access::Metrics) => &[Role::Auditor, Role::Operator][..],
        Some(Access::Roles(roles)) => roles,
        // the path is a route, but not with this method: answered here, never passed on
        None if ROUTES.iter().any(|r| r.path == path) => {
            let allow: Vec<&str> = ROUTES
                .iter()
                .filter(|r| r.path == path)
                .map(|r| r.method)
                .collect();
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!(
                    "{method} is not served here (allowed: {})",
                    allow.join(", ")
                ),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                response.headers_mut().insert(header::ALLOW, v);
            }
            return response;
        }
        None => {
            tracing::error!(%method, route = %path, "a route without a role assignment was called");
            return refuse("no_role", &method, &path, peer, None, None);
        }
    };
    let Some(token) = bearer(&parts.headers) else {
        return refuse("missing_token", &method, &path, peer, None, None);
    };
    let Some(credential) = auth.identify(token) else {
        return refuse("unknown_token", &method, &path, peer, None, None);
    };
    if !credential.roles.iter().any(|r| need.contains(r)) {
        return refuse(
            "forbidden",
            &method,
            &path,
            peer,
            Some(&credential.name),
            Some(need),
        );
    }
    if let Some(run) = credential.run {
        let params = parts.extract::<RawPathParams>().await.ok();
        let same = params
            .as_ref()
            .and_then(|p| p.iter().find(|(k, _)| *k == "run_id").map(|(_, v)| v))
            .and_then(|v| Uuid::parse_str(v).ok())
            == Some(run);
        if !same {
            return refuse(
                "other_run",
                &method,
                &path,
                peer,
                Some(&credential.name),
                None,
            );
        }
    }
    // an emergency halt is never refused for the token's other traffic
    let kill_switch = method == Method::POST && path == "/api/v1/kill-switch";
    if !kill_switch && !auth.admit(&credential.name) {
        return refuse(
            "rate_limited",
            &method,
            &path,
            peer,
            Some(&credential.name),
            None,
        );
    }
    let caller = Caller(Operator {
        name: credential.name.clone(),
        peer: peer.map(|p| p.to_string()),
    });
    parts.extensions.insert(caller);
    next.run(Request::from_parts(parts, body)).await
}

/// The local operator token in `path`: read when the file exists (its mode tightened to 0600
/// if it was looser), else created with a new random token, mode 0600. Several processes
/// starting at once agree on one token: the file appears whole or not at all (written aside,
/// then linked into place, which fails if another got there first).
pub fn local_operator_token(path: &Path) -> Result<String> {
    secret_file(path, "token")
}

/// The secret in `path` (a `what` file: "token", "audit writer key"), read or created as
/// [`local_operator_token`] says.
pub fn secret_file(path: &Path, what: &str) -> Result<String> {
    secret_file_tries(path, what, 3)
}

fn secret_file_tries(path: &Path, what: &str, tries: u32) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.file_type().is_file()
    {
        bail!(
            "the {what} file {} is not a regular file (a symlink or a directory): remove it",
            path.display()
        );
    }
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_string();
            if token.len() < 32 {
                bail!(
                    "the {what} file {} holds no {what} (delete it to have a new one made)",
                    path.display()
                );
            }
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the {what} file was readable by others: its mode is now 0600");
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("cannot make {} private", path.display()))?;
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let token = new_token();
            let aside = path.with_extension(format!("new-{}", new_token().get(..12).unwrap_or("")));
            let written = (|| -> std::io::Result<()> {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&aside)?;
                file.write_all(format!("{token}\n").as_bytes())?;
                file.sync_all()?;
                std::fs::hard_link(&aside, path)
            })();
            let _ = std::fs::remove_file(&aside);
            match written {
                Ok(()) => Ok(token),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries > 1 => {
                    secret_file_tries(path, what, tries - 1)
                }
                Err(e) => Err(e)
                    .with_context(|| format!("cannot create the {what} file {}", path.display())),
            }
        }
        Err(e) => Err(e).with_context(|| format!("cannot read the {what} file {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hex_digest_is_read_back_and_bad_hex_is_refused() {
        let token = "correct horse battery staple";
        let hex: String = digest(token).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex_digest(&hex), Some(digest(token)));
        assert_eq!(hex_digest(&hex[..62]), None);
        assert_eq!(hex_digest(&format!("zz{}", &hex[2..])), None);
    }

    #[test]
    fn a_token_is_found_only_by_its_exact_value() {
        let auth = Auth::for_run(Uuid::nil(), "a-token-of-the-run");
        assert!(auth.identify("a-token-of-the-run").is_some());
        assert!(auth.identify("a-token-of-the-ru").is_none());
        assert!(auth.identify("").is_none());
        let debug = format!("{auth:?}");
        assert!(!debug.contains("a-token-of-the-run"), "{debug}");
    }

    #[test]
    fn bearer_takes_any_case_of_the_scheme_and_nothing_else() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
