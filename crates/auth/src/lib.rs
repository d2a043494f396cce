//! Identity for Hearth: who is asking, proven how, and what that lets them do.
//!
//! Users sign in with a password (argon2id) and, where their role requires
//! it, a TOTP code; repeated failures lock the account for a while without
//! revealing whether it exists. OAuth 2 clients (SMART App Launch 2.0 apps,
//! and SMART Backend Services with signed JWT assertions) obtain tokens
//! whose scopes narrow what their user may do. Everything here ends in a
//! [`domain::access::Access`], which the Service enforces and audits.
//!
//! All state lives in the store as system records ([`domain::store::SysWrite`]),
//! written together with the audit records of the event (sign-in, token
//! issue, privilege change) in one commit.

pub mod break_glass;
pub mod password;
pub mod roles;
pub mod totp;
pub mod users;
