//! DKIM (RFC 6376): the key that signs every email, the DNS record that
//! publishes its public half, and the signature itself (relaxed/relaxed,
//! `rsa-sha256`, or `ed25519-sha256` after RFC 8463).
//!
//! The cryptography is ring's, the same library that already does our TLS;
//! what is here is the message format: canonical forms and tags.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use sha2::{Digest, Sha256};

use super::helo::{is_dns_label, is_fully_qualified};

mod canonical;

/// The headers a signature covers, where the email has them. The
/// one-click pair is what Gmail and Yahoo require bulk senders to sign.
pub const SIGNED_HEADERS: [&str; 10] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// `smtp.dkim.domain`: the `d=` of every signature, a domain name.
pub fn parse_signing_domain(text: &str) -> Result<String, String> {
    let text = text.trim();
    if is_fully_qualified(text) {
        Ok(text.trim_end_matches('.').to_ascii_lowercase())
    } else {
        Err(format!("`{text}` is not a domain name such as example.org"))
    }
}

/// `smtp.dkim.selector`: one or more DNS labels, such as `news2026`.
pub fn parse_selector(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.split('.').all(is_dns_label) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!(
            "`{text}` is not a selector: letters, digits and hyphens, such as news2026"
        ))
    }
}

/// `rsaEncryption` (1.2.840.113549.1.1.1) and `id-Ed25519` (1.3.101.112),
/// DER-encoded, as they stand in a PKCS#8 key's algorithm identifier.
const RSA_OID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

enum Pair {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A private signing key. Neither `Debug` nor any error shows key material.
pub struct DkimKey(Pair);

impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DkimKey({})", self.describe())
    }
}

impl DkimKey {
    /// A PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`, RSA or Ed25519) or
    /// PKCS#1 (`BEGIN RSA PRIVATE KEY`, as `openssl genrsa` and
    /// opendkim-genkey write it). The reason given never quotes the file.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
            "holds no unencrypted PEM private key (BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY)"
                .to_owned()
        })?;
        let rejected = |kind: &str, error: ring::error::KeyRejected| {
            format!("is not a usable {kind} key ({error}); RSA keys need 2048 to 8192 bits")
        };
        match der {
            PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der())
                .map(|pair| Self(Pair::Rsa(pair)))
                .map_err(|error| rejected("RSA", error)),
            PrivateKeyDer::Pkcs8(der) => {
                let der = der.secret_pkcs8_der();
                // The algorithm identifier sits within the first bytes.
                let head = &der[..der.len().min(32)];
                if contains(head, ED25519_OID) {
                    Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                        .map(|pair| Self(Pair::Ed25519(pair)))
                        .map_err(|error| rejected("Ed25519", error))
                } else if contains(head, RSA_OID) {
                    RsaKeyPair::from_pkcs8(der)
                        .map(|pair| Self(Pair::Rsa(pair)))
                        .map_err(|error| rejected("RSA", error))
                } else {
                    Err("is neither an RSA nor an Ed25519 key".to_owned())
                }
            }
            _ => Err("is an EC key; DKIM takes RSA or Ed25519 keys".to_owned()),
        }
    }

    /// `rsa-2048` or `ed25519`, for logs.
    pub fn describe(&self) -> String {
        match &self.0 {
            Pair::Rsa(pair) => format!("rsa-{}", pair.public().modulus_len() * 8),
            Pair::Ed25519(_) => "ed25519".to_owned(),
        }
    }

    /// The `a=` tag.
    fn algorithm(&self) -> &'static str {
        match &self.0 {
            Pair::Rsa(_) => "rsa-sha256",
            Pair::Ed25519(_) => "ed25519-sha256",
        }
    }

    /// The TXT record value to publish at `selector._domainkey.domain`:
    /// `p=` is the SubjectPublicKeyInfo for RSA (as opendkim-genkey
    /// writes it) and the raw 32-byte key for Ed25519 (RFC 8463).
    pub fn dns_record(&self) -> String {
        match &self.0 {
            Pair::Rsa(pair) => format!(
                "v=DKIM1; k=rsa; p={}",
                BASE64.encode(rsa_subject_public_key_info(pair.public().as_ref()))
            ),
            Pair::Ed25519(pair) => format!(
                "v=DKIM1; k=ed25519; p={}",
                BASE64.encode(pair.public_key().as_ref())
            ),
        }
    }

    /// The signature over `data` (the canonical headers).
    fn sign(&self, data: &[u8]) -> Vec<u8> {
        match &self.0 {
            Pair::Rsa(pair) => {
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    data,
                    &mut signature,
                )
                .expect("RSA signing fails only on a wrong buffer size or a broken RNG");
                signature
            }
            // RFC 8463: Ed25519 signs the SHA-256 hash of the data.
            Pair::Ed25519(pair) => pair.sign(&Sha256::digest(data)).as_ref().to_vec(),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Wraps a PKCS#1 `RSAPublicKey` in a SubjectPublicKeyInfo: SEQUENCE {
/// SEQUENCE { rsaEncryption, NULL }, BIT STRING { 0 unused bits, key } }.
fn rsa_subject_public_key_info(rsa_public_key: &[u8]) -> Vec<u8> {
    let mut algorithm = vec![0x30, 0x0d];
    algorithm.extend_from_slice(RSA_OID);
    algorithm.extend_from_slice(&[0x05, 0x00]);
    let mut bit_string = vec![0x00];
    bit_string.extend_from_slice(rsa_public_key);
    let mut body = algorithm;
    body.extend(der_item(0x03, &bit_string));
    der_item(0x30, &body)
}

fn der_item(tag: u8, content: &[u8]) -> Vec<u8> {
    let length = content.len();
    let mut out = vec![tag];
    match length {
        0..=0x7f => out.push(length as u8),
        0x80..=0xff => out.extend([0x81, length as u8]),
        _ => out.extend([0x82, (length >> 8) as u8, length as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// Who signs: `d=`, `s=` and the key, parsed once at start and shared by
/// every sender (signing takes `&self`; nothing is locked).
#[derive(Debug, Clone)]
pub struct DkimSigner {
    domain: String,
    selector: String,
    key: Arc<DkimKey>,
}

impl DkimSigner {
    /// `domain` and `selector` as given in the config, already checked.
    pub fn new(domain: String, selector: String, key: DkimKey) -> Self {
        Self {
            domain,
            selector,
            key: Arc::new(key),
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn selector(&self) -> &str {
        &self.selector
    }

    pub fn key(&self) -> &DkimKey {
        &self.key
    }

    /// `rsa-2048 key at news._domainkey.example.org`, for the log.
    pub fn describe(&self) -> String {
        format!("{} key at {}", self.key.describe(), self.dns_name())
    }

    /// Where the public key is published: `selector._domainkey.domain`.
    pub fn dns_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The TXT record value for [`Self::dns_name`].
    pub fn dns_record(&self) -> String {
        self.key.dns_record()
    }

    /// `message` (CRLF line ends, as formatted for the wire) with a
    /// `DKIM-Signature` header in front.
    pub fn sign(&self, message: &[u8], now: SystemTime) -> Vec<u8> {
        let header = self.signature_header(message, now);
        let mut signed = Vec::with_capacity(header.len() + message.len());
        signed.extend_from_slice(header.as_bytes());
        signed.extend_from_slice(message);
        signed
    }

    /// The whole `DKIM-Signature` header line, folded, ending in CRLF.
    fn signature_header(&self, message: &[u8], now: SystemTime) -> String {
        let (headers, body) = canonical::split_message(message);
        let body_hash = BASE64.encode(Sha256::digest(canonical::relaxed_body(body)));
        let fields = canonical::header_fields(headers);
        let signed: Vec<&canonical::Field> = SIGNED_HEADERS
            .iter()
            .filter_map(|name| canonical::last_named(&fields, name))
            .collect();
        let names: Vec<String> = signed
            .iter()
            .map(|field| field.name.to_ascii_lowercase())
            .collect();
        let timestamp = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        // Tags before b= are folded only at whitespace that is there
        // anyway, so the relaxed form is the same however they are folded.
        let unsigned = format!(
            "v=1; a={}; c=relaxed/relaxed;\r\n\td={}; s={}; t={timestamp};\r\n\th={};\r\n\tbh={body_hash};\r\n\tb=",
            self.key.algorithm(),
            self.domain,
            self.selector,
            canonical::fold_list(&names, "\th=".len()),
        );
        let mut data = Vec::with_capacity(1024);
        for field in &signed {
            data.extend_from_slice(canonical::relaxed_header(field.name, field.value).as_bytes());
        }
        let own = canonical::relaxed_header("DKIM-Signature", &unsigned);
        data.extend_from_slice(own.trim_end_matches("\r\n").as_bytes());
        let signature = BASE64.encode(self.key.sign(&data));
        format!(
            "DKIM-Signature: {unsigned}{}\r\n",
            canonical::fold_base64(&signature)
        )
    }
}

#[cfg(test)]
mod tests;
