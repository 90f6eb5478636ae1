//! The writer key: a secret every connection of the gateway (and of its commands that write the
//! trail) presents as the `tradegate.audit_writer` setting. The database keeps only its SHA-256
//! (`audit_writers`); a journal entry written without it is marked as written behind the
//! gateway's back. One key per process, installed before the first connection.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;

use crate::store::StoreError;

static KEY: OnceLock<WriterKey> = OnceLock::new();

/// The writer key (its `Debug` shows only a fingerprint).
#[derive(Clone, PartialEq, Eq)]
pub struct WriterKey(String);

impl std::fmt::Debug for WriterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriterKey(sha256 {}..)", &self.fingerprint()[..12])
    }
}

/// Why a writer key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WriterKeyError {
    /// Too short, too long, or with characters a connection option cannot carry
    #[error(
        "an audit writer key is 32 to 256 characters of A-Z, a-z, 0-9, '-' and '_' (the one given is not)"
    )]
    Malformed,
    /// The database's trail is kept under other keys
    #[error(
        "this database's audit trail is written under another writer key: give this process that key (TRADEGATE_AUDIT_KEY or [audit] writer_key_file), or register this one from a process holding it"
    )]
    Unregistered,
    /// The key was registered but the connection does not present it
    #[error(
        "the database connection does not carry the audit writer key (a connection pooler that drops startup options?)"
    )]
    NotPresented,
    /// A statement failed
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl WriterKey {
    /// `key` as a writer key, when it is one.
    pub fn new(key: &str) -> Result<Self, WriterKeyError> {
        let key = key.trim();
        let ok = (32..=256).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(key.to_string()))
        } else {
            Err(WriterKeyError::Malformed)
        }
    }

    /// A new random key (32 bytes from the operating system's generator, as hex).
    pub fn random() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(super::hex(&bytes))
    }

    /// The key itself, to be written to its file.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the database keeps of it.
    pub fn sha256(&self) -> Vec<u8> {
        Sha256::digest(self.0.as_bytes()).to_vec()
    }

    /// Its SHA-256 as hex: what may be shown of it.
    pub fn fingerprint(&self) -> String {
        super::hex(&self.sha256())
    }
}

/// Makes `key` this process's writer key; the first one installed stays (later calls return
/// it, whatever they pass).
pub fn install(key: WriterKey) -> &'static WriterKey {
    KEY.get_or_init(|| key)
}

/// This process's writer key, when one was installed.
pub fn installed() -> Option<&'static WriterKey> {
    KEY.get()
}

/// Adds the installed key (if any) to a connection's startup options.
pub fn apply(config: &mut tokio_postgres::Config) {
    if let Some(key) = installed() {
        let options = config.get_options().unwrap_or_default();
        config.options(format!("{options} -c tradegate.audit_writer={}", key.0).trim());
    }
}

/// Registers the installed key with the database when it holds no key yet, and checks that
/// this connection presents a registered one. Without an installed key, nothing is done.
pub async fn register(client: &mut tokio_postgres::Client) -> Result<(), WriterKeyError> {
    let Some(key) = installed() else {
        return Ok(());
    };
    let tx = client
        .transaction()
        .await
        .map_err(StoreError::new("registering the audit writer key"))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('tradegate.audit_writers'))",
        &[],
    )
    .await
    .map_err(StoreError::new("registering the audit writer key"))?;
    let inserted = tx
        .execute(
            "INSERT INTO audit_writers (key_sha256) SELECT $1::bytea \
             WHERE NOT EXISTS (SELECT 1 FROM audit_writers WHERE key_sha256 = $1::bytea)",
            &[&key.sha256()],
        )
        .await;
    match inserted {
        Ok(n) => {
            if n == 1 {
                tracing::info!(fingerprint = %&key.fingerprint()[..12],
                    "registered this audit writer key with the database");
            }
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            return Err(WriterKeyError::Unregistered);
        }
        Err(e) => return Err(StoreError::new("registering the audit writer key")(e).into()),
    }
    tx.commit()
        .await
        .map_err(StoreError::new("registering the audit writer key"))?;
    if !is_writer(client).await? {
        return Err(WriterKeyError::NotPresented);
    }
    Ok(())
}

/// Whether this connection presents a registered writer key.
pub async fn is_writer(client: &impl GenericClient) -> Result<bool, StoreError> {
    let row = client
        .query_one("SELECT audit_is_writer()", &[])
        .await
        .map_err(StoreError::new("checking the audit writer key"))?;
    Ok(row.get(0))
}
