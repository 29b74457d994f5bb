use super::*;

fn records(texts: &[&str]) -> TxtAnswer {
    TxtAnswer::Records(texts.iter().map(|text| text.to_string()).collect())
}

#[test]
fn a_from_domain_must_be_one_dns_can_vouch_for() {
    for local in [
        "localhost",
        "LocalHost",
        "news.localhost",
        "localhost.localdomain",
        "127.0.0.1",
        "[127.0.0.1]",
        "[IPv6:::1]",
        "192.0.2.7",
    ] {
        let finding = judge_from_domain(local).unwrap_err();
        assert_eq!(finding.severity, Severity::Error, "{local}");
        assert!(finding.text.contains("newsletter.from"), "{}", finding.text);
    }
    assert_eq!(judge_from_domain("Example.org").unwrap(), "example.org");
    assert_eq!(
        judge_from_domain("bücher.example").unwrap(),
        "xn--bcher-kva.example"
    );
    assert!(judge_from_domain("notlocalhost.org").is_ok());
}

#[test]
fn a_base_url_readers_cannot_open_or_over_http_is_a_warning() {
    let severities =
        |url: &str| -> Vec<Severity> { judge_base_url(url).iter().map(|f| f.severity).collect() };
    assert_eq!(severities("https://news.example.org"), [Severity::Ok]);
    assert_eq!(severities("http://news.example.org"), [Severity::Warning]);
    assert!(judge_base_url("http://news.example.org")[0]
        .text
        .contains("List-Unsubscribe"));
    let local = judge_base_url("http://127.0.0.1:8080");
    assert_eq!(local.len(), 2, "local and plain http: {local:?}");
    assert!(local[0].text.contains("cannot open links to 127.0.0.1"));
    assert_eq!(severities("https://localhost"), [Severity::Warning]);
    assert_eq!(severities("https://[::1]:8443"), [Severity::Warning]);
}

#[test]
fn an_ehlo_name_needs_a_dot() {
    let severity = |name: &str| judge_helo_name(name).severity;
    assert_eq!(severity("mail.example.org"), Severity::Ok);
    assert_eq!(severity("[192.0.2.7]"), Severity::Ok);
    assert_eq!(severity("[IPv6:2001:db8::1]"), Severity::Ok);
    assert_eq!(severity("vm"), Severity::Warning);
    assert_eq!(severity("localhost.localdomain"), Severity::Warning);
}

#[test]
fn spf_is_found_among_other_txt_records() {
    let answer = records(&["google-site-verification=abc", "v=spf1 mx -all"]);
    assert_eq!(
        judge_spf("example.org", &answer),
        Finding::ok("SPF record for example.org: v=spf1 mx -all")
    );
    assert_eq!(
        judge_spf("example.org", &records(&["V=SPF1 -all"])).severity,
        Severity::Ok
    );
    // `v=spf10` is not SPF.
    for missing in [records(&["v=spf10 -all", "hello"]), TxtAnswer::Nothing] {
        let finding = judge_spf("example.org", &missing);
        assert_eq!(finding.severity, Severity::Error);
        assert!(
            finding.text.starts_with("no SPF record"),
            "{}",
            finding.text
        );
    }
    let twice = judge_spf(
        "example.org",
        &records(&["v=spf1 mx -all", "v=spf1 a -all"]),
    );
    assert!(twice.text.contains("2 SPF records"), "{}", twice.text);
    assert_eq!(
        judge_spf("example.org", &records(&["v=spf1 +all"])).severity,
        Severity::Warning
    );
}

#[test]
fn a_failed_lookup_is_not_called_missing() {
    let failed = TxtAnswer::Failed("request timed out".into());
    for finding in [
        judge_spf("example.org", &failed),
        judge_dmarc("example.org", "_dmarc.example.org", &failed),
        judge_dkim("s._domainkey.example.org", "v=DKIM1; p=AB", &failed),
    ] {
        assert_eq!(finding.severity, Severity::Error);
        assert!(finding
            .text
            .contains("could not be looked up: request timed out"));
        assert!(!finding.text.starts_with("no "), "{}", finding.text);
    }
}

#[test]
fn dmarc_policies() {
    let judge = |text: &str| judge_dmarc("example.org", "_dmarc.example.org", &records(&[text]));
    assert_eq!(
        judge("v=DMARC1; p=reject; rua=mailto:d@example.org"),
        Finding::ok("DMARC record for example.org: v=DMARC1; p=reject; rua=mailto:d@example.org")
    );
    assert_eq!(judge("v=DMARC1;p=quarantine").severity, Severity::Ok);
    let none = judge("v=DMARC1; p=none");
    assert_eq!(none.severity, Severity::Warning);
    assert!(none.text.contains("protects nothing"), "{}", none.text);
    assert_eq!(judge("v=DMARC1; p=maybe").severity, Severity::Error);
    assert_eq!(
        judge("v=DMARC1; rua=mailto:d@example.org").severity,
        Severity::Error
    );
    let missing = judge_dmarc("example.org", "_dmarc.example.org", &TxtAnswer::Nothing);
    assert!(missing.text.starts_with("no DMARC record for example.org"));
    let inherited = judge_dmarc(
        "news.example.org",
        "_dmarc.example.org",
        &records(&["v=DMARC1; p=reject"]),
    );
    assert_eq!(
        inherited.text,
        "DMARC record for news.example.org (at _dmarc.example.org): v=DMARC1; p=reject"
    );
}

#[test]
fn the_dmarc_walk_stops_at_a_record_or_a_failure() {
    assert!(ends_dmarc_walk(&records(&["v=DMARC1; p=reject"])));
    assert!(ends_dmarc_walk(&TxtAnswer::Failed("SERVFAIL".into())));
    assert!(!ends_dmarc_walk(&records(&["v=spf1 -all"])));
    assert!(!ends_dmarc_walk(&TxtAnswer::Nothing));
    let twice = judge_dmarc(
        "example.org",
        "_dmarc.example.org",
        &records(&["v=DMARC1; p=reject", "v=DMARC1; p=none"]),
    );
    assert_eq!(twice.severity, Severity::Error);
    assert!(twice.text.contains("2 DMARC records"), "{}", twice.text);
}

#[test]
fn dmarc_is_looked_for_up_to_the_organisational_domain() {
    assert_eq!(
        dmarc_record_names("a.news.example.org"),
        [
            "_dmarc.a.news.example.org",
            "_dmarc.news.example.org",
            "_dmarc.example.org"
        ]
    );
    assert_eq!(dmarc_record_names("example.org"), ["_dmarc.example.org"]);
}

#[test]
fn a_dkim_domain_must_share_the_from_domains_organisational_domain() {
    for aligned in ["news.example.org", "example.org", "mail.Example.org"] {
        assert_eq!(judge_dkim_alignment("news.example.org", aligned), None);
    }
    let other = judge_dkim_alignment("news.example.org", "mailer.example.net").unwrap();
    assert_eq!(other.severity, Severity::Warning);
    assert!(other.text.contains("not aligned"), "{}", other.text);
}

#[test]
fn tags_parse_whatever_the_spacing_and_order() {
    assert_eq!(
        parse_tags(" p = MIIB AQAB ;k=rsa;v=DKIM1; ").unwrap(),
        [
            ("p".to_owned(), "MIIBAQAB".to_owned()),
            ("k".to_owned(), "rsa".to_owned()),
            ("v".to_owned(), "DKIM1".to_owned()),
        ]
    );
    assert_eq!(parse_tags("v=DKIM1; p=").unwrap()[1].1, "");
    assert!(parse_tags("v=DKIM1; garbage").is_err());
    assert!(parse_tags("=x").is_err());
}

#[test]
fn a_dkim_key_must_match_the_configured_one() {
    let expected = "v=DKIM1; k=rsa; p=MIIBIjANBgkqAQAB";
    let name = "s1._domainkey.example.org";
    let judge = |answer: TxtAnswer| judge_dkim(name, expected, &answer);
    // Other order, no v=, k= left to its default, key split by spaces.
    assert_eq!(
        judge(records(&["p=MIIBIjANBg kqAQAB; t=s"])),
        Finding::ok("DKIM key at s1._domainkey.example.org matches smtp.dkim.private_key_file")
    );
    let other = judge(records(&["v=DKIM1; k=rsa; p=MIIBIjANBgkqOTHER"]));
    assert_eq!(other.severity, Severity::Error);
    assert!(other.text.contains("does not match"), "{}", other.text);
    assert!(
        other.text.contains(expected),
        "says what to publish: {}",
        other.text
    );
    let wrong_type = judge(records(&["v=DKIM1; k=ed25519; p=MIIBIjANBgkqAQAB"]));
    assert!(wrong_type.text.contains("does not match"));
    assert!(judge(records(&["v=DKIM1; p="])).text.contains("revokes"));
    assert!(judge(TxtAnswer::Nothing)
        .text
        .starts_with("no DKIM key in DNS"));
    assert!(judge(records(&["v=DKIM2; p=MIIBIjANBgkqAQAB"]))
        .text
        .contains("not v=DKIM1"));
}
