//! Configuration: errors name the key, file or variable at fault; secrets stay out of Debug.

use std::path::{Path, PathBuf};

use tradegate::config::{Config, ConfigError};

fn write_config(text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("config-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, text).unwrap();
    path
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_shipped_config_toml_is_valid_and_states_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let config = Config::load_with_env(Some(&path), Vec::new()).unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn an_unknown_key_names_the_key_and_the_file() {
    let path = write_config("[api]\nlisten = \"127.0.0.1:9000\"\nlisen_port = 80\n");
    let err = Config::load_with_env(Some(&path), Vec::new()).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert!(message.contains("lisen_port"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("line 3"), "{message}");
}

#[test]
fn an_unknown_section_is_rejected() {
    let path = write_config("[brokers]\nalpaca = true\n");
    let message = Config::load_with_env(Some(&path), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(message.contains("brokers"), "{message}");
}

#[test]
fn a_missing_file_is_named() {
    let path = PathBuf::from("/nonexistent/tradegate/config.toml");
    let err = Config::load_with_env(Some(&path), Vec::new()).unwrap_err();
    assert!(matches!(err, ConfigError::NotFound(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "config file /nonexistent/tradegate/config.toml not found"
    );
}

#[test]
fn a_value_of_the_wrong_type_names_the_key() {
    let path = write_config("[supervisor]\nmax_restarts = \"lots\"\n");
    let message = Config::load_with_env(Some(&path), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(message.contains("max_restarts"), "{message}");
    assert!(message.contains("invalid type"), "{message}");
}

#[test]
fn an_unusable_value_names_the_key_and_the_file() {
    let path = write_config("[supervisor]\nbackoff_base_ms = 500\nbackoff_max_ms = 100\n");
    let err = Config::load_with_env(Some(&path), Vec::new()).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("supervisor.backoff_max_ms"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");

    let path = write_config("[api]\nlisten = \"localhost\"\n");
    let message = Config::load_with_env(Some(&path), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(message.contains("listen"), "{message}");

    let path = write_config("[database]\nconnect_timeout_secs = 0\n");
    let message = Config::load_with_env(Some(&path), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("database.connect_timeout_secs"),
        "{message}"
    );
}

#[test]
fn environment_variables_override_the_file() {
    let path = write_config("[api]\nlisten = \"127.0.0.1:9000\"\n[supervisor]\nmax_restarts = 2\n");
    let config = Config::load_with_env(
        Some(&path),
        env(&[
            ("TRADEGATE_API__LISTEN", "127.0.0.1:9100"),
            ("TRADEGATE_SUPERVISOR__MAX_RESTARTS", "9"),
            ("TRADEGATE_IBKR__ACCOUNTS", r#"["DU1", "DU2"]"#),
            ("TRADEGATE_IBKR__TIMEZONE", "US/Eastern"),
            ("DATABASE_URL", "postgres://tg@127.0.0.1:5432/tg"),
            // not config keys: ignored
            ("TRADEGATE_TEST_DATABASE_URL", "whatever"),
            ("HOME", "/root"),
        ]),
    )
    .unwrap();
    assert_eq!(config.api.listen.port(), 9100);
    assert_eq!(config.supervisor.max_restarts, 9);
    assert_eq!(config.ibkr.accounts, ["DU1", "DU2"]);
    assert_eq!(config.ibkr.timezone, "US/Eastern");
    assert_eq!(config.database.url, "postgres://tg@127.0.0.1:5432/tg");
}

#[test]
fn a_bad_environment_override_names_the_variable() {
    let path = write_config("");
    let err = Config::load_with_env(
        Some(&path),
        env(&[("TRADEGATE_SUPERVISOR__MAX_RETRIES", "3")]),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("TRADEGATE_SUPERVISOR__MAX_RETRIES"),
        "{message}"
    );
    assert!(message.contains("max_retries"), "{message}");

    let message = Config::load_with_env(
        Some(&path),
        env(&[("TRADEGATE_SUPERVISOR__MAX_RESTARTS", "-1")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("TRADEGATE_SUPERVISOR__MAX_RESTARTS"),
        "{message}"
    );

    let message = Config::load_with_env(
        Some(&path),
        env(&[("TRADEGATE_IBKR__TIMEZONE", "Mars/Base")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("ibkr.timezone") && message.contains("unknown time zone"),
        "{message}"
    );
    for (key, value, named) in [
        (
            "TRADEGATE_REPORTER__DAILY_SUMMARY_AT",
            "5pm",
            "reporter.daily_summary_at",
        ),
        (
            "TRADEGATE_REPORTER__DAILY_SUMMARY_TIMEZONE",
            "Mars/Base",
            "reporter.daily_summary_timezone",
        ),
    ] {
        let message = Config::load_with_env(Some(&path), env(&[(key, value)]))
            .unwrap_err()
            .to_string();
        assert!(message.contains(named), "{key}={value}: {message}");
    }
    let message =
        Config::load_with_env(Some(&path), env(&[("TRADEGATE_IBKR__CLI_CLIENT_ID", "17")]))
            .unwrap_err()
            .to_string();
    assert!(message.contains("ibkr.cli_client_id"), "{message}");
    let message = Config::load_with_env(
        Some(&path),
        env(&[("TRADEGATE_IBKR__ACCOUNTS", r#"["DU1","DU1"]"#)]),
    )
    .unwrap_err()
    .to_string();
    assert!(message.contains("listed twice"), "{message}");
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let path = write_config("[database]\nurl = \"postgres://trader:file-pass-123@db/tg\"\n");
    let config = Config::load_with_env(
        Some(&path),
        env(&[
            ("APCA_API_KEY_ID", "PKTESTKEYID0001"),
            ("APCA_API_SECRET_KEY", "s3cr3t-alpaca-value"),
        ]),
    )
    .unwrap();
    let credentials = config.alpaca_credentials.as_ref().unwrap();
    assert_eq!(credentials.secret_key.expose(), "s3cr3t-alpaca-value");
    let debug = format!("{config:?} {config:#?}");
    for secret in ["PKTESTKEYID0001", "s3cr3t-alpaca-value", "file-pass-123"] {
        assert!(!debug.contains(secret), "{secret} leaked: {debug}");
    }
    assert!(debug.contains("postgres://trader:***@db/tg"), "{debug}");
    assert_eq!(format!("{}", credentials.key_id), "***");

    let config = Config::load_with_env(
        Some(&path),
        env(&[("DATABASE_URL", "host=db user=t password=env-pass-456")]),
    )
    .unwrap();
    assert!(!format!("{config:?}").contains("env-pass-456"));
}

#[test]
fn half_a_credential_pair_is_an_error() {
    let path = write_config("");
    let message = Config::load_with_env(Some(&path), env(&[("APCA_API_KEY_ID", "PK1")]))
        .unwrap_err()
        .to_string();
    assert!(message.contains("APCA_API_SECRET_KEY"), "{message}");
    assert!(!message.contains("PK1"), "{message}");
}
