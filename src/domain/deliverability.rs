//! What `tidings check` judges about deliverability: the From domain, the
//! base URL, the EHLO name, and the SPF, DMARC and DKIM records that DNS
//! holds. Pure judgements over text; the lookups live in `crate::check`.
//!
//! Each rule gives one [`Finding`]. An error is something that gets mail
//! rejected or junked by the big mailbox providers (Gmail and Yahoo have
//! required SPF, DKIM and DMARC of bulk senders since February 2024); a
//! warning is mail that arrives but scores worse, or a setting that protects
//! nothing yet.

use std::fmt;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Ok,
    Warning,
    Error,
}

/// One line of `tidings check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub text: String,
}

impl Finding {
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            severity: Severity::Ok,
            text: text.into(),
        }
    }

    pub fn warning(text: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            text: text.into(),
        }
    }

    pub fn error(text: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            text: text.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.severity {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{prefix}: {}", self.text)
    }
}

/// What a TXT lookup gave: each record's strings joined, as SPF (RFC 7208,
/// 3.3) and DKIM (RFC 6376, 3.6.2.2) read a record split into several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtAnswer {
    Records(Vec<String>),
    /// NXDOMAIN, or a name without TXT records.
    Nothing,
    /// A timeout, SERVFAIL or the like: nothing is known either way.
    Failed(String),
}

/// `localhost`, `*.localhost` and `localhost.localdomain` (RFC 6761).
fn is_local_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost") || name == "localhost.localdomain"
}

fn is_address_literal(name: &str) -> bool {
    let inner = name
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(name);
    let inner = inner.strip_prefix("IPv6:").unwrap_or(inner);
    inner.parse::<IpAddr>().is_ok()
}

/// The From address's domain, when it is one that DNS can vouch for.
/// An error otherwise: nobody can publish SPF, DKIM or DMARC for
/// `localhost` or an IP address, so receivers reject or junk such mail.
pub fn judge_from_domain(domain: &str) -> Result<String, Finding> {
    let why = "nobody can publish SPF, DKIM or DMARC for it, so mailbox providers \
               reject or junk the mail; use an address at a domain you control";
    if is_local_name(domain) {
        return Err(Finding::error(format!(
            "newsletter.from is at `{domain}`: {why}"
        )));
    }
    if is_address_literal(domain) {
        return Err(Finding::error(format!(
            "newsletter.from is at the IP address `{domain}`: {why}"
        )));
    }
    let ascii = idna::domain_to_ascii(domain.trim_end_matches('.')).map_err(|_| {
        Finding::error(format!(
            "newsletter.from is at `{domain}`, which is not a domain name"
        ))
    })?;
    Ok(ascii)
}

/// Readers open every link in the emails, and the one-click unsubscribe is
/// a POST to one of them. Warnings, not errors: the mail itself arrives.
pub fn judge_base_url(base_url: &str) -> Vec<Finding> {
    let Ok(url) = url::Url::parse(base_url) else {
        return vec![Finding::error(format!(
            "newsletter.base_url `{base_url}` is not a URL"
        ))];
    };
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = is_local_name(host)
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    let mut findings = Vec::new();
    if local {
        findings.push(Finding::warning(format!(
            "newsletter.base_url is {base_url}: readers cannot open links to {host}, \
             so the links in every email, unsubscribe included, are broken"
        )));
    }
    if url.scheme() == "http" {
        findings.push(Finding::warning(format!(
            "newsletter.base_url is {base_url}: links in emails and the one-click \
             List-Unsubscribe URL should be https://; mail filters distrust plain http \
             links, and browsers warn readers on the unsubscribe page"
        )));
    }
    if findings.is_empty() {
        findings.push(Finding::ok(format!("links point to {base_url}")));
    }
    findings
}

/// The EHLO name the mail goes out with. A warning, not an error: the mail
/// is delivered, but a name without a dot costs 3.4 points in SpamAssassin
/// (FSL_HELO_NON_FQDN_1, HELO_NO_DOMAIN) and gets greylisted by rspamd
/// (HFILTER_HELO_5). An address literal such as `[192.0.2.7]` is allowed
/// by RFC 5321 and chosen on purpose, so it passes.
pub fn judge_helo_name(name: &str) -> Finding {
    let literal = name.starts_with('[') && is_address_literal(name);
    if literal || (name.contains('.') && !is_local_name(name)) {
        return Finding::ok(format!("EHLO name {name}"));
    }
    Finding::warning(format!(
        "the EHLO name is `{name}`, not a fully qualified domain name: spam filters \
         score it (SpamAssassin FSL_HELO_NON_FQDN_1, rspamd HFILTER_HELO_5); set \
         smtp.helo_name to this host's public name, and drop any name in smtp.url's path"
    ))
}

/// The records of `answer` whose first tag is `v=<version>`.
fn records_of_version<'a>(answer: &'a [String], version: &str) -> Vec<&'a str> {
    answer
        .iter()
        .map(|record| record.trim())
        .filter(|record| {
            let first = record.split([';', ' ', '\t']).next().unwrap_or_default();
            first.eq_ignore_ascii_case(&format!("v={version}"))
        })
        .collect()
}

fn lookup_failed(what: &str, name: &str, reason: &str) -> Finding {
    // An error: nothing was verified, so a script must not read it as a pass;
    // and receivers asking the same servers cannot check either.
    Finding::error(format!(
        "{what} for {name} could not be looked up: {reason}"
    ))
}

/// SPF is checked against the envelope sender, which tidings takes from
/// newsletter.from, so the record belongs at the From domain. Missing or
/// broken is an error: without SPF or DKIM, Gmail rejects the mail, and it
/// requires both of bulk senders.
pub fn judge_spf(domain: &str, answer: &TxtAnswer) -> Finding {
    let records = match answer {
        TxtAnswer::Failed(reason) => return lookup_failed("the SPF record", domain, reason),
        TxtAnswer::Nothing => Vec::new(),
        TxtAnswer::Records(records) => records_of_version(records, "spf1"),
    };
    match records.as_slice() {
        [] => Finding::error(format!(
            "no SPF record for {domain} (a TXT record starting `v=spf1`): receivers cannot \
             tell that your SMTP server may send as {domain}; publish one such as \
             `v=spf1 ip4:<your server's address> -all`"
        )),
        [record] => {
            let passes_anyone = record
                .split_whitespace()
                .any(|term| term == "all" || term == "+all");
            if passes_anyone {
                Finding::warning(format!(
                    "the SPF record for {domain} ends in +all, which lets anyone send as \
                     {domain}: {record}"
                ))
            } else {
                Finding::ok(format!("SPF record for {domain}: {record}"))
            }
        }
        several => Finding::error(format!(
            "{domain} has {} SPF records; receivers treat that as a permanent error \
             (RFC 7208, 4.5): merge them into one",
            several.len()
        )),
    }
}

/// Where DMARC policy is looked for, nearest first: `_dmarc.<domain>`,
/// then each parent down to two labels. This is DMARCbis's tree walk; it
/// finds the organisational domain's record without a public suffix list.
pub fn dmarc_record_names(domain: &str) -> Vec<String> {
    let labels: Vec<&str> = domain.trim_end_matches('.').split('.').collect();
    (0..labels.len().saturating_sub(1))
        .map(|skip| format!("_dmarc.{}", labels[skip..].join(".")))
        .collect()
}

/// Whether the walk over [`dmarc_record_names`] stops at `answer`: it
/// holds a DMARC record, or the lookup failed (a parent's record may not be
/// the one that applies, so the walk must not go past a name it could not
/// read).
pub fn ends_dmarc_walk(answer: &TxtAnswer) -> bool {
    match answer {
        TxtAnswer::Records(records) => !records_of_version(records, "DMARC1").is_empty(),
        TxtAnswer::Nothing => false,
        TxtAnswer::Failed(_) => true,
    }
}

/// The policy of a DMARC record, from its `p=` tag.
fn dmarc_policy(record: &str) -> Option<String> {
    parse_tags(record)
        .ok()?
        .into_iter()
        .find(|(tag, _)| tag.eq_ignore_ascii_case("p"))
        .map(|(_, value)| value.to_ascii_lowercase())
        .filter(|policy| matches!(policy.as_str(), "none" | "quarantine" | "reject"))
}

/// `found_at` is the name the answer came from (see [`dmarc_record_names`]).
/// Missing is an error: Gmail and Yahoo require a DMARC record of bulk
/// senders. `p=none` is a warning: they accept it, but it protects nothing.
pub fn judge_dmarc(domain: &str, found_at: &str, answer: &TxtAnswer) -> Finding {
    let records = match answer {
        TxtAnswer::Failed(reason) => return lookup_failed("the DMARC record", found_at, reason),
        TxtAnswer::Nothing => Vec::new(),
        TxtAnswer::Records(records) => records_of_version(records, "DMARC1"),
    };
    let place = if found_at == format!("_dmarc.{domain}") {
        String::new()
    } else {
        format!(" (at {found_at})")
    };
    match records.as_slice() {
        [] => Finding::error(format!(
            "no DMARC record for {domain} (a TXT record at _dmarc.{domain} starting \
             `v=DMARC1`): Gmail and Yahoo require one of bulk senders; start with \
             `v=DMARC1; p=none; rua=mailto:<an address of yours>`"
        )),
        [record] => match dmarc_policy(record).as_deref() {
            None => Finding::error(format!(
                "the DMARC record for {domain}{place} has no valid p= tag (none, quarantine \
                 or reject), so receivers ignore it: {record}"
            )),
            Some("none") => Finding::warning(format!(
                "the DMARC record for {domain}{place} says p=none: Gmail and Yahoo accept it, \
                 but it protects nothing; once its reports show your mail passes, move to \
                 p=quarantine or p=reject: {record}"
            )),
            Some(_) => Finding::ok(format!("DMARC record for {domain}{place}: {record}")),
        },
        several => Finding::error(format!(
            "{domain}{place} has {} DMARC records; receivers then apply none (RFC 7489, \
             6.6.3): keep one",
            several.len()
        )),
    }
}

/// The `tag=value` pairs of a DKIM key record or a DMARC record (RFC 6376,
/// 3.2): tags separated by `;`, whitespace around them ignored, and
/// whitespace inside a value folded away (a base64 key is often written in
/// pieces). An empty trailing tag is allowed; a tag without `=` is not.
pub fn parse_tags(record: &str) -> Result<Vec<(String, String)>, String> {
    let mut tags = Vec::new();
    for part in record.split(';') {
        if part.trim().is_empty() {
            continue;
        }
        let (tag, value) = part
            .split_once('=')
            .ok_or_else(|| format!("`{}` is not tag=value", part.trim()))?;
        let tag = tag.trim();
        if tag.is_empty() || !tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`{tag}` is not a tag name"));
        }
        let value: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        tags.push((tag.to_owned(), value));
    }
    Ok(tags)
}

fn tag<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter()
        .find(|(tag, _)| tag == name)
        .map(|(_, value)| value.as_str())
}

/// Compares the key record in DNS at `record_name` with `expected`, the
/// record the configured private key calls for. Every mismatch is an
/// error: receivers then fail every signature, which Gmail and Yahoo treat
/// as unsigned bulk mail.
pub fn judge_dkim(record_name: &str, expected: &str, answer: &TxtAnswer) -> Finding {
    let records = match answer {
        TxtAnswer::Failed(reason) => return lookup_failed("the DKIM key", record_name, reason),
        TxtAnswer::Nothing => Vec::new(),
        TxtAnswer::Records(records) => records.iter().collect(),
    };
    let publish = format!("publish this TXT record at {record_name}: {expected}");
    let [record] = records.as_slice() else {
        return Finding::error(if records.is_empty() {
            format!("no DKIM key in DNS at {record_name}; {publish}")
        } else {
            format!(
                "{} TXT records at {record_name}; receivers need exactly one DKIM key there",
                records.len()
            )
        });
    };
    let expected = parse_tags(expected).unwrap_or_default();
    let found = match parse_tags(record) {
        Ok(found) => found,
        Err(reason) => {
            return Finding::error(format!(
                "the DKIM record at {record_name} cannot be read ({reason}); {publish}"
            ))
        }
    };
    if tag(&found, "v").is_some_and(|version| version != "DKIM1") {
        return Finding::error(format!(
            "the DKIM record at {record_name} is not v=DKIM1; {publish}"
        ));
    }
    // k= defaults to rsa (RFC 6376, 3.6.1).
    let key_type = |tags: &[(String, String)]| tag(tags, "k").unwrap_or("rsa").to_owned();
    let (found_key, expected_key) = (tag(&found, "p"), tag(&expected, "p"));
    match found_key {
        None | Some("") => Finding::error(format!(
            "the DKIM record at {record_name} has no public key (p= is empty or missing, \
             which revokes the key); {publish}"
        )),
        Some(key) if Some(key) != expected_key || key_type(&found) != key_type(&expected) => {
            Finding::error(format!(
                "the DKIM key at {record_name} does not match smtp.dkim.private_key_file, so \
                 every signature fails; {publish}"
            ))
        }
        Some(_) => Finding::ok(format!(
            "DKIM key at {record_name} matches smtp.dkim.private_key_file"
        )),
    }
}

#[cfg(test)]
mod tests {
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
        let severities = |url: &str| -> Vec<Severity> {
            judge_base_url(url).iter().map(|f| f.severity).collect()
        };
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
        let judge =
            |text: &str| judge_dmarc("example.org", "_dmarc.example.org", &records(&[text]));
        assert_eq!(
            judge("v=DMARC1; p=reject; rua=mailto:d@example.org"),
            Finding::ok(
                "DMARC record for example.org: v=DMARC1; p=reject; rua=mailto:d@example.org"
            )
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
}
