//! TXT lookups for `tidings check`, through hickory's resolver: the
//! system's (`/etc/resolv.conf`) or one name server given on the command line.

use std::net::SocketAddr;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::TokioResolver;

use crate::domain::deliverability::TxtAnswer;

pub struct TxtResolver {
    resolver: TokioResolver,
}

impl TxtResolver {
    /// `nameserver` replaces the system's servers, to see what another view
    /// of DNS holds (split-horizon setups, where the host's resolver is not
    /// the one the world asks).
    pub fn new(nameserver: Option<SocketAddr>) -> Result<Self, String> {
        let resolver = match nameserver {
            None => TokioResolver::builder_tokio()
                .and_then(|builder| builder.build())
                .map_err(|error| format!("cannot use the system's DNS resolver: {error}"))?,
            Some(address) => {
                let mut server = NameServerConfig::udp_and_tcp(address.ip());
                for connection in &mut server.connections {
                    connection.port = address.port();
                }
                let config = ResolverConfig::from_parts(None, Vec::new(), vec![server]);
                TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                    .build()
                    .map_err(|error| format!("cannot use the name server {address}: {error}"))?
            }
        };
        Ok(Self { resolver })
    }

    /// The TXT records at `name`, each record's strings joined.
    pub async fn txt(&self, name: &str) -> TxtAnswer {
        // Absolute, so no search domain from resolv.conf is ever appended.
        let name = match Name::from_ascii(format!("{}.", name.trim_end_matches('.'))) {
            Ok(name) => name,
            Err(error) => return TxtAnswer::Failed(format!("`{name}` is not a DNS name: {error}")),
        };
        match self.resolver.txt_lookup(name).await {
            Ok(lookup) => {
                let records: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|part| String::from_utf8_lossy(part))
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect();
                if records.is_empty() {
                    TxtAnswer::Nothing
                } else {
                    TxtAnswer::Records(records)
                }
            }
            Err(error) if error.is_no_records_found() => TxtAnswer::Nothing,
            Err(error) => TxtAnswer::Failed(describe(&error)),
        }
    }
}

fn describe(error: &NetError) -> String {
    match error {
        NetError::Timeout => "no answer from the DNS server (timed out)".into(),
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => {
            "the DNS server answered SERVFAIL".into()
        }
        NetError::Dns(DnsError::ResponseCode(code)) => {
            format!("the DNS server answered {code}")
        }
        other => other.to_string(),
    }
}
