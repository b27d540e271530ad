//! Helpers shared by the engine's integration tests.

use accessd_engine::{CredentialKey, Snapshot};

/// Every reader id and every credential of `snapshot`, each sorted, and
/// one of each that the snapshot does not know (`no-such-reader`,
/// `h10301:99:99`) at the end: the requests to try on a site.
#[allow(clippy::unwrap_used, reason = "a constant, valid card")]
pub(crate) fn every_reader_and_card(snapshot: &Snapshot) -> (Vec<String>, Vec<CredentialKey>) {
    let mut readers: Vec<String> = snapshot.reader_ids().map(str::to_owned).collect();
    readers.sort();
    readers.push("no-such-reader".into());
    let mut cards: Vec<CredentialKey> = snapshot.credential_keys().collect();
    cards.sort_by_key(ToString::to_string);
    cards.push("h10301:99:99".parse().unwrap());
    (readers, cards)
}
