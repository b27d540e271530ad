//! The access-event trail in the binary: `serve`'s event flags and wiring
//! (spool, shipper, alarm sender), and `accessd events tail|query`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use accessd_loader::events::alarm::{self, ALARMS, BurstRule};
use accessd_loader::events::ship::{self, HOLDER_INDEX, HOLDER_INDEX_PK, ShipConfig, sk_from};
use accessd_loader::events::{SHIPPER, Spool, SpoolConfig, SpoolReader};
use accessd_loader::{AwsSettings, sdk_config};
use accessd_protocol::{EventLog, EventSink};
use anyhow::Context;
use aws_sdk_dynamodb::types::AttributeValue;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The access-event options of `accessd serve`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ServeEventArgs {
    /// Record every decision as an access event in a spool in this
    /// directory (see docs/access-events.md). Off without it.
    #[arg(long)]
    pub(crate) events_dir: Option<PathBuf>,
    /// fdatasync the spool this often: the most events a power loss can
    /// lose (a crash of the process loses none).
    #[arg(long, default_value_t = 10, requires = "events_dir")]
    pub(crate) events_fsync_ms: u64,
    /// Where the spool's staging ring lives: a tmpfs directory that
    /// outlives the process (a decision's event is in it before the answer
    /// is sent; the next start writes what a kill -9 left in it).
    /// Default: /dev/shm; under systemd, the unit's RuntimeDirectory.
    #[arg(long, requires = "events_dir")]
    pub(crate) events_ring_dir: Option<PathBuf>,
    /// The spool's bound in MiB; past it the oldest segments are deleted,
    /// shipped ones first.
    #[arg(long, default_value_t = 1024, requires = "events_dir")]
    pub(crate) events_max_mib: u64,
    /// The events table events are shipped to (with --dynamodb-table).
    /// Default: TABLE-events, as the CloudFormation template names it.
    #[arg(long, requires_all = ["events_dir", "dynamodb_table"])]
    pub(crate) events_table: Option<String>,
    /// Keep events in the table for this many days (its `expires_at` TTL).
    #[arg(long, default_value_t = 365, requires = "events_dir")]
    pub(crate) events_retention_days: u64,
    /// Put alarms (stolen credential, hard anti-passback, lockdown
    /// refusals, bursts of denies at one reader) on this EventBridge bus.
    #[arg(long, requires = "events_dir")]
    pub(crate) alarm_bus: Option<String>,
    /// Denies at one reader within --alarm-burst-window that make a burst.
    #[arg(long, default_value_t = 5, requires = "alarm_bus")]
    pub(crate) alarm_burst_denies: u32,
    /// The window of a burst of denies, e.g. 60s.
    #[arg(long, default_value = "60s", value_parser = super::serve::parse_duration, requires = "alarm_bus")]
    pub(crate) alarm_burst_window: Duration,
    /// This server's id in its events. Default: the host name.
    #[arg(long)]
    pub(crate) server_id: Option<String>,
}

/// The spool as the decider's event sink.
struct SpoolSink(Spool);

impl EventSink for SpoolSink {
    fn append(&self, records: &[u8], count: u64) -> Result<(), String> {
        self.0.append(records, count).map_err(|e| e.to_string())
    }
}

/// A decider's event log appending to `spool`.
pub(crate) fn event_log(spool: &Spool, server: impl Into<Arc<str>>) -> EventLog {
    EventLog::new(Arc::new(SpoolSink(spool.clone())), server)
}

/// The running event trail of a server.
pub(crate) struct Trail {
    /// The spool and what the trail sends where.
    view: TrailView,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the HTTP face reads of a running trail: its state for
/// `/v1/status`, and the spool for the console's live view and lookups.
#[derive(Clone)]
pub(crate) struct TrailView {
    /// The spool.
    pub(crate) spool: Spool,
    /// The events table shipped to, if any.
    pub(crate) table: Option<String>,
    /// A client of that table's DynamoDB (console lookups read a holder's
    /// older events from it).
    pub(crate) dynamodb: Option<aws_sdk_dynamodb::Client>,
    /// The EventBridge bus alarms go to, if any.
    pub(crate) bus: Option<String>,
    /// What counts as a burst of denies (for the console's alarms too).
    pub(crate) burst: BurstRule,
}

impl TrailView {
    /// The trail's state for `/v1/status`.
    pub(crate) fn status(&self) -> serde_json::Value {
        let spool = &self.spool;
        serde_json::json!({
            "dir": spool.dir(),
            "spool_bytes": spool.total_bytes(),
            "events_table": self.table,
            "oldest_unshipped_ms": self.table.as_ref().map(|_| spool.oldest_unshipped_ms()),
            "alarm_bus": self.bus,
        })
    }
}

impl Trail {
    /// Opens the spool and starts the shipper (when `table` is given) and
    /// the alarm sender (when a bus is). `None` when events are off.
    pub(crate) async fn start(
        args: &ServeEventArgs,
        aws: Option<(&AwsSettings, &str)>,
    ) -> anyhow::Result<Option<(Self, EventLog)>> {
        let Some(dir) = &args.events_dir else {
            return Ok(None);
        };
        let shipping_table = aws.map(|(_, table)| {
            args.events_table
                .clone()
                .unwrap_or_else(|| format!("{table}-events"))
        });
        let config = SpoolConfig {
            fsync_interval: Duration::from_millis(args.events_fsync_ms.max(1)),
            max_bytes: args.events_max_mib.saturating_mul(1 << 20),
            segment_bytes: (args.events_max_mib.saturating_mul(1 << 20) / 16)
                .clamp(1 << 20, 64 << 20),
            shipping: shipping_table.is_some() || args.alarm_bus.is_some(),
            ring_dir: args.events_ring_dir.clone(),
            ..SpoolConfig::new(dir)
        };
        let spool = Spool::open(config)
            .with_context(|| format!("cannot open the event spool in `{}`", dir.display()))?;
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        // One SDK configuration (credentials, endpoint) for both clients.
        let sdk = match (&shipping_table, &args.alarm_bus) {
            (None, None) => None,
            _ => Some(sdk_config(&aws.map(|(s, _)| s.clone()).unwrap_or_default()).await),
        };
        let dynamodb = match (&shipping_table, &sdk) {
            (Some(_), Some(sdk)) => Some(aws_sdk_dynamodb::Client::new(sdk)),
            _ => None,
        };
        if let (Some(table), Some(client)) = (&shipping_table, &dynamodb) {
            let reader = spool.reader(SHIPPER)?;
            let config = ShipConfig {
                retention: Duration::from_secs(args.events_retention_days * 24 * 3600),
                ..ShipConfig::new(table.clone())
            };
            tasks.push(tokio::spawn(ship::run(
                client.clone(),
                reader,
                config,
                stop_rx.clone(),
            )));
            tracing::info!(table, "shipping access events");
        }
        let burst = BurstRule {
            denies: args.alarm_burst_denies,
            window: args.alarm_burst_window,
        };
        if let (Some(bus), Some(sdk)) = (&args.alarm_bus, &sdk) {
            let reader = spool.reader(ALARMS)?;
            let rule = burst;
            tasks.push(tokio::spawn(alarm::run(
                aws_sdk_eventbridge::Client::new(sdk),
                bus.clone(),
                reader,
                rule,
                stop_rx,
            )));
            tracing::info!(bus, "putting alarms on EventBridge");
        }
        let server = args.server_id.clone().unwrap_or_else(host_name);
        tracing::info!(dir = %dir.display(), server, "recording access events");
        let log = event_log(&spool, server);
        let trail = Self {
            view: TrailView {
                spool,
                table: shipping_table,
                dynamodb,
                bus: args.alarm_bus.clone(),
                burst,
            },
            stop,
            tasks,
        };
        Ok(Some((trail, log)))
    }

    /// What the HTTP face reads of the trail.
    pub(crate) fn view(&self) -> TrailView {
        self.view.clone()
    }

    /// After the last decision: makes the spool durable and stops the
    /// shipper and alarm sender (what they have not sent stays spooled
    /// and is sent by the next start).
    pub(crate) async fn shutdown(self) {
        if let Err(e) = self.view.spool.sync() {
            tracing::error!(error = %e, "cannot sync the event spool at shutdown");
        }
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// The host name, or `accessd` when it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "accessd".to_owned())
}

/// Arguments of `accessd events`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print the spool's events as JSON lines, oldest first.
    Tail(TailArgs),
    /// Read events of a door or a holder from the events table.
    Query(QueryArgs),
}

#[derive(clap::Args, Debug)]
struct TailArgs {
    /// The spool directory (`serve --events-dir`).
    #[arg(long)]
    dir: PathBuf,
    /// Keep printing events as they are appended (until interrupted).
    #[arg(long)]
    follow: bool,
    /// Only the last N events (then follow, if asked).
    #[arg(long)]
    last: Option<usize>,
}

#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("who").required(true).args(["door", "holder"]))]
struct QueryArgs {
    /// The events table.
    #[arg(long)]
    table: String,
    /// Events at this door.
    #[arg(long)]
    door: Option<String>,
    /// Events of this cardholder.
    #[arg(long)]
    holder: Option<String>,
    /// From this instant (RFC 3339) or this long ago (e.g. 24h). Default:
    /// 24h.
    #[arg(long, default_value = "24h")]
    since: String,
    /// At most this many events.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Another DynamoDB endpoint (moto, DynamoDB Local). Default: AWS.
    #[arg(long)]
    endpoint_url: Option<String>,
    /// The AWS region.
    #[arg(long)]
    region: Option<String>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::telemetry::init_logs("warn");
    match args.command {
        Command::Tail(args) => tail(args),
        Command::Query(args) => super::dynamodb::runtime()?.block_on(query(args)),
    }
}

/// Prints one event a line. A closed pipe is an error `main` ends on
/// quietly (`telemetry::is_closed_pipe`).
fn print_lines<'a>(
    out: &mut impl Write,
    events: impl IntoIterator<Item = &'a accessd_engine::AccessEvent>,
) -> anyhow::Result<()> {
    for event in events {
        writeln!(out, "{}", serde_json::to_string(event)?)?;
    }
    out.flush()?;
    Ok(())
}

fn tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    if !args.dir.is_dir() {
        anyhow::bail!(
            "`{}` is not a directory; give the spool directory of `serve --events-dir`",
            args.dir.display()
        );
    }
    let mut reader = SpoolReader::open_dir(&args.dir);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if let Some(last) = args.last {
        let mut window = std::collections::VecDeque::with_capacity(last.min(1 << 16));
        loop {
            let batch = reader.read(4096)?;
            if batch.events.is_empty() {
                break;
            }
            for e in batch.events {
                if window.len() == last {
                    window.pop_front();
                }
                if last > 0 {
                    window.push_back(e);
                }
            }
        }
        print_lines(&mut out, &window)?;
    }
    loop {
        let batch = reader.read(4096)?;
        print_lines(&mut out, &batch.events)?;
        if batch.events.is_empty() {
            if !args.follow {
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

async fn query(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let since = parse_since(&args.since)?;
    let settings = AwsSettings {
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
        static_credentials: None,
    };
    let client = aws_sdk_dynamodb::Client::new(&sdk_config(&settings).await);
    let (index, pk_attr, sk_attr, pk) = match (&args.door, &args.holder) {
        (Some(door), _) => (None, "pk", "sk", format!("DOOR#{door}")),
        (None, Some(holder)) => (
            Some(HOLDER_INDEX),
            HOLDER_INDEX_PK,
            "gsi1sk",
            ship::holder_pk(holder),
        ),
        (None, None) => anyhow::bail!("give --door or --holder"),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut start = None;
    let mut printed = 0;
    loop {
        let page = client
            .query()
            .table_name(&args.table)
            .set_index_name(index.map(str::to_owned))
            .key_condition_expression("#pk = :pk AND #sk >= :since")
            .expression_attribute_names("#pk", pk_attr)
            .expression_attribute_names("#sk", sk_attr)
            .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
            .expression_attribute_values(":since", AttributeValue::S(sk_from(since)))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(e)))
            .with_context(|| format!("cannot query events table `{}`", args.table))?;
        let mut events = Vec::new();
        for item in page.items() {
            if printed + events.len() >= args.limit {
                break;
            }
            match ship::event_of_item(item) {
                Ok(e) => events.push(e),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an item that is not an access event")
                }
            }
        }
        printed += events.len();
        print_lines(&mut out, &events)?;
        start = page.last_evaluated_key;
        if start.is_none() || printed >= args.limit {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// Unix milliseconds of `--since`: an RFC 3339 instant or a duration ago.
fn parse_since(text: &str) -> anyhow::Result<i64> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    let ago = super::serve::parse_duration(text).map_err(|e| {
        anyhow::anyhow!("--since: `{text}` is neither an RFC 3339 instant nor a duration ({e})")
    })?;
    Ok(jiff::Timestamp::now().as_millisecond() - ago.as_millis() as i64)
}
