//! `tidings check`: the config, templates, database and SMTP server, then
//! the deliverability rules of `crate::domain::deliverability` over what
//! DNS holds for the From domain. Each finding is reported as it is made.

use std::net::{IpAddr, SocketAddr};

use crate::config::Settings;
use crate::domain::deliverability::{
    dmarc_record_names, ends_dmarc_walk, judge_base_url, judge_dkim, judge_dkim_alignment,
    judge_dmarc, judge_from_domain, judge_helo_name, judge_spf, Finding, TxtAnswer,
};
use crate::mailer::Mailer;

mod dns;
mod latest;

pub use dns::TxtResolver;
pub use latest::{CheckReport, LatestChecks};

/// `--nameserver`: `IP` (port 53) or `IP:PORT`.
pub fn parse_nameserver(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("`{text}` is not an IP address or IP:PORT"))
}

/// Runs every check, even after one fails, so one run names every problem.
/// The config itself was loaded (and so checked) before this runs.
pub async fn run(
    settings: &Settings,
    nameserver: Option<SocketAddr>,
    report: &mut impl FnMut(Finding),
) {
    report(Finding::ok("config"));
    report(
        match crate::render::Templates::load(&settings.templates.dir, &settings.newsletter) {
            Ok(_) => Finding::ok("templates"),
            Err(error) => Finding::error(format!("templates: {error:#}")),
        },
    );
    report(database(settings).await);
    smtp(settings, report).await;
    judge_base_url(&settings.newsletter.base_url)
        .into_iter()
        .for_each(&mut *report);
    match judge_from_domain(settings.newsletter.from_domain()) {
        Err(finding) => report(finding),
        Ok(domain) => match TxtResolver::new(nameserver) {
            Err(reason) => report(Finding::error(format!("DNS: {reason}"))),
            Ok(resolver) => dns_records(&resolver, settings, &domain, report).await,
        },
    }
}

async fn database(settings: &Settings) -> Finding {
    let reached = async {
        let store = crate::store::connect(&settings.database).await?;
        store.ping().await?;
        Ok::<_, crate::store::StoreError>(store.backend())
    };
    match reached.await {
        Ok(backend) => Finding::ok(format!("database ({backend})")),
        Err(error) => Finding::error(format!("database (database.url): {error:#}")),
    }
}

async fn smtp(settings: &Settings, report: &mut impl FnMut(Finding)) {
    let mailer = match Mailer::from_settings(&settings.smtp, settings.newsletter.from_domain()) {
        Ok(mailer) => mailer,
        Err(error) => return report(Finding::error(format!("smtp: {error:#}"))),
    };
    report(match mailer.verify().await {
        Ok(()) => Finding::ok(format!("email via {}", mailer.describe())),
        Err(error) => Finding::error(format!("smtp (smtp.url): {error:#}")),
    });
    if settings.smtp.url.is_none() {
        report(Finding::warning(
            "no SMTP server is configured (smtp.url): emails are written as .eml files and \
             reach nobody",
        ));
    }
    // .eml files in the outbox greet nobody.
    if let Some(helo_name) = mailer.helo_name() {
        report(judge_helo_name(&helo_name));
    }
}

async fn dns_records(
    resolver: &TxtResolver,
    settings: &Settings,
    domain: &str,
    report: &mut impl FnMut(Finding),
) {
    let dkim = async {
        let signer = settings.smtp.dkim.as_ref()?;
        let name = signer.dns_name();
        let answer = resolver.txt(&name).await;
        let alignment = judge_dkim_alignment(domain, signer.domain());
        Some((judge_dkim(&name, &signer.dns_record(), &answer), alignment))
    };
    let (spf, (found_at, dmarc), dkim) =
        futures::join!(resolver.txt(domain), dmarc(resolver, domain), dkim);
    report(judge_spf(domain, &spf));
    report(judge_dmarc(domain, &found_at, &dmarc));
    // A warning: DKIM is optional here, and Gmail and Yahoo take SPF alone
    // from small senders; bulk senders need it.
    match dkim {
        Some((key, alignment)) => {
            report(key);
            alignment.into_iter().for_each(&mut *report);
        }
        None => report(Finding::warning(
            "DKIM signing is off (smtp.dkim.domain, selector and private_key_file): Gmail \
             and Yahoo require DKIM of bulk senders",
        )),
    }
}

/// The nearest DMARC record up the tree from `domain` and where it is, or
/// the first failed lookup.
async fn dmarc(resolver: &TxtResolver, domain: &str) -> (String, TxtAnswer) {
    let names = dmarc_record_names(domain);
    for name in &names {
        let answer = resolver.txt(name).await;
        if ends_dmarc_walk(&answer) {
            return (name.clone(), answer);
        }
    }
    (format!("_dmarc.{domain}"), TxtAnswer::Nothing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_server_is_an_ip_with_or_without_a_port() {
        assert_eq!(
            parse_nameserver("192.0.2.53").unwrap(),
            "192.0.2.53:53".parse().unwrap()
        );
        assert_eq!(
            parse_nameserver("127.0.0.1:5353").unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(
            parse_nameserver("[::1]:5353").unwrap(),
            "[::1]:5353".parse().unwrap()
        );
        assert_eq!(
            parse_nameserver("::1").unwrap(),
            "[::1]:53".parse().unwrap()
        );
        assert!(parse_nameserver("ns1.example.org").is_err());
    }
}
