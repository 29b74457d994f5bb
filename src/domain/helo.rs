//! The name tidings gives in EHLO. Spam filters score a bare host name
//! (SpamAssassin's FSL_HELO_NON_FQDN_1 and HELO_NO_DOMAIN, rspamd's
//! HFILTER_HELO_5), so the default is never one.

use std::net::IpAddr;

/// `smtp.helo_name` as written: a fully qualified domain name, or an
/// address literal such as `[192.0.2.7]` (RFC 5321, 4.1.3).
pub fn parse_helo_name(text: &str) -> Result<String, String> {
    let text = text.trim();
    if let Some(inner) = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        let address = inner.strip_prefix("IPv6:").unwrap_or(inner);
        return address
            .parse::<IpAddr>()
            .map(|_| text.to_owned())
            .map_err(|_| format!("`{text}` is not an address literal such as [192.0.2.7]"));
    }
    if is_fully_qualified(text) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!(
            "`{text}` is not a fully qualified domain name such as mail.example.org"
        ))
    }
}

/// The host's name when it is fully qualified, else the From address's
/// domain, else `localhost.localdomain`: never a bare host name.
pub fn default_helo_name(host_name: Option<&str>, from_domain: &str) -> String {
    [host_name.unwrap_or_default(), from_domain]
        .into_iter()
        .find(|name| is_fully_qualified(name))
        .map_or_else(
            || "localhost.localdomain".to_owned(),
            str::to_ascii_lowercase,
        )
}

/// Two labels or more, each of letters, digits and inner hyphens, and a
/// last one that is not a number.
pub fn is_fully_qualified(name: &str) -> bool {
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| is_dns_label(label))
        && labels
            .last()
            .is_some_and(|last| !last.chars().all(|c| c.is_ascii_digit()))
}

/// One label of a host name: letters, digits and inner hyphens.
pub fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_can_be_given_in_ehlo() {
        assert_eq!(
            parse_helo_name(" Mail.Example.org ").unwrap(),
            "mail.example.org"
        );
        assert_eq!(parse_helo_name("[192.0.2.7]").unwrap(), "[192.0.2.7]");
        assert_eq!(
            parse_helo_name("[IPv6:2001:db8::1]").unwrap(),
            "[IPv6:2001:db8::1]"
        );
        for bad in [
            "vm",
            "localhost",
            "-a.example",
            "a..example",
            "192.0.2.7",
            "[nope]",
            "mail example.org",
            "",
        ] {
            assert!(parse_helo_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_is_never_a_bare_host_name() {
        assert_eq!(
            default_helo_name(Some("mx1.example.net"), "example.org"),
            "mx1.example.net"
        );
        assert_eq!(default_helo_name(Some("vm"), "Example.org"), "example.org");
        assert_eq!(default_helo_name(None, "example.org"), "example.org");
        assert_eq!(
            default_helo_name(Some("vm"), "localhost"),
            "localhost.localdomain"
        );
    }
}
