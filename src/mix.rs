//! The load generator's request mix, drawn from a site's real data: mostly
//! credentials at doors they open, plus a share of unknown cards and of
//! real cards at doors they do not open. The engine sorts the pairs (a
//! local `decide` on the same snapshot), so the mix needs no knowledge of
//! access levels.

use accessd_engine::{CardFormat, CredentialKey, Presence, Reason, Request, Snapshot, decide};
use accessd_protocol::load::MixRequest;
use jiff::Timestamp;

/// How the mix is made.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MixParams {
    /// Requests in the mix (the load cycles through it).
    pub(crate) size: usize,
    /// Share of cards the site does not know.
    pub(crate) unknown: f64,
    /// Share of real cards at doors they do not open.
    pub(crate) wrong_door: f64,
    pub(crate) seed: u64,
}

/// Builds the mix; empty only when the site has no reader.
pub(crate) fn build(snapshot: &Snapshot, params: MixParams, now: Timestamp) -> Vec<MixRequest> {
    let mut rng = fastrand::Rng::with_seed(params.seed);
    let mut readers: Vec<&str> = snapshot.reader_ids().collect();
    readers.sort_unstable();
    let mut creds: Vec<CredentialKey> = snapshot.credential_keys().collect();
    creds.sort_unstable();
    if readers.is_empty() {
        return Vec::new();
    }
    // Anti-passback state of this local sorting must not leak anywhere.
    let presence = Presence::new();
    let mut mix = Vec::with_capacity(params.size);
    let unknown_card =
        |rng: &mut fastrand::Rng| CredentialKey::card(CardFormat(0xfff0), rng.u32(..), rng.u64(..));
    for _ in 0..params.size {
        let roll = rng.f64();
        let reader = readers
            .get(rng.usize(..readers.len()))
            .copied()
            .unwrap_or("");
        let (reader, credential) = if roll < params.unknown || creds.is_empty() {
            (reader, unknown_card(&mut rng))
        } else {
            let want_grant = roll >= params.unknown + params.wrong_door;
            let cred = creds
                .get(rng.usize(..creds.len()))
                .copied()
                .unwrap_or_else(|| unknown_card(&mut rng));
            // Look for a reader this card opens (or, for the wrong-door
            // share, one it does not); give up after a bounded search and
            // keep the last pair, which is still a real card.
            let mut pick = reader;
            for _ in 0..200 {
                let r = readers
                    .get(rng.usize(..readers.len()))
                    .copied()
                    .unwrap_or("");
                pick = r;
                let d = decide(
                    snapshot,
                    &presence,
                    &Request {
                        reader: r,
                        credential: cred,
                        pin: None,
                    },
                    now,
                );
                let fits = if want_grant {
                    matches!(d.reason, Reason::Granted | Reason::GrantedPassbackWarning)
                } else {
                    d.reason == Reason::NoAccess
                };
                if fits {
                    break;
                }
            }
            (pick, cred)
        };
        mix.push(MixRequest {
            reader: reader.to_owned(),
            credential,
            pin: None,
        });
    }
    mix
}
