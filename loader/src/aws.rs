//! The real [`Backend`]: DynamoDB and DynamoDB Streams through the AWS SDK.
//!
//! The SDK is built lean (no default features): one HTTPS client, rustls
//! with ring, passed explicitly; without it every call fails at run time.
//! Credentials and region come from the standard chain (environment,
//! profile, container or instance role) unless given.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::{OperationType, ShardIteratorType, StreamStatus};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use jiff::Timestamp;

use crate::backend::{
    Backend, EventKind, Position, RecordsPage, ScanPage, ShardInfo, SourceError, StreamPage,
    StreamRecord, TableStream,
};
use crate::item::{Attr, Item, PK, SK};

/// Where DynamoDB is and who we are to it.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// The region; `None`: the standard chain (`AWS_REGION`, profile, ...).
    pub region: Option<String>,
    /// Another endpoint (moto, DynamoDB Local); `None`: AWS.
    pub endpoint_url: Option<String>,
    /// Fixed credentials, for test servers that accept any; `None`: the
    /// standard credential chain.
    pub static_credentials: Option<(String, String)>,
}

/// The SDK configuration for `settings`, with the lean HTTPS client.
pub async fn sdk_config(settings: &AwsSettings) -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        // A scan page or a stream read that hangs must not stall the
        // follower forever; a page of 1 MB takes well under this.
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        );
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    if let Some((id, secret)) = &settings.static_credentials {
        loader = loader.credentials_provider(Credentials::new(
            id.clone(),
            secret.clone(),
            None,
            None,
            "accessd-static",
        ));
    }
    loader.load().await
}

/// A DynamoDB table and its stream.
#[derive(Debug, Clone)]
pub struct AwsBackend {
    dynamodb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    table: String,
}

impl AwsBackend {
    /// The backend for `table`.
    pub async fn connect(settings: &AwsSettings, table: impl Into<String>) -> Self {
        let config = sdk_config(settings).await;
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            streams: aws_sdk_dynamodbstreams::Client::new(&config),
            table: table.into(),
        }
    }

    /// The DynamoDB client, for admin writes.
    pub(crate) fn dynamodb(&self) -> &aws_sdk_dynamodb::Client {
        &self.dynamodb
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }
}

/// Sorts an SDK error into what the loader does about it.
pub(crate) fn source_error<E, R>(e: SdkError<E, R>) -> SourceError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HasStatus,
{
    let message = DisplayErrorContext(&e).to_string();
    match e.code() {
        Some("ExpiredIteratorException") => return SourceError::ExpiredIterator,
        Some("TrimmedDataAccessException") => return SourceError::Trimmed(message),
        Some("ResourceNotFoundException") => return SourceError::NotFound(message),
        Some(
            "ThrottlingException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "LimitExceededException"
            | "InternalServerError"
            | "ServiceUnavailable",
        ) => return SourceError::Transient(message),
        _ => {}
    }
    match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            SourceError::Transient(message)
        }
        _ if e.raw_response().is_some_and(|r| r.status() >= 500) => SourceError::Transient(message),
        _ => SourceError::Other(message),
    }
}

/// An HTTP response's status code.
pub(crate) trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_dynamodb::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

macro_rules! attr_conversions {
    ($module:ident, $from:ident, $to:ident, $from_map:ident, $to_map:ident) => {
        /// SDK attribute value → [`Attr`]; `Err` names a type this SDK
        /// version does not know (anywhere inside the value).
        pub(crate) fn $from(v: $module::types::AttributeValue) -> Result<Attr, String> {
            use $module::types::AttributeValue as V;
            Ok(match v {
                V::S(s) => Attr::S(s),
                V::N(n) => Attr::N(n),
                V::Bool(b) => Attr::Bool(b),
                V::Null(_) => Attr::Null,
                V::L(l) => Attr::L(l.into_iter().map($from).collect::<Result<_, _>>()?),
                V::M(m) => Attr::M($from_map(m)?),
                V::Ss(s) => Attr::Ss(s),
                V::Ns(n) => Attr::Ns(n),
                V::B(b) => Attr::B(b.into_inner()),
                V::Bs(bs) => Attr::Bs(bs.into_iter().map(|b| b.into_inner()).collect()),
                other => return Err(format!("{other:?}").chars().take(40).collect()),
            })
        }

        /// SDK item → [`Item`]; `Err` names the first attribute whose type
        /// this SDK version does not know. Such an item is never read with
        /// the attribute left out: a missing `valid_until` would widen a
        /// grant.
        pub(crate) fn $from_map(
            m: HashMap<String, $module::types::AttributeValue>,
        ) -> Result<Item, String> {
            m.into_iter()
                .map(|(k, v)| match $from(v) {
                    Ok(v) => Ok((k, v)),
                    Err(kind) => Err(format!(
                        "attribute `{k}` has a type this build cannot read ({kind})"
                    )),
                })
                .collect()
        }

        /// [`Attr`] → SDK attribute value.
        #[allow(dead_code, reason = "only the DynamoDB direction writes")]
        pub(crate) fn $to(v: Attr) -> $module::types::AttributeValue {
            use $module::primitives::Blob;
            use $module::types::AttributeValue as V;
            match v {
                Attr::S(s) => V::S(s),
                Attr::N(n) => V::N(n),
                Attr::Bool(b) => V::Bool(b),
                Attr::Null => V::Null(true),
                Attr::L(l) => V::L(l.into_iter().map($to).collect()),
                Attr::M(m) => V::M($to_map(m)),
                Attr::Ss(s) => V::Ss(s),
                Attr::Ns(n) => V::Ns(n),
                Attr::B(b) => V::B(Blob::new(b)),
                Attr::Bs(bs) => V::Bs(bs.into_iter().map(Blob::new).collect()),
            }
        }

        /// [`Item`] → SDK item.
        #[allow(dead_code, reason = "only the DynamoDB direction writes")]
        pub(crate) fn $to_map(item: Item) -> HashMap<String, $module::types::AttributeValue> {
            item.into_iter().map(|(k, v)| (k, $to(v))).collect()
        }
    };
}

attr_conversions!(
    aws_sdk_dynamodb,
    from_ddb,
    to_ddb,
    item_from_ddb,
    item_to_ddb
);
attr_conversions!(
    aws_sdk_dynamodbstreams,
    from_streams,
    to_streams,
    item_from_streams,
    item_to_streams
);

impl Backend for AwsBackend {
    async fn stream(&self) -> Result<Option<TableStream>, SourceError> {
        let out = self
            .dynamodb
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(source_error)?;
        let Some(table) = out.table else {
            return Err(SourceError::NotFound(format!("table `{}`", self.table)));
        };
        // LatestStreamArn outlives a disabled stream: trust the spec.
        let Some(spec) = table.stream_specification.filter(|s| s.stream_enabled) else {
            return Ok(None);
        };
        let view_type = spec.stream_view_type.map_or_else(
            || "NEW_AND_OLD_IMAGES".to_owned(),
            |v| v.as_str().to_owned(),
        );
        Ok(table
            .latest_stream_arn
            .map(|arn| TableStream { arn, view_type }))
    }

    async fn scan(
        &self,
        segment: u32,
        segments: u32,
        start: Option<Item>,
    ) -> Result<ScanPage, SourceError> {
        let as_i32 = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        let out = self
            .dynamodb
            .scan()
            .table_name(&self.table)
            .segment(as_i32(segment))
            .total_segments(as_i32(segments))
            .consistent_read(true)
            .set_exclusive_start_key(start.map(item_to_ddb))
            .send()
            .await
            .map_err(source_error)?;
        let mut page = ScanPage::default();
        for item in out.items.unwrap_or_default() {
            let key = key_text(&item);
            match item_from_ddb(item) {
                Ok(item) => page.items.push(item),
                Err(why) => page.unreadable.push(format!("item {key}: {why}")),
            }
        }
        page.last_key = match out.last_evaluated_key.map(item_from_ddb) {
            Some(Ok(key)) => Some(key),
            Some(Err(why)) => return Err(SourceError::Other(format!("scan position: {why}"))),
            None => None,
        };
        Ok(page)
    }

    async fn describe_stream(
        &self,
        arn: &str,
        start: Option<String>,
    ) -> Result<StreamPage, SourceError> {
        let out = self
            .streams
            .describe_stream()
            .stream_arn(arn)
            .set_exclusive_start_shard_id(start)
            .send()
            .await
            .map_err(source_error)?;
        let Some(desc) = out.stream_description else {
            return Err(SourceError::NotFound(format!("stream `{arn}`")));
        };
        let enabled = matches!(
            desc.stream_status,
            Some(StreamStatus::Enabled | StreamStatus::Enabling) | None
        );
        let shards = desc
            .shards
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| {
                let closed = s
                    .sequence_number_range
                    .as_ref()
                    .is_some_and(|r| r.ending_sequence_number.is_some());
                Some(ShardInfo {
                    id: s.shard_id?,
                    parent: s.parent_shard_id,
                    closed,
                })
            })
            .collect();
        Ok(StreamPage {
            enabled,
            shards,
            last_shard: desc.last_evaluated_shard_id,
        })
    }

    async fn shard_iterator(
        &self,
        arn: &str,
        shard: &str,
        position: &Position,
    ) -> Result<String, SourceError> {
        let request = self
            .streams
            .get_shard_iterator()
            .stream_arn(arn)
            .shard_id(shard);
        let request = match position {
            Position::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Position::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            Position::After(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
        };
        let out = request.send().await.map_err(source_error)?;
        out.shard_iterator
            .ok_or_else(|| SourceError::NotFound(format!("no iterator for shard `{shard}`")))
    }

    async fn get_records(&self, iterator: &str) -> Result<RecordsPage, SourceError> {
        let out = self
            .streams
            .get_records()
            .shard_iterator(iterator)
            .send()
            .await
            .map_err(source_error)?;
        let records = out
            .records
            .unwrap_or_default()
            .into_iter()
            .map(stream_record)
            .collect();
        Ok(RecordsPage {
            records,
            next: out.next_shard_iterator,
        })
    }
}

/// The key of an SDK item in words (`pk=…, sk=…`), for messages about an
/// item that cannot be read whole.
fn key_text(item: &HashMap<String, aws_sdk_dynamodb::types::AttributeValue>) -> String {
    let part = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .map_or("?", |s| s.as_str())
            .to_owned()
    };
    format!("{}={}, {}={}", PK, part(PK), SK, part(SK))
}

/// An SDK stream record → [`StreamRecord`]. A record that cannot be read
/// is kept, marked unreadable with the reason, so the loader can remove
/// its key's record instead of silently skipping a change.
fn stream_record(r: aws_sdk_dynamodbstreams::types::Record) -> StreamRecord {
    let mut problems = Vec::new();
    let kind = match r.event_name {
        Some(OperationType::Insert) => EventKind::Insert,
        Some(OperationType::Modify) => EventKind::Modify,
        Some(OperationType::Remove) => EventKind::Remove,
        other => {
            problems.push(format!("unknown event name {other:?}"));
            EventKind::Modify
        }
    };
    let d = r
        .dynamodb
        .unwrap_or_else(|| aws_sdk_dynamodbstreams::types::StreamRecord::builder().build());
    let keys = match d.keys.map(item_from_streams) {
        Some(Ok(keys)) => keys,
        Some(Err(why)) => {
            problems.push(format!("keys: {why}"));
            Item::new()
        }
        None => {
            problems.push("no keys".to_owned());
            Item::new()
        }
    };
    let new_image = if kind == EventKind::Remove {
        None
    } else {
        match d.new_image.map(item_from_streams) {
            Some(Ok(image)) => Some(image),
            Some(Err(why)) => {
                problems.push(format!("new image: {why}"));
                None
            }
            None => {
                problems.push("no new image".to_owned());
                None
            }
        }
    };
    let sequence = d.sequence_number.unwrap_or_else(|| {
        problems.push("no sequence number".to_owned());
        String::new()
    });
    StreamRecord {
        kind,
        keys,
        new_image,
        sequence,
        created: d
            .approximate_creation_date_time
            .and_then(|t| Timestamp::new(t.secs(), i32::try_from(t.subsec_nanos()).ok()?).ok()),
        unreadable: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodbstreams::types::{AttributeValue as V, Record, StreamRecord as Sdk};

    use super::*;

    fn keys() -> HashMap<String, V> {
        HashMap::from([
            (PK.to_owned(), V::S("cred#h10301:1:1".into())),
            (SK.to_owned(), V::S("credential".into())),
        ])
    }

    fn record(
        event: OperationType,
        image: Option<HashMap<String, V>>,
        seq: Option<&str>,
    ) -> Record {
        let mut d = Sdk::builder().set_keys(Some(keys()));
        d = d.set_new_image(image);
        d = d.set_sequence_number(seq.map(str::to_owned));
        Record::builder()
            .event_name(event)
            .dynamodb(d.build())
            .build()
    }

    #[test]
    fn a_readable_record_is_kept_whole() {
        let mut image = keys();
        image.insert("status".into(), V::S("revoked".into()));
        let r = stream_record(record(OperationType::Modify, Some(image), Some("7")));
        assert_eq!(r.unreadable, None);
        assert_eq!(r.sequence, "7");
        assert!(r.new_image.is_some_and(|i| i.contains_key("status")));
    }

    #[test]
    fn unreadable_records_are_marked_not_dropped() {
        // (An attribute type the SDK does not know arrives as its private
        // `Unknown` variant, which a test cannot build; it takes the same
        // path as a missing image below.)
        let r = stream_record(record(
            OperationType::from("BOGUS"),
            Some(keys()),
            Some("9"),
        ));
        assert!(r.unreadable.unwrap().contains("unknown event name"));
        let r = stream_record(record(OperationType::Insert, None, Some("10")));
        assert!(r.unreadable.unwrap().contains("no new image"));
        let r = stream_record(record(OperationType::Insert, Some(keys()), None));
        assert!(r.unreadable.unwrap().contains("no sequence number"));
        // A removal needs no image.
        let r = stream_record(record(OperationType::Remove, None, Some("11")));
        assert_eq!(r.unreadable, None);
    }
}
