//! Placeholder until the PostgreSQL backend lands.
use super::*;

pub struct PostgresStore;

impl PostgresStore {
    pub async fn connect(_settings: &DatabaseSettings) -> StoreResult<Self> {
        Err(StoreError::Corrupt(
            "the PostgreSQL backend is not built yet".into(),
        ))
    }
}
