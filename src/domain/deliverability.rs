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

use super::helo::is_fully_qualified;

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

/// The EHLO name the mail goes out with, judged by the rule that picks the
/// default (`helo::is_fully_qualified`). A warning, not an error: the mail
/// is delivered, but a name without a dot costs 3.4 points in SpamAssassin
/// (FSL_HELO_NON_FQDN_1, HELO_NO_DOMAIN) and gets greylisted by rspamd
/// (HFILTER_HELO_5). An address literal such as `[192.0.2.7]` is allowed
/// by RFC 5321 and chosen on purpose, so it passes.
pub fn judge_helo_name(name: &str) -> Finding {
    let literal = name.starts_with('[') && is_address_literal(name);
    if literal || (is_fully_qualified(name) && !is_local_name(name)) {
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

/// DMARC counts a DKIM signature only when its `d=` domain is aligned with
/// the From domain: in relaxed mode, both under one organisational domain.
/// Without a public suffix list that is taken as the same last two labels,
/// which can miss a misalignment under a suffix such as `co.uk` but never
/// warns about a good setup. A warning, not an error: SPF, checked against
/// the From domain here, can still carry DMARC.
pub fn judge_dkim_alignment(from_domain: &str, signing_domain: &str) -> Option<Finding> {
    let organisational = |domain: &str| {
        let labels: Vec<String> = domain
            .trim_end_matches('.')
            .to_ascii_lowercase()
            .rsplit('.')
            .take(2)
            .map(str::to_owned)
            .collect();
        labels
    };
    (organisational(from_domain) != organisational(signing_domain)).then(|| {
        Finding::warning(format!(
            "smtp.dkim.domain is {signing_domain}, not under the From domain {from_domain}: \
             DMARC ignores a signature whose domain is not aligned with the From address; \
             sign as {from_domain} or its parent domain"
        ))
    })
}

#[cfg(test)]
mod tests;
