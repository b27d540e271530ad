//! `accessd admin`: writes to the DynamoDB table, in exactly the schema of
//! docs/dynamodb-schema.md.

use std::path::PathBuf;
use std::process::ExitCode;

use accessd_engine::{
    AccessLevelRecord, AreaRecord, AssignmentRecord, CardholderRecord, CredentialKey,
    CredentialRecord, CredentialStatus, DoorGroupRecord, DoorRecord, HolidaySetRecord,
    ReaderRecord, Record, RecordKey, ScheduleRecord, SiteRecord,
};
use accessd_loader::Admin;
use anyhow::{Context, bail};
use serde::de::DeserializeOwned;

use super::dynamodb::{TableArgs, init_logging, runtime};

/// Arguments of `accessd admin`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    table: TableArgs,
    #[command(subcommand)]
    action: Action,
}

/// The entity types, as in the `type` attribute.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
#[value(rename_all = "snake_case")]
enum Entity {
    Site,
    Area,
    Door,
    Reader,
    DoorGroup,
    HolidaySet,
    Schedule,
    AccessLevel,
    Cardholder,
    Credential,
    Assignment,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Create the table (streams on, NEW_AND_OLD_IMAGES) and the
    /// access-events table, and wait until both are active.
    CreateTables {
        /// The access-events table. Default: `<table>-events`.
        #[arg(long)]
        events_table: Option<String>,
    },
    /// Insert or replace one record, given as JSON in the site file's
    /// field names, e.g. `door '{"id":"lobby","site":"hq","mode":"card_only"}'`.
    Put {
        /// The entity type.
        entity: Entity,
        /// The record as a JSON object.
        json: String,
    },
    /// Delete one record by id (credential: the card, e.g.
    /// h10301:12:345; assignment: holder and level).
    Delete {
        /// The entity type.
        entity: Entity,
        /// The id (or card, or holder for an assignment).
        id: String,
        /// The access level, for an assignment.
        level: Option<String>,
    },
    /// Put every record of a site file.
    Import {
        /// The site file (TOML, see docs/site-file.md).
        #[arg(long)]
        site: PathBuf,
    },
    /// Write the whole table as a site file (for an offline gateway, a
    /// backup, or `accessd decide` replays). Every good record is written;
    /// an item that does not follow the schema, or a record that cannot be
    /// in a valid site file (a card of a deleted holder, a bad time zone or
    /// interval, and whatever refers to such a record), is left out and
    /// listed on stderr with its key and why.
    Export {
        /// The site file to write; `-` for standard output.
        #[arg(long)]
        site: PathBuf,
        /// Exit with status 1 when anything was left out (the file is
        /// still written).
        #[arg(long)]
        strict: bool,
    },
    /// Revoke a credential (permanently withdrawn).
    Revoke {
        /// The card: FORMAT:FACILITY:NUMBER or uid:HEX.
        card: CredentialKey,
    },
    /// Suspend a credential (temporarily disabled).
    Suspend {
        /// The card: FORMAT:FACILITY:NUMBER or uid:HEX.
        card: CredentialKey,
    },
    /// Make a credential active again.
    Reinstate {
        /// The card: FORMAT:FACILITY:NUMBER or uid:HEX.
        card: CredentialKey,
    },
}

fn parse<T: DeserializeOwned>(json: &str) -> anyhow::Result<T> {
    serde_json::from_str(json).context("the record is not valid JSON of this entity type")
}

fn record(entity: Entity, json: &str) -> anyhow::Result<Record> {
    Ok(match entity {
        Entity::Site => Record::Site(parse::<SiteRecord>(json)?),
        Entity::Area => Record::Area(parse::<AreaRecord>(json)?),
        Entity::Door => Record::Door(parse::<DoorRecord>(json)?),
        Entity::Reader => Record::Reader(parse::<ReaderRecord>(json)?),
        Entity::DoorGroup => Record::DoorGroup(parse::<DoorGroupRecord>(json)?),
        Entity::HolidaySet => Record::HolidaySet(parse::<HolidaySetRecord>(json)?),
        Entity::Schedule => Record::Schedule(parse::<ScheduleRecord>(json)?),
        Entity::AccessLevel => Record::AccessLevel(parse::<AccessLevelRecord>(json)?),
        Entity::Cardholder => Record::Cardholder(parse::<CardholderRecord>(json)?),
        Entity::Credential => Record::Credential(parse::<CredentialRecord>(json)?),
        Entity::Assignment => Record::Assignment(parse::<AssignmentRecord>(json)?),
    })
}

fn key(entity: Entity, id: String, level: Option<String>) -> anyhow::Result<RecordKey> {
    if level.is_some() && !matches!(entity, Entity::Assignment) {
        bail!("only an assignment takes a second id (the level)");
    }
    Ok(match entity {
        Entity::Site => RecordKey::Site(id),
        Entity::Area => RecordKey::Area(id),
        Entity::Door => RecordKey::Door(id),
        Entity::Reader => RecordKey::Reader(id),
        Entity::DoorGroup => RecordKey::DoorGroup(id),
        Entity::HolidaySet => RecordKey::HolidaySet(id),
        Entity::Schedule => RecordKey::Schedule(id),
        Entity::AccessLevel => RecordKey::AccessLevel(id),
        Entity::Cardholder => RecordKey::Cardholder(id),
        Entity::Credential => RecordKey::Credential(id.parse()?),
        Entity::Assignment => RecordKey::Assignment {
            holder: id,
            level: level.context("an assignment is deleted by holder and level")?,
        },
    })
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    init_logging();
    runtime()?.block_on(async move {
        let admin = Admin::new(args.table.backend().await);
        match args.action {
            Action::CreateTables { events_table } => {
                let events = events_table.unwrap_or_else(|| format!("{}-events", args.table.table));
                admin.create_tables(Some(&events)).await?;
                println!("tables `{}` and `{events}` are active", args.table.table);
            }
            Action::Put { entity, json } => {
                let record = record(entity, &json)?;
                admin.put(&record).await?;
                println!("put {:?}", record.key());
            }
            Action::Delete { entity, id, level } => {
                let key = key(entity, id, level)?;
                admin.delete(&key).await?;
                println!("deleted {key:?}");
            }
            Action::Import { site } => {
                let records: Vec<_> = super::site::read_site(&site)?.into_records().collect();
                admin.put_all(&records, |_| {}).await?;
                println!("imported {} records", records.len());
            }
            Action::Export { site, strict } => {
                let export = admin.export().await?;
                for e in &export.rejected {
                    eprintln!("left out: {e}");
                }
                // A backup must never be blocked by one bad record: keep
                // every record a site file can hold, report the others.
                let (file, invalid) = accessd_engine::SiteFile::keep_valid(export.records);
                for (record, why) in &invalid {
                    let (pk, sk) = accessd_loader::item::key_strings(&record.key());
                    eprintln!("left out: item pk=`{pk}` sk=`{sk}`: {why}");
                }
                let text = accessd_engine::SiteFile::to_toml(&file.records)?;
                let left_out = export.rejected.len() + invalid.len();
                if site.as_os_str() == "-" {
                    print!("{text}");
                } else {
                    std::fs::write(&site, text)
                        .with_context(|| format!("cannot write `{}`", site.display()))?;
                    eprintln!(
                        "exported {} records to {} ({left_out} item(s) left out)",
                        file.records.len(),
                        site.display(),
                    );
                }
                if strict && left_out > 0 {
                    eprintln!("error: {left_out} item(s) left out (--strict)");
                    return Ok(ExitCode::FAILURE);
                }
            }
            Action::Revoke { card } => set(&admin, card, CredentialStatus::Revoked).await?,
            Action::Suspend { card } => set(&admin, card, CredentialStatus::Suspended).await?,
            Action::Reinstate { card } => set(&admin, card, CredentialStatus::Active).await?,
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn set(admin: &Admin, card: CredentialKey, status: CredentialStatus) -> anyhow::Result<()> {
    admin.set_credential_status(card, status).await?;
    println!("credential {card} is now {status:?}");
    Ok(())
}
