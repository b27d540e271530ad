//! Requests, decisions and the stable reason codes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::credential::CredentialKey;

/// One question: may this credential pass this reader?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The reader's id.
    pub reader: &'a str,
    /// What the reader read.
    pub credential: CredentialKey,
    /// PIN digits typed on the reader's keypad, as ASCII, if any.
    pub pin: Option<&'a [u8]>,
}

/// Grant or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Keep the door locked.
    Deny = 0,
    /// Release the lock for the decision's unlock duration.
    Grant = 1,
}

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident = $code:literal, $text:literal;)*) => {
        /// Why a decision came out as it did. The numbers are stable: they
        /// travel on the wire and are stored in access events. Never reuse
        /// or renumber one; add new ones at the end of their range.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum Reason {
            $($(#[$doc])* $name = $code,)*
        }

        impl Reason {
            /// Every reason, in code order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// The stable number of this reason.
            pub fn code(self) -> u16 {
                self as u16
            }

            /// The reason with this number, if there is one.
            pub fn from_code(code: u16) -> Option<Self> {
                match code {
                    $($code => Some(Reason::$name),)*
                    _ => None,
                }
            }

            /// The stable snake_case name, as in `docs/decisions.md`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => $text,)*
                }
            }
        }

        impl FromStr for Reason {
            type Err = UnknownReason;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Reason::$name),)*
                    _ => Err(UnknownReason(s.to_owned())),
                }
            }
        }
    };
}

reasons! {
    /// Access granted.
    Granted = 0, "granted";
    /// Granted, but the holder broke a soft anti-passback rule.
    GrantedPassbackWarning = 1, "granted_passback_warning";
    /// No reader with this id (or the reader's door is missing).
    UnknownReader = 100, "unknown_reader";
    /// The client is not allowed to ask for this reader (set by the server
    /// from the client certificate, never by `decide`).
    ReaderNotPermitted = 101, "reader_not_permitted";
    /// No credential with this key.
    UnknownCredential = 102, "unknown_credential";
    /// The credential is suspended.
    CredentialSuspended = 103, "credential_suspended";
    /// The credential was reported lost.
    CredentialLost = 104, "credential_lost";
    /// The credential was reported stolen.
    CredentialStolen = 105, "credential_stolen";
    /// The credential was revoked.
    CredentialRevoked = 106, "credential_revoked";
    /// The credential's validity has not started.
    CredentialNotYetValid = 107, "credential_not_yet_valid";
    /// The credential's validity has ended.
    CredentialExpired = 108, "credential_expired";
    /// The credential's cardholder does not exist.
    HolderUnknown = 109, "holder_unknown";
    /// The cardholder is inactive.
    HolderInactive = 110, "holder_inactive";
    /// The cardholder's validity has not started.
    HolderNotYetValid = 111, "holder_not_yet_valid";
    /// The cardholder's validity has ended.
    HolderExpired = 112, "holder_expired";
    /// The door is locked for everyone.
    DoorLocked = 113, "door_locked";
    /// The door (or its whole site) is in lockdown and the holder has no
    /// override.
    DoorLockdown = 114, "door_lockdown";
    /// No access level of the holder covers this door.
    NoAccess = 115, "no_access";
    /// A level covers this door, but its assignment to the holder is not
    /// valid at this time.
    AccessNotValidNow = 116, "access_not_valid_now";
    /// A level covers this door, but its schedule is not active now
    /// (including holidays).
    OutsideSchedule = 117, "outside_schedule";
    /// The door needs a PIN and none was entered.
    PinRequired = 118, "pin_required";
    /// The PIN was wrong, or the credential has no PIN enrolled.
    PinWrong = 119, "pin_wrong";
    /// Hard anti-passback: the holder is already inside (or already out).
    AntiPassback = 120, "anti_passback";
    /// No data has been loaded yet (set by the server before the first
    /// snapshot).
    NotReady = 121, "not_ready";
    /// The data is older than the server's staleness policy allows
    /// (`serve --max-staleness`): the source could not confirm it for too
    /// long, so the server refuses rather than grant on old data. Set by
    /// the server, never by `decide`.
    StaleData = 122, "stale_data";
}

/// A reason name that is not in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reason `{0}`")]
pub struct UnknownReason(pub String);

impl Reason {
    /// Whether this reason grants.
    pub fn verdict(self) -> Verdict {
        match self {
            Reason::Granted | Reason::GrantedPassbackWarning => Verdict::Grant,
            _ => Verdict::Deny,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The answer to a [`Request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Grant or deny.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// How long to release the lock, in milliseconds (0 on a deny).
    pub unlock_ms: u32,
    /// The version of the snapshot the decision was made on.
    pub snapshot_version: u64,
}

impl Decision {
    /// A decision for `reason` on snapshot `version`, with the verdict the
    /// reason implies.
    pub fn new(reason: Reason, unlock_ms: u32, snapshot_version: u64) -> Self {
        let verdict = reason.verdict();
        Self {
            verdict,
            reason,
            unlock_ms: if verdict == Verdict::Grant {
                unlock_ms
            } else {
                0
            },
            snapshot_version,
        }
    }

    /// A deny for `reason` on snapshot `version`.
    pub fn deny(reason: Reason, snapshot_version: u64) -> Self {
        Self {
            verdict: Verdict::Deny,
            reason,
            unlock_ms: 0,
            snapshot_version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &reason in Reason::ALL {
            assert!(
                seen.insert(reason.code()),
                "duplicate code {}",
                reason.code()
            );
            assert_eq!(Reason::from_code(reason.code()), Some(reason));
            assert_eq!(reason.as_str().parse::<Reason>(), Ok(reason));
        }
        assert_eq!(Reason::from_code(9999), None);
    }

    #[test]
    fn only_grant_reasons_grant() {
        for &reason in Reason::ALL {
            let granted = matches!(reason, Reason::Granted | Reason::GrantedPassbackWarning);
            assert_eq!(reason.verdict() == Verdict::Grant, granted, "{reason}");
            let d = Decision::new(reason, 3000, 1);
            assert_eq!(d.unlock_ms, if granted { 3000 } else { 0 });
        }
    }
}
