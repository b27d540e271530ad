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
    StreamRecord,
};
use crate::item::{Attr, Item};

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
        /// SDK attribute value → [`Attr`]; `None` for a type this SDK
        /// version does not know.
        pub(crate) fn $from(v: $module::types::AttributeValue) -> Option<Attr> {
            use $module::types::AttributeValue as V;
            Some(match v {
                V::S(s) => Attr::S(s),
                V::N(n) => Attr::N(n),
                V::Bool(b) => Attr::Bool(b),
                V::Null(_) => Attr::Null,
                V::L(l) => Attr::L(l.into_iter().filter_map($from).collect()),
                V::M(m) => Attr::M($from_map(m)),
                V::Ss(s) => Attr::Ss(s),
                V::Ns(n) => Attr::Ns(n),
                V::B(b) => Attr::B(b.into_inner()),
                V::Bs(bs) => Attr::Bs(bs.into_iter().map(|b| b.into_inner()).collect()),
                _ => return None,
            })
        }

        /// SDK item → [`Item`].
        pub(crate) fn $from_map(m: HashMap<String, $module::types::AttributeValue>) -> Item {
            m.into_iter()
                .filter_map(|(k, v)| $from(v).map(|v| (k, v)))
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
    async fn stream_arn(&self) -> Result<Option<String>, SourceError> {
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
        let enabled = table
            .stream_specification
            .as_ref()
            .is_some_and(|s| s.stream_enabled);
        Ok(table.latest_stream_arn.filter(|_| enabled))
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
        Ok(ScanPage {
            items: out
                .items
                .unwrap_or_default()
                .into_iter()
                .map(item_from_ddb)
                .collect(),
            last_key: out.last_evaluated_key.map(item_from_ddb),
        })
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
            .filter_map(|r| {
                let kind = match r.event_name? {
                    OperationType::Insert => EventKind::Insert,
                    OperationType::Modify => EventKind::Modify,
                    OperationType::Remove => EventKind::Remove,
                    _ => return None,
                };
                let d = r.dynamodb?;
                Some(StreamRecord {
                    kind,
                    keys: d.keys.map(item_from_streams).unwrap_or_default(),
                    new_image: if kind == EventKind::Remove {
                        None
                    } else {
                        d.new_image.map(item_from_streams)
                    },
                    sequence: d.sequence_number?,
                    created: d.approximate_creation_date_time.and_then(|t| {
                        Timestamp::new(t.secs(), i32::try_from(t.subsec_nanos()).ok()?).ok()
                    }),
                })
            })
            .collect();
        Ok(RecordsPage {
            records,
            next: out.next_shard_iterator,
        })
    }
}
