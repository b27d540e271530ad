//! Writes to the table, in exactly the documented schema: creating the
//! tables, putting and deleting records, changing a credential's status,
//! and bulk loads for `accessd seed`.

use std::time::{Duration, Instant};

use accessd_engine::{CredentialKey, CredentialStatus, Record, RecordKey};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, PutRequest, ScalarAttributeType, StreamSpecification,
    StreamViewType, TableStatus, TimeToLiveSpecification, WriteRequest,
};

use crate::aws::{AwsBackend, item_to_ddb, source_error};
use crate::backend::SourceError;
use crate::follower::Backoff;
use crate::item::{Item, ItemError, PK, SK, ToItemError, item_of, key_item, key_strings};

/// The most items one BatchWriteItem may carry (AWS refuses more; moto
/// does not, so it is enforced here).
pub const BATCH_LIMIT: usize = 25;

/// Why an admin write failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The record is invalid on its own (bad time zone, inverted validity,
    /// empty schedule interval...): fix the record.
    #[error("record refused: {0}")]
    Invalid(String),
    /// The record cannot be written as an item.
    #[error(transparent)]
    ToItem(#[from] ToItemError),
    /// An item does not follow the schema.
    #[error(transparent)]
    Item(#[from] ItemError),
    /// The credential to change does not exist.
    #[error("credential `{0}` does not exist in the table")]
    NoSuchCredential(CredentialKey),
    /// The table did not become active in time.
    #[error("table `{0}` did not become ACTIVE within {1:?}")]
    NotActive(String, Duration),
    /// Items stayed unprocessed after every retry (throttling).
    #[error("{0} items still unprocessed after retries")]
    Unprocessed(usize),
    /// A DynamoDB call failed.
    #[error("dynamodb: {0}")]
    Source(#[from] SourceError),
    /// A request could not be built (a bug: a required field is missing).
    #[error("request: {0}")]
    Build(String),
}

fn build_err(e: impl std::fmt::Display) -> AdminError {
    AdminError::Build(e.to_string())
}

/// Admin writes to one table.
#[derive(Debug, Clone)]
pub struct Admin {
    backend: AwsBackend,
}

/// What [`Admin::export`] read.
#[derive(Debug, Default)]
pub struct Export {
    /// Every item that follows the schema, as records.
    pub records: Vec<Record>,
    /// Every item that does not, with what is wrong with it.
    pub rejected: Vec<ItemError>,
}

impl Admin {
    /// Admin writes through `backend`'s client, to its table.
    pub fn new(backend: AwsBackend) -> Self {
        Self { backend }
    }

    fn table(&self) -> &str {
        self.backend.table()
    }

    /// Reads the whole table (a consistent-enough scan: concurrent writes
    /// may or may not be included) as records, for a site file.
    pub async fn export(&self) -> Result<Export, AdminError> {
        use crate::backend::Backend;
        let mut out = Export::default();
        let mut start = None;
        loop {
            let page = self.backend.scan(0, 1, start).await?;
            for item in &page.items {
                match crate::item::record_of(item) {
                    Ok(record) => out.records.push(record),
                    Err(e) => out.rejected.push(e),
                }
            }
            match page.last_key {
                Some(key) => start = Some(key),
                None => return Ok(out),
            }
        }
    }

    /// Creates the data table (key `pk`/`sk`, on-demand, stream with
    /// `NEW_AND_OLD_IMAGES`) and, if named, the access-events table (key
    /// `pk`/`sk`, the `by_holder` index on `gsi1pk`/`gsi1sk`, TTL on
    /// `expires_at`, on-demand, no stream), then waits until both are
    /// active.
    /// A table that already exists is left as it is.
    pub async fn create_tables(&self, events_table: Option<&str>) -> Result<(), AdminError> {
        let stream = StreamSpecification::builder()
            .stream_enabled(true)
            .stream_view_type(StreamViewType::NewAndOldImages)
            .build()
            .map_err(build_err)?;
        self.create_table(self.table(), Some(stream), false).await?;
        if let Some(events) = events_table {
            self.create_table(events, None, true).await?;
            // Events expire through DynamoDB's TTL on `expires_at`.
            let ttl = TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()
                .map_err(build_err)?;
            let client = self.backend.dynamodb();
            if let Err(e) = client
                .update_time_to_live()
                .table_name(events)
                .time_to_live_specification(ttl)
                .send()
                .await
            {
                // "TimeToLive is already enabled": a second create-tables.
                let text = aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string();
                if !text.contains("already enabled") {
                    return Err(source_error(e).into());
                }
            }
        }
        Ok(())
    }

    async fn create_table(
        &self,
        name: &str,
        stream: Option<StreamSpecification>,
        events: bool,
    ) -> Result<(), AdminError> {
        let client = self.backend.dynamodb();
        let mut request = client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .set_stream_specification(stream);
        let mut keys = vec![(PK, KeyType::Hash), (SK, KeyType::Range)];
        if events {
            // The holder index (docs/access-events.md): sparse, events with
            // a holder only.
            use crate::events::ship::{HOLDER_INDEX, HOLDER_INDEX_PK, HOLDER_INDEX_SK};
            let mut index = GlobalSecondaryIndex::builder()
                .index_name(HOLDER_INDEX)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                );
            for (attr, key_type) in [
                (HOLDER_INDEX_PK, KeyType::Hash),
                (HOLDER_INDEX_SK, KeyType::Range),
            ] {
                index = index.key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(attr)
                        .key_type(key_type.clone())
                        .build()
                        .map_err(build_err)?,
                );
                keys.push((attr, key_type));
            }
            request = request.global_secondary_indexes(index.build().map_err(build_err)?);
        }
        for (i, (attr, key_type)) in keys.into_iter().enumerate() {
            request = request.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attr)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(build_err)?,
            );
            // The index's keys are defined above, not part of the table's.
            if i >= 2 {
                continue;
            }
            request = request.key_schema(
                KeySchemaElement::builder()
                    .attribute_name(attr)
                    .key_type(key_type)
                    .build()
                    .map_err(build_err)?,
            );
        }
        match request.send().await {
            Ok(_) => tracing::info!(table = name, "table created"),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) =>
            {
                tracing::info!(table = name, "table exists already");
            }
            Err(e) => return Err(source_error(e).into()),
        }
        let limit = Duration::from_secs(120);
        let deadline = Instant::now() + limit;
        loop {
            let out = client
                .describe_table()
                .table_name(name)
                .send()
                .await
                .map_err(source_error)?;
            if out
                .table
                .as_ref()
                .and_then(|t| t.table_status.as_ref())
                .is_some_and(|s| *s == TableStatus::Active)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(AdminError::NotActive(name.to_owned(), limit));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Checks a record on its own as the snapshot builder would, so that
    /// nothing is written that every server would then refuse.
    pub fn check(record: &Record) -> Result<(), AdminError> {
        record
            .validate()
            .map_err(|e| AdminError::Invalid(e.to_string()))
    }

    /// Writes a record (insert or replace).
    pub async fn put(&self, record: &Record) -> Result<(), AdminError> {
        Self::check(record)?;
        let item = item_of(record)?;
        self.put_item(item).await
    }

    /// Writes an item as it is (no schema check: for tests and tools that
    /// need to write what the schema forbids).
    pub async fn put_item(&self, item: Item) -> Result<(), AdminError> {
        self.backend
            .dynamodb()
            .put_item()
            .table_name(self.table())
            .set_item(Some(item_to_ddb(item)))
            .send()
            .await
            .map_err(source_error)?;
        Ok(())
    }

    /// Deletes a record; deleting one that does not exist is not an error.
    pub async fn delete(&self, key: &RecordKey) -> Result<(), AdminError> {
        self.backend
            .dynamodb()
            .delete_item()
            .table_name(self.table())
            .set_key(Some(item_to_ddb(key_item(key))))
            .send()
            .await
            .map_err(source_error)?;
        Ok(())
    }

    /// Sets a credential's status (revoke, suspend, reinstate, ...), only if
    /// the credential exists: a status alone is not a credential.
    pub async fn set_credential_status(
        &self,
        card: CredentialKey,
        status: CredentialStatus,
    ) -> Result<(), AdminError> {
        let word = serde_json::to_value(status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .ok_or_else(|| AdminError::Build(format!("status {status:?} has no text form")))?;
        let (pk, sk) = key_strings(&RecordKey::Credential(card));
        let result = self
            .backend
            .dynamodb()
            .update_item()
            .table_name(self.table())
            .key(PK, AttributeValue::S(pk))
            .key(SK, AttributeValue::S(sk))
            .update_expression("SET #status = :status")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", AttributeValue::S(word))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(AdminError::NoSuchCredential(card))
            }
            Err(e) => Err(source_error(e).into()),
        }
    }

    /// Writes items with BatchWriteItem, [`BATCH_LIMIT`] at a time,
    /// retrying unprocessed items with capped, jittered backoff. Calls
    /// `progress` with the number of items written after each batch.
    pub async fn write_items(
        &self,
        items: Vec<Item>,
        mut progress: impl FnMut(usize),
    ) -> Result<(), AdminError> {
        let mut pending: Vec<WriteRequest> = Vec::with_capacity(items.len());
        for item in items {
            let put = PutRequest::builder()
                .set_item(Some(item_to_ddb(item)))
                .build()
                .map_err(build_err)?;
            pending.push(WriteRequest::builder().put_request(put).build());
        }
        let mut pending = pending.into_iter().peekable();
        while pending.peek().is_some() {
            let mut batch: Vec<WriteRequest> = pending.by_ref().take(BATCH_LIMIT).collect();
            let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
            let mut attempts = 0;
            loop {
                let sent = batch.len();
                let out = match self
                    .backend
                    .dynamodb()
                    .batch_write_item()
                    .request_items(self.table(), batch.clone())
                    .send()
                    .await
                    .map_err(source_error)
                {
                    Ok(out) => out,
                    Err(SourceError::Transient(e)) if attempts < 10 => {
                        attempts += 1;
                        tracing::warn!(error = %e, "batch write failed; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                batch = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(self.table()))
                    .unwrap_or_default();
                progress(sent - batch.len());
                if batch.is_empty() {
                    break;
                }
                attempts += 1;
                if attempts > 10 {
                    return Err(AdminError::Unprocessed(batch.len()));
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        Ok(())
    }

    /// Writes records (checked first) in batches; see
    /// [`write_items`](Self::write_items).
    pub async fn put_all(
        &self,
        records: &[Record],
        progress: impl FnMut(usize),
    ) -> Result<(), AdminError> {
        let items = records
            .iter()
            .map(|r| {
                Self::check(r)?;
                Ok(item_of(r)?)
            })
            .collect::<Result<Vec<_>, AdminError>>()?;
        self.write_items(items, progress).await
    }
}
