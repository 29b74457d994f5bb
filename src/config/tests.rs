use super::*;

// These tests leave the process environment out, so a TIDINGS_ variable
// in the developer's shell cannot change what they see.
#[test]
fn defaults_parse() {
    let settings = load_layers(None, false).expect("defaults are valid");
    assert_eq!(settings.database.backend, Backend::Sqlite);
    assert_eq!(settings.smtp.concurrency, 8);
    assert_eq!(settings.smtp.retry_base, Duration::from_secs(60));
    assert_eq!(settings.schedule.timezone, chrono_tz::UTC);
    assert!(settings.admin.token.is_none());
    assert_eq!(settings.newsletter.base_url, "http://127.0.0.1:8080");
    assert_eq!(settings.database.min_free_space, 256 << 20);
    assert_eq!(settings.database.min_free_space, DEFAULT_MIN_FREE_SPACE);
}

#[test]
fn the_free_space_guard_takes_a_size_and_zero_turns_it_off() {
    let settings = load_with("[database]\nmin_free_space = \"1GB\"").unwrap();
    assert_eq!(settings.database.min_free_space, 1 << 30);
    // A bare number is bytes, as an environment variable may give it.
    let settings = load_with("[database]\nmin_free_space = 0").unwrap();
    assert_eq!(settings.database.min_free_space, 0);
}

fn load_with(toml: &str) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tidings.toml");
    std::fs::write(&path, toml).unwrap();
    load_layers(Some(&path), false)
}

#[test]
fn bad_values_name_their_key() {
    for (toml, key) in [
        ("[schedule]\ncron = \"every monday\"", "schedule.cron"),
        (
            "[schedule]\ntimezone = \"Mars/Olympus\"",
            "schedule.timezone",
        ),
        ("[schedule]\nmode = \"sometimes\"", "schedule.mode"),
        ("[database]\nurl = \"mysql://x\"", "database.url"),
        ("[smtp]\nretry_base = \"soon\"", "smtp.retry_base"),
        ("[smtp]\nurl = \"http://mail\"", "smtp.url"),
        ("[smtp]\nconcurrency = 0", "smtp.concurrency"),
        ("[newsletter]\nfrom = \"not an address\"", "newsletter.from"),
        (
            "[newsletter]\nbase_url = \"ftp://x\"",
            "newsletter.base_url",
        ),
        ("[http]\nbind = \"nowhere\"", "http.bind"),
        ("[admin]\ntoken = \"short\"", "admin.token"),
        ("[metrics]\ntoken = \"short\"", "metrics.token"),
        (
            "[http]\ntrusted_proxies = [\"10.0.0.0/33\"]",
            "http.trusted_proxies",
        ),
        ("[http]\nidle_timeout = \"0s\"", "http.idle_timeout"),
        ("[http]\nmax_connections = 0", "http.max_connections"),
        (
            "[database]\nmin_free_space = \"lots\"",
            "database.min_free_space",
        ),
    ] {
        let error = load_with(toml).expect_err(toml).to_string();
        assert!(error.contains(key), "`{error}` should name {key}");
    }
}

#[test]
fn unknown_and_mistyped_keys_are_named() {
    let error = load_with("[smtp]\nconcurency = 3").unwrap_err().to_string();
    assert!(error.contains("concurency"), "{error}");
    let error = load_with("[smtp]\nconcurrency = \"lots\"")
        .unwrap_err()
        .to_string();
    assert!(error.contains("smtp.concurrency"), "{error}");
}

#[test]
fn a_whitespace_only_token_is_an_error_naming_its_key() {
    for key in ["admin", "metrics"] {
        let toml = format!("[{key}]\ntoken = \"   \\t \"");
        let error = load_with(&toml).expect_err(&toml).to_string();
        assert!(error.contains(&format!("{key}.token")), "{error}");
        assert!(error.contains("whitespace"), "{error}");
    }
    let settings = load_with("[admin]\ntoken = \"\"").unwrap();
    assert!(settings.admin.token.is_none(), "empty still means off");
}

#[test]
fn secrets_never_appear_in_config_errors() {
    let secret = "s3cret-Pa55word-xyz";
    for toml in [
        format!("[database]\nurl = \"mysql://tidings:{secret}@db.example.com/t\""),
        format!("[database]\nurl = \"mongodb://u:{secret}@h st/x\""),
        format!("[smtp]\nurl = \"http://u:{secret}@mail.example.com\""),
        format!("[smtp]\nurl = \"smtp://u:{secret}@\""),
        format!("[admin]\ntoken = \"{secret} x\""),
        format!("[metrics]\ntoken = \"short{secret}\"\n[admin]\ntoken = 5"),
        "[admin]\ntoken = \"tiny\"".to_owned(),
        // Values that are no URL at all have no `user:pass@` to redact.
        format!("[database]\nurl = \"postgres:/tidings:{secret}@db/t\""),
        format!("[database]\nurl = \"{secret}\""),
        // TOML syntax errors: the parser's own message quotes the line.
        format!("[database]\nurl = \"postgres://tidings:{secret}@db/t"),
        format!("[admin]\ntoken = {secret}"),
        format!("[admin]\ntoken = \"\"\"{secret}"),
        format!("[smtp]\nurl = 'smtp://u:{secret}@mail\n'"),
        format!("[metrics]\ntoken = \"{secret}\"\ntoken = \"{secret}\""),
        format!("[admin]\ntoken = \"{secret}\" trailing"),
        format!("[database]\nurl = \"postgres://u:{secret}@db/t\" = 1"),
        format!("[admin]\n{secret}"),
        format!("[admin]\ntoken = \"{secret}\\q\""),
    ] {
        let error = load_with(&toml).expect_err(&toml).to_string();
        assert!(!error.contains(secret), "`{error}` shows the secret");
        assert!(!error.contains("tiny"), "`{error}` shows the token");
    }
}

#[test]
fn a_toml_syntax_error_names_the_file_line_column_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tidings.toml");
    for (toml, place, key) in [
        (
            "# db\n[database]\nurl = \"postgres://tidings:pw@db/t\n",
            "line 3, column 34",
            Some("database.url"),
        ),
        (
            "[http]\nbind = \"127.0.0.1:1\"\n\n[admin]\ntoken = abcdef\n",
            "line 5, column 9",
            Some("admin.token"),
        ),
        ("[admin\ntoken = \"x\"\n", "line 1, column 7", None),
    ] {
        std::fs::write(&path, toml).unwrap();
        let error = load_layers(Some(&path), false).expect_err(toml).to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains(place), "`{error}` should say {place}");
        match key {
            Some(key) => assert!(error.contains(&format!("key `{key}`")), "{error}"),
            None => assert!(!error.contains("key `"), "{error}"),
        }
        assert!(!error.contains('|'), "`{error}` quotes the source");
    }
}

#[test]
fn redact_hides_passwords_in_urls_that_do_not_parse() {
    assert_eq!(
        redact("postgres://tidings:hunter2@db:5432/t"),
        "postgres://tidings:****@db:5432/t"
    );
    assert_eq!(
        redact("postgres://u:hunter2@ho st/x"),
        "postgres://u:****@ho st/x"
    );
    assert_eq!(redact("sqlite://tidings.db"), "sqlite://tidings.db");
    assert_eq!(redact("postgres://u@db/t"), "postgres://u@db/t");
}

#[test]
fn trusted_proxies_and_the_old_switch() {
    let settings =
        load_with("[http]\ntrusted_proxies = [\"127.0.0.1/32\", \"::1\", \"10.0.0.0/8\"]").unwrap();
    assert_eq!(settings.http.trusted_proxies.len(), 3);
    assert!(load_layers(None, false)
        .unwrap()
        .http
        .trusted_proxies
        .is_empty());
    let error = load_with("[http]\ntrust_forwarded_for = true")
        .unwrap_err()
        .to_string();
    assert!(error.contains("http.trusted_proxies"), "{error}");
}

#[test]
fn a_missing_file_is_an_error() {
    assert!(load(Some(Path::new("/nonexistent/tidings.toml"))).is_err());
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/dkim/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn dkim_toml(domain: &str, selector: &str, key_file: &str) -> String {
    format!(
        "[smtp.dkim]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nprivate_key_file = \"{key_file}\""
    )
}

#[test]
fn dkim_is_off_by_default_and_on_with_all_three_keys() {
    assert!(load_layers(None, false).unwrap().smtp.dkim.is_none());
    for key in ["rsa2048-pkcs1.pem", "rsa2048-pkcs8.pem", "ed25519.pem"] {
        let toml = dkim_toml("Example.org", "news2026", &fixture(key));
        let signer = load_with(&toml).unwrap().smtp.dkim.expect("signing on");
        assert_eq!(signer.dns_name(), "news2026._domainkey.example.org");
    }
}

#[test]
fn a_partial_dkim_setting_names_the_missing_key() {
    let key = fixture("ed25519.pem");
    for (toml, missing) in [
        (dkim_toml("example.org", "", &key), "smtp.dkim.selector"),
        (dkim_toml("", "news", &key), "smtp.dkim.domain"),
        (
            dkim_toml("example.org", "news", ""),
            "smtp.dkim.private_key_file",
        ),
        (
            "[smtp.dkim]\nselector = \"news\"".to_owned(),
            "smtp.dkim.domain",
        ),
    ] {
        let error = load_with(&toml).expect_err(&toml).to_string();
        assert!(error.contains(&format!("`{missing}`")), "{error}");
        assert!(error.contains("all three"), "{error}");
    }
}

#[test]
fn a_bad_dkim_key_file_stops_tidings_without_showing_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.pem");
    let not_pem = dir.path().join("not-a-key.pem");
    let secret = "c2VjcmV0LWtleS1tYXRlcmlhbC1kby1ub3Qtc2hvdw";
    std::fs::write(&not_pem, format!("{secret}\n")).unwrap();
    let broken = dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        format!("-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap();
    for (path, reason) in [
        (missing.display().to_string(), "cannot read"),
        (
            not_pem.display().to_string(),
            "no unencrypted PEM private key",
        ),
        (
            broken.display().to_string(),
            "neither an RSA nor an Ed25519 key",
        ),
        (fixture("rsa1024-pkcs1.pem"), "2048"),
        (fixture("p256-sec1.pem"), "RSA or Ed25519"),
    ] {
        let error = load_with(&dkim_toml("example.org", "news", &path))
            .expect_err(&path)
            .to_string();
        assert!(error.contains("`smtp.dkim.private_key_file`"), "{error}");
        assert!(error.contains(&path), "{error} should name the file");
        assert!(error.contains(reason), "{error} should say {reason}");
        assert!(!error.contains(secret), "{error} shows the file's contents");
    }
    let error = load_with(&dkim_toml("localhost", "news", &fixture("ed25519.pem")))
        .unwrap_err()
        .to_string();
    assert!(error.contains("`smtp.dkim.domain`"), "{error}");
    let error = load_with(&dkim_toml("example.org", "news_1", &fixture("ed25519.pem")))
        .unwrap_err()
        .to_string();
    assert!(error.contains("`smtp.dkim.selector`"), "{error}");
}
