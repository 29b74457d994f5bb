//! Message-IDs for an issue's deliveries, made inside the database as
//! fan-out writes the rows. A random UUID per row was a quarter of a
//! PostgreSQL fan-out and half of a SQLite one. Instead each issue draws
//! one random UUID and one random mask; a row's id is that UUID with its
//! last 48 bits replaced by the subscriber's id under the mask.
//!
//! The result is still a UUID (version 8, RFC 9562's vendor-specific
//! layout), so the Message-ID stays `<uuid@domain>`. It is unique within
//! the issue because the mask is a bijection and every subscriber gets one
//! row per issue, unique across issues by the 74 random bits of the prefix,
//! and it does not tell a reader where they sit on the list.

/// The subscriber-id part is 48 bits; ids are reduced modulo this first.
const ID_MODULUS: i64 = 1 << 48;

pub(crate) struct IssueMessageIds {
    /// The UUID's first four groups and the last hyphen, 24 characters.
    pub prefix: String,
    /// Below `ID_MODULUS`, so the masked id fits 12 hex digits.
    pub mask: i64,
}

impl IssueMessageIds {
    pub fn random() -> Self {
        let mut bytes = *uuid::Uuid::new_v4().as_bytes();
        bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8; v4's variant bits stay
        let hyphenated = uuid::Uuid::from_bytes(bytes).hyphenated().to_string();
        Self {
            prefix: hyphenated[..24].to_owned(),
            mask: rand::random::<i64>().rem_euclid(ID_MODULUS),
        }
    }

    /// The message id for `subscriber_id`, as the SQL below computes it.
    #[cfg(test)]
    pub fn for_subscriber(&self, subscriber_id: i64) -> String {
        let masked = (subscriber_id % ID_MODULUS) ^ self.mask;
        format!("{}{masked:012x}", self.prefix)
    }
}

/// SQLite has no XOR operator: `(a | b) - (a & b)` is one.
pub(crate) fn sqlite_expression(column: &str, prefix: &str, mask: &str) -> String {
    let id = format!("({column} % {ID_MODULUS})");
    format!("{prefix} || printf('%012x', ({id} | {mask}) - ({id} & {mask}))")
}

pub(crate) fn postgres_expression(column: &str, prefix: &str, mask: &str) -> String {
    format!("{prefix} || lpad(to_hex(({column} % {ID_MODULUS}) # {mask}), 12, '0')")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_8_uuids_distinct_per_subscriber() {
        let ids = IssueMessageIds::random();
        let first = ids.for_subscriber(1);
        let parsed = uuid::Uuid::parse_str(&first).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 8);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        assert_ne!(first, ids.for_subscriber(2));
        assert!(uuid::Uuid::parse_str(&ids.for_subscriber(ID_MODULUS - 1)).is_ok());
    }

    #[test]
    fn each_issue_draws_its_own_prefix_and_mask() {
        let (one, two) = (IssueMessageIds::random(), IssueMessageIds::random());
        assert_ne!(one.prefix, two.prefix);
        assert_ne!(one.for_subscriber(7), two.for_subscriber(7));
    }
}
