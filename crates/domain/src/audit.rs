//! The audit trail: what happened, by whom, to whose record (45 CFR
//! 170.315(d)(2), (d)(3), (d)(10)).
//!
//! Data flow. The Service (and the sign-in code) describe each access as an
//! [`AuditRecord`]. A write's records travel inside its [`crate::store::Commit`]
//! and are stored in the same transaction; a read's records are committed
//! (group-committed with others) before the data is returned. The store
//! numbers the records (`seq` 1, 2, 3...) and links each to the previous one
//! with a keyed digest ([`AuditChain::link`]): HMAC-SHA256 over the previous
//! digest, the sequence number and the record's canonical JSON. Nothing can
//! change, delete, reorder or insert an entry without breaking the chain
//! unless it holds the key, which lives outside the database. Checkpoints
//! (the latest `seq` and digest, written outside the database from time to
//! time) reveal a truncated tail. [`verify`] walks the chain.
//!
//! The stored form is the record's own JSON (stable, compact); the FHIR
//! AuditEvent (IHE BALP style) is a view of it ([`AuditRecord::to_audit_event`]).

use crate::store::{Store, StoreError};
use fhir::instant::Instant;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

/// What was done, as AuditEvent.action codes it (C R U D E).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
pub enum AuditAction {
    #[serde(rename = "C")]
    Create,
    #[serde(rename = "R")]
    Read,
    #[serde(rename = "U")]
    Update,
    #[serde(rename = "D")]
    Delete,
    #[serde(rename = "E")]
    Execute,
}

impl AuditAction {
    pub fn code(self) -> &'static str {
        match self {
            AuditAction::Create => "C",
            AuditAction::Read => "R",
            AuditAction::Update => "U",
            AuditAction::Delete => "D",
            AuditAction::Execute => "E",
        }
    }

    pub fn parse(code: &str) -> Option<AuditAction> {
        match code {
            "C" => Some(AuditAction::Create),
            "R" => Some(AuditAction::Read),
            "U" => Some(AuditAction::Update),
            "D" => Some(AuditAction::Delete),
            "E" => Some(AuditAction::Execute),
            _ => None,
        }
    }
}

/// How it ended, as AuditEvent.outcome codes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
pub enum AuditOutcome {
    #[serde(rename = "0")]
    Success,
    /// Minor failure: the request was refused (bad input, not found, conflict).
    #[serde(rename = "4")]
    Refused,
    /// Serious failure: access denied, authentication failed.
    #[serde(rename = "8")]
    Denied,
    /// Major failure: the server failed.
    #[serde(rename = "12")]
    Failed,
}

impl AuditOutcome {
    pub fn code(self) -> &'static str {
        match self {
            AuditOutcome::Success => "0",
            AuditOutcome::Refused => "4",
            AuditOutcome::Denied => "8",
            AuditOutcome::Failed => "12",
        }
    }

    /// The numeric code (0, 4, 8, 12): how bad, for sorting.
    pub fn severity(self) -> u8 {
        match self {
            AuditOutcome::Success => 0,
            AuditOutcome::Refused => 4,
            AuditOutcome::Denied => 8,
            AuditOutcome::Failed => 12,
        }
    }

    pub fn parse(code: &str) -> Option<AuditOutcome> {
        match code {
            "0" => Some(AuditOutcome::Success),
            "4" => Some(AuditOutcome::Refused),
            "8" => Some(AuditOutcome::Denied),
            "12" => Some(AuditOutcome::Failed),
            _ => None,
        }
    }

    /// The outcome of a failed request of this error kind.
    pub fn of_error(kind: crate::ErrorKind) -> AuditOutcome {
        use crate::ErrorKind as K;
        match kind {
            K::Forbidden | K::Unauthorized => AuditOutcome::Denied,
            K::Internal | K::Unavailable => AuditOutcome::Failed,
            _ => AuditOutcome::Refused,
        }
    }
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditActor {
    /// `user`, `client` (an app acting for itself: SMART backend services) or `system`.
    pub kind: String,
    /// The stable id: user name, client id or system component name.
    pub id: String,
    /// The role the actor acted in (`physician`, `auditor`...), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The app through which a user acted (OAuth client id), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// One audited event. Field names are short: millions of these are stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When it happened (UTC), stored as FHIR instant text.
    #[serde(with = "instant_text")]
    pub at: Instant,
    /// The interaction or event: `read`, `vread`, `search`, `history`,
    /// `create`, `update`, `patch`, `delete`, `operation`, `export`, `print`,
    /// `login`, `logout`, `login-failed`, `token`, `privilege-change`,
    /// `break-glass`, `audit-settings`.
    pub event: String,
    pub action: AuditAction,
    pub outcome: AuditOutcome,
    /// A short reason for a failure or a break-the-glass access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub who: AuditActor,
    /// The network address the request came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The resource type (data category) concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// The resources concerned (`Type/id` or `Type/id/_history/v`), for a
    /// search those returned (bounded by the page size).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<String>,
    /// The patients whose data was concerned (Patient ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patients: Vec<String>,
    /// The query string of a search or operation, as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// True when the access used break-the-glass (emergency access).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub emergency: bool,
}

impl AuditRecord {
    /// A record of `event` by `who` now, successful, with nothing else filled in.
    pub fn new(at: Instant, event: &str, action: AuditAction, who: AuditActor) -> AuditRecord {
        AuditRecord {
            at,
            event: event.to_string(),
            action,
            outcome: AuditOutcome::Success,
            detail: None,
            who,
            from: None,
            resource_type: None,
            entities: Vec::new(),
            patients: Vec::new(),
            query: None,
            emergency: false,
        }
    }

    /// The canonical stored text: what the chain digest covers.
    pub fn to_canonical_json(&self) -> String {
        // Serialising plain strings, enums and an Instant cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_canonical_json(text: &str) -> Result<AuditRecord, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The FHIR AuditEvent for this record, stored as entry `seq`, in the
    /// style of IHE Basic Audit Log Patterns (BALP).
    pub fn to_audit_event(&self, seq: u64) -> Value {
        let (type_code, type_display) = match self.event.as_str() {
            "login" | "logout" | "login-failed" | "token" => ("110114", "User Authentication"),
            "privilege-change" | "audit-settings" => ("110136", "Security Roles Changed"),
            "break-glass" => ("110113", "Security Alert"),
            "export" => ("110106", "Export"),
            _ => ("rest", "RESTful Operation"),
        };
        let type_system = if type_code == "rest" {
            "http://terminology.hl7.org/CodeSystem/audit-event-type"
        } else {
            "http://dicom.nema.org/resources/ontology/DCM"
        };
        let mut agent = json!({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient"}]},
            "who": {"identifier": {"system": format!("urn:hearth:{}", self.who.kind), "value": self.who.id}},
            "requestor": true
        });
        if let Some(role) = &self.who.role {
            agent["role"] = json!([{"coding": [{"system": "urn:hearth:role", "code": role}]}]);
        }
        if let Some(from) = &self.from {
            agent["network"] = json!({"address": from, "type": "2"});
        }
        let mut agents = vec![agent];
        if let Some(client) = &self.who.client {
            agents.push(json!({
                "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150", "display": "Application"}]},
                "who": {"identifier": {"system": "urn:hearth:client", "value": client}},
                "requestor": false
            }));
        }
        let mut entities: Vec<Value> = Vec::new();
        for patient in &self.patients {
            entities.push(json!({
                "what": {"reference": format!("Patient/{patient}")},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}
            }));
        }
        for entity in &self.entities {
            entities.push(json!({
                "what": {"reference": entity},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4", "display": "Domain Resource"}
            }));
        }
        if let Some(query) = &self.query {
            use base64::Engine as _;
            let mut entity = json!({
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24", "display": "Query"},
                "query": base64::engine::general_purpose::STANDARD.encode(query.as_bytes())
            });
            if let Some(t) = &self.resource_type {
                entity["description"] = json!(t);
            }
            entities.push(entity);
        }
        let mut event = json!({
            "resourceType": "AuditEvent",
            "id": audit_event_id(seq),
            "type": {"system": type_system, "code": type_code, "display": type_display},
            "subtype": [{"system": "urn:hearth:audit-event", "code": self.event}],
            "action": self.action.code(),
            "recorded": self.at.to_fhir(),
            "outcome": self.outcome.code(),
            "agent": agents,
            "source": {"observer": {"display": "Hearth"}, "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}]}
        });
        if let Some(detail) = &self.detail {
            event["outcomeDesc"] = json!(detail);
        }
        if self.emergency {
            event["purposeOfEvent"] = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "ETREAT", "display": "Emergency Treatment"}]}]);
        }
        if let Some(t) = &self.resource_type {
            event["extension"] = json!([{"url": "urn:hearth:audit-resource-type", "valueCode": t}]);
        }
        if !entities.is_empty() {
            event["entity"] = Value::Array(entities);
        }
        event
    }
}

/// The logical id of the AuditEvent for entry `seq`.
pub fn audit_event_id(seq: u64) -> String {
    format!("audit-{seq}")
}

/// The entry number of an AuditEvent id, if it is one.
pub fn seq_of_audit_event_id(id: &str) -> Option<u64> {
    id.strip_prefix("audit-")?.parse().ok()
}

/// One stored entry of the trail.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub seq: u64,
    /// The record's canonical JSON, exactly as stored.
    pub record: String,
    /// Hex HMAC-SHA256 chain digest of this entry.
    pub hash: String,
}

impl AuditEntry {
    pub fn parse(&self) -> Result<AuditRecord, serde_json::Error> {
        AuditRecord::from_canonical_json(&self.record)
    }
}

/// The key of the chain digest. Cloning shares nothing mutable.
#[derive(Clone)]
pub struct AuditChain {
    key: [u8; 32],
}

impl std::fmt::Debug for AuditChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditChain(..)")
    }
}

/// The digest that the first entry links to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AuditChain {
    pub fn new(key: [u8; 32]) -> AuditChain {
        AuditChain { key }
    }

    /// A chain with a fresh random key (tests, the in-memory store).
    pub fn random() -> AuditChain {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        AuditChain { key }
    }

    /// The digest of entry `seq` holding `record`, after the entry whose digest is `previous`.
    pub fn link(&self, previous: &str, seq: u64, record: &str) -> String {
        // HMAC accepts keys of any length.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => return String::new(),
        };
        mac.update(previous.as_bytes());
        mac.update(b"\n");
        mac.update(seq.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(record.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// A keyed digest of a checkpoint line, so that a forged checkpoint is detected.
    pub fn seal_checkpoint(&self, checkpoint: &Checkpoint) -> String {
        self.link("checkpoint", checkpoint.seq, &format!("{} {}", checkpoint.hash, checkpoint.at.to_fhir()))
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The chain's head at some moment, kept outside the database.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    pub at: Instant,
}

impl Checkpoint {
    /// One line of a checkpoint file: `seq hash at seal`.
    pub fn to_line(&self, chain: &AuditChain) -> String {
        format!("{} {} {} {}", self.seq, self.hash, self.at.to_fhir(), chain.seal_checkpoint(self))
    }

    /// Parses a line written by [`Checkpoint::to_line`], checking its seal.
    pub fn from_line(line: &str, chain: &AuditChain) -> Result<Checkpoint, String> {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [seq, hash, at, seal] = parts.as_slice() else {
            return Err("a checkpoint line has four fields: seq hash time seal".into());
        };
        let seq: u64 = seq.parse().map_err(|_| format!("bad sequence number {seq:?}"))?;
        let at = Instant::parse(at).ok_or_else(|| format!("bad time {at:?}"))?;
        let checkpoint = Checkpoint { seq, hash: (*hash).to_string(), at };
        if chain.seal_checkpoint(&checkpoint) != *seal {
            return Err(format!("checkpoint at entry {seq} has a bad seal (forged, or another key)"));
        }
        Ok(checkpoint)
    }
}

/// Search criteria over the trail (`hearth audit report`, `GET /fhir/AuditEvent`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuditQuery {
    /// Entries recorded at or after this instant.
    pub from: Option<Instant>,
    /// Entries recorded at or before this instant.
    pub to: Option<Instant>,
    /// The actor id (user name, client id).
    pub who: Option<String>,
    /// A patient id the entry concerns.
    pub patient: Option<String>,
    pub action: Option<AuditAction>,
    /// The event (`read`, `login`...).
    pub event: Option<String>,
    pub resource_type: Option<String>,
    pub outcome: Option<AuditOutcome>,
    /// Sort order; entry order (`seq`) when empty. Ties break on `seq`.
    pub sort: Vec<(AuditSort, bool)>,
    pub count: usize,
    pub offset: usize,
}

/// A field to sort audit entries by; the bool beside it is "descending".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditSort {
    Seq,
    At,
    Who,
    Patient,
    Action,
    Event,
    ResourceType,
    Outcome,
}

impl AuditSort {
    pub fn parse(name: &str) -> Option<AuditSort> {
        Some(match name {
            "seq" => AuditSort::Seq,
            "at" | "date" | "time" | "recorded" => AuditSort::At,
            "who" | "user" | "agent" => AuditSort::Who,
            "patient" => AuditSort::Patient,
            "action" => AuditSort::Action,
            "event" | "subtype" => AuditSort::Event,
            "type" | "resource-type" | "category" => AuditSort::ResourceType,
            "outcome" => AuditSort::Outcome,
            _ => return None,
        })
    }
}

impl AuditQuery {
    /// True when `record` meets every criterion (the reference semantics
    /// the SQL backends reproduce).
    pub fn matches(&self, record: &AuditRecord) -> bool {
        self.from.is_none_or(|f| record.at >= f)
            && self.to.is_none_or(|t| record.at <= t)
            && self.who.as_ref().is_none_or(|w| &record.who.id == w)
            && self.patient.as_ref().is_none_or(|p| record.patients.contains(p))
            && self.action.is_none_or(|a| record.action == a)
            && self.event.as_ref().is_none_or(|e| &record.event == e)
            && self.resource_type.as_ref().is_none_or(|t| record.resource_type.as_ref() == Some(t))
            && self.outcome.is_none_or(|o| record.outcome == o)
    }
}

impl AuditRecord {
    /// The patient an entry sorts by: its first patient, or none.
    pub fn sort_patient(&self) -> &str {
        self.patients.first().map_or("", String::as_str)
    }
}

/// The order of two entries under `sort` (then by `seq`): the reference
/// the SQL backends reproduce. Text compares bytewise; a missing value sorts first.
pub fn compare(
    sort: &[(AuditSort, bool)],
    (seq_a, a): (u64, &AuditRecord),
    (seq_b, b): (u64, &AuditRecord),
) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for (field, descending) in sort {
        let ordering = match field {
            AuditSort::Seq => seq_a.cmp(&seq_b),
            AuditSort::At => a.at.cmp(&b.at),
            AuditSort::Who => a.who.id.cmp(&b.who.id),
            AuditSort::Patient => a.sort_patient().cmp(b.sort_patient()),
            AuditSort::Action => a.action.code().cmp(b.action.code()),
            AuditSort::Event => a.event.cmp(&b.event),
            AuditSort::ResourceType => a.resource_type.as_deref().unwrap_or("").cmp(b.resource_type.as_deref().unwrap_or("")),
            AuditSort::Outcome => a.outcome.severity().cmp(&b.outcome.severity()),
        };
        let ordering = if *descending { ordering.reverse() } else { ordering };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    seq_a.cmp(&seq_b)
}

/// How a verification ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every entry links to the one before and the tail reaches the last checkpoint.
    Intact { entries: u64, last_hash: String },
    /// The first bad entry, and why.
    Broken { seq: u64, reason: String },
}

/// Walks the whole trail in order, checking each link, the record's
/// readability, the numbering (no gap, no reordering) and the checkpoints
/// (each must match the entry it names; the trail must reach the last one).
pub async fn verify(
    store: &dyn Store,
    chain: &AuditChain,
    checkpoints: &[Checkpoint],
    mut progress: impl FnMut(u64),
) -> Result<Verdict, StoreError> {
    let mut previous = GENESIS.to_string();
    let mut expected_seq = 1u64;
    let mut after = 0u64;
    let mut checkpoints: Vec<&Checkpoint> = checkpoints.iter().collect();
    checkpoints.sort_by_key(|c| c.seq);
    let mut next_checkpoint = 0usize;
    loop {
        let batch = store.audit_scan(after, 2000).await?;
        if batch.is_empty() {
            break;
        }
        for entry in &batch {
            if entry.seq != expected_seq {
                let reason = if entry.seq > expected_seq {
                    format!("entries {expected_seq} to {} are missing", entry.seq - 1)
                } else {
                    format!("entry {} appears out of order after entry {}", entry.seq, expected_seq - 1)
                };
                return Ok(Verdict::Broken { seq: expected_seq, reason });
            }
            if let Err(e) = entry.parse() {
                return Ok(Verdict::Broken { seq: entry.seq, reason: format!("the entry is not a readable record: {e}") });
            }
            let digest = chain.link(&previous, entry.seq, &entry.record);
            if digest != entry.hash {
                return Ok(Verdict::Broken {
                    seq: entry.seq,
                    reason: "the entry's digest does not match its content and the entry before it (changed, inserted or reordered)".into(),
                });
            }
            while let Some(checkpoint) = checkpoints.get(next_checkpoint) {
                if checkpoint.seq > entry.seq {
                    break;
                }
                if checkpoint.seq == entry.seq && checkpoint.hash != entry.hash {
                    return Ok(Verdict::Broken {
                        seq: entry.seq,
                        reason: format!("the entry differs from the checkpoint taken at {}", checkpoint.at.to_fhir()),
                    });
                }
                next_checkpoint += 1;
            }
            previous = digest;
            expected_seq += 1;
            after = entry.seq;
        }
        progress(after);
    }
    if let Some(last) = checkpoints.last()
        && last.seq >= expected_seq
    {
        return Ok(Verdict::Broken {
            seq: expected_seq,
            reason: format!(
                "the trail ends at entry {} but a checkpoint taken at {} recorded entry {} (truncated)",
                expected_seq - 1,
                last.at.to_fhir(),
                last.seq
            ),
        });
    }
    Ok(Verdict::Intact { entries: expected_seq - 1, last_hash: previous })
}

/// Serde for [`Instant`] as FHIR instant text.
mod instant_text {
    use fhir::instant::Instant;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(at: &Instant, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_fhir())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
        let text = String::deserialize(d)?;
        Instant::parse(&text).ok_or_else(|| serde::de::Error::custom("not a FHIR instant"))
    }
}
